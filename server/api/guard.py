"""Pure ASGI middleware in front of every route: request id, header limits, auth, drain, content type, body size.

Auth is decided on the raw ASGI path before any routing, by exact match against the open routes, so no Host header or
path spelling can reach a protected route without a key; keys are compared in constant time (``hmac.compare_digest``
against every configured key). The body limit is enforced while the body is read (a lying Content-Length or a chunked
body cannot get past it), and so is a limit on the body's JSON separators (commas, braces, brackets, counted on the raw
bytes as they arrive): FastAPI parses JSON on the event loop before any field is checked, and 64 MB of tiny parts took
2.4 s to parse here, so such a body is refused while it is read, unparsed. The header-size limit is also the HTTP
protocol's (``server.api.http_protocol``); here it holds under any server. The guard also sets the chat schema's
shape limits (``server.schemas.chat.shape_limits``) for the request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.api.context import REQUEST_ID_HEADER, accept_or_generate, request_id_var
from server.media.cache import cache_scope
from server.schemas.chat import DEFAULT_SHAPE, ShapeLimits, shape_limits


@dataclass(frozen=True)
class GuardConfig:
    api_keys: tuple[str, ...] = ()
    open_paths: frozenset[str] = frozenset({"/health", "/ready", "/startup"})
    # Read-only operator routes that keep answering (with a key, when keys are set) while the server drains, so
    # Prometheus still sees the drain it is meant to watch.
    drain_paths: frozenset[str] = frozenset({"/metrics", "/version"})
    max_body_bytes: int = 64 * 1024 * 1024
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024  # request line and headers
    max_body_json_items: int = 1 << 18  # commas, braces and brackets in a body
    shape: ShapeLimits = DEFAULT_SHAPE  # messages and content parts per chat request
    # Paths that take a POST body (must be JSON). None: every path. A POST elsewhere goes on to routing and its 405.
    body_paths: frozenset[str] | None = None
    # Upload paths (multipart/form-data, e.g. /v1/files) and their own body limit; no JSON separator count there.
    upload_paths: Mapping[str, int] = field(default_factory=dict)


class BodyTooLarge(HTTPException):
    """Raised while reading: an HTTPException, so FastAPI's body parsing passes it through untouched."""

    code = "request_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the limit of {limit} bytes")


class BodyTooComplex(HTTPException):
    """Raised while reading, like ``BodyTooLarge``: more JSON separators than the limit, refused before any parsing."""

    code = "too_many_json_items"

    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"the request body holds more than {limit} JSON items (commas, braces and brackets, inside strings too); "
            "send fewer parts or shorter lists",
        )


def _error(status: int, message: str, code: str, error_type: str, request_id: str) -> tuple[int, bytes]:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code, "request_id": request_id}}
    return status, json.dumps(body).encode()


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        config: GuardConfig,
        is_draining: Callable[[], bool],
        engine_failed: Callable[[], bool] = lambda: False,
    ) -> None:
        self.app = app
        self.config = config
        self._keys = tuple(k.encode() for k in config.api_keys)
        self._is_draining = is_draining
        self._engine_failed = engine_failed  # condemned by the watchdog: the process is about to exit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        given = next((v.decode("latin-1") for k, v in headers if k == REQUEST_ID_HEADER.encode()), None)
        request_id = accept_or_generate(given)
        token = request_id_var.set(request_id)
        shape_token = shape_limits.set(self.config.shape)
        scope.setdefault("state", {})["request_id"] = request_id

        try:
            refusal = self._refuse(scope, headers, request_id)
            if refusal is not None:
                extra = [*self._extra_headers(refusal[0]), (b"x-request-id", request_id.encode())]
                await _respond(send, *refusal, extra=extra)
                return
            # Media caches are per API key: one tenant can neither hit nor time another's entries (README: Security).
            cache_scope.set(self._scope(headers) if self._keys else "")
            await self._call_with_body_limit(scope, receive, send, headers, request_id)
        finally:
            shape_limits.reset(shape_token)
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
        if _head_bytes(scope, headers) > self.config.max_header_bytes:
            return _error(
                431,
                f"the request head (request line and headers) is larger than the limit of "
                f"{self.config.max_header_bytes} bytes",
                "request_header_fields_too_large",
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
        if not is_open and path not in self.config.drain_paths:
            if self._engine_failed():
                message = "the inference engine has stopped; retry on another replica"
                return _error(503, message, "engine_unavailable", "server_error", request_id)
            if self._is_draining():
                message = "the server is shutting down; retry on another replica"
                return _error(503, message, "draining", "server_error", request_id)
        takes_body = self.config.body_paths is None or path in self.config.body_paths
        if scope.get("method") == "POST" and takes_body:
            upload = path in self.config.upload_paths
            wanted = b"multipart/form-data" if upload else b"application/json"
            content_type = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
            if content_type != wanted:
                return _error(
                    415,
                    f"the request body must be {wanted.decode()}",
                    "unsupported_media_type",
                    "invalid_request_error",
                    request_id,
                )
            limit = self._body_limit(path)
            declared = next((v for k, v in headers if k == b"content-length"), None)
            if declared is not None and declared.isdigit() and int(declared) > limit:
                return _too_large(limit, request_id)
        return None

    @staticmethod
    def _scope(headers: list[tuple[bytes, bytes]]) -> str:
        """The caller's cache scope: a digest of its (already accepted) key, never the key itself."""
        value = next((v for k, v in headers if k == b"authorization"), b"")
        return hashlib.sha256(value.partition(b" ")[2].strip()).hexdigest()[:16]

    def _authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, presented = value.partition(b" ")
        if scheme.lower() != b"bearer" or not presented:
            return False
        ok = False
        for key in self._keys:  # every key is compared, so timing says nothing about which matched
            ok |= hmac.compare_digest(presented.strip(), key)
        return ok

    def _body_limit(self, path: str) -> int:
        return self.config.upload_paths.get(path, self.config.max_body_bytes)

    async def _call_with_body_limit(
        self, scope: Scope, receive: Receive, send: Send, headers: list[tuple[bytes, bytes]], request_id: str
    ) -> None:
        path = scope.get("path", "")
        limit = self._body_limit(path)
        counted = path not in self.config.upload_paths  # an upload's JSON is checked line by line, not here
        item_limit = self.config.max_body_json_items
        seen = items = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen, items
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > limit:
                    raise BodyTooLarge(limit)
                if counted:
                    items += chunk.count(b",") + chunk.count(b"{") + chunk.count(b"[")  # C speed: ~1 ms per MB
                if items > item_limit:
                    raise BodyTooComplex(item_limit)
            return message

        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            """The one wrapper every message passes (each SSE chunk too): the start gets the request id; body
            messages go straight on."""
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []), id_header]}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_id)
        except BodyTooLarge:
            if not started:
                await _respond(send_with_id, *_too_large(limit, request_id))
        except BodyTooComplex as exc:
            if not started:
                await _respond(send_with_id, *_error(413, exc.detail, exc.code, "invalid_request_error", request_id))


def _head_bytes(scope: Scope, headers: list[tuple[bytes, bytes]]) -> int:
    """The request head's size as sent: request line and ``name: value`` lines."""
    line = len(scope.get("method", "")) + len(scope.get("raw_path", b"")) + len(scope.get("query_string", b"")) + 12
    return line + sum(len(name) + len(value) + 4 for name, value in headers)


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
