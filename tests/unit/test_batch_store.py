"""The batch store on its own: claims are leases (a line whose worker died is taken again, and the dead worker's late
answer is refused), the global cap on running lines, counts that move, and output/error files with every custom_id
exactly once, across two stores on one file as two API processes have them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from server.schemas.batches import BatchObject
from server.service.batch_store import BatchStore, BatchStoreConfig, new_id


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


def _batch() -> BatchObject:
    return BatchObject(
        id=new_id("batch"), endpoint="/v1/chat/completions", input_file_id="file_x", status="in_progress", created_at=1
    )


async def _store(path: Path, clock: Clock) -> BatchStore:
    store = BatchStore(BatchStoreConfig(path=path, lease_s=60), clock)
    await store.open()
    return store


def _result(custom_id: str) -> dict[str, Any]:
    return {"custom_id": custom_id, "response": {"status_code": 200, "body": {}}}


async def test_a_dead_workers_lines_are_taken_again_and_answered_once(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "b.db"
    first, second = await _store(path, clock), await _store(path, clock)
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


async def test_renewing_keeps_a_lease(tmp_path: Path) -> None:
    clock = Clock()
    store = await _store(tmp_path / "b.db", clock)
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


async def test_others_see_nothing(tmp_path: Path) -> None:
    store = await _store(tmp_path / "b.db", Clock())
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
