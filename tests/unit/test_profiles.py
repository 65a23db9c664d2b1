"""Every H100 profile is accepted by vLLM 0.32's own argument parser and engine-argument objects (checked on CPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from offline.cli import main
from offline.configs import bundled_config, bundled_config_name
from offline.vllm_command import ENGINE_FIELDS, vllm_cli_args
from server.app import engine_options
from server.engine.vllm_options import engine_args as _engine_args
from server.profiles import list_profiles, load_profile
from server.settings_loader import load_settings

PROFILES = list_profiles()
SEED_235B = "qwen3-vl-235b-a22b-instruct-fp8-8xh100"


def vllm_parse(args: list[str]):  # type: ignore[no-untyped-def]
    """``vllm serve``'s own parser over a command line: its engine arguments, and the namespace (serve-level flags)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = make_arg_parser(FlexibleArgumentParser())
    try:
        namespace = parser.parse_args(args)
    except SystemExit as exc:  # argparse's way of saying "unknown or ill-typed flag"
        raise AssertionError(f"vLLM's parser refused {args}") from exc
    return AsyncEngineArgs.from_cli_args(namespace), namespace


def test_there_is_a_profile_per_deployment_named_in_the_issue() -> None:
    assert len(PROFILES) >= 13
    for needed in (
        "235b-a22b-instruct",
        "235b-a22b-thinking",
        "30b-a3b-instruct",
        "30b-a3b-thinking",
        "-2b-",
        "-4b-",
        "-8b-",
        "32b",
        "image-only",
        "yarn",
    ):
        assert any(needed in name for name in PROFILES), needed


@pytest.mark.parametrize("name", PROFILES)
def test_profile_is_valid_for_vllm(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    assert profile.description and profile.reasons
    for key in (
        "tensor_parallel_size",
        "max_model_len",
        "gpu_memory_utilization",
        "max_num_seqs",
        "limit_mm_per_prompt",
        "mm_processor_cache_gb",
    ):
        assert key in profile.reasons, f"{name}: no reason given for {key}"
    settings = load_settings(profile=name)
    assert settings.model == profile.settings["model"]
    # With HF_HUB_OFFLINE vLLM resolves a hub id to its local snapshot while building the arguments; no weights are here,
    # so a local folder holding the model's real config.json stands in for it (the id is not what these checks are about).
    bundled = bundled_config(str(bundled_config_name(profile.settings["model"])))
    (tmp_path / "config.json").write_text(json.dumps(bundled))
    local = str(tmp_path)
    from_cli, namespace = vllm_parse(vllm_cli_args({**profile.settings, "model": local}))  # the line we print
    ours = _engine_args(engine_options(settings, local))  # what our server hands to AsyncLLM
    chosen = [k for k in ENGINE_FIELDS if k in profile.settings and k != "served_model_name"]
    chosen += ["model", *profile.settings.get("engine_extra", {})]
    known = {f.name for f in dataclasses.fields(ours)}
    for key in chosen:
        assert key in known, f"{name}: {key} is not a vLLM engine argument"
        assert getattr(ours, key) == getattr(from_cli, key), f"{name}: {key} differs"
    # vLLM's own ModelConfig over the real config.json: hf_overrides applied, max_model_len checked against the model's
    # position limit (this is what caught a YaRN profile that raised max_model_len but not max_position_embeddings).
    model_config = ours.create_model_config()
    assert model_config.max_model_len == settings.max_model_len
    assert model_config.multimodal_config is not None
    assert model_config.multimodal_config.get_limit_per_prompt("image") == settings.limit_mm_per_prompt["image"]
    extra = profile.settings.get("engine_extra", {})
    if "yarn" in name:
        rope = model_config.hf_text_config.rope_parameters
        assert (rope["rope_type"], rope["factor"], rope["rope_theta"]) == ("yarn", 3.0, 5000000)
        assert rope["mrope_interleaved"] is True and rope["mrope_section"] == [24, 20, 20]
    if "thinking" in name:
        assert extra["reasoning_parser"] == "qwen3"
        assert extra["override_generation_config"]["temperature"] == 0.6
        assert extra["override_generation_config"]["top_p"] == 0.95
    else:
        assert "reasoning_parser" not in extra
        assert extra["override_generation_config"]["presence_penalty"] == 1.5
    if settings.tensor_parallel_size > 1:
        assert extra["mm_encoder_tp_mode"] == "data"
    # Our API processes are vLLM's API servers: the same count in front of one engine core.
    assert (namespace.api_server_count or 1) == settings.api_workers
    if settings.tensor_parallel_size == 8:
        assert settings.api_workers > 1 and "api_workers" in profile.reasons


def test_ill_typed_or_unknown_fields_are_caught() -> None:
    with pytest.raises(AssertionError):
        vllm_parse(["--model", "m", "--tensor-parallel-size", "eight"])
    with pytest.raises(AssertionError):
        vllm_parse(["--model", "m", "--no-such-flag", "1"])


def test_flags_and_environment_override_a_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3VL_MAX_NUM_SEQS", "7")
    settings = load_settings(["--profile", SEED_235B, "--max-model-len", "4096"])
    assert (settings.max_model_len, settings.max_num_seqs, settings.tensor_parallel_size) == (4096, 7, 8)
    assert settings.engine_extra["enable_expert_parallel"] is True
    with pytest.raises(ValueError, match="unknown profile"):
        load_settings(["--profile", "nope"])


def test_profile_show_prints_the_seed_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "show", SEED_235B]) == 0
    out = capsys.readouterr().out
    assert "vllm serve Qwen/Qwen3-VL-235B-A22B-Instruct-FP8" in out
    for flag in (
        "--tensor-parallel-size 8",
        "--mm-encoder-tp-mode data",
        "--enable-expert-parallel",
        "--async-scheduling",
    ):
        assert flag in out
    assert main(["profile", "list"]) == 0
    assert SEED_235B in capsys.readouterr().out
