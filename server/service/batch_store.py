"""Files, batches and their lines (OpenAI's Files and Batch APIs): in an embedded SQLite file, or in PostgreSQL shared
by several replicas (``server.service.database``; the SQL here is the same for both but for the column types and the
claim's row locks).

Every row belongs to an owner (the caller's key scope, as stored responses do). A batch's lines are rows of their own
with a state (``pending`` → ``running`` → ``done`` / ``failed``, or ``cancelled``) and, once run, the line of the output
or error file they produce; the batch's ``request_counts`` are counted from them, so they move as lines finish.

Claiming is the one contended write: a worker (one per API process) takes up to the free share of the global cap on
running lines in one serialized transaction (SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL an advisory lock, and the
lines taken ``FOR UPDATE SKIP LOCKED``), so two processes or replicas never take the same line. A claim is a lease: a worker renews its lines' ``claimed`` time while it runs them, and a line whose lease ran
out (its worker was killed) is taken again. A line's result is written once, with its state, in one statement that
only succeeds while the line is still this worker's, so a line is answered exactly once whatever crashes.

Files are stored in the database (bounded by the upload and per-key limits); the output and error files are built
when a batch finishes.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from server.schemas.batches import BatchObject, FileObject, RequestCounts
from server.service.database import Conn, Database, PostgresDatabase, SqliteFile

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes BIGINT NOT NULL,
    created BIGINT NOT NULL, content {blob} NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY, owner TEXT NOT NULL, created BIGINT NOT NULL, expires BIGINT NOT NULL, status TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lines (
    batch TEXT NOT NULL, idx INTEGER NOT NULL, custom_id TEXT NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL, grp TEXT, holder TEXT, claimed DOUBLE PRECISION, result TEXT,
    PRIMARY KEY (batch, idx)
);
CREATE INDEX IF NOT EXISTS lines_state ON lines (state, batch, idx);
CREATE INDEX IF NOT EXISTS lines_running ON lines (grp, state);
CREATE INDEX IF NOT EXISTS lines_counts ON lines (batch, state);
CREATE INDEX IF NOT EXISTS files_owner ON files (owner, created);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner, created);
"""
_BLOB = {"sqlite": "BLOB", "postgres": "BYTEA"}
_NEVER = 1 << 62  # a batch without a completion window
_LOCK_LINES = {"sqlite": "", "postgres": " FOR UPDATE OF l SKIP LOCKED"}
_NOT_RUN = {
    "cancelled": ("batch_cancelled", "the batch was cancelled before this request ran"),
    "expired": ("batch_expired", "this request could not run before the batch's completion window ended"),
}


def new_id(prefix: str) -> str:
    """Unique, and in creation order within a prefix (the time first), so lists page newest first by id."""
    return f"{prefix}_{time.time_ns():016x}{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class BatchStoreConfig:
    path: Path
    database_url: str | None = None  # postgresql://...: shared by replicas, instead of the SQLite file
    lease_s: float = 60.0  # a running line whose worker has not renewed it for this long is taken again
    retention_s: float = 30 * 24 * 3600.0  # files, and batches that ended, older than this are removed
    max_owner_bytes: int = 10 << 30  # one API key's files, output files included; an upload beyond it is refused
    prune_every_s: float = 60.0


@dataclass(frozen=True)
class Claimed:
    """A line a worker holds: where it goes, what it asks, and for whom."""

    batch: str
    idx: int
    custom_id: str
    owner: str
    endpoint: str
    body: dict[str, Any]


