"""The stored-responses database on its own: owner scoping, conversation chains, retention by age and by size, and
two stores on one file as two API processes have them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from server.service.response_store import BrokenChainError, HistoryTooLargeError, ResponseStore, StoreConfig


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _response(rid: str, text: str = "answer", pad: int = 0) -> dict[str, Any]:
    message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text + "." * pad}]}
    return {"id": rid, "object": "response", "output": [message]}


def _said(text: str) -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}]


async def _store(path: Path, clock: Clock, **config: Any) -> ResponseStore:
    store = ResponseStore(StoreConfig(path=path, **{"retention_s": 3600.0, "max_bytes": 1 << 20, **config}), clock)
    await store.open()
    return store


async def test_owners_see_only_their_own(tmp_path: Path) -> None:
    store = await _store(tmp_path / "r.db", Clock())
    try:
        await store.put("a", _response("resp_1"), _said("hi"), None)
        assert (await store.get("a", "resp_1")) == _response("resp_1")
        assert await store.get("b", "resp_1") is None
        assert await store.history("b", "resp_1") is None
        assert not await store.delete("b", "resp_1")
        assert await store.delete("a", "resp_1")
        assert await store.get("a", "resp_1") is None
    finally:
        await store.close()


async def test_a_chain_reads_back_oldest_first_and_a_gap_is_an_error(tmp_path: Path) -> None:
    store = await _store(tmp_path / "r.db", Clock())
    try:
        previous = None
        for n in range(5):
            await store.put("a", _response(f"resp_{n}", f"a{n}"), _said(f"q{n}"), previous)
            previous = f"resp_{n}"
        items = await store.history("a", "resp_4")
        assert items is not None
        texts = [item["content"][0]["text"] for item in items]
        assert texts == [t for n in range(5) for t in (f"q{n}", f"a{n}")]
        await store.delete("a", "resp_2")
        with pytest.raises(BrokenChainError) as info:
            await store.history("a", "resp_4")
        assert info.value.missing == "resp_2"
        assert await store.history("a", "resp_1") is not None  # the turns before the gap still continue
    finally:
        await store.close()


async def test_retention_by_age(tmp_path: Path) -> None:
    clock = Clock()
    store = await _store(tmp_path / "r.db", clock, prune_every_s=0.0)
    try:
        await store.put("a", _response("resp_old"), _said("old"), None)
        clock.now += 3000
        await store.put("a", _response("resp_new"), _said("new"), "resp_old")
        clock.now += 1000  # resp_old is past the hour, resp_new is not
        assert await store.get("a", "resp_old") is None
        assert await store.get("a", "resp_new") is not None
        with pytest.raises(BrokenChainError):
            await store.history("a", "resp_new")
        await store.put("a", _response("resp_next"), _said("next"), None)  # a write prunes the expired row
        assert await store.delete("a", "resp_old") is False
    finally:
        await store.close()


async def test_the_oldest_go_first_beyond_the_size_limit(tmp_path: Path) -> None:
    clock = Clock()
    store = await _store(tmp_path / "r.db", clock, max_bytes=1 << 20, prune_every_s=0.0)
    try:
        for n in range(12):  # ~100 KiB each: the first couple must go to keep the total under 1 MiB
            clock.now += 1
            await store.put("a", _response(f"resp_{n}", pad=100_000), _said("q"), None)
        kept = [n for n in range(12) if await store.get("a", f"resp_{n}") is not None]
        assert kept == list(range(12 - len(kept), 12)) and 8 <= len(kept) < 12
    finally:
        await store.close()


async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "r.db"
    first, second = await _store(path, Clock()), await _store(path, Clock())
    try:
        await first.put("a", _response("resp_1"), _said("hi"), None)
        await second.put("a", _response("resp_2"), _said("more"), "resp_1")
        items = await first.history("a", "resp_2")
        assert items is not None and len(items) == 4
    finally:
        await first.close()
        await second.close()


async def test_a_store_that_cannot_open_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = ResponseStore(StoreConfig(path=blocker / "r.db", retention_s=1, max_bytes=1 << 20))
    with pytest.raises(FileExistsError):
        await store.open()
    await store.close()


async def test_a_conversation_larger_than_a_body_is_not_read_back(tmp_path: Path) -> None:
    store = await _store(tmp_path / "r.db", Clock(), max_history_bytes=5000)
    try:
        await store.put("a", _response("resp_1", pad=3000), _said("one"), None)
        assert await store.history("a", "resp_1") is not None
        await store.put("a", _response("resp_2", pad=3000), _said("two"), "resp_1")
        with pytest.raises(HistoryTooLargeError) as info:
            await store.history("a", "resp_2")
        assert info.value.size > 5000 and info.value.limit == 5000
    finally:
        await store.close()
