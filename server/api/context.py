"""The request id: accepted from ``X-Request-Id`` when well-formed, generated otherwise; logged and returned."""

from __future__ import annotations

import contextvars
import re
import uuid

REQUEST_ID_HEADER = "x-request-id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def accept_or_generate(value: str | None) -> str:
    if value is not None and _VALID.match(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return request_id_var.get()
