"""``/v1/batches``: OpenAI's Batch API on this server's engine, beside live traffic.

A batch is created from an uploaded input file (its lines were checked on upload; their ``url`` must be the batch's
``endpoint``). Its lines run through the same admission, media pipeline and generation path as live requests, at a
lower engine priority and at most ``--batch-max-running`` at once (``server.service.batches``); ``request_counts``
move as they finish, and the output and error files appear when the last one has. Batches belong to the API key that
created them (another key gets a 404).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from fastapi import APIRouter

from server.api.batch_lines import line_runner, stored_lines
from server.api.files import batch_store
from server.api.state import AppState, StateDep
from server.errors import InvalidRequestError, NotFoundError
from server.media.cache import cache_scope
from server.schemas.batches import BatchCreate, BatchObject, ListPage, RequestCounts
from server.schemas.openapi import BODY_ERRORS, GUARD_ERRORS, error_responses
from server.service.batch_store import BatchStore, BatchStoreConfig, Claimed, new_id
from server.service.batches import BatchWorker, LineOutcome

router = APIRouter()
BATCHES = "/v1/batches"
WINDOW_S = 24 * 3600


def _missing(batch_id: str) -> NotFoundError:
    return NotFoundError(f"no batch {batch_id[:64]!r}", param="batch_id", code="batch_not_found")


@router.post(BATCHES, response_model=BatchObject, responses=error_responses(400, 404, *BODY_ERRORS, *GUARD_ERRORS))
async def create_batch(body: BatchCreate, state: StateDep) -> BatchObject:
    store, owner = batch_store(state), cache_scope.get()
    found = await store.get_file(owner, body.input_file_id)
    content = None if found is None else await store.file_content(owner, body.input_file_id)
    if found is None or content is None:
        raise NotFoundError(
            f"input_file_id: no file {body.input_file_id[:64]!r}", param="input_file_id", code="file_not_found"
        )
    if found.purpose != "batch":  # a batch's output or error file: not lines to run
        raise InvalidRequestError(
            f"input_file_id: a file of purpose {found.purpose!r}; upload the lines with purpose 'batch'",
            param="input_file_id",
        )
    lines = await asyncio.to_thread(stored_lines, content)  # checked on upload: only read back here
    wrong = [n for n, line in enumerate(lines, 1) if line.url != body.endpoint]
    if wrong:
        raise InvalidRequestError(
            f"input_file_id: {len(wrong)} lines (the first: request {wrong[0]}) are for another endpoint than "
            f"{body.endpoint}",
            param="input_file_id",
        )
    now = int(time.time())
    batch = BatchObject(
        id=new_id("batch"),
        endpoint=body.endpoint,
        input_file_id=body.input_file_id,
        status="in_progress",
        created_at=now,
        in_progress_at=now,
        expires_at=now + WINDOW_S,
        metadata=body.metadata,
    )
    created = await store.create_batch(owner, batch, [(line.custom_id, line.body) for line in lines])
    if state.batch_worker is not None:
        state.batch_worker.wake()
    return created.model_copy(update={"request_counts": RequestCounts(total=len(lines))})


@router.get(BATCHES, response_model=ListPage, responses=error_responses(400, *GUARD_ERRORS))
async def list_batches(state: StateDep, after: str | None = None, limit: int = 20) -> ListPage:
    limit = max(1, min(limit, 100))
    found = await batch_store(state).list_batches(cache_scope.get(), after, limit + 1)
    return ListPage.of(found, limit)


@router.get(BATCHES + "/{batch_id}", response_model=BatchObject, responses=error_responses(404, *GUARD_ERRORS))
async def get_batch(batch_id: str, state: StateDep) -> BatchObject:
    found = await batch_store(state).get_batch(cache_scope.get(), batch_id)
    if found is None:
        raise _missing(batch_id)
    return found


@router.post(BATCHES + "/{batch_id}/cancel", response_model=BatchObject, responses=error_responses(404, *GUARD_ERRORS))
async def cancel_batch(batch_id: str, state: StateDep) -> BatchObject:
    """Pending lines never run; running ones finish; then the batch is ``cancelled`` with what was answered."""
    found = await batch_store(state).cancel(cache_scope.get(), batch_id)
    if found is None:
        raise _missing(batch_id)
    if state.batch_worker is not None:
        state.batch_worker.wake()
    return found


async def start_batches(state: AppState) -> asyncio.Task[None] | None:
    """Open the batch store and start this process's worker (idle until the engine is ready, paused while draining);
    None with ``--no-batches``. A store that cannot open fails the start, naming the flag."""
    settings = state.settings
    if not settings.batches:
        return None
    url = settings.batch_database_url.get_secret_value() if settings.batch_database_url else None
    config = BatchStoreConfig(
        path=settings.batch_store_file,
        database_url=url,
        lease_s=settings.batch_lease,
        retention_s=settings.batch_retention_hours * 3600,
        max_owner_bytes=settings.batch_storage_per_key_bytes,
    )
    store = BatchStore(config)
    try:
        await store.open()
    except Exception as exc:  # the file or the database cannot be used: the start fails, naming the flag
        await store.close()
        if url:  # the URL may hold a password: only the kind of failure is said
            raise RuntimeError(f"--batch-database-url: cannot use the database ({type(exc).__name__})") from None
        raise RuntimeError(f"--batch-store-path {settings.batch_store_file}: {exc} (or --no-batches)") from exc
    state.batch_store = store

    async def run_line(line: Claimed) -> LineOutcome:
        if state.chat is None or state.runner is None:
            return LineOutcome(503, {}, "", retry=True)
        return await line_runner(state.chat, state.runner, settings.request_timeout)(line)

    worker = state.batch_worker = BatchWorker(
        store,
        run_line,
        settings.batch_max_running,
        state.metrics.batches,
        poll_s=min(2.0, settings.batch_lease / 4),  # the loop renews the leases: several times per lease
        paused=lambda: not state.ready or state.draining or state.failed,
        # One server: its host and its first process (the supervisor of --api-workers, whose children share an engine).
        group=f"{socket.gethostname()}:{os.getppid() if state.seat is not None else os.getpid()}",
    )
    return asyncio.create_task(worker.run(), name="batch-worker")
