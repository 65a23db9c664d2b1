"""Operations on a real server process with the real engine: serving, disconnects, overload, auth, metrics, drain,
engine death; each with one API process and with two in front of one engine core (``--api-workers 2``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.api.conftest import AssetServer
from tests.e2e.process import ServerProcess, server_process, signal_all, stop_engine_when
from tests.media_factory import image_bytes

pytestmark = pytest.mark.e2e

KEY = "sk-e2e-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
MODEL = "tiny-qwen3vl"
# Streams that must still be running when a test acts on them ask for 8000 tokens (many seconds of work here; 2 × 30000
# outlast the 60 s drain), and only their headers, which leave with the first token, say they started: their text
# lines can lag far behind, as the random model's tokens often make no whole characters.
LONG_CONTEXT = 16384
LONG = 8000


@pytest.fixture(scope="module")
def assets() -> Iterator[AssetServer]:
    server = AssetServer()
    yield server
    server.close()


WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["1-api-process", "2-api-processes"])


@pytest.fixture(scope="module", params=[1, 2], ids=["1-api-process", "2-api-processes"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    extra = [
        "--api-workers", str(request.param),
        "--api-keys", json.dumps([KEY]),
        "--media-allow-loopback",
        "--admission-max-running", "2",
        "--admission-max-queued", "2",
        "--drain-timeout", "60",
    ]  # fmt: skip
    with server_process(tmp_path_factory.mktemp("server"), extra, max_model_len=LONG_CONTEXT) as process:
        yield process


def body(content: Any, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **extra}


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def ready_status(server: ServerProcess) -> int | None:
    """``/ready``'s status code, or None once the server no longer listens."""
    try:
        return httpx.get(f"{server.base_url}/ready", timeout=5).status_code
    except httpx.ConnectError:
        return None


def idle(server: ServerProcess) -> bool:
    return (
        server.metric("vllm:num_requests_running", AUTH) == 0
        and server.metric("vllm:num_requests_waiting", AUTH) == 0
        and server.metric("qwen3vl_requests_running", AUTH) == 0
    )


def test_a_streamed_answer_equals_the_whole_one_and_both_count_their_tokens(server: ServerProcess) -> None:
    # Temperature 0 and the same request: the same tokens, whichever API process serves each (with two, the kernel
    # hands connections to either; six requests make both likely to serve some).
    request = body("Describe the sea.", max_tokens=24, temperature=0, ignore_eos=True)
    url = f"{server.base_url}/v1/chat/completions"
    wholes = [
        ChatCompletion.model_validate(httpx.post(url, json=request, headers=AUTH, timeout=60).json()) for _ in "abc"
    ]
    assert len({w.choices[0].message.content for w in wholes}) == 1
    whole = wholes[0]
    assert (
        whole.usage is not None and whole.usage.completion_tokens == 24 and whole.choices[0].finish_reason == "length"
    )
    for _ in "abc":
        streamed = {**request, "stream": True, "stream_options": {"include_usage": True}}
        with httpx.stream("POST", url, json=streamed, headers=AUTH, timeout=60) as r:
            lines = [line for line in r.iter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        chunks = [ChatCompletionChunk.model_validate_json(line[6:]) for line in lines[:-1]]
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == whole.choices[0].message.content
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finishes == ["length"] and chunks[-1].usage is not None and whole.usage is not None
        same = {"prompt_tokens_details": {"cached_tokens"}}  # a repeated prompt is found in the prefix cache
        assert chunks[-1].usage.model_dump(exclude=same) == whole.usage.model_dump(exclude=same)


def test_client_disconnect_mid_stream_aborts_the_engine_request(server: ServerProcess) -> None:
    generated_before = server.metric("vllm:generation_tokens_total", AUTH)
    asked = LONG_CONTEXT - 256  # all the context allows: the longest window for a descheduled client to leave in
    request = body("Tell me a long story.", stream=True, max_tokens=asked, ignore_eos=True)
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, headers=AUTH) as response,
    ):
        assert response.status_code == 200  # a stream's headers leave with its first token: it is generating
    # The client is gone: the engine request must be aborted, not left generating all it asked for.
    wait_for(lambda: idle(server), 60, "the server is still busy after the client left")
    generated = server.metric("vllm:generation_tokens_total", AUTH) - generated_before
    assert 0 < generated < asked, generated  # aborted: the tokens it asked for were never all generated


