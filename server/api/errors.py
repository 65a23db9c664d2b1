"""Exception handlers: every error leaves as the OpenAI error JSON, never as a traceback."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.api.context import current_request_id
from server.errors import InvalidRequestError, MethodNotAllowedError, NotFoundError, ServerError

logger = logging.getLogger(__name__)


def error_response(error: ServerError, request: Request | None = None) -> JSONResponse:
    if request is not None:
        request.app.state.qwen3vl.metrics.count_error(error)
        request.state.error_code = error.code
    return JSONResponse(error_body(error), status_code=error.status_code, headers=error.headers())


def error_body(error: ServerError) -> dict[str, dict[str, str | None]]:
    """The OpenAI error object, plus the request id (clients quote it in bug reports; we find it in our logs)."""
    body = error.to_dict()
    body["error"]["request_id"] = current_request_id()
    return body


# Union members and discriminator tags pydantic puts into error locations; they name no field of the request. The tags
# are those of the discriminated unions in a list (message roles, content part types): the tag follows the item's index.
_BRANCH_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "constrained-str"})
_UNION_TAGS = frozenset(
    {"system", "developer", "user", "assistant", "tool", "text", "image_url", "video_url", "image", "video"}
)

_FORMAT_TAGS = frozenset({"text", "json_object", "json_schema"})


def _clean_loc(loc: tuple[int | str, ...]) -> list[int | str]:
    cleaned: list[int | str] = []
    tag_dropped = False
    for i, item in enumerate(loc):
        if item == "body" and i == 0:
            continue
        if isinstance(item, str) and (item in _BRANCH_NAMES or "[" in item or "(" in item):
            continue
        after_index = bool(cleaned) and isinstance(cleaned[-1], int)
        if isinstance(item, str) and item in _UNION_TAGS and after_index and not tag_dropped:
            tag_dropped = True  # the discriminator's tag, e.g. messages[0].<user>.content[0].<image_url>.image_url
            continue
        if item in _FORMAT_TAGS and loc[i - 1] == "response_format":
            continue  # response_format.<json_schema>.json_schema.schema: the union's tag, not a field
        tag_dropped = False
        cleaned.append(item)
    return cleaned


def _loc_to_param(loc: list[int | str]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{item}")
        else:
            parts.append(str(item))
    return "".join(parts)


def _join(prefix: str | None, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    errors = list(exc.errors())
    if not errors:
        return InvalidRequestError("the request body is not valid")
    if any(e.get("type") == "json_invalid" for e in errors):
        return InvalidRequestError("the request body is not valid JSON", code="invalid_json")
    # With unions (content: str | list[part]) every branch reports; the deepest location is the one that names the field.
    first = max(errors, key=lambda e: len(_clean_loc(tuple(e.get("loc", ())))))
    param = _loc_to_param(_clean_loc(tuple(first.get("loc", ())))) or None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    context = first.get("ctx") or {}
    if "param" in context:  # a whole-request check that names the field it is about
        param = _join(param, str(context["param"]))
    if param is None:
        return InvalidRequestError(f"the request body is not valid: {message}")
    return InvalidRequestError(f"{param}: {message}", param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.warning("request failed: %s (%s)", exc.code, exc.message)
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFoundError(f"no route for {request.method} {request.url.path}"), request)
        if exc.status_code == 405:  # Starlette's exception carries the Allow header, which a 405 must send
            response = error_response(
                MethodNotAllowedError(f"method {request.method} is not allowed on {request.url.path}")
            )
            # Starlette names only the first route on the path; a path with a GET and a DELETE route allows both.
            path = request.scope["path"]
            methods = {
                m for r in request.app.routes if isinstance(r, APIRoute) and r.path_regex.match(path) for m in r.methods
            }
            response.headers.update(exc.headers or {})
            if methods:
                response.headers["Allow"] = ", ".join(sorted(methods))
            return response
        body = {
            "error": {
                "message": str(exc.detail),
                "type": "invalid_request_error",
                "param": None,
                "code": getattr(exc, "code", None),
                "request_id": current_request_id(),
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(ServerError("the server hit an unexpected error"), request)
