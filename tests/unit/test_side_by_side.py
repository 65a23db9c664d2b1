"""The side-by-side benchmark's bookkeeping (the run itself is `make bench`: minutes and three engines, not a test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from benchmarks.side_by_side_report import details, median_runs, paired_ratios, plot, plot_cpu, render, table
from benchmarks.targets import ENGINE, api_workers, engine_flags, listening_port, server_command, server_targets
from benchmarks.workloads import WORKLOADS


def summary(rps: float, ttft: float, health_p99: float = 5.0, cpu: float | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "request_throughput": rps,
        "ttft_ms": {"p50": ttft},
        "health_ms": {"p50": 1.0, "p99": health_p99, "max": 9.0},
        "rss_peak_mb": {"api_process": 700.0, "process_tree": 1700.0},
    }
    if cpu is not None:  # the gateway: three quarters API process(es), a quarter media workers
        roles = {"api": cpu * 0.75, "media": cpu * 0.25, "other": 0.0, "engine": 40.0}
        found["cpu_ms_per_request"] = {**roles, "gateway": cpu}
        found["processes"] = {"api": 1, "media": 2, "other": 1, "engine": 1}
    return found


def test_both_servers_get_the_same_engine_flags() -> None:
    vllm, ours = server_command("vllm", "/ckpt", 1), server_command("ours", "/ckpt", 2)
    assert vllm[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] and ours[1:3] == ["-m", "server"]
    flags = engine_flags()
    assert vllm[-len(flags) :] == ours[-len(flags) :] == flags
    assert json.loads(flags[flags.index("--limit-mm-per-prompt") + 1]) == ENGINE["limit_mm_per_prompt"]
    assert "--enforce-eager" in flags and flags[flags.index("--max-model-len") + 1] == "4096"


def test_table_reports_ratios_and_the_repeated_image_gain(tmp_path: Path) -> None:
    workloads = [WORKLOADS["unique-448"], WORKLOADS["repeated-448"], WORKLOADS["video-8f"]]
    results = {
        "raw": {"unique-448": summary(30.0, 100), "repeated-448": summary(32.0, 40)},
        "vllm": {name: summary(20.0, 300, 12.0) for name in ("unique-448", "repeated-448", "video-8f")},
        "ours": {
            "unique-448": summary(27.0, 200),
            "repeated-448": summary(31.0, 50),
            "video-8f": summary(6.0, 900),
        },
    }
    md = table(results, workloads)
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 30.0 | 20.0 | 27.0 | 1.35× | 0.90× |" in rows["unique-448"]
    assert "| – | 20.0 | 6.0 | 0.30× | – |" in rows["video-8f"]  # no raw run for videos
    assert "12.0 / 5.0" in rows["unique-448"]  # /health p99 under load, vLLM / ours
    assert "TTFT p50 50 ms vs 200 ms (4.00× better)" in md
    plot(results, workloads, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table_with_ours_wn_and_gateway_cpu(tmp_path: Path) -> None:
    workloads = [WORKLOADS["unique-448"], WORKLOADS["video-30f"]]
    names = [w.name for w in workloads]
    results = {
        "raw": {"unique-448": summary(30.0, 100, cpu=8.0)},
        "vllm": {n: summary(20.0, 300, 12.0, cpu=24.0) for n in names},
        "ours-w2": {n: summary(25.0, 250, 4.0, cpu=10.0) for n in names},
        "ours": {n: summary(27.0, 200, 5.0, cpu=12.0) for n in names},
    }
    md = table(results, workloads)
    lines = md.splitlines()
    assert lines[0].startswith("| workload | raw engine req/s | vLLM server req/s | ours req/s | ours-w2 req/s |")
    assert "gateway CPU ms/request (raw / vLLM / ours / ours-w2) | ours / vLLM gateway CPU" in lines[0]
    assert lines[1].count("---") == lines[0].count("|") - 1
    assert lines[2] == (
        "| unique-448 | 30.0 | 20.0 | 27.0 | 25.0 | 1.35× | 0.90× | 1.25× | 8.0 / 24.0 / 12.0 / 10.0 | 0.50× "
        "| 12.0 / 5.0 / 4.0 |"
    )
    assert lines[3].startswith("| video-30f | – | 20.0 | 27.0 | 25.0 | 1.35× | – | 1.25× |")
    detail = details(results, workloads).splitlines()
    assert detail[2] == (
        "| unique-448 | vLLM | 20.0 | 300 | 1.0 / 12.0 | 18.0 / 6.0 / 0.0 = 24.0; 40.0 | 1 / 2 / 1 / 1 | 700 / – / 1700 |"
    )
    assert [row.split(" | ")[1] for row in detail[2:5]] == ["vLLM", "ours", "ours-w2"]
    plot(results, workloads, tmp_path / "p.png")
    plot_cpu(results, workloads, tmp_path / "cpu.png")
    assert (tmp_path / "cpu.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_by_run_ratios_pair_adjacent_runs() -> None:
    workloads = [WORKLOADS["text"]]
    runs = {
        "vllm": [{"text": summary(20.0, 1, cpu=20.0)}, {"text": summary(10.0, 1, cpu=40.0)}],
        "ours": [{"text": summary(30.0, 1, cpu=10.0)}, {"text": summary(10.0, 1, cpu=10.0)}],
        "ours-w2": [{"text": summary(20.0, 1, cpu=5.0)}, {"text": summary(20.0, 1)}],  # a run from before CPU metering
    }
    md = paired_ratios(runs, workloads).splitlines()
    assert (
        md[0]
        == "| workload | ours / vLLM req/s | ours / vLLM gateway CPU | ours-w2 / vLLM req/s | ours-w2 / vLLM gateway CPU |"
    )
    assert md[2] == "| text | 1.50×, 1.00× | 0.50×, 0.25× | 1.00×, 2.00× | 0.25×, – |"
    document = {
        "command": "python -m benchmarks.side_by_side",
        "date": "2026-12-01",
        "concurrency": 8,
        "engine": {},
        "repeats": 2,
        "workloads": {"text": WORKLOADS["text"].__dict__},
        "results": {t: r[0] for t, r in runs.items()},
        "runs": runs,
    }
    assert md[2] in render(document)


def test_the_median_run_is_reported_whole() -> None:
    runs = [{"text": summary(r, ttft=r * 10)} for r in (30.0, 10.0, 20.0)]
    assert median_runs(runs)["text"] == summary(20.0, ttft=200)
    assert median_runs(runs[:2])["text"]["request_throughput"] == 10.0  # even count: the lower of the two middles


def test_ours_wn_is_ours_with_n_api_processes() -> None:
    expected = {"ours": 1, "ours-w1": 1, "ours-w2": 2, "ours-w16": 16, "vllm": None, "raw": None, "ours-w0": None}
    assert {t: api_workers(t) for t in expected} == expected
    ours, ours_w2 = server_command("ours", "/ckpt"), server_command("ours-w2", "/ckpt")
    assert "--api-workers" not in ours and ours_w2 == [*ours, "--api-workers", "2"]
    assert server_targets("raw,vllm,ours,ours-w2") == ["raw", "vllm", "ours", "ours-w2"]
    for bad in ("ours,ours", "vllm,ours-x", "", "ours-w0"):
        with pytest.raises(ValueError, match="each of raw, vllm, ours, ours-wN"):
            server_targets(bad)


def test_servers_start_on_port_zero_and_ours_reports_its_port_in_the_log(tmp_path: Path) -> None:
    for target in ("vllm", "ours", "ours-w2"):
        command = server_command(target, "/ckpt")
        assert command[command.index("--port") + 1] == "0"
    log = tmp_path / "ours.log"
    log.write_bytes(b"INFO:     Waiting for application startup.\n")
    assert listening_port("ours", os.getpid(), log) is None
    log.write_bytes(b"INFO:     Uvicorn running on http://127.0.0.1:43117 (Press CTRL+C to quit)\n")
    assert listening_port("ours", os.getpid(), log) == 43117
    # Several API processes: one start line each, the same port (the socket the supervisor bound and shares).
    log.write_bytes(b"INFO:     Uvicorn running on http://127.0.0.1:43118 (Press CTRL+C to quit)\n" * 2)
    assert listening_port("ours-w2", os.getpid(), log) == 43118


def test_vllms_port_is_read_from_its_listening_socket_once_it_listens(tmp_path: Path) -> None:
    # vLLM binds its socket early and listens only once the engine is up: a bound socket is not a port yet.
    code = (
        "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True); "
        "sys.stdin.readline(); s.listen(); print('listening', flush=True); sys.stdin.readline()"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdin is not None and child.stdout is not None
        port = int(child.stdout.readline())
        assert listening_port("vllm", child.pid, tmp_path / "unused.log") is None
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "listening"
        assert listening_port("vllm", child.pid, tmp_path / "unused.log") == port
    finally:
        child.kill()
        child.wait()


def test_health_probe_runs_in_its_own_process_and_reports_every_probe() -> None:
    import http.server
    import threading

    from benchmarks.probes import HealthProbe

    seen: list[int] = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(1)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with HealthProbe(f"http://127.0.0.1:{server.server_address[1]}") as probe:
            deadline = time.monotonic() + 60
            while len(seen) < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    assert len(seen) >= 5
    assert len(probe.samples) >= 5 and all(0 < s < 10_000 for s in probe.samples)
