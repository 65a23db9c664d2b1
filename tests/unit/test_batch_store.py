"""The batch store on its own, on both its databases (an SQLite file, and a real PostgreSQL server as replicas share
it): claims are leases (a line whose worker died is taken again, and the dead worker's late answer is refused), the
global cap on running lines, counts that move, expiry, retention, the per-key storage limit, and output/error files
with every custom_id exactly once, across two stores on one database as two processes or replicas have them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from server.schemas.batches import BatchObject
from server.service.batch_store import BatchStore, BatchStoreConfig, StorageFullError, new_id
from tests.postgres import fresh_database


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def _batch() -> BatchObject:
    return BatchObject(
        id=new_id("batch"), endpoint="/v1/chat/completions", input_file_id="file_x", status="in_progress", created_at=1
    )


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Where the stores of a test keep their data: one SQLite file, or one fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {"path": tmp_path / "b.db"}
    return {"path": tmp_path / "unused.db", "database_url": fresh_database(request.getfixturevalue("postgres_url"))}


async def _store(where: dict[str, Any], clock: Clock, **config: Any) -> BatchStore:
    store = BatchStore(BatchStoreConfig(**{"lease_s": 60, **where, **config}), clock)
    await store.open()
    return store


def _result(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": {}}}


async def test_a_dead_workers_lines_are_taken_again_and_answered_once(where: dict[str, Any]) -> None:
    clock = Clock()
    first, second = await _store(where, clock), await _store(where, clock)
    try:
        batch = await first.create_batch("me", _batch(), [(f"c{i}", {"n": i}) for i in range(5)])
        taken = await first.claim("worker-a", cap=3)
        assert [line.custom_id for line in taken] == ["c0", "c1", "c2"] and taken[0].body == {"n": 0}
        assert await second.claim("worker-b", cap=3) == []  # the cap is the server's, not each process's
        assert await first.finish("worker-a", taken[0], True, _result("c0"))
        clock.now += 61  # worker-a died: its two other lines' lease runs out
        retaken = await second.claim("worker-b", cap=10)
        assert sorted(line.custom_id for line in retaken) == ["c1", "c2", "c3", "c4"]
        assert not await first.finish("worker-a", taken[1], True, _result("c1"))  # too late: not its line any more
        for line in retaken:
            assert await second.finish("worker-b", line, line.custom_id != "c4", _result(line.custom_id))
        assert await first.finalize() == [batch.id]
        done = await first.get_batch("me", batch.id)
        assert done is not None and done.status == "completed"
        assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (5, 4, 1)
        assert done.output_file_id is not None and done.error_file_id is not None
        output = await first.file_content("me", done.output_file_id)
        errors = await first.file_content("me", done.error_file_id)
        assert output is not None and errors is not None
        ids = [json.loads(line)["custom_id"] for line in (output + errors).decode().splitlines()]
        assert sorted(ids) == [f"c{i}" for i in range(5)]
    finally:
        await first.close()
        await second.close()


async def test_renewing_keeps_a_lease(where: dict[str, Any]) -> None:
    clock = Clock()
    store = await _store(where, clock)
    try:
        await store.create_batch("me", _batch(), [("only", {})])
        [line] = await store.claim("worker-a", cap=1)
        for _ in range(4):
            clock.now += 40
            await store.renew("worker-a")
            assert await store.claim("worker-b", cap=1) == []
        assert await store.finish("worker-a", line, True, _result("only"))
    finally:
        await store.close()


async def test_others_see_nothing(where: dict[str, Any]) -> None:
    store = await _store(where, Clock())
    try:
        batch = await store.create_batch("me", _batch(), [("a", {})])
        uploaded = await store.put_file("me", "in.jsonl", "batch", b"{}\n")
        assert await store.get_batch("you", batch.id) is None
        assert await store.cancel("you", batch.id) is None
        assert await store.get_file("you", uploaded.id) is None
        assert await store.file_content("you", uploaded.id) is None
        assert not await store.delete_file("you", uploaded.id)
        assert await store.list_files("you", None, None, 10) == [] and await store.list_batches("you", None, 10) == []
        assert [f.id for f in await store.list_files("me", "batch", None, 10)] == [uploaded.id]
    finally:
        await store.close()


async def test_lines_past_the_completion_window_expire(where: dict[str, Any]) -> None:
    clock = Clock()
    store = await _store(where, clock)
    try:
        soon = _batch().model_copy(update={"expires_at": int(clock.now) + 10})
        await store.create_batch("me", soon, [("a", {}), ("b", {}), ("c", {})])
        [running] = await store.claim("worker-a", cap=1)
        clock.now += 20
        assert await store.finalize() == []  # the running line may still finish
        assert await store.claim("worker-a", cap=5) == []  # nothing pending is started past the window
        assert await store.finish("worker-a", running, True, _result("a"))
        assert await store.finalize() == [soon.id]
        done = await store.get_batch("me", soon.id)
        assert done is not None and done.status == "expired" and done.expired_at is not None
        assert done.output_file_id is not None and done.error_file_id is not None
        errors = await store.file_content("me", done.error_file_id)
        assert errors is not None
        assert [(e["custom_id"], e["error"]["code"]) for e in map(json.loads, errors.decode().splitlines())] == [
            ("b", "batch_expired"),
            ("c", "batch_expired"),
        ]
    finally:
        await store.close()


async def test_retention_and_the_per_key_storage_limit(where: dict[str, Any]) -> None:
    clock = Clock()
    store = await _store(where, clock, retention_s=3600, max_owner_bytes=1000, prune_every_s=0)
    try:
        kept = await store.put_file("me", "a.jsonl", "batch", b"x" * 600)
        with pytest.raises(StorageFullError):
            await store.put_file("me", "b.jsonl", "batch", b"x" * 600)
        await store.put_file("you", "b.jsonl", "batch", b"x" * 600)  # another key's share is its own
        batch = await store.create_batch("me", _batch(), [("a", {})])
        [line] = await store.claim("worker", cap=1)
        await store.finish("worker", line, True, _result("a"))
        await store.finalize()
        clock.now += 3601
        await store.finalize()
        assert await store.get_batch("me", batch.id) is None and await store.get_file("me", kept.id) is None
        await store.put_file("me", "c.jsonl", "batch", b"x" * 600)  # the space came back
    finally:
        await store.close()


async def test_replicas_each_run_up_to_their_cap_from_one_queue(where: dict[str, Any]) -> None:
    clock = Clock()
    one, two = await _store(where, clock), await _store(where, clock)
    try:
        await one.create_batch("me", _batch(), [(f"c{i}", {}) for i in range(5)])
        mine = await one.claim("a/1", cap=2, group="replica-a")
        assert len(mine) == 2 and await one.claim("a/2", cap=2, group="replica-a") == []  # replica a's cap
        theirs = await two.claim("b/1", cap=2, group="replica-b")
        assert len(theirs) == 2 and not {line.idx for line in mine} & {line.idx for line in theirs}
        assert two.queued == 1
    finally:
        await one.close()
        await two.close()
