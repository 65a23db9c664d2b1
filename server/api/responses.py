"""``/v1/responses``: OpenAI's Responses API on the chat path (``server.service.responses``), and the stored responses
(``server.service.response_store``): ``GET`` and ``DELETE /v1/responses/{id}``, and ``previous_response_id``.

A stored response belongs to the API key that created it (its digest, the same scope as the media caches): another
key's ``GET``, ``DELETE`` or ``previous_response_id`` finds nothing, a 404 like an id that never existed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from server.api import sse
from server.api.body import ModelBodyRoute
from server.api.errors import validation_error
from server.api.respond import respond
from server.api.state import AppState, ChatDep, RunnerDep, StateDep
from server.errors import InvalidRequestError, ResponseNotFoundError
from server.media.cache import cache_scope
from server.schemas.chat import ChatCompletionRequest
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses
from server.schemas.responses import ResponseDeleted, ResponseObject, ResponsesRequest
from server.service.chat import ChatService
from server.service.response_store import BrokenChainError, HistoryTooLargeError, ResponseStore
from server.service.responses import ResponsesJob
from server.service.responses_input import chat_body, input_items, renamed

logger = logging.getLogger(__name__)

router = APIRouter(route_class=ModelBodyRoute)
_PREVIOUS = "previous_response_id"


def _shown(response_id: str) -> str:
    return response_id[:64] + ("..." if len(response_id) > 64 else "")


async def _history(store: ResponseStore | None, owner: str, previous: str) -> list[dict[str, Any]]:
    if store is None:
        raise InvalidRequestError(
            f"{_PREVIOUS}: responses are not stored on this server (--no-responses-store); pass the history in input",
            param=_PREVIOUS,
            code="unsupported_parameter",
        )
    try:
        history = await store.history(owner, previous)
    except HistoryTooLargeError as exc:
        raise InvalidRequestError(
            f"{_PREVIOUS}: the stored conversation is {exc.size} bytes, more than the {exc.limit} one request may "
            "carry; start a new conversation or pass a shorter history in input",
            param=_PREVIOUS,
            code="conversation_too_large",
        ) from exc
    except BrokenChainError as exc:
        raise ResponseNotFoundError(
            f"{_PREVIOUS}: an earlier response of this conversation ({_shown(exc.missing)}) is no longer stored",
            param=_PREVIOUS,
        ) from exc
    if history is None:
        raise ResponseNotFoundError(f"{_PREVIOUS}: no stored response {_shown(previous)!r}", param=_PREVIOUS)
    return history


def responses_job(
    body: ResponsesRequest, chat: ChatService, history: list[dict[str, Any]] | None = None, stored: bool = False
) -> ResponsesJob:
    """The request as a chat job; a refusal of the translated request names the Responses request's field."""
    translated = chat_body(body, history)
    try:
        request = ChatCompletionRequest.model_validate(translated.body)
        job = chat.job(request, max_tool_calls=body.max_tool_calls)
    except ValidationError as exc:
        error = validation_error(RequestValidationError(exc.errors()))
        raise renamed(error, translated.origins) from exc
    except InvalidRequestError as exc:
        raise renamed(exc, translated.origins) from exc
    return ResponsesJob(body, job, translated.origins, stored=stored)


class _Keeper:
    """Writes a finished response to the store once, before its last bytes leave (so a client's next turn, sent the
    moment it reads them, finds it). A store that fails costs the stored copy, not the answer: logged, not raised."""

    def __init__(self, store: ResponseStore | None, owner: str, body: ResponsesRequest, job: ResponsesJob) -> None:
        self.store, self.owner, self.body, self.job = store, owner, body, job
        self.done = store is None or not job.stored

    async def keep(self) -> None:
        if self.done or self.job.final is None or self.store is None:
            return
        self.done = True
        try:
            await self.store.put(self.owner, self.job.final, input_items(self.body), self.body.previous_response_id)
        except Exception:
            logger.exception("could not store response %s", self.job.id)

    async def batches(self, batches: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for batch in batches:
            await self.keep()  # the closing batch (response.completed) is ready: the final object is known
            yield batch


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
    owner, store = cache_scope.get(), state.responses_store
    history = None if body.previous_response_id is None else await _history(store, owner, body.previous_response_id)
    job = responses_job(body, chat, history, stored=body.store and store is not None)
    keeper = _Keeper(store, owner, body, job)

    def encode(batches: AsyncIterator[Any]) -> AsyncIterator[bytes]:
        return sse.encode_events(keeper.batches(batches), job.failed, on_error=state.metrics.count_error)

    answer = await respond(request, response, state, runner, body, job, encode)
    await keeper.keep()
    return answer


def _store(state: AppState) -> ResponseStore:
    if state.responses_store is None:
        raise ResponseNotFoundError("responses are not stored on this server (--no-responses-store)")
    return state.responses_store


@router.get(
    "/v1/responses/{response_id}", response_model=ResponseObject, responses=error_responses(400, 404, *GUARD_ERRORS)
)
async def get_response(response_id: str, state: StateDep, stream: bool = False) -> JSONResponse:
    """A stored response, as it was answered; only for the API key that created it."""
    if stream:
        raise InvalidRequestError("stream: a stored response is not replayed as events", param="stream")
    found = await _store(state).get(cache_scope.get(), response_id)
    if found is None:
        raise ResponseNotFoundError(f"no stored response {_shown(response_id)!r}")
    return JSONResponse(found)


@router.delete("/v1/responses/{response_id}", responses=error_responses(404, *GUARD_ERRORS))
async def delete_response(response_id: str, state: StateDep) -> ResponseDeleted:
    """Deletes a stored response; a conversation that continued it can no longer be continued past it."""
    if not await _store(state).delete(cache_scope.get(), response_id):
        raise ResponseNotFoundError(f"no stored response {_shown(response_id)!r}")
    return ResponseDeleted(id=response_id)
