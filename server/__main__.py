"""``qwen3vl-server``: serve, and only serve.

qwen3vl-server [--model M] [--profile NAME] [--host H] [--port P] [--served-model-name NAME] [...]   (see --help)

The tools that run without a server (the tiny checkpoint builder, ``profile list|show|verify``, ``plan``) are
``qwen3vl-offline`` (the ``offline`` package).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from types import FrameType

import uvicorn

from server import lifecycle, logs
from server.api.http_protocol import HttpLimits, limited_h11
from server.api.state import AppState


def _no_hub_defaults() -> None:
    # Nothing may depend on a model hub at run time; a user who wants hub downloads sets these to 0 explicitly.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    _no_hub_defaults()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from server.app import create_app
    from server.settings_loader import load_settings

    settings = load_settings(args)
    logs.configure(settings.log_level, settings.log_format)
    app = create_app(settings)
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.http_header_timeout,
        body_timeout_s=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,  # the drain already waited --drain-timeout for requests to finish
        # h11 pinned, whatever else is installed: httptools has no head-size limit (see server.api.http_protocol).
        http=limited_h11(limits),
        h11_max_incomplete_event_size=settings.max_header_bytes,
        ws="none",  # no WebSocket routes: an upgrade request is plain HTTP (and gets its 404)
        # The protocol refuses connections beyond the cap; on the ones it keeps, requests are served, and requests
        # still running beyond one per connection (clients gone, work finishing) get uvicorn's 503.
        limit_concurrency=settings.http_max_connections + 1,
        access_log=settings.log_format == "text",  # JSON logs have their own access line
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
    )
    if settings.playground_enabled:
        logging.getLogger("server").info(
            "playground: http://%s:%d/ (the page is up at once; it answers once the model is ready)",
            settings.host,
            settings.port,
        )
    server = DrainingServer(config, app.state.qwen3vl)
    server.run()
    return int(app.state.qwen3vl.exit_code)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains (see server.lifecycle) before stopping; a second one stops now."""

    def __init__(self, config: uvicorn.Config, state: AppState) -> None:
        super().__init__(config)
        self.state = state
        self._draining = False
        state.request_exit = self._request_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self.should_exit:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        self.state.draining = True  # readiness 503 and new requests refused, from this instant
        loop = asyncio.get_event_loop()
        loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_stop()))

    async def _drain_then_stop(self) -> None:
        await lifecycle.drain(self.state, self.state.settings.drain_timeout)
        self.should_exit = True

    def _request_exit(self, code: int) -> None:
        self.state.exit_code = code
        self.should_exit = True


if __name__ == "__main__":
    raise SystemExit(main())
