"""What the OpenAPI document says each route answers: the ``responses=`` of the route decorators, and a final pass over
the generated document (:func:`finish`).

The document describes the server as it really behaves (``tests/api/test_schemathesis.py`` holds it to that): every
error leaves as :class:`ErrorResponse` with one of the statuses below, a validation failure is a 400 (never FastAPI's
default 422), and a streamed chat completion is ``text/event-stream`` whose events carry JSON chunks, then ``[DONE]``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from server.schemas.errors import ErrorResponse

COMPONENTS = "#/components/schemas/"

_ERRORS: dict[int, str] = {
    400: "The request is invalid: malformed JSON, a field out of range, unusable media, or a prompt (with its visual "
    "tokens) and completion that do not fit the context.",
    401: "A valid API key is required (only when the server has API keys and the route is not one of its open paths).",
    404: "The model, or the stored response (one of this API key's), does not exist.",
    413: "The request body is larger than the server's limit.",
    415: "The request body is not application/json.",
    429: "Admission control refused the request before any work (queue full, or waited too long); retry after "
    "Retry-After seconds.",
    431: "Too many request headers.",
    500: "The server or the engine failed.",
    503: "The engine is unavailable (loading, stopped) or the server is draining; retry shortly or on another replica.",
    504: "The request's deadline (the server's, or a shorter X-Request-Timeout) passed.",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}

# Spelled out rather than with FastAPI's "model" key, which would put the error under the route's own media type
# (text/plain for /metrics); error bodies are always JSON. finish() puts ErrorResponse into the components.
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": COMPONENTS + ErrorResponse.__name__}}}
ERROR_RESPONSES: dict[int, dict[str, Any]] = {
    status: {"description": text, "content": _ERROR_CONTENT, **({"headers": _RETRY_AFTER} if status == 429 else {})}
    for status, text in _ERRORS.items()
}

# What any route may answer: the guard refuses before routing (auth, header count, draining) and any route can fail.
GUARD_ERRORS = (401, 431, 500, 503)
# A POST body is also checked for its content type and size before it is parsed.
BODY_ERRORS = (413, 415)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of the given error statuses."""
    return {status: copy.deepcopy(ERROR_RESPONSES[status]) for status in sorted(statuses)}


class ProbeStatus(BaseModel):
    """The body of ``/health``, ``/startup`` and ``/ready``: the status code is the answer; this says why."""

    status: Literal["ok", "starting", "loading", "started", "ready", "saturated", "draining", "dead", "failed"]
    reason: str | None = Field(None, description="With status failed: the error the engine failed to start with.")


class VersionInfo(BaseModel):
    version: str | None = Field(description="This server's version.")
    vllm: str | None = Field(description="The vLLM version, when vLLM is installed.")
    transformers: str | None
    model: str | None = Field(description="The served model's id, once the engine is up.")
    demo_model: bool | None = Field(description="Whether the model is the embedded tiny random-weight demo model.")


def probe_responses() -> dict[int | str, dict[str, Any]]:
    unavailable = {
        "model": ProbeStatus | ErrorResponse,
        "description": "Not alive / not ready (see status); an error body when the server is draining and the route "
        "is not an open path.",
    }
    return {503: unavailable, **error_responses(401, 431, 500)}


def event_stream(event: type[BaseModel]) -> dict[str, Any]:
    """A ``text/event-stream`` content entry: each event's ``data`` is ``event`` as JSON, or an error body (a failure
    after the first byte), and the last event is ``[DONE]``. ``itemSchema`` describes one event, as FastAPI's own SSE
    routes do (Open API 3.2's keyword). :func:`finish` puts ``event`` into the components."""
    payload = {"anyOf": [{"$ref": COMPONENTS + event.__name__}, {"$ref": COMPONENTS + ErrorResponse.__name__}]}
    data = {
        "type": "string",
        "if": {"const": "[DONE]"},
        "else": {"contentMediaType": "application/json", "contentSchema": payload},
        "description": f"A {event.__name__} as JSON; an error body as JSON if the stream failed; finally [DONE].",
    }
    item = {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": data,
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer", "minimum": 0},
        },
    }
    return {"text/event-stream": {"itemSchema": item}}


def finish(document: dict[str, Any], extra_models: Iterable[type[BaseModel]] = ()) -> dict[str, Any]:
    """The last pass over FastAPI's document: add the models that only ``responses=`` entries name (the error body, event
    payloads), and remove FastAPI's default 422 (validation errors are 400s here) with its then unused schemas."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    models: list[type[BaseModel]] = [ErrorResponse, *extra_models]
    _, extra = models_json_schema([(model, "serialization") for model in models], ref_template=COMPONENTS + "{model}")
    for name, schema in extra.get("$defs", {}).items():
        present = schemas.setdefault(name, schema)  # a model the JSON responses share stays as FastAPI wrote it
        if _without_defaults(present) != _without_defaults(schema):
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document")
    for path in document.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if _is_default_422(responses.get("422")):
                del responses["422"]
    for name in ("HTTPValidationError", "ValidationError"):
        if name in schemas and COMPONENTS + name not in set(_refs(document)):
            del schemas[name]
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def _is_default_422(response: Any) -> bool:
    schema = (response or {}).get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref") == COMPONENTS + "HTTPValidationError")


def _without_defaults(node: Any) -> Any:
    """A schema without its ``default`` values (FastAPI leaves some out of response schemas; pydantic writes them)."""
    if isinstance(node, dict):
        return {key: _without_defaults(value) for key, value in node.items() if key != "default"}
    if isinstance(node, list):
        return [_without_defaults(item) for item in node]
    return node


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)
