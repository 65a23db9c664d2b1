"""``POST /v1/chat/completions`` and ``POST /v1/chat/completions/count_tokens``."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from server.api.body import ModelBodyRoute
from server.api.respond import request_timeout, respond, until_disconnected
from server.api.state import ChatDep, RunnerDep, StateDep
from server.errors import RequestTimeoutError
from server.schemas.chat import ChatCompletionRequest
from server.schemas.chat_response import ChatCompletion, ChatCompletionChunk
from server.schemas.common import TokenCount
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses, event_stream
from server.service.chat import count_tokens

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


@router.post(
    "/v1/chat/completions/count_tokens",
    response_model=TokenCount,
    responses=error_responses(400, 404, 504, *BODY_ERRORS, *GUARD_ERRORS),
)
async def count_chat_tokens(
    body: ChatCompletionRequest, request: Request, chat: ChatDep, state: StateDep
) -> TokenCount:
    """The prompt tokens (visual tokens included) the same chat body would report in ``usage.prompt_tokens``, without
    generating. Media are fetched and prepared as for a completion, into the same cache."""
    timeout = request_timeout(request, state.settings.request_timeout)
    try:
        return await until_disconnected(request, asyncio.wait_for(count_tokens(chat.job(body)), timeout))
    except TimeoutError as exc:
        raise RequestTimeoutError(f"the count did not finish within its deadline of {timeout:g} s") from exc
