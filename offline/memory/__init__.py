"""Memory arithmetic of a profile: weights per GPU, KV cache per token, KV capacity, and how much media that holds.

``qwen3vl-offline plan --profile NAME`` prints it. Everything comes from the model's own ``config.json`` (a local folder,
the Hugging Face cache, ``--config``, or the copy bundled in ``offline/configs/``) and from the profile's settings;
nothing is downloaded and no GPU is needed. vLLM decides the real numbers when it profiles memory at start-up; this is
the same arithmetic done beforehand, so that a profile that cannot fit is caught at review time instead of after a
30-minute load. Written by hand: no library computes per-GPU sharded sizes of a Qwen3-VL checkpoint from its config.

The modules, in the order the arithmetic runs: ``shape`` (the config fields that decide memory), ``weights`` (bytes per
GPU by component), ``inputs`` (the deployment: GPUs, precision, limits), ``estimate`` (KV capacity, media that fits,
errors and warnings) and ``report`` (the text ``plan`` prints).
"""
