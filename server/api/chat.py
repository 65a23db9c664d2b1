"""``POST /v1/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from server.api.generation import begin, event_stream_response, until_disconnected
from server.api.state import ChatDep, StateDep
from server.schemas.chat import ChatCompletionRequest
from server.schemas.chat_response import ChatCompletion, ChatCompletionChunk
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses, event_stream

router = APIRouter()


@router.post(
    "/v1/chat/completions",
    response_model=None,
    responses={
        200: {
            "model": ChatCompletion,
            "description": "The completion; with stream=true, server-sent events of chunks, then [DONE].",
            "content": event_stream(ChatCompletionChunk),
        },
        **error_responses(400, 404, 429, 504, *BODY_ERRORS, *GUARD_ERRORS),
    },
)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, response: Response, chat: ChatDep, state: StateDep
) -> ChatCompletion | StreamingResponse:
    timeout, timings = begin(request, state, body.ignored_fields)
    if not body.stream:
        completion = await until_disconnected(request, chat.complete(body, timeout, timings))
        response.headers["Server-Timing"] = timings.server_timing()
        return completion
    stream = await until_disconnected(request, chat.open_stream(body, timeout, timings))
    return event_stream_response(stream, state, timings)
