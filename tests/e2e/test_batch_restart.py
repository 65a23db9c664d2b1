"""A server killed with SIGKILL in the middle of a batch (issue 19): started again on the same SQLite file, it goes on
where it stopped (the killed worker's lines are taken again when their lease runs out) and the output file has every
custom_id exactly once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.process import server_process, stop_engine_when

pytestmark = pytest.mark.e2e

LINES = 12
WAIT_S = 600


def _counts(base_url: str, batch_id: str) -> dict[str, object]:
    answer = httpx.get(f"{base_url}/v1/batches/{batch_id}", timeout=30)
    assert answer.status_code == 200, answer.text
    found: dict[str, object] = answer.json()
    return found


def test_a_killed_server_finishes_its_batch_after_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "state" / "batches.sqlite3"
    extra = ["--batch-store-path", str(store), "--batch-max-running", "2", "--batch-lease", "5", "--no-warmup"]
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "tiny-qwen3vl",
                "messages": [{"role": "user", "content": f"Story {i}."}],
                "max_tokens": 3000,  # seconds per line: the kill lands with most lines still to run
                "ignore_eos": True,
            },
        }
        for i in range(LINES)
    ]
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
    with server_process(tmp_path / "first", extra) as first:
        model = httpx.get(f"{first.base_url}/v1/models", timeout=30).json()["data"][0]["id"]
        for line in lines:
            line["body"]["model"] = model  # type: ignore[index]
        content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        uploaded = httpx.post(
            f"{first.base_url}/v1/files",
            files={"file": ("batch.jsonl", content)},
            data={"purpose": "batch"},
            timeout=60,
        )
        assert uploaded.status_code == 200, uploaded.text
        created = httpx.post(
            f"{first.base_url}/v1/batches",
            json={
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
            },
            timeout=60,
        )
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]

        def completed() -> int:
            counts = _counts(first.base_url, batch_id)["request_counts"]
            assert isinstance(counts, dict)
            return int(counts["completed"])

        # The kill lands mid-batch whatever the machine's speed: the engine is stopped first and the batch asked
        # after (nothing can finish while it is stopped), and killed only with some lines answered and most not.
        mid_batch = stop_engine_when(
            first.engine_processes(),
            holds=lambda: 1 <= completed() <= LINES - 3,
            gone=lambda: completed() > LINES - 3,
            timeout_s=WAIT_S,
        )
        assert mid_batch, "the batch was never caught in the middle"
        answered_before = completed()
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait(timeout=60)
    assert 1 <= answered_before < LINES
    with server_process(tmp_path / "second", extra) as second:
        deadline = time.monotonic() + WAIT_S
        while (batch := _counts(second.base_url, batch_id))["status"] != "completed":
            assert time.monotonic() < deadline, f"batch still {batch['status']}"
            time.sleep(0.5)
        assert batch["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        output = httpx.get(f"{second.base_url}/v1/files/{batch['output_file_id']}/content", timeout=60)
        ids = [json.loads(line)["custom_id"] for line in output.text.splitlines()]
        assert ids == [f"line-{i}" for i in range(LINES)]  # every line exactly once, in input order
        assert batch["error_file_id"] is None