def test_client_disconnect_mid_fetch_cancels_the_media_work(server: ServerProcess, assets: AssetServer) -> None:
    path = f"/slow-{server.base_url.rsplit(':', 1)[1]}.png"  # the asset server outlives each server of this module
    url = assets.add(path, image_bytes(64, 64, seed=77))
    assets.delay_s = 5.0
    try:
        prompts_before = server.metric("vllm:prompt_tokens_total", AUTH)
        errors_before = server.metric("qwen3vl_request_errors_total", AUTH)
        request = body([{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "hi"}])
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{server.base_url}/v1/chat/completions", json=request, headers=AUTH, timeout=1.0)
        assert assets.hits.count(path) == 1
        # The server records the disconnect (499) only after the request's work was cancelled and awaited.
        closed = lambda: server.metric("qwen3vl_request_errors_total", AUTH) > errors_before  # noqa: E731
        wait_for(closed, 60, "the server never noticed that the client left")
        wait_for(lambda: assets.in_flight == 0, 60, "the asset server is still serving the slow image")
        wait_for(lambda: idle(server), 60, "request still running after the client left mid-fetch")
        assert server.metric("vllm:prompt_tokens_total", AUTH) == prompts_before  # the engine never saw it
    finally:
        assets.delay_s = 0.0


def test_burst_above_capacity_gets_200_or_429_only_and_rejections_fetch_nothing(
    server: ServerProcess, assets: AssetServer
) -> None:
    before = len(assets.hits)
    urls = [assets.add(f"/burst{i}.png", image_bytes(64, 64, seed=100 + i)) for i in range(16)]
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def send(url: str) -> None:
        request = body([{"type": "image_url", "image_url": {"url": url}}], max_tokens=600, ignore_eos=True)
        response = httpx.post(f"{server.base_url}/v1/chat/completions", json=request, headers=AUTH, timeout=120)
        with lock:
            results.append(response)

    threads = [threading.Thread(target=send, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1 and statuses.count(200) >= 2
    for response in results:
        if response.status_code == 429:
            assert int(response.headers["retry-after"]) >= 1
    assert len(assets.hits) - before == statuses.count(200)  # refused requests fetched nothing
    wait_for(lambda: idle(server), 5.0, "not idle after the burst")


def _raw_request(server: ServerProcess, request_line: str, headers: dict[str, str]) -> int:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "Connection: close\r\n\r\n"
        )
        sock.sendall(head.encode())
        reply = sock.recv(4096).decode(errors="replace")
    return int(reply.split(" ", 2)[1])


@pytest.mark.parametrize(
    "target",
    [
        "/v1/models",
        "/v1/models/",
        "//v1/models",
        "/health/../v1/models",
        "/./v1/models",
        "/v1/models?x=/health",
        "/%2Fv1/models",
        "/v1%2Fmodels",
        "/HEALTH/../v1/models",
        "http://127.0.0.1/v1/models",
    ],
)
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "internal.svc.cluster.local", "evil.example"])
def test_auth_cannot_be_bypassed_with_hosts_or_paths(server: ServerProcess, target: str, host: str) -> None:
    headers = {
        "Host": host,
        "X-Forwarded-Host": "localhost",
        "X-Original-URL": "/health",
        "X-Forwarded-For": "127.0.0.1",
    }
    status = _raw_request(server, f"GET {target} HTTP/1.1", headers)
    assert status in (400, 401), (target, host, status)
    assert _raw_request(server, "GET /v1/models HTTP/1.1", {"Host": host, **AUTH}) == 200


def test_promtool_accepts_metrics_after_real_traffic(server: ServerProcess) -> None:
    httpx.post(f"{server.base_url}/v1/chat/completions", json=body("hi", max_tokens=4), headers=AUTH, timeout=60)
    scrape = httpx.get(f"{server.base_url}/metrics", headers=AUTH, timeout=10).text
    assert "vllm:num_requests_running" in scrape and "qwen3vl_time_to_first_token_seconds_bucket" in scrape
    # Our own families must be clean. vLLM's keep their published names (colon namespace, one histogram ending in
    # _total), which promtool lints; renaming them would break every existing vLLM dashboard, so they are only
    # required to be the *only* findings.
    ours = "\n".join(line for line in scrape.splitlines() if "vllm:" not in line) + "\n"
    checked = subprocess.run(["promtool", "check", "metrics"], input=ours.encode(), capture_output=True, timeout=60)
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()
    everything = subprocess.run(
        ["promtool", "check", "metrics"], input=scrape.encode(), capture_output=True, timeout=60
    )
    findings = [line for line in (everything.stdout + everything.stderr).decode().splitlines() if line.strip()]
    assert findings and all(line.startswith("vllm:") for line in findings), findings


def test_api_processes_are_named_like_vllms_own(server: ServerProcess) -> None:
    args = [str(a) for a in server.process.args]  # type: ignore[union-attr]
    workers = int(args[args.index("--api-workers") + 1])
    titles = sorted(" ".join(p.cmdline()).strip() for p in psutil.Process(server.process.pid).children(recursive=True))
    api = [t for t in titles if t.startswith("VLLM::APIServer_")]
    # One API process is the server process itself; with more, the supervisor's children, one title each.
    assert api == ([f"VLLM::APIServer_{i}" for i in range(workers)] if workers > 1 else []), titles
    assert sum(t.startswith("VLLM::EngineCore") for t in titles) == 1, titles


