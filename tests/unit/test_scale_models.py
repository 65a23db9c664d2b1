"""Every profile's scale model is classified, built by vLLM's own configuration code on the tiny checkpoint, and covered by
what CI runs; every configuration-only setting is accepted by vLLM's own argument objects (no engine starts here)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from offline.cli import main
from offline.scale import CI_RUNS, SCALE_TP, ScaleModel, scale_model
from offline.tiny import cached_checkpoint
from server.app import engine_options
from server.config import Settings
from server.engine.vllm_options import engine_args as _engine_args
from server.profiles import Profile, list_profiles, load_profile

PROFILES = list_profiles()
# How each configuration-only setting is spelled as a vLLM engine argument, and the value the profile means by it.
CONFIG_ARGUMENTS = {
    "quantization": ("quantization", "fp8"),
    "gpu_memory_utilization": ("gpu_memory_utilization", None),
    "enable_expert_parallel": ("enable_expert_parallel", None),
    "kv_cache_dtype": ("kv_cache_dtype", None),
    "async_scheduling": ("async_scheduling", None),
}


def engine_config(scale: ScaleModel, **override: Any) -> Any:
    """vLLM's full engine configuration for the scale model, as our server would hand it to AsyncLLM."""
    checkpoint = str(cached_checkpoint(moe=scale.family.moe, thinking=scale.family.thinking))
    settings = Settings(model=checkpoint, **{**scale.settings, **override})
    return _engine_args(engine_options(settings, checkpoint)).create_engine_config()


@pytest.mark.parametrize("name", PROFILES)
def test_every_setting_is_classified_and_the_scale_model_configures_in_vllm(name: str) -> None:
    profile = load_profile(name)
    scale = scale_model(profile)
    named = {check.setting for check in scale.checks}
    assert set(profile.settings) - {"engine_extra"} <= named
    assert set(profile.settings.get("engine_extra", {})) <= named
    config = engine_config(scale)
    tp = min(int(profile.settings["tensor_parallel_size"]), SCALE_TP)
    assert config.parallel_config.tensor_parallel_size == tp
    assert config.model_config.max_model_len == scale.settings["max_model_len"]
    extra = profile.settings.get("engine_extra", {})
    if tp > 1:
        assert config.model_config.multimodal_config.mm_encoder_tp_mode == "data"
        assert scale.environment == {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    if "reasoning_parser" in extra:  # a profile's engine-level reasoning parser reaches vLLM's structured outputs
        assert config.structured_outputs_config.reasoning_parser == extra["reasoning_parser"]
    assert not config.scheduler_config.async_scheduling  # vLLM's CPU platform turns it off: configuration only
    assert not config.parallel_config.enable_expert_parallel  # never on the CPU: listed as configuration only
    assert config.cache_config.cache_dtype == "auto"
    assert str(config.model_config.dtype) == "torch.float32"
    if "hf_overrides" in extra:
        rope = config.model_config.hf_text_config.rope_parameters
        want = extra["hf_overrides"]["text_config"]["rope_parameters"]
        assert (rope["rope_type"], rope["factor"]) == (want["rope_type"], want["factor"])
        assert config.model_config.max_model_len == int(32768 * want["factor"])


@pytest.mark.parametrize("name", PROFILES)
def test_configuration_only_settings_are_accepted_by_vllm(name: str) -> None:
    scale = scale_model(load_profile(name))
    checkpoint = str(cached_checkpoint(moe=scale.family.moe))
    from vllm.engine.arg_utils import AsyncEngineArgs

    for check in scale.by("config"):
        assert check.reason, check.setting
        argument, value = CONFIG_ARGUMENTS[check.setting]
        value = check.profile_value if value is None else value
        kwargs: dict[str, Any] = {argument: value}
        if argument == "enable_expert_parallel":
            kwargs["tensor_parallel_size"] = SCALE_TP
        arguments = AsyncEngineArgs(model=checkpoint, max_model_len=4096, **kwargs)
        assert getattr(arguments, argument) == value, (name, check.setting)
        arguments.create_engine_config()  # vLLM's own checks of the whole configuration pass


def _exercised(profile: Profile) -> dict[str, Any]:
    return {c.setting: c.how for c in scale_model(profile).checks if c.how != "config"}


@pytest.mark.parametrize("name", PROFILES)
def test_what_a_profile_exercises_is_run_by_its_familys_ci_scale_model(name: str) -> None:
    """CI starts one scale model per family; every setting any profile runs on CPU is among what that run exercises,
    except the engine-level reasoning parser, which the configuration test above checks reaches vLLM (the MoE Thinking
    engine in tests/e2e/test_serving.py runs the same qwen3 parser, chosen from its template)."""
    profile = load_profile(name)
    ci = load_profile(CI_RUNS["moe" if scale_model(profile).family.moe else "dense"])
    missing = set(_exercised(profile)) - set(_exercised(ci)) - {"reasoning_parser"}
    assert not missing, f"{name} runs {missing} on CPU, which CI's {ci.name} run does not"


def test_unknown_settings_are_refused_not_dropped() -> None:
    base = load_profile(CI_RUNS["dense"])
    for settings in (
        {**base.settings, "speculative_config": {}},
        {**base.settings, "engine_extra": {**base.settings["engine_extra"], "pipeline_parallel_size": 2}},
    ):
        with pytest.raises(ValueError, match="no scale-model classification"):
            scale_model(dataclasses.replace(base, settings=settings))


def test_profile_verify_prints_what_runs_and_what_is_configuration_only(capsys: pytest.CaptureFixture[str]) -> None:
    name = CI_RUNS["moe"]
    assert main(["profile", "verify", name]) == 0
    out = capsys.readouterr().out
    real, config = out.split("## exercised for real on CPU, scaled down")[0], out.split("configuration only")[1]
    assert "mm_encoder_tp_mode" in real and "max_num_seqs" in real
    assert "tensor_parallel_size = 8 -> 2" in out
    for setting in ("enable_expert_parallel", "kv_cache_dtype", "quantization", "async_scheduling"):
        assert setting in config
    assert "AVX-512" in config and "first forward pass" in config
    assert main(["profile", "verify", name, "--json"]) == 0
    checks = {c["setting"]: c["how"] for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["enable_expert_parallel"] == "config" and checks["tensor_parallel_size"] == "scaled"
    assert main(["profile", "verify", "nope"]) == 2
