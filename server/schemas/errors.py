"""The error body: OpenAI's error object, plus the request id.

``server.api.errors`` (exception handlers), ``server.api.guard`` (refusals before routing) and ``server.api.sse`` (the
final event of a stream that failed) write this shape; this model only describes it, for the OpenAPI document.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong, for a human: names the field and the limit.")
    type: str = Field(
        description="OpenAI's error type: invalid_request_error, authentication_error, rate_limit_error or server_error."
    )
    param: str | None = Field(description="The request field at fault (e.g. messages[0].content), or null.")
    code: str | None = Field(description="A stable machine-readable code (e.g. context_length_exceeded), or null.")
    request_id: str | None = Field(None, description="The request's id (also in the X-Request-Id response header).")


class ErrorResponse(BaseModel):
    error: ErrorDetail
