"""The HTTP/1.1 front door: uvicorn's h11 protocol with the limits uvicorn itself does not enforce.

uvicorn picks httptools when it is installed, and httptools has no request-head size limit (a 200 KB header was
accepted); h11 buffers an incomplete request head only up to ``max_incomplete_event_size`` and then fails it, so memory per
connection stays bounded. The server therefore pins this h11 protocol. What uvicorn offers is used as it is: h11's buffer
cap, the keep-alive timeout between requests, ``limit_concurrency``'s 503 for requests beyond the connection cap,
``backlog`` for the kernel's queue. Written here by hand, because uvicorn has none of it for h11:

- the **head size cap itself**: h11's cap applies only to a head still incomplete after a read, so a 40 KB head that
  arrives in one read (a read takes up to 256 KB) passed a 32 KB cap; the bytes of each head are counted here as they
  arrive (up to its blank line) and a head over the cap gets a 431, before h11 parses it;

- a **head deadline**: a client must send its complete request head (request line and headers) within ``header_timeout_s``
  of connecting, or of its first byte on a kept-alive connection; otherwise 408 and close, or a quiet close if it sent
  nothing at all (slowloris: one byte every few seconds kept uvicorn's connection open forever, as no timer runs while
  a head is incomplete, nor on a new connection before its first byte);
- a **body stall timeout**: while a request body is arriving, ``body_timeout_s`` without a byte closes the connection
  (the route sees a disconnect); a slow but steady upload is fine, and time the application takes is never counted;
- **431** (not uvicorn's generic 400) when h11's own buffer cap trips;
- a **connection cap** enforced when a connection is made: uvicorn accepts every connection and only answers 503 to
  requests beyond ``limit_concurrency``, so idle or slow connections would pile up unbounded; beyond ``max_connections``
  a new connection gets a 503 and is closed at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Literal

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    max_header_bytes: int = 32 * 1024  # request line + headers
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024


def error_response(status: int, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 response with an OpenAI error body, closing the connection (written before h11 has a request)."""
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a head deadline, a body stall timeout, 431 for a large head and a connection cap."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_for: Literal["head", "body"] | None = None
        self._head_bytes = 0  # bytes of the request head being received so far
        self._head_tail = b""  # its last two bytes, to find a blank line split across reads

    # --- connection lifetime ------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning("refused a connection: %d are open, the limit", self.limits.max_connections)
            self._refuse(503, "the server has too many open connections; retry later", "too_many_connections")
            return
        self._arm("head")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE and self._head_over_cap(data):
            limit = self.limits.max_header_bytes
            message = f"the request head (request line and headers) is larger than the limit of {limit} bytes"
            self._refuse(431, message, "request_header_fields_too_large")
            return
        super().data_received(data)
        self._follow(data_arrived=True)

    def _head_over_cap(self, data: bytes) -> bool:
        """Count a head's bytes up to its blank line (CRLF CRLF, or bare LFs as h11 allows), across reads."""
        edge = self._head_tail + data[:3]
        ends = [i + len(sep) - len(self._head_tail) for sep in (b"\n\r\n", b"\n\n") if (i := edge.find(sep)) >= 0]
        ends += [i + len(sep) for sep in (b"\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
        if ends:
            size, self._head_bytes, self._head_tail = self._head_bytes + min(ends), 0, b""
            return size > self.limits.max_header_bytes
        self._head_bytes += len(data)
        self._head_tail = (self._head_tail + data)[-2:]
        return self._head_bytes > self.limits.max_header_bytes

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle time between requests
        self._follow(data_arrived=False)

    def send_400_response(self, msg: str) -> None:
        buffered, _ = self.conn.trailing_data
        if len(buffered) > self.limits.max_header_bytes:  # h11's "Receive buffer too long": the head is over the cap
            limit = self.limits.max_header_bytes
            message = f"the request head (request line and headers) is larger than the limit of {limit} bytes"
            self._refuse(431, message, "request_header_fields_too_large")
            return
        super().send_400_response(msg)

    # --- read deadlines -----------------------------------------------------------------------------------------------

    def _follow(self, *, data_arrived: bool) -> None:
        """Set the read timer from h11's view of the client: writing a head, writing a body, or neither."""
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._head_bytes, self._head_tail = 0, b""
        if self.transport.is_closing():
            self._disarm()
        elif state is h11.SEND_BODY:
            if data_arrived or self._waiting_for != "body":
                self._arm("body")  # a stall timeout: every chunk of body starts it again
        elif state is h11.IDLE and data_arrived:
            if self._waiting_for != "head":
                self._arm("head")  # a deadline for the whole head, from its first byte
        else:  # idle between requests (uvicorn's keep-alive timer), or the application's turn: no read deadline
            self._disarm()

    def _arm(self, what: Literal["head", "body"]) -> None:
        self._disarm()
        seconds = self.limits.header_timeout_s if what == "head" else self.limits.body_timeout_s
        self._waiting_for = what
        self._read_timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._waiting_for = None

    def _timed_out(self) -> None:
        what, self._read_timer = self._waiting_for, None
        if self.transport.is_closing():
            return
        if what == "body" and self.flow.read_paused:  # we stopped reading (the application is behind), not the client
            self._arm("body")
            return
        if what == "head":
            seconds = self.limits.header_timeout_s
            logger.info("closed a connection: no complete request head within %g s", seconds)
            if self._head_bytes or self.conn.trailing_data[0]:  # a head had begun: say why
                message = f"the request head was not complete within {seconds:g} seconds"
                self._refuse(408, message, "request_header_timeout")
            else:  # nothing sent (an idle connection): close quietly, as uvicorn's keep-alive timeout does
                self._disarm()
                self.transport.close()
        else:
            logger.info("closed a connection: its request body stalled for %g s", self.limits.body_timeout_s)
            self.transport.close()  # the route's receive() sees a disconnect; no response can be sent mid-request

    def _refuse(self, status: int, message: str, code: str) -> None:
        self._disarm()
        self.transport.write(error_response(status, message, code))
        self.transport.close()


def limited_h11(limits: HttpLimits) -> type[LimitedH11Protocol]:
    """The protocol class to hand to ``uvicorn.Config(http=...)``, carrying these limits."""

    class ConfiguredH11Protocol(LimitedH11Protocol):
        pass

    ConfiguredH11Protocol.limits = limits
    return ConfiguredH11Protocol
