"""Pure ASGI middleware in front of every route: request id, header limits, auth, drain, content type, body size.

Auth is decided on the raw ASGI path before any routing, by exact match against the open routes, so no Host header or
path spelling can reach a protected route without a key; keys are compared in constant time (``hmac.compare_digest``
against every configured key). The body limit is enforced while the body is read (a lying Content-Length or a chunked
body cannot get past it).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.context import REQUEST_ID_HEADER, accept_or_generate, request_id_var


@dataclass(frozen=True)
class GuardConfig:
    api_keys: tuple[str, ...] = ()
    open_paths: frozenset[str] = frozenset({"/health", "/ready", "/startup", "/metrics", "/version"})
    max_body_bytes: int = 64 * 1024 * 1024
    max_headers: int = 100
    # Paths that take a POST body (must be JSON). None: every path. A POST elsewhere goes on to routing and its 405.
    body_paths: frozenset[str] | None = None


class BodyTooLarge(HTTPException):
    """Raised while reading: an HTTPException, so FastAPI's body parsing passes it through untouched."""

    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


def _error(status: int, message: str, code: str, error_type: str, request_id: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code, "request_id": request_id}}
    return status, json.dumps(body).encode()


class GuardMiddleware:
    def __init__(self, app: ASGIApp, config: GuardConfig, is_draining: Callable[[], bool]) -> None:
        self.app = app
        self.config = config
        self._keys = tuple(k.encode() for k in config.api_keys)
        self._is_draining = is_draining

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        given = next((v.decode("latin-1") for k, v in headers if k == REQUEST_ID_HEADER.encode()), None)
        request_id = accept_or_generate(given)
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            refusal = self._refuse(scope, headers, request_id)
            if refusal is not None:
                await _respond(send_with_id, *refusal, extra=self._extra_headers(refusal[0]))
                return
            await self._call_with_body_limit(scope, receive, send_with_id, headers, request_id)
        finally:
            request_id_var.reset(token)

    def _extra_headers(self, status: int) -> list[tuple[bytes, bytes]]:
        return [(b"www-authenticate", b"Bearer")] if status == 401 else []

    def _refuse(self, scope: Scope, headers: list[tuple[bytes, bytes]], request_id: str) -> tuple[int, bytes] | None:
        path = scope.get("path", "")
        is_open = path in self.config.open_paths
        if len(headers) > self.config.max_headers:
            return _error(
                431,
                f"too many request headers; the limit is {self.config.max_headers}",
                "too_many_headers",
                "invalid_request_error",
                request_id,
            )
        if self._keys and not is_open and not self._authorized(headers):
            return _error(
                401,
                "a valid API key is required (Authorization: Bearer <key>)",
                "invalid_api_key",
                "authentication_error",
                request_id,
            )
        if self._is_draining() and not is_open:
            return _error(
                503, "the server is shutting down; retry on another replica", "draining", "server_error", request_id
            )
        takes_body = self.config.body_paths is None or path in self.config.body_paths
        if scope.get("method") == "POST" and takes_body:
            content_type = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
            if content_type != b"application/json":
                return _error(
                    415,
                    "the request body must be application/json",
                    "unsupported_media_type",
                    "invalid_request_error",
                    request_id,
                )
            declared = next((v for k, v in headers if k == b"content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
                return _too_large(self.config.max_body_bytes, request_id)
        return None

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, presented = value.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return False
        ok = False
        for key in self._keys:  # every key is compared, so timing says nothing about which matched
            ok |= hmac.compare_digest(presented.strip(), key)
        return ok

    async def _call_with_body_limit(
        self, scope: Scope, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]], request_id: str
    ) -> None:
        limit = self.config.max_body_bytes
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _respond(send, *_too_large(limit, request_id))


def _too_large(limit: int, request_id: str) -> tuple[int, bytes]:
    return _error(
        413,
        f"the request body is larger than the limit of {limit} bytes",
        "request_too_large",
        "invalid_request_error",
        request_id,
    )


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
