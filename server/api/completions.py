"""``POST /v1/completions``: raw text prompts (no chat template, no media)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from server.api.body import ModelBodyRoute
from server.api.respond import respond
from server.api.state import CompletionsDep, RunnerDep, StateDep
from server.schemas.completions import Completion, CompletionChunk, CompletionRequest
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses, event_stream

router = APIRouter(route_class=ModelBodyRoute)  # the body parsed once, from its bytes


@router.post(
    "/v1/completions",
    response_model=None,
    responses={
        200: {
            "model": Completion,
            "description": "The completion; with stream=true, server-sent events of chunks, then [DONE].",
            "content": event_stream(CompletionChunk),
        },
        **error_responses(400, 404, 429, 504, *BODY_ERRORS, *GUARD_ERRORS),
    },
)
async def completions(
    body: CompletionRequest,
    request: Request,
    response: Response,
    service: CompletionsDep,
    runner: RunnerDep,
    state: StateDep,
) -> Completion | StreamingResponse:
    return await respond(request, response, state, runner, body, service.job(body))
