"""``POST /v1/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from server.api.body import ModelBodyRoute
from server.api.respond import respond
from server.api.state import ChatDep, RunnerDep, StateDep
from server.schemas.chat import ChatCompletionRequest
from server.schemas.chat_response import ChatCompletion, ChatCompletionChunk
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses, event_stream

router = APIRouter(route_class=ModelBodyRoute)  # the body parsed once, from its bytes


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
    body: ChatCompletionRequest,
    request: Request,
    response: Response,
    chat: ChatDep,
    runner: RunnerDep,
    state: StateDep,
) -> ChatCompletion | StreamingResponse:
    return await respond(request, response, state, runner, body, chat.job(body))
