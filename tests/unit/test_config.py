from __future__ import annotations

import pytest
from pydantic import ValidationError

from server.config import Settings


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, None)
    assert settings.uses_tiny_model
    limits = settings.media_limits()
    assert limits.max_images_per_request == 8 and limits.video_fps == 2.0


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3VL_PORT", "9001")
    monkeypatch.setenv("QWEN3VL_MAX_MODEL_LEN", "8192")
    monkeypatch.setenv("QWEN3VL_LIMIT_MM_PER_PROMPT", '{"image": 2, "video": 0}')
    monkeypatch.setenv("QWEN3VL_ENGINE_EXTRA", '{"mm_encoder_tp_mode": "data"}')
    settings = Settings()
    assert settings.port == 9001
    assert settings.max_model_len == 8192
    assert settings.limit_mm_per_prompt == {"image": 2, "video": 0}
    assert settings.engine_extra == {"mm_encoder_tp_mode": "data"}


def test_cli_flags_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3VL_PORT", "9001")
    settings = Settings(
        _cli_parse_args=["--model", "/models/x", "--port", "9002", "--served-model-name", "qwen", "--enforce-eager"]
    )
    assert (settings.model, settings.port, settings.served_model_name, settings.enforce_eager) == (
        "/models/x",
        9002,
        "qwen",
        True,
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 70000},
        {"limit_mm_per_prompt": {"audio": 1}},
        {"limit_mm_per_prompt": {"image": -1}},
        {"tensor_parallel_size": 0},
    ],
)
def test_invalid_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)  # type: ignore[arg-type]
