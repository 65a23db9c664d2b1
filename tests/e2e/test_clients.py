"""End-to-end: every example script, every curl script and the ``qwen3vl-chat`` CLI against the real engine.

The tiny checkpoint answers gibberish, so these check exit codes, the shape of what is printed (usage lines, SSE events,
JSON validated with the openai SDK's types) and the visual token counts the server reports — never the text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from PIL import Image

from clients.chat_cli import main
from tests.e2e.conftest import LiveServer
from tests.media_factory import image_bytes, mp4_bytes

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "clients" / "examples"
MAX_TOKENS = 6


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "QWEN3VL_API_KEY", "IMAGE", "VIDEO")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)  # before reinstall too
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable  # the curl scripts' python (Pillow, clients)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["MAX_TOKENS"] = str(MAX_TOKENS)
    return env | extra


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, env=_env(**env), timeout=180, cwd=ROOT, check=False)


def usages(text: str) -> list[dict[str, int]]:
    """Every ``usage: k=v …`` line (the examples' stdout, the CLI's stderr), checked for consistency."""
    found = []
    for line in re.findall(r"^usage: (.+)$", text, re.MULTILINE):
        usage = {k: int(v) for k, v in (pair.split("=") for pair in line.split())}
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], line
        assert 1 <= usage["completion_tokens"] <= MAX_TOKENS, line
        assert usage["prompt_tokens"] > usage.get("image_tokens", 0) + usage.get("video_tokens", 0), line
        found.append(usage)
    return found


def example(server: LiveServer, name: str, *args: str, model: bool = True) -> str:
    argv = [sys.executable, str(EXAMPLES / f"{name}.py"), "--url", server.base_url, "--max-tokens", str(MAX_TOKENS)]
    proc = run([*argv, *(["--model", server.model] if model else []), *args])
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


@pytest.fixture
def media(tmp_path: Path) -> tuple[Path, Path]:
    image, video = tmp_path / "photo.jpg", tmp_path / "clip.mp4"
    image.write_bytes(image_bytes(96, 64, "JPEG", seed=3))
    video.write_bytes(mp4_bytes(frames=8, width=64, height=64, fps=4.0, seed=3))
    return image, video


# --- the openai SDK examples -------------------------------------------------------------------------------------


def test_single_image_example_and_its_pixel_budget(dense_server: LiveServer, media: tuple[Path, Path]) -> None:
    (default,) = usages(example(dense_server, "single_image", model=False))  # the model comes from /v1/models
    (small,) = usages(example(dense_server, "single_image", "--max-pixels", "4096"))
    (file,) = usages(example(dense_server, "single_image", "--image", str(media[0])))
    assert default["image_tokens"] > small["image_tokens"] > 0
    assert file["image_tokens"] > 0


def test_multi_image_example(dense_server: LiveServer, media: tuple[Path, Path]) -> None:
    (two,) = usages(example(dense_server, "multi_image"))
    (three,) = usages(example(dense_server, "multi_image", *("--image", str(media[0])) * 3))
    assert two["image_tokens"] > 0 and three["image_tokens"] > 0
    assert two.get("video_tokens", 0) == 0


@pytest.mark.parametrize("args", [[], ["--frames"], ["--video", "FILE", "--fps", "4"]], ids=["mp4", "frames", "file"])
def test_video_example(dense_server: LiveServer, media: tuple[Path, Path], args: list[str]) -> None:
    (usage,) = usages(example(dense_server, "video", *[str(media[1]) if a == "FILE" else a for a in args]))
    assert usage["video_tokens"] > 0
    assert usage.get("image_tokens", 0) == 0


def test_streaming_example_prints_chunks_then_usage(dense_server: LiveServer) -> None:
    out = example(dense_server, "streaming")
    (usage,) = usages(out)
    chunks = int(re.findall(r"^chunks: (\d+)$", out, re.MULTILINE)[-1])
    assert 1 <= chunks <= usage["completion_tokens"]
    assert usage["image_tokens"] > 0


def test_multi_turn_example_resends_the_history(dense_server: LiveServer) -> None:
    out = example(dense_server, "multi_turn")
    assert [int(t) for t in re.findall(r"^turn (\d+): ", out, re.MULTILINE)] == [1, 2]
    first, second = usages(out)
    assert first["image_tokens"] == second["image_tokens"] > 0
    assert second["prompt_tokens"] > first["prompt_tokens"] + first["completion_tokens"]


def test_grounding_example_parses_and_draws(dense_server: LiveServer, tmp_path: Path) -> None:
    out = example(dense_server, "grounding", "--out", str(tmp_path / "boxes.png"))
    assert re.search(r"^boxes: \d+$", out, re.MULTILINE)
    assert usages(out)[0]["image_tokens"] > 0
    with Image.open(tmp_path / "boxes.png") as drawn:
        assert drawn.size == (320, 240)


# --- the curl scripts --------------------------------------------------------------------------------------------


def curl(script: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(["bash", str(EXAMPLES / script), *args], **env)


def completion_of(proc: subprocess.CompletedProcess[str]) -> ChatCompletion:
    assert proc.returncode == 0, proc.stderr + proc.stdout
    completion = ChatCompletion.model_validate(json.loads(proc.stdout))
    assert completion.choices[0].message.role == "assistant"
    assert completion.usage is not None and 1 <= completion.usage.completion_tokens <= MAX_TOKENS
    return completion


def details(completion: ChatCompletion) -> dict[str, int]:
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    return {k: v for k, v in completion.usage.prompt_tokens_details.model_dump().items() if v is not None}


def test_curl_image(dense_server: LiveServer, media: tuple[Path, Path]) -> None:
    generated = completion_of(curl("curl_image.sh", dense_server.base_url))  # model from /v1/models
    assert generated.model == dense_server.model
    assert details(generated)["image_tokens"] > 0
    from_file = completion_of(curl("curl_image.sh", dense_server.base_url, dense_server.model, IMAGE=str(media[0])))
    assert details(from_file)["image_tokens"] > 0


def test_curl_video(dense_server: LiveServer, media: tuple[Path, Path]) -> None:
    for env in ({}, {"VIDEO": str(media[1])}):
        completion = completion_of(curl("curl_video.sh", dense_server.base_url, dense_server.model, **env))
        assert details(completion)["video_tokens"] > 0
        assert details(completion).get("image_tokens", 0) == 0


def test_curl_stream(dense_server: LiveServer) -> None:
    proc = curl("curl_stream.sh", BASE_URL=dense_server.base_url, MODEL=dense_server.model)
    assert proc.returncode == 0, proc.stderr
    events = [line.removeprefix("data: ") for line in proc.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events[:-1]]
    assert sum(1 for c in chunks for choice in c.choices if choice.finish_reason) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert 1 <= chunks[-1].usage.completion_tokens <= MAX_TOKENS


def test_curl_shows_the_servers_error(dense_server: LiveServer) -> None:
    proc = curl("curl_image.sh", dense_server.base_url, "no-such-model")
    assert proc.returncode == 22  # curl --fail-with-body
    error = json.loads(proc.stdout)["error"]
    assert error["message"] and error["type"]


# --- the CLI -----------------------------------------------------------------------------------------------------


def cli_usage(stderr: str) -> dict[str, int]:
    (usage,) = usages(stderr)
    return usage


def test_cli_streams_and_agrees_with_no_stream(
    dense_server: LiveServer, media: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    image, video = media
    argv = [str(image), str(video), "-p", "Describe both.", "--url", dense_server.base_url]
    argv += ["--max-tokens", str(MAX_TOKENS), "--temperature", "0", "--max-pixels", "16384"]
    assert main(argv) == 0
    streamed = capsys.readouterr()
    assert main([*argv, "--no-stream", "--model", dense_server.model, "--system", "Be brief."]) == 0
    whole = capsys.readouterr()
    usage = cli_usage(streamed.err)
    assert usage["image_tokens"] > 0 and usage["video_tokens"] > 0
    assert streamed.out.endswith("\n") and whole.out.endswith("\n")
    assert cli_usage(whole.err)["image_tokens"] == usage["image_tokens"]
    assert cli_usage(whole.err)["prompt_tokens"] > usage["prompt_tokens"]  # the system prompt


def test_cli_as_a_process(dense_server: LiveServer, media: tuple[Path, Path]) -> None:
    base = [sys.executable, "-m", "clients.chat_cli", "--url", dense_server.base_url, "--max-tokens", str(MAX_TOKENS)]
    proc = run([*base, str(media[1]), "-p", "What happens?"])
    assert proc.returncode == 0, proc.stderr
    assert cli_usage(proc.stderr)["video_tokens"] > 0
    failed = run([*base, str(media[0]), "-p", "hi", "--model", "no-such-model"])
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: 404") and "Traceback" not in failed.stderr
    assert failed.stdout == ""


def test_cli_errors_carry_the_servers_message(
    dense_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    expected = httpx.post(f"{dense_server.base_url}/v1/chat/completions", json=body, timeout=30).json()["error"]
    assert main(["-p", "hi", "--url", dense_server.base_url, "--model", "no-such-model"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: 404 {expected['code']}: {expected['message']}\n"

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not an image")
    assert main([str(broken), "-p", "hi", "--url", dense_server.base_url, "--model", dense_server.model]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: 400 ") and "messages[0].content[0].image_url" in err


def test_the_batch_command_runs_a_file_and_downloads_the_answers(
    dense_server: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        {
            "custom_id": f"q{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": dense_server.model,
                "messages": [{"role": "user", "content": f"Hi {i}"}],
                "max_tokens": 3,
            },
        }
        for i in range(3)
    ]
    source = tmp_path / "requests.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code = main(["batch", str(source), "--url", dense_server.base_url, "--poll", "0.2"])
    err = capsys.readouterr().err
    assert code == 0, err
    answers = [json.loads(line) for line in (tmp_path / "requests.output.jsonl").read_text().splitlines()]
    assert [a["custom_id"] for a in answers] == ["q0", "q1", "q2"]
    for answer in answers:
        ChatCompletion.model_validate(answer["response"]["body"])
    assert "3/3" in err and "3 answers in" in err and not (tmp_path / "requests.errors.jsonl").exists()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**lines[0], "method": "GET"}) + "\n")
    assert main(["batch", str(bad), "--url", dense_server.base_url]) == 1
    assert "line 1: method: must be POST" in capsys.readouterr().err
