from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from server.app import create_app, fetch_policy, media_limits
from server.config import Settings


def test_defaults() -> None:
    settings = Settings()
    assert (settings.host, settings.port, settings.model) == ("127.0.0.1", 8000, None)
    assert settings.uses_tiny_model
    limits = media_limits(settings)
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


def test_key_file_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    key_file = tmp_path / "api-keys"
    key_file.write_text(
        "# rotated 2026-05: old key below until June\nsk-one\n\n   # indented comment\n  sk-two  \n#sk-off\n"
    )
    settings = Settings(api_keys=["sk-cli", ""], api_key_file=key_file)
    assert settings.all_api_keys() == ("sk-cli", "sk-one", "sk-two")


def test_metrics_and_version_need_a_key_by_default() -> None:
    assert Settings().open_paths == ["/health", "/ready", "/startup"]


def test_media_allowed_networks_flag_and_policy() -> None:
    settings = Settings(
        _cli_parse_args=["--media-allowed-networks", '["10.42.0.0/16", "fd12:3456::/32"]', "--media-allow-loopback"]
    )
    assert settings.media_allowed_networks == ["10.42.0.0/16", "fd12:3456::/32"]
    policy = fetch_policy(settings)
    assert policy.allowed_networks == (ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("fd12:3456::/32"))
    assert policy.allow_loopback is True
    default = fetch_policy(Settings())
    assert default.allowed_networks == () and default.allow_loopback is False


def test_media_allowed_networks_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN3VL_MEDIA_ALLOWED_NETWORKS", '["10.42.0.0/16"]')
    assert fetch_policy(Settings()).allowed_networks == (ipaddress.ip_network("10.42.0.0/16"),)


@pytest.mark.parametrize("entry", ["10.42.0.1/16", "store.svc", "10.42.0.0/33"])
def test_media_allowed_networks_not_in_cidr_form_fail_as_the_flag_is_read(entry: str) -> None:
    with pytest.raises(ValidationError, match=re.escape("not a network in CIDR notation")):
        Settings(media_allowed_networks=["10.42.0.0/16", entry])
    with pytest.raises(ValidationError, match=re.escape("not a network in CIDR notation")):
        Settings(_cli_parse_args=["--media-allowed-networks", f'["{entry}"]'])


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("127.0.0.0/8", "loopback (for development use --media-allow-loopback)"),
        ("169.254.169.254/32", "link-local (cloud metadata)"),
        ("0.0.0.0/8", "the unspecified range"),
    ],
)
def test_media_allowed_networks_in_refused_ranges_fail_the_start(entry: str, says: str) -> None:
    """The refused ranges are the fetcher's rule (netguard); the app checks them as it is built, before serving."""
    settings = Settings(media_allowed_networks=["10.42.0.0/16", entry])
    with pytest.raises(ValueError, match=re.escape(f"--media-allowed-networks: '{entry}' is {says}")):
        create_app(settings)


def test_the_old_all_or_nothing_switch_is_gone(capsys: pytest.CaptureFixture[str]) -> None:
    assert "media_allow_private_addresses" not in Settings.model_fields
    with pytest.raises(SystemExit):  # the old flag fails the start instead of being ignored
        Settings(_cli_parse_args=["--media-allow-private-addresses"])
    assert "unrecognized arguments: --media-allow-private-addresses" in capsys.readouterr().err