class BatchStore:
    def __init__(self, config: BatchStoreConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._db: Database = (
            PostgresDatabase(config.database_url, "batch store")
            if config.database_url
            else SqliteFile(config.path, "batch store")
        )
        self.queued = 0  # pending lines server-wide, as the last claim saw them
        self._pruned_at = float("-inf")

    async def _run(self, work: Callable[[Conn], T], immediate: bool = False) -> T:
        return await self._db.run(work, immediate)

    async def open(self) -> None:
        await self._db.open(_SCHEMA.format(blob=_BLOB[self._db.dialect]))

    async def close(self) -> None:
        await self._db.close()

    # --- files ------------------------------------------------------------------------------------------------------

    async def put_file(self, owner: str, filename: str, purpose: str, content: bytes) -> FileObject:
        found = FileObject(
            id=new_id("file"), bytes=len(content), created_at=int(self._clock()), filename=filename, purpose=purpose
        )
        row = (found.id, owner, filename, purpose, len(content), found.created_at, content)

        def write(db: Conn) -> None:
            used = int(db.execute("SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner = ?", (owner,)).fetchone()[0])
            if used + len(content) > self.config.max_owner_bytes:
                raise StorageFullError(used, self.config.max_owner_bytes)
            db.execute("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        await self._run(write, immediate=True)
        return found

    async def get_file(self, owner: str, file_id: str) -> FileObject | None:
        def read(db: Conn) -> tuple[Any, ...] | None:
            query = "SELECT id, bytes, created, filename, purpose FROM files WHERE id = ? AND owner = ?"
            found: tuple[Any, ...] | None = db.execute(query, (file_id, owner)).fetchone()
            return found

        row = await self._run(read)
        return None if row is None else _file(row)

    async def list_files(self, owner: str, purpose: str | None, after: str | None, limit: int) -> list[FileObject]:
        def read(db: Conn) -> list[tuple[Any, ...]]:
            sql = "SELECT id, bytes, created, filename, purpose FROM files WHERE owner = ?"
            params: list[Any] = [owner]
            if purpose is not None:
                sql += " AND purpose = ?"
                params.append(purpose)
            if after is not None:
                sql += " AND (created, id) < (SELECT created, id FROM files WHERE id = ? AND owner = ?)"
                params += [after, owner]
            return list(db.execute(sql + " ORDER BY created DESC, id DESC LIMIT ?", (*params, limit)).fetchall())

        return [_file(row) for row in await self._run(read)]

    async def file_content(self, owner: str, file_id: str) -> bytes | None:
        def read(db: Conn) -> bytes | None:
            row = db.execute("SELECT content FROM files WHERE id = ? AND owner = ?", (file_id, owner)).fetchone()
            return None if row is None else bytes(row[0])

        return await self._run(read)

    async def delete_file(self, owner: str, file_id: str) -> bool:
        def remove(db: Conn) -> bool:
            return db.execute("DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)).rowcount > 0

        return await self._run(remove)

    # --- batches ----------------------------------------------------------------------------------------------------

    async def create_batch(
        self, owner: str, batch: BatchObject, lines: Sequence[tuple[str, dict[str, Any]]]
    ) -> BatchObject:
        def write(db: Conn) -> None:
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                (batch.id, owner, batch.created_at, batch.expires_at or _NEVER, batch.status, batch.model_dump_json()),
            )
            db.executemany(
                "INSERT INTO lines (batch, idx, custom_id, body, state) VALUES (?, ?, ?, ?, 'pending')",
                ((batch.id, i, custom_id, json.dumps(body)) for i, (custom_id, body) in enumerate(lines)),
            )

        await self._run(write, immediate=True)
        return batch

    async def get_batch(self, owner: str, batch_id: str) -> BatchObject | None:
        def read(db: Conn) -> BatchObject | None:
            row = db.execute("SELECT data FROM batches WHERE id = ? AND owner = ?", (batch_id, owner)).fetchone()
            return None if row is None else _with_counts(db, BatchObject.model_validate_json(row[0]))

        return await self._run(read)

    async def list_batches(self, owner: str, after: str | None, limit: int) -> list[BatchObject]:
        def read(db: Conn) -> list[BatchObject]:
            sql, params = "SELECT data FROM batches WHERE owner = ?", [owner]
            if after is not None:
                sql += " AND (created, id) < (SELECT created, id FROM batches WHERE id = ? AND owner = ?)"
                params += [after, owner]
            rows = db.execute(sql + " ORDER BY created DESC, id DESC LIMIT ?", (*params, limit)).fetchall()
            return [_with_counts(db, BatchObject.model_validate_json(row[0])) for row in rows]

        return await self._run(read)

    async def cancel(self, owner: str, batch_id: str) -> BatchObject | None:
        """``cancelling``: its pending lines will never run; the batch is ``cancelled`` once its running lines end."""

        def write(db: Conn) -> BatchObject | None:
            row = db.execute("SELECT data FROM batches WHERE id = ? AND owner = ?", (batch_id, owner)).fetchone()
            if row is None:
                return None
            batch = BatchObject.model_validate_json(row[0])
            if batch.status in ("validating", "in_progress"):
                batch = batch.model_copy(update={"status": "cancelling", "cancelling_at": int(self._clock())})
                _save(db, batch)
                db.execute("UPDATE lines SET state = 'cancelled' WHERE batch = ? AND state = 'pending'", (batch_id,))
            return _with_counts(db, batch)

        return await self._run(write, immediate=True)

    # --- the worker's side ------------------------------------------------------------------------------------------

    async def claim(self, holder: str, cap: int, group: str = "") -> list[Claimed]:
        """Up to ``cap`` minus the lines ``group`` (one server: its API processes share one engine) runs: the oldest
        batches' pending lines first (batch ids are time-ordered, so the ``lines_state`` index is already in that order:
        no sort, however many lines wait), and lines whose lease ran out. Replicas are groups of their own: each runs up
        to its cap on its engine, from one queue."""

        def write(db: Conn) -> list[Claimed]:
            now = self._clock()
            db.execute(
                "UPDATE lines SET state = 'pending', holder = NULL WHERE state = 'running' AND claimed < ?",
                (now - self.config.lease_s,),
            )
            running = db.execute("SELECT COUNT(*) FROM lines WHERE state = 'running' AND grp = ?", (group,)).fetchone()[
                0
            ]
            self.queued = db.execute("SELECT COUNT(*) FROM lines WHERE state = 'pending'").fetchone()[0]
            free = cap - running
            if free <= 0:
                return []
            rows = db.execute(
                "SELECT l.batch, l.idx, l.custom_id, b.owner, b.data, l.body FROM lines AS l "
                "JOIN batches AS b ON b.id = l.batch WHERE l.state = 'pending' AND b.status = 'in_progress' "
                "ORDER BY l.batch, l.idx LIMIT ?" + _LOCK_LINES[self._db.dialect],
                (free,),
            ).fetchall()
            self.queued -= len(rows)
            db.executemany(
                "UPDATE lines SET state = 'running', grp = ?, holder = ?, claimed = ? WHERE batch = ? AND idx = ?",
                ((group, holder, now, row[0], row[1]) for row in rows),
            )
            return [
                Claimed(row[0], row[1], row[2], row[3], json.loads(row[4])["endpoint"], json.loads(row[5]))
                for row in rows
            ]

        return await self._run(write, immediate=True)

    async def renew(self, holder: str) -> None:
        def write(db: Conn) -> None:
            db.execute("UPDATE lines SET claimed = ? WHERE holder = ? AND state = 'running'", (self._clock(), holder))

        await self._run(write)

    async def finish(self, holder: str, line: Claimed, ok: bool, result: dict[str, Any]) -> bool:
        """The line's answer, written only while the line is still this holder's (False: it was taken from it)."""

        def write(db: Conn) -> bool:
            cursor = db.execute(
                "UPDATE lines SET state = ?, result = ?, holder = NULL "
                "WHERE batch = ? AND idx = ? AND holder = ? AND state = 'running'",
                ("done" if ok else "failed", json.dumps(result), line.batch, line.idx, holder),
            )
            return cursor.rowcount > 0

        return await self._run(write, immediate=True)

    async def release(self, holder: str, line: Claimed) -> None:
        """Give a line back unanswered (the engine went away, admission was full): another try will run it."""

        def write(db: Conn) -> None:
            db.execute(
                "UPDATE lines SET state = 'pending', holder = NULL WHERE batch = ? AND idx = ? AND holder = ?",
                (line.batch, line.idx, holder),
            )

        await self._run(write)

    async def finalize(self) -> list[str]:
        """Batches whose lines have all ended get their output and error files and their final status."""

        def write(db: Conn) -> list[str]:
            now = self._clock()
            db.execute(  # the completion window has passed: what has not started never will
                "UPDATE lines SET state = 'expired' WHERE state = 'pending' AND batch IN (SELECT id FROM batches "
                "WHERE status = 'in_progress' AND expires < ?)",
                (now,),
            )
            if now - self._pruned_at >= self.config.prune_every_s:
                self._prune(db, now)
            done = []
            for (data,) in db.execute(
                "SELECT data FROM batches WHERE status IN ('in_progress', 'cancelling') AND NOT EXISTS "
                "(SELECT 1 FROM lines WHERE lines.batch = batches.id AND lines.state IN ('pending', 'running'))"
            ).fetchall():
                batch = BatchObject.model_validate_json(data)
                _finish_batch(db, batch, int(self._clock()))
                done.append(batch.id)
            return done

        return await self._run(write, immediate=True)

    def _prune(self, db: Conn, now: float) -> None:
        """Files, and batches that have ended (with their lines), past the retention age."""
        self._pruned_at = now
        cutoff = now - self.config.retention_s
        ended = "status IN ('completed', 'cancelled', 'expired', 'failed') AND created < ?"
        db.execute(f"DELETE FROM lines WHERE batch IN (SELECT id FROM batches WHERE {ended})", (cutoff,))
        db.execute(f"DELETE FROM batches WHERE {ended}", (cutoff,))
        db.execute("DELETE FROM files WHERE created < ?", (cutoff,))


class StorageFullError(Exception):
    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"{used} of {limit} bytes used")
        self.used, self.limit = used, limit


def _file(row: Sequence[Any]) -> FileObject:
    return FileObject(id=row[0], bytes=row[1], created_at=row[2], filename=row[3], purpose=row[4])


def _save(db: Conn, batch: BatchObject) -> None:
    db.execute(
        "UPDATE batches SET status = ?, data = ? WHERE id = ?", (batch.status, batch.model_dump_json(), batch.id)
    )


def _with_counts(db: Conn, batch: BatchObject) -> BatchObject:
    counts = dict(
        db.execute("SELECT state, COUNT(*) FROM lines WHERE batch = ? GROUP BY state", (batch.id,)).fetchall()
    )
    total = sum(counts.values())
    request_counts = RequestCounts(total=total, completed=counts.get("done", 0), failed=counts.get("failed", 0))
    return batch.model_copy(update={"request_counts": request_counts})


def _finish_batch(db: Conn, batch: BatchObject, now: int) -> None:
    owner = db.execute("SELECT owner FROM batches WHERE id = ?", (batch.id,)).fetchone()[0]
    output: list[str] = []
    errors: list[str] = []
    expired = False
    rows = db.execute("SELECT custom_id, state, result FROM lines WHERE batch = ? ORDER BY idx", (batch.id,)).fetchall()
    for custom_id, state, result in rows:
        if state == "done":
            output.append(result)
        elif state == "failed":
            errors.append(result)
        else:  # never ran: cancelled, or past the completion window
            code, message = _NOT_RUN[state]
            errors.append(
                json.dumps(
                    {
                        "id": new_id("batch_req"),
                        "custom_id": custom_id,
                        "response": None,
                        "error": {"code": code, "message": message},
                    }
                )
            )
            expired |= state == "expired"
    update: dict[str, Any] = {}
    for name, lines in (("output_file_id", output), ("error_file_id", errors)):
        if lines:
            content = ("\n".join(lines) + "\n").encode()
            file_id = new_id("file")
            filename = f"{batch.id}_{'output' if name == 'output_file_id' else 'error'}.jsonl"
            db.execute(
                "INSERT INTO files VALUES (?, ?, ?, 'batch_output', ?, ?, ?)",
                (file_id, owner, filename, len(content), now, content),
            )
            update[name] = file_id
    if batch.status == "cancelling":
        update.update(status="cancelled", cancelled_at=now)
    elif expired:
        update.update(status="expired", expired_at=now)
    else:
        update.update(status="completed", finalizing_at=now, completed_at=now)
    _save(db, batch.model_copy(update=update))
