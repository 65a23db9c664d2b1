"""Stored responses (the Responses API's ``store`` and ``previous_response_id``) in an embedded SQLite database.

A row is one response: its owner (the caller's key scope, never the key), the request's own ``input`` items, the
response object, and the id of the response it continued. A conversation is the chain of ``previous`` links, read back
in one recursive query, so each turn stores only what it added (storing the whole history per turn would grow with the
square of a conversation's length, images included). A broken chain (an earlier turn expired or deleted) is an error the
caller names, never a silently shorter history.

SQLite in WAL mode lets every API process (``--api-workers``) share one file. All database work runs on one thread of
its own, off the event loop; the connection lives and dies on that thread. Retention is an age and a total size: the
oldest rows go first, checked as rows are written (at most every few seconds) and when the store opens.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.service.database import Conn, SqliteFile

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    previous TEXT,
    size INTEGER NOT NULL,
    input TEXT NOT NULL,
    response TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_created ON responses (created);
"""

# The chain from a response back to its first turn, newest first, with each turn's size (its texts are read only once
# the whole is known to fit); ``depth`` bounds a cycle no insert can make anyway.
_CHAIN = """
WITH RECURSIVE chain(id, previous, size, depth) AS (
    SELECT id, previous, size, 0 FROM responses WHERE id = :id AND owner = :owner AND created >= :since
    UNION ALL
    SELECT r.id, r.previous, r.size, chain.depth + 1
    FROM responses AS r JOIN chain ON r.id = chain.previous
    WHERE r.owner = :owner AND r.created >= :since AND chain.depth < :turns
)
SELECT id, previous, size FROM chain ORDER BY depth DESC
"""


class HistoryTooLargeError(ValueError):
    """The stored conversation is larger than one request body may be: it is not read back."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"{size} bytes, more than {limit}")
        self.size, self.limit = size, limit


class BrokenChainError(LookupError):
    """An earlier response of the conversation is no longer stored (expired or deleted)."""

    def __init__(self, missing: str) -> None:
        super().__init__(missing)
        self.missing = missing


@dataclass(frozen=True)
class StoreConfig:
    path: Path
    retention_s: float
    max_bytes: int
    max_turns: int = 1024  # the longest chain read back (chat's message limit bounds a conversation anyway)
    max_history_bytes: int = 64 * 1024 * 1024  # the largest conversation read back: the server's request body limit
    prune_every_s: float = 5.0


class ResponseStore:
    def __init__(self, config: StoreConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._file = SqliteFile(config.path, "response store")
        self._pruned_at = float("-inf")

    async def open(self) -> None:
        await self._file.open(_SCHEMA)
        await self._file.run(self._prune)

    async def close(self) -> None:
        await self._file.close()

    async def put(
        self, owner: str, response: dict[str, Any], input_items: list[dict[str, Any]], previous: str | None
    ) -> None:
        created = self._clock()

        def write(db: Conn) -> None:  # serialized here, on the store's thread: an input may hold megabytes of media
            text_in, text_out = json.dumps(input_items), json.dumps(response)
            row = (response["id"], owner, created, previous, len(text_in) + len(text_out), text_in, text_out)
            db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if self._clock() - self._pruned_at >= self.config.prune_every_s:
                self._prune(db)

        await self._file.run(write)

    async def get(self, owner: str, response_id: str) -> dict[str, Any] | None:
        def read(db: Conn) -> str | None:
            found = db.execute(
                "SELECT response FROM responses WHERE id = ? AND owner = ? AND created >= ?",
                (response_id, owner, self._clock() - self.config.retention_s),
            ).fetchone()
            return None if found is None else str(found[0])

        text = await self._file.run(read)
        return None if text is None else dict(json.loads(text))

    async def history(self, owner: str, response_id: str) -> list[dict[str, Any]] | None:
        """The conversation that ends with ``response_id``: per turn, oldest first, its input items then its output
        items. None if that response is not the owner's (or not stored); BrokenChainError if an earlier turn is gone;
        HistoryTooLargeError if the turns together are larger than ``max_history_bytes`` (checked before any is read).
        The texts are parsed on the store's thread, not the event loop."""

        def read(db: Conn) -> list[dict[str, Any]] | None:
            since = self._clock() - self.config.retention_s
            params = {"id": response_id, "owner": owner, "since": since, "turns": self.config.max_turns}
            chain = db.execute(_CHAIN, params).fetchall()
            if not chain:
                return None
            if chain[0][1] is not None:  # the oldest turn found still names an earlier one: it is gone
                raise BrokenChainError(chain[0][1])
            size = sum(row[2] for row in chain)
            if size > self.config.max_history_bytes:
                raise HistoryTooLargeError(size, self.config.max_history_bytes)
            items: list[dict[str, Any]] = []
            for turn_id, _, _ in chain:
                text_in, text_out = db.execute(
                    "SELECT input, response FROM responses WHERE id = ?", (turn_id,)
                ).fetchone()
                items.extend(json.loads(text_in))
                items.extend(json.loads(text_out).get("output", []))
            return items

        return await self._file.run(read)

    async def delete(self, owner: str, response_id: str) -> bool:
        def remove(db: Conn) -> bool:
            cursor = db.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
            return cursor.rowcount > 0

        return await self._file.run(remove)

    def _prune(self, db: Conn) -> None:
        """Rows past the retention age, then the oldest rows until the total size is within the limit."""
        self._pruned_at = now = self._clock()
        db.execute("DELETE FROM responses WHERE created < ?", (now - self.config.retention_s,))
        total = db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()[0]
        if total <= self.config.max_bytes:
            return
        over = total - self.config.max_bytes
        cut = db.execute(
            "SELECT created FROM (SELECT created, SUM(size) OVER (ORDER BY created, id) AS running FROM responses) "
            "WHERE running >= ? ORDER BY created LIMIT 1",
            (over,),
        ).fetchone()
        if cut is not None:
            db.execute("DELETE FROM responses WHERE created <= ?", (cut[0],))
            logger.info(
                "response store over %d bytes: removed responses created up to %.0f", self.config.max_bytes, cut[0]
            )
