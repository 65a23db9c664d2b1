"""Two replicas sharing files and batches through a real PostgreSQL server (issue 19): a batch uploaded and created on
one is seen on the other, both run its lines (each up to its own cap on its own engine, claimed from one queue with
FOR UPDATE SKIP LOCKED), and the output file has every custom_id exactly once."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.process import server_process
from tests.postgres import fresh_database

pytestmark = pytest.mark.e2e

LINES = 16
WAIT_S = 600


def completed_lines(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "qwen3vl_batch_lines_total" and sample.labels.get("result") == "completed"
    )


def test_two_replicas_share_one_batch(tmp_path: Path, postgres_url: str) -> None:
    url = fresh_database(postgres_url)
    extra = ["--batch-database-url", url, "--batch-max-running", "2", "--no-warmup"]
    with contextlib.ExitStack() as stack:
        replicas = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            replicas.append(stack.enter_context(server_process(tmp_path / name, extra)))
        a, b = replicas
        model = httpx.get(f"{a.base_url}/v1/models", timeout=30).json()["data"][0]["id"]
        lines = [
            {
                "custom_id": f"line-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": model,
                    "messages": [{"role": "user", "content": f"Story {i}."}],
                    "max_tokens": 2000,  # seconds per line: long enough for both replicas to take some
                    "ignore_eos": True,
                },
            }
            for i in range(LINES)
        ]
        content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        uploaded = httpx.post(
            f"{a.base_url}/v1/files", files={"file": ("b.jsonl", content)}, data={"purpose": "batch"}, timeout=60
        )
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        assert httpx.get(f"{b.base_url}/v1/files/{file_id}", timeout=30).json()["bytes"] == len(content)
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
        created = httpx.post(f"{a.base_url}/v1/batches", json=body, timeout=60)
        assert created.status_code == 200, created.text
        batch_id = created.json()["id"]
        deadline = time.monotonic() + WAIT_S
        while (batch := httpx.get(f"{b.base_url}/v1/batches/{batch_id}", timeout=30).json())["status"] != "completed":
            assert time.monotonic() < deadline, f"batch still {batch['status']}: {batch['request_counts']}"
            time.sleep(0.5)
        assert batch["request_counts"] == {"total": LINES, "completed": LINES, "failed": 0}
        output = httpx.get(f"{a.base_url}/v1/files/{batch['output_file_id']}/content", timeout=60).text
        assert [json.loads(line)["custom_id"] for line in output.splitlines()] == [f"line-{i}" for i in range(LINES)]
        ran = [completed_lines(replica.base_url) for replica in replicas]
        assert all(count > 0 for count in ran) and sum(ran) == LINES, ran  # both replicas ran lines, each line once
