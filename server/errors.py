"""The server's one error tree.

Every failure a user can act on has its own class; each class knows its HTTP status, its OpenAI error ``type`` and a stable
``code``. Services raise these; one set of handlers in ``server.api.errors`` turns them into the OpenAI error JSON
(``{"error": {"message", "type", "param", "code"}}``). Foreign exceptions (vLLM, httpx, Pillow, PyAV) are mapped at the
boundary that meets them, most specific first, with ``raise ... from exc``.

    ServerError                      500 server_error
    ├── InvalidRequestError          400 invalid_request_error
    │   ├── ContextLengthError       400   code=context_length_exceeded
    │   └── MediaError               400   code=media_error
    │       ├── MediaBlockedError    400     code=media_blocked          (scheme, host or address not allowed)
    │       ├── MediaFetchError      400     code=media_fetch_failed     (DNS, refused, TLS, HTTP error at origin)
    │       ├── MediaTimeoutError    400     code=media_timeout          (the fetch's total deadline passed)
    │       ├── MediaTooLargeError   400     code=media_too_large        (bytes, pixels, frames, duration)
    │       ├── MediaUnsupportedError 400    code=media_unsupported      (format not allowed, degenerate shape)
    │       └── MediaDecodeError     400     code=media_decode_failed    (corrupt or not media at all)
    ├── MethodNotAllowedError        405 invalid_request_error
    ├── NotFoundError                404 invalid_request_error
    │   └── ModelNotFoundError       404   code=model_not_found
    ├── ClientDisconnectedError      499 (never seen by the client: for metrics and logs)
    ├── OverloadedError              429 rate_limit_error code=overloaded (queue full or wait too long; Retry-After)
    ├── RequestTimeoutError          504 server_error  code=request_timeout (the request's deadline passed)
    ├── EngineError                  500 server_error  code=engine_error
    └── EngineUnavailableError       503 server_error  code=engine_unavailable (dead, shutting down, not ready)

Messages are written for the user: they name the field and the limit, and never contain tracebacks, internal addresses or
object reprs.
"""

from __future__ import annotations


class ServerError(Exception):
    """Base of every error the server reports to a client."""

    status_code: int = 500
    error_type: str = "server_error"
    default_code: str = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.code}}

    def headers(self) -> dict[str, str]:
        """HTTP headers the response must carry (e.g. Retry-After)."""
        return {}


class InvalidRequestError(ServerError):
    """The request is malformed or asks for something outside the server's limits."""

    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class ContextLengthError(InvalidRequestError):
    """Prompt (text and visual tokens) plus the requested completion does not fit the model's context."""

    default_code = "context_length_exceeded"


class MediaError(InvalidRequestError):
    """A media part (image or video) could not be used."""

    default_code = "media_error"


class MediaBlockedError(MediaError):
    """The URL's scheme, host or resolved address is not allowed (SSRF protection)."""

    default_code = "media_blocked"


class MediaFetchError(MediaError):
    """The media URL could not be fetched (unreachable, refused, an HTTP error at the origin, a time-out)."""

    default_code = "media_fetch_failed"


class MediaTimeoutError(MediaError):
    """Fetching the media took longer than the total deadline."""

    default_code = "media_timeout"


class MediaUnsupportedError(MediaError):
    """The media is of a format or shape the server does not accept."""

    default_code = "media_unsupported"


class MediaTooLargeError(MediaError):
    """The media exceeds a configured size limit (bytes, pixels, frames)."""

    default_code = "media_too_large"


class MediaDecodeError(MediaError):
    """The bytes are not a decodable image or video."""

    default_code = "media_decode_failed"


class MethodNotAllowedError(ServerError):
    status_code = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class NotFoundError(ServerError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class ResponseNotFoundError(NotFoundError):
    """A stored response that is not there for this caller: never stored, expired, deleted, or another key's."""

    default_code = "response_not_found"


class ClientDisconnectedError(ServerError):
    """The client went away; the work for it was cancelled."""

    status_code = 499
    error_type = "invalid_request_error"
    default_code = "client_closed_request"


class OverloadedError(ServerError):
    """Admission control refused the request before any work was done; retry after ``retry_after`` seconds."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "overloaded"

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RequestTimeoutError(ServerError):
    status_code = 504
    default_code = "request_timeout"


class EngineError(ServerError):
    """The engine failed while serving a valid request."""

    default_code = "engine_error"


class EngineUnavailableError(ServerError):
    """The engine is dead, starting or shutting down: the request can be retried elsewhere."""

    status_code = 503
    default_code = "engine_unavailable"


def describe_items(items: tuple[tuple[str, int], ...] | list[tuple[str, int]]) -> str:
    """``messages[0].content[1].image_url: 256 tokens, …`` for context-length messages."""
    return ", ".join(f"{param}: {tokens} tokens" for param, tokens in items) or "no media"
