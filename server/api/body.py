"""A JSON request body parsed once, by pydantic, straight into the route's model.

FastAPI parses a JSON body with the standard library (``json.loads``: a dict of Python objects, the whole megabyte of a
base64 image decoded as a string on the event loop), then validates that dict into the model: two passes, the slow one
on the loop. ``ModelBodyRoute`` gives the route a request whose ``json()`` is pydantic's ``model_validate_json`` on the
raw bytes (Rust, about 4x faster here on a 1 MB image request), on a thread when the body is large. FastAPI takes the
model instance as the body's value (pydantic does not validate an instance of the model again), so the route, its
OpenAPI document and its errors stay FastAPI's.

A body that does not validate takes FastAPI's own path (``json.loads``, then its validation), so every refusal is worded
and located exactly as before; only valid bodies are parsed the fast way.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

# Bodies above this are parsed on a thread (about 0.2 ms per MB with pydantic): the loop keeps serving streams and
# probes while a large body is parsed; below it, a thread hand-off would cost more than the parse.
PARSE_IN_THREAD_ABOVE = 1024 * 1024


def parse_body(model: type[BaseModel], body: bytes) -> Any:
    """The validated model, or, for a body that is not a valid one, the plain JSON value for FastAPI to report on (a
    body that is not JSON at all raises ``json.JSONDecodeError`` there, as FastAPI's own parsing does)."""
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return json.loads(body)


class _ModelBodyRequest(Request):
    def __init__(self, scope: Scope, receive: Receive, send: Send, model: type[BaseModel]) -> None:
        super().__init__(scope, receive, send)
        self._model = model

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            if len(body) > PARSE_IN_THREAD_ABOVE:
                self._json = await asyncio.to_thread(parse_body, self._model, body)
            else:
                self._json = parse_body(self._model, body)
        return self._json


class ModelBodyRoute(APIRoute):
    """A route whose one JSON body parameter (a pydantic model) is parsed once, from the raw bytes."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        annotation = getattr(getattr(self.body_field, "field_info", None), "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return handler
        model: type[BaseModel] = annotation

        async def parse_once(request: Request) -> Response:
            return await handler(_ModelBodyRequest(request.scope, request.receive, request._send, model))

        return parse_once
