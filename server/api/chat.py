"""``POST /v1/chat/completions``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from server.api import sse
from server.api.state import ChatDep, StateDep
from server.schemas.chat import ChatCompletion, ChatCompletionRequest

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, chat: ChatDep, state: StateDep
) -> ChatCompletion | StreamingResponse:
    if not body.stream:
        return await chat.complete(body)
    chunks = await chat.open_stream(body)
    return StreamingResponse(
        sse.encode(chunks, on_error=state.metrics.count_error),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