def test_server_timing_is_present_and_plausible(server: ServerProcess) -> None:
    started = time.perf_counter()
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", json=body("hi", max_tokens=8), headers=AUTH, timeout=60
    )
    wall_ms = (time.perf_counter() - started) * 1000
    stages = {
        p.split(";dur=")[0].strip(): float(p.split(";dur=")[1]) for p in response.headers["server-timing"].split(",")
    }
    assert 0 <= stages["queue"] <= stages["ttft"] <= stages["total"] <= wall_ms


def test_sigterm_drains_live_streams_then_exits_zero(server: ServerProcess) -> None:
    """Last in this module: it stops the shared server."""
    outcomes: list[tuple[int, list[str], float]] = []

    def stream() -> None:
        request = body("Count slowly.", stream=True, max_tokens=LONG, ignore_eos=True)
        with httpx.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json=request, headers=AUTH, timeout=120
        ) as r:
            lines = [line for line in r.iter_lines() if line]
            outcomes.append((r.status_code, lines, time.monotonic()))

    # Both streams must hold the server's two running slots at once: nothing of an earlier test may still hold one.
    # SIGTERM goes while the engine is stopped at a moment it still generates both (see stop_engine_when), so neither
    # can end before SIGTERM; the engine goes on after it. When the pair ends first, another is sent (three at most).
    engine = server.engine_processes()
    for _attempt in range(3):
        wait_for(lambda: idle(server), 60, "the server is still busy with an earlier test's request")
        outcomes.clear()
        threads = [threading.Thread(target=stream) for _ in range(2)]
        for t in threads:
            t.start()
        pair = list(threads)
        both_generate = lambda: server.metric("vllm:num_requests_running", AUTH) == 2  # noqa: E731
        if stop_engine_when(engine, both_generate, gone=lambda: not all(t.is_alive() for t in pair)):  # noqa: B023
            break
        for t in threads:
            t.join(300)
    else:
        raise AssertionError("three pairs of streams ended before the engine could be stopped while generating both")
    sent = time.monotonic()
    try:
        os.kill(server.process.pid, signal.SIGTERM)
        # Readiness flips in the signal handler itself, whatever the engine does.
        wait_for(lambda: ready_status(server) in (503, None), 30, "readiness still 200")
    finally:
        signal_all(engine, signal.SIGCONT)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a drained stream never ended"
    assert server.process.wait(timeout=120) == 0
    log = server.log()  # a clean stop is quiet: no late AsyncLLM.__del__ at exit, no engine "dead" to an API process
    assert "Exception ignored" not in log and "output_handler failed" not in log and "Traceback" not in log
    assert len(outcomes) == 2
    for status, lines, finished in outcomes:
        ended = [round(f - sent, 2) for *_, f in outcomes]
        assert finished > sent, f"a stream ended before SIGTERM: nothing was drained (seconds from SIGTERM: {ended})"
        assert status == 200 and lines[-1] == "data: [DONE]"
        usage_or_finish = [json.loads(line[6:]) for line in lines[:-1]]
        assert not any("error" in event for event in usage_or_finish)
        assert sum(len(e["choices"]) and e["choices"][0].get("finish_reason") == "length" for e in usage_or_finish) == 1


@WORKERS
def test_engine_failure_fails_in_flight_requests_and_exits_non_zero(tmp_path: Path, workers: int) -> None:
    # The engine core can run far ahead of what the client has read on this box (a whole 8000-token answer done at
    # the engine while the client holds its first chunks), so this stream asks for 32000 tokens: still generating when
    # the kill lands.
    with server_process(tmp_path, ["--api-workers", str(workers)], max_model_len=4 * LONG_CONTEXT // 2) as server:
        events: list[str] = []
        live = threading.Event()

        def stream() -> None:
            request = body("Go on.", stream=True, max_tokens=32000, ignore_eos=True)
            with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=request, timeout=60) as r:
                live.set()  # a stream's headers leave with its first token: it is generating
                events.extend(line for line in r.iter_lines() if line)

        worker = threading.Thread(target=stream)
        worker.start()
        assert live.wait(timeout=60), "stream did not start"
        server.engine_core().kill()
        worker.join(timeout=30)
        assert not worker.is_alive(), "the in-flight stream hung after the engine died"
        assert events[-1] == "data: [DONE]"
        assert "error" in json.loads(events[-2][6:]), events[-4:]
        assert json.loads(events[-2][6:])["error"]["code"] in ("engine_unavailable", "engine_error")
        code = server.process.wait(timeout=60)
        assert code != 0
