"""Start-up warnings about settings that open more than production should: server.app.log_exposure."""

from __future__ import annotations

import logging

import pytest

from server.app import log_exposure
from server.config import Settings


@pytest.mark.parametrize(
    ("host", "keys", "warned"),
    [
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("", (), True),  # every interface
        ("10.1.2.3", (), True),
        ("myhost.example", (), True),  # a name may resolve to anything
        ("0.0.0.0", ("sk-1",), False),
        ("127.0.0.1", (), False),
        ("127.0.0.2", (), False),
        ("::1", (), False),
        ("[::1]", (), False),
        ("localhost", (), False),
        ("LOCALHOST", (), False),
    ],
)
def test_non_loopback_host_without_keys_warns(
    caplog: pytest.LogCaptureFixture, host: str, keys: tuple[str, ...], warned: bool
) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        log_exposure(Settings(host=host), keys)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no API keys" in m for m in messages) is warned, messages
    if warned:
        assert host in messages[0] and "--api-key-file" in messages[0]


def test_media_allow_loopback_warns(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="server.app"):
        log_exposure(Settings(media_allow_loopback=True), ())
        log_exposure(Settings(), ())
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(messages) == 1 and "--media-allow-loopback" in messages[0] and "development" in messages[0]
