"""The lines of a batch input file: checked on upload exactly as their endpoint checks a request (before any work:
no media fetched), and run, one by one, on the same path as a live request at the batch priority.

A line is ``{"custom_id": ..., "method": "POST", "url": "/v1/chat/completions" | "/v1/responses", "body": {...}}``.
Refusals name the line (1-based, as an editor shows it) and, where there is one, the field.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from server.api.errors import validation_error
from server.api.responses import responses_job
from server.engine.base import EngineRequest
from server.errors import EngineUnavailableError, InvalidRequestError, OverloadedError, ServerError
from server.media.cache import cache_scope
from server.schemas.batches import BATCH_ENDPOINTS
from server.schemas.chat import ChatCompletionRequest
from server.schemas.responses import ResponsesRequest
from server.service.batch_store import Claimed
from server.service.batches import LineOutcome
from server.service.chat import ChatService
from server.service.jobs import Job
from server.service.runner import GenerationRunner
from server.service.timing import Timings

logger = logging.getLogger(__name__)

BATCH_PRIORITY = 10  # vLLM's priority scheduling runs lower values first; live requests are 0
MAX_LISTED_ERRORS = 20
MAX_CUSTOM_ID = 512


@dataclass(frozen=True)
class BatchLine:
    custom_id: str
    url: str
    body: dict[str, Any]


def _job(url: str, body: dict[str, Any], chat: ChatService) -> Job[Any, BaseModel]:
    """The line's request as its endpoint's job: validated and limit-checked, nothing fetched yet."""
    if body.get("stream"):
        raise InvalidRequestError("body.stream: a batch request is answered whole, not streamed", param="body.stream")
    if url == "/v1/responses":
        if body.get("previous_response_id") is not None:
            raise InvalidRequestError(
                "body.previous_response_id: not accepted in a batch; pass the history in input",
                param="body.previous_response_id",
            )
        req = ResponsesRequest.model_validate({**body, "store": False})
        return responses_job(req, chat)
    return chat.job(ChatCompletionRequest.model_validate(body))


def _checked(raw: bytes, url_seen: set[str], ids: set[str], chat: ChatService) -> BatchLine:
    try:
        line = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested past the parser's depth
        raise InvalidRequestError("not a JSON object") from exc
    if not isinstance(line, dict):
        raise InvalidRequestError("not a JSON object")
    custom_id, method, url, body = line.get("custom_id"), line.get("method"), line.get("url"), line.get("body")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
        raise InvalidRequestError(f"custom_id: must be a string of 1 to {MAX_CUSTOM_ID} characters", param="custom_id")
    if custom_id in ids:
        raise InvalidRequestError(f"custom_id: {custom_id[:64]!r} is used by an earlier line", param="custom_id")
    if method != "POST":
        raise InvalidRequestError("method: must be POST", param="method")
    if url not in BATCH_ENDPOINTS:
        raise InvalidRequestError(f"url: must be one of {', '.join(BATCH_ENDPOINTS)}", param="url")
    if not isinstance(body, dict):
        raise InvalidRequestError("body: must be a JSON object", param="body")
    try:
        _job(url, body, chat)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from exc
    ids.add(custom_id)
    url_seen.add(url)
    return BatchLine(custom_id, url, body)


def parse_batch_file(content: bytes, chat: ChatService, max_lines: int) -> list[BatchLine]:
    """Every line checked; one 400 listing the first refusals (line number, field, reason) if any line is refused."""
    lines: list[BatchLine] = []
    errors: list[str] = []
    refused = 0
    ids: set[str] = set()
    urls: set[str] = set()
    numbered = [(n, raw) for n, raw in enumerate(content.split(b"\n"), 1) if raw.strip()]
    if not numbered:
        raise InvalidRequestError("file: the batch file has no lines", param="file", code="invalid_batch_file")
    if len(numbered) > max_lines:
        raise InvalidRequestError(
            f"file: {len(numbered)} lines, more than the limit of {max_lines}", param="file", code="invalid_batch_file"
        )
    for number, raw in numbered:
        try:
            lines.append(_checked(raw, urls, ids, chat))
        except ServerError as exc:
            refused += 1
            if len(errors) < MAX_LISTED_ERRORS:
                errors.append(f"line {number}: {exc.message}")
    if refused:
        more = f" (and {refused - len(errors)} more)" if refused > len(errors) else ""
        message = f"file: {refused} of {len(numbered)} lines are invalid: " + "; ".join(errors) + more
        raise InvalidRequestError(message, param="file", code="invalid_batch_file")
    return lines


def stored_lines(content: bytes) -> list[BatchLine]:
    """The lines of a file that was checked on upload (``parse_batch_file``): read back, not checked again. A line
    that no longer fits the server (another model or limits since the upload) fails when it runs, in the error file."""
    lines = [json.loads(raw) for raw in content.split(b"\n") if raw.strip()]
    return [BatchLine(line["custom_id"], line["url"], line["body"]) for line in lines]


class _Prioritized:
    """A job whose engine request runs at the batch priority; everything else is the job's own."""

    def __init__(self, job: Job[Any, BaseModel], priority: int) -> None:
        self._job, self._priority = job, priority

    @property
    def cost(self) -> int:
        return self._job.cost

    async def prepare(self) -> EngineRequest:
        return replace(await self._job.prepare(), priority=self._priority)

    def opening(self, choices: Sequence[Any]) -> Any:
        return self._job.opening(choices)

    def chunk(self, pieces: Sequence[Any]) -> Any:
        return self._job.chunk(pieces)

    def closing(self, usage: Any) -> Any:
        return self._job.closing(usage)

    def answer(self, choices: Sequence[Any], usage: Any) -> BaseModel:
        return self._job.answer(choices, usage)


def line_runner(
    chat: ChatService, runner: GenerationRunner, timeout_s: float | None
) -> Callable[[Claimed], Awaitable[LineOutcome]]:
    async def run(line: Claimed) -> LineOutcome:
        request_id = uuid.uuid4().hex
        token = cache_scope.set(line.owner)  # the owner's media cache scope, as its live requests have
        try:
            job = _Prioritized(_job(line.endpoint, line.body, chat), BATCH_PRIORITY)
            answer = await runner.collect(job, timeout_s, Timings())
            return LineOutcome(200, answer.model_dump(mode="json"), request_id)
        except (OverloadedError, EngineUnavailableError):
            return LineOutcome(503, {}, request_id, retry=True)  # not the line's fault: it runs again later
        except ValidationError as exc:
            error = validation_error(RequestValidationError(exc.errors()))
            return LineOutcome(error.status_code, error.to_dict(), request_id)
        except ServerError as exc:
            return LineOutcome(exc.status_code, exc.to_dict(), request_id)
        except Exception:
            logger.exception("batch line %s of %s failed", line.idx, line.batch)
            return LineOutcome(500, ServerError("the server hit an unexpected error").to_dict(), request_id)
        finally:
            cache_scope.reset(token)

    return run
