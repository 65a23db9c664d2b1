"""The side-by-side benchmark's process-tree accounting: roles from names and command lines, and CPU over a run of
processes that start or exit in between."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.process_tree import CpuLedger, Reading, TreeSampler, cpu_summary, role_of

SPAWN = "/venv/bin/python -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=41, pipe_handle=43)"


@pytest.mark.parametrize(
    ("name", "cmdline", "is_root", "role"),
    [
        ("python", "/venv/bin/python -m server --port 0 --api-workers 2", True, "api"),
        ("python", "/venv/bin/python -m vllm.entrypoints.openai.api_server --model /m", True, "api"),
        ("VLLM::EngineCor", "VLLM::EngineCore", False, "engine"),  # the title, cut to 15 bytes in the name
        ("python", "VLLM::EngineCore_DP0", False, "engine"),
        ("VLLM::Worker", "VLLM::Worker", False, "engine"),
        ("VllmWorker 0", "VllmWorker", False, "engine"),
        ("python", SPAWN + " --multiprocessing-fork", False, "api"),  # ApiServer_N, untitled
        ("VLLM::APIServer", "VLLM::APIServer_1", False, "api"),
        ("python", '/venv/bin/python -I -m server.media.worker {"in_fd": 12}', False, "media"),
        ("python", "/venv/bin/python -B -c from multiprocessing.resource_tracker import main;main(40)", False, "other"),
    ],
)
def test_roles(name: str, cmdline: str, is_root: bool, role: str) -> None:
    assert role_of(name, cmdline, is_root=is_root) == role


def test_cpu_counts_a_process_that_appears_from_zero_and_keeps_the_last_reading_of_one_that_exits() -> None:
    ledger = CpuLedger()
    ledger.begin([Reading(1, 10.0, "api", 5.0), Reading(2, 11.0, "engine", 100.0), Reading(3, 12.0, "media", 1.0)])
    ledger.update([Reading(1, 10.0, "api", 5.5), Reading(2, 11.0, "engine", 101.0), Reading(3, 12.0, "media", 1.25)])
    # pid 3 exits; pid 4 appears; pid 3 is reused by a new process (another start time): a new process from 0
    ledger.update([Reading(1, 10.0, "api", 6.0), Reading(4, 20.0, "media", 0.5), Reading(3, 21.0, "other", 0.125)])
    ledger.update([Reading(1, 10.0, "api", 6.0), Reading(2, 11.0, "engine", 103.0), Reading(4, 20.0, "media", 0.75)])
    assert ledger.cpu_s() == {"api": 1.0, "media": 0.25 + 0.75, "other": 0.125, "engine": 3.0}
    assert ledger.processes() == {"api": 1, "media": 2, "other": 1, "engine": 1}
    summary = cpu_summary(ledger, requests=4)
    assert summary["cpu_s"]["gateway"] == pytest.approx(2.125)
    assert summary["cpu_ms_per_request"]["gateway"] == pytest.approx(2125 / 4)
    assert summary["cpu_ms_per_request"]["engine"] == pytest.approx(750.0)


def test_a_role_is_the_last_one_seen() -> None:
    # vLLM spawns its engine core untitled (an API-looking spawn child), then titles it VLLM::EngineCore.
    ledger = CpuLedger()
    ledger.begin([])
    ledger.update([Reading(7, 1.0, "api", 0.5)])
    ledger.update([Reading(7, 1.0, "engine", 2.0)])
    assert ledger.cpu_s()["engine"] == 2.0 and ledger.cpu_s()["api"] == 0.0


def test_the_sampler_counts_a_child_that_burns_cpu_and_exits_mid_run() -> None:
    burn = "import time\nwhile time.process_time() < 0.3: pass"
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}], check=True)\n"
        "print('done', flush=True)\n"
        "time.sleep(60)"
    )
    root = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        with TreeSampler(root.pid) as tree:
            assert root.stdout is not None and root.stdout.readline().strip() == "done"
        summary = tree.summary(requests=1)
    finally:
        root.kill()
        root.wait()
    assert summary["processes"]["other"] == 1 and summary["processes"]["api"] == 1
    assert summary["cpu_s"]["other"] >= 0.15  # its last reading, at most one sampling period before it exited
    assert summary["rss_peak_mb"]["process_tree"] >= summary["rss_peak_mb"]["api_process"] > 0
