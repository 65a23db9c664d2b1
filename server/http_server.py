"""uvicorn as this server runs it: h11 with our head limits, and a first SIGTERM/SIGINT that drains before stopping."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from types import FrameType

import uvicorn
from fastapi import FastAPI

from server import lifecycle
from server.api.http_protocol import HttpLimits, limited_h11
from server.api.state import AppState
from server.config import Settings

logger = logging.getLogger("uvicorn.error")  # beside uvicorn's own start and stop lines


def serve(app: FastAPI, settings: Settings, sock: socket.socket | None = None, *, ignore_sigint: bool = False) -> int:
    """Serve until stopped; the exit code (non-zero after an engine failure). With ``sock``, serve on that already
    bound socket (shared by several API processes) instead of binding ``--host``/``--port``."""
    state: AppState = app.state.qwen3vl
    port = settings.port if sock is None else sock.getsockname()[1]
    limits = HttpLimits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout_s=settings.http_header_timeout,
        body_timeout_s=settings.http_body_timeout,
        max_connections=settings.http_max_connections,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=port,
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
    if settings.playground_enabled and sock is None:
        logging.getLogger("server").info(
            "playground: http://%s:%d/ (the page is up at once; it answers once the model is ready)",
            settings.host,
            settings.port,
        )
    server = DrainingServer(config, state, ignore_sigint=ignore_sigint)
    server.run(sockets=None if sock is None else [sock])
    return int(state.exit_code)


def _address(sock: socket.socket) -> tuple[str, int]:
    host, port = sock.getsockname()[:2]
    return str(host), int(port)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM/SIGINT drains (see server.lifecycle) before stopping; a second one stops now.

    An API process among several ignores SIGINT: a Ctrl-C reaches the whole process group, and the supervisor passes
    it on as SIGTERM, so the process would otherwise see two signals and stop without draining."""

    def __init__(self, config: uvicorn.Config, state: AppState, *, ignore_sigint: bool = False) -> None:
        super().__init__(config)
        self.state = state
        self._draining = False
        self._ignore_sigint = ignore_sigint
        state.request_exit = self._request_exit

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if sockets and self.started:  # uvicorn says where it listens only when it bound the socket itself
            logger.info("Uvicorn running on http://%s:%d (a socket shared by the API processes)", *_address(sockets[0]))

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGINT and self._ignore_sigint:
            return
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
