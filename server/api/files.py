"""``/v1/files``: OpenAI's Files API for batch input (``purpose: "batch"``) and the batch output and error files.

An upload is a ``multipart/form-data`` body (what the openai SDK's ``files.create`` sends) read in memory within the
batch file limit, and every line is checked on upload as its endpoint would check it (``server.api.batch_lines``): a
file with a bad line is a 400 naming the lines, never a batch that fails later. Files belong to the API key that
uploaded them (another key gets a 404).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response

from server.api.batch_lines import parse_batch_file
from server.api.multipart import read_form
from server.api.state import AppState, StateDep
from server.errors import EngineUnavailableError, InvalidRequestError, NotFoundError
from server.media.cache import cache_scope
from server.schemas.batches import FileDeleted, FileObject, ListPage
from server.schemas.openapi import GUARD_ERRORS, error_responses
from server.service.batch_store import BatchStore, StorageFullError

router = APIRouter()
FILES = "/v1/files"
MAX_LIST = 10_000


def batch_store(state: AppState) -> BatchStore:
    if state.batch_store is None:
        raise NotFoundError("files and batches are off on this server (--no-batches)", code="batches_disabled")
    return state.batch_store


def _missing(file_id: str) -> NotFoundError:
    return NotFoundError(f"no file {file_id[:64]!r}", param="file_id", code="file_not_found")


_UPLOAD = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["purpose", "file"],
                    "properties": {
                        "purpose": {"type": "string", "enum": ["batch"]},
                        "file": {"type": "string", "format": "binary", "description": "JSONL, one request per line"},
                    },
                }
            }
        },
    }
}


@router.post(
    FILES,
    response_model=FileObject,
    responses=error_responses(400, 413, 415, *GUARD_ERRORS),
    openapi_extra=_UPLOAD,
)
async def upload_file(request: Request, state: StateDep) -> FileObject:
    """A JSONL batch input file (``purpose=batch``), every line checked before it is stored."""
    store = batch_store(state)
    form = await asyncio.to_thread(read_form, request.headers.get("content-type", ""), await request.body())
    if form.fields.get("purpose") != "batch":
        raise InvalidRequestError("purpose: must be 'batch' (the only purpose this server stores)", param="purpose")
    if "file" not in form.files:
        raise InvalidRequestError("file: the upload has no file part", param="file")
    filename, content = form.files["file"]
    chat = state.chat
    if chat is None:
        raise EngineUnavailableError("lines are checked against the model, which is still loading; retry shortly")
    settings = state.settings
    await asyncio.to_thread(parse_batch_file, content, chat, settings.batch_max_lines)  # CPU work, off the loop
    try:
        return await store.put_file(cache_scope.get(), filename or "batch.jsonl", "batch", content)
    except StorageFullError as exc:
        raise InvalidRequestError(
            f"file: this API key's files would take more than its {exc.limit} bytes ({exc.used} used); delete "
            "files (DELETE /v1/files/{id}) or wait for them to expire",
            param="file",
            code="storage_limit_reached",
        ) from exc


@router.get(FILES, response_model=ListPage, responses=error_responses(400, *GUARD_ERRORS))
async def list_files(
    state: StateDep, purpose: str | None = None, after: str | None = None, limit: int = 10_000
) -> ListPage:
    limit = max(1, min(limit, MAX_LIST))
    found = await batch_store(state).list_files(cache_scope.get(), purpose, after, limit + 1)
    return ListPage.of(found, limit)


@router.get(FILES + "/{file_id}", response_model=FileObject, responses=error_responses(404, *GUARD_ERRORS))
async def get_file(file_id: str, state: StateDep) -> FileObject:
    found = await batch_store(state).get_file(cache_scope.get(), file_id)
    if found is None:
        raise _missing(file_id)
    return found


@router.get(
    FILES + "/{file_id}/content",
    response_class=Response,
    responses={200: {"content": {"application/jsonl": {}}}, **error_responses(404, *GUARD_ERRORS)},
)
async def file_content(file_id: str, state: StateDep) -> Response:
    content = await batch_store(state).file_content(cache_scope.get(), file_id)
    if content is None:
        raise _missing(file_id)
    return Response(content, media_type="application/jsonl")


@router.delete(FILES + "/{file_id}", response_model=FileDeleted, responses=error_responses(404, *GUARD_ERRORS))
async def delete_file(file_id: str, state: StateDep) -> FileDeleted:
    if not await batch_store(state).delete_file(cache_scope.get(), file_id):
        raise _missing(file_id)
    return FileDeleted(id=file_id)
