"""``POST /v1/responses``: OpenAI's Responses API on the chat path (``server.service.responses``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from server.api import sse
from server.api.body import ModelBodyRoute
from server.api.errors import validation_error
from server.api.respond import respond
from server.api.state import ChatDep, RunnerDep, StateDep
from server.errors import InvalidRequestError
from server.schemas.chat import ChatCompletionRequest
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses
from server.schemas.responses import ResponseObject, ResponsesRequest
from server.service.chat import ChatService
from server.service.responses import ResponsesJob
from server.service.responses_input import chat_body, renamed

router = APIRouter(route_class=ModelBodyRoute)


def responses_job(body: ResponsesRequest, chat: ChatService) -> ResponsesJob:
    """The request as a chat job; a refusal of the translated request names the Responses request's field."""
    translated = chat_body(body)
    try:
        request = ChatCompletionRequest.model_validate(translated.body)
        job = chat.job(request, max_tool_calls=body.max_tool_calls)
    except ValidationError as exc:
        error = validation_error(RequestValidationError(exc.errors()))
        raise renamed(error, translated.origins) from exc
    except InvalidRequestError as exc:
        raise renamed(exc, translated.origins) from exc
    return ResponsesJob(body, job, translated.origins)


@router.post(
    "/v1/responses",
    response_model=None,
    responses={
        200: {
            "model": ResponseObject,
            "description": "The response; with stream=true, server-sent events (response.created ... response.completed).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **error_responses(400, 404, 429, 504, *BODY_ERRORS, *GUARD_ERRORS),
    },
)
async def create_response(
    body: ResponsesRequest,
    request: Request,
    response: Response,
    chat: ChatDep,
    runner: RunnerDep,
    state: StateDep,
) -> ResponseObject | StreamingResponse:
    job = responses_job(body, chat)

    def encode(batches: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        return sse.encode_events(batches, job.failed, on_error=state.metrics.count_error)

    return await respond(request, response, state, runner, body, job, encode)
