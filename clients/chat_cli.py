"""``qwen3vl-chat``: ask the server about local or remote images and videos from the command line.

    qwen3vl-chat photo.jpg clip.mp4 -p "What happens here?" [--url http://127.0.0.1:8000] [--model NAME]
    qwen3vl-chat batch requests.jsonl      # a batch on the server, with a progress bar (clients.batch_cli)

Each FILE_OR_URL is an image or a video by its extension (``.mp4``, ``.webm``, ``.mov``, ``.mkv``, ``.avi``, … are
videos) or its ``data:`` MIME type; local files are inlined as data URLs. The answer streams to stdout; token usage goes
to stderr. Server errors exit 1 with the server's message (``error: 404 model_not_found: …``), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TextIO

import openai
from openai import OpenAI
from openai.types import CompletionUsage

from clients.messages import Part, image_part, media_kind, system_message, user_message, video_part

__all__ = ["build_parser", "first_model", "format_usage", "main", "media_parts"]

DEFAULT_URL = "http://127.0.0.1:8000"


def build_parser() -> argparse.ArgumentParser:
    env_key = os.environ.get("QWEN3VL_API_KEY") or os.environ.get("OPENAI_API_KEY")
    parser = argparse.ArgumentParser(
        prog="qwen3vl-chat", description="Ask a Qwen3-VL server about images and videos (files or URLs)."
    )
    parser.add_argument("media", nargs="*", metavar="FILE_OR_URL", help="images and videos, in prompt order")
    parser.add_argument("-p", "--prompt", required=True, help="the question")
    parser.add_argument(
        "--url",
        default=os.environ.get("QWEN3VL_URL", DEFAULT_URL),
        help=f"server base URL ($QWEN3VL_URL, {DEFAULT_URL})",
    )
    parser.add_argument("--model", help="model name (default: the first of /v1/models)")
    parser.add_argument(
        "--api-key", default=env_key, help="API key (default: $QWEN3VL_API_KEY or $OPENAI_API_KEY; none needed else)"
    )
    parser.add_argument("--system", help="a system prompt")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-pixels", type=int, help="pixel budget per image and per video frame")
    parser.add_argument("--fps", type=float, help="frames sampled per second of video (server default 2)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer")
    parser.add_argument("--no-stream", action="store_true", help="wait for the whole answer")
    return parser


def media_parts(sources: Sequence[str], *, max_pixels: int | None = None, fps: float | None = None) -> list[Part]:
    """One ``image_url`` or ``video_url`` part per source, classified by extension / MIME type."""
    return [
        video_part(src, max_pixels=max_pixels, fps=fps)
        if media_kind(src) == "video"
        else image_part(src, max_pixels=max_pixels)
        for src in sources
    ]


def format_usage(usage: CompletionUsage | None) -> str:
    """``usage: prompt_tokens=… completion_tokens=… total_tokens=… image_tokens=… video_tokens=…`` (the visual counts
    only when the server reports them in ``prompt_tokens_details``)."""
    if usage is None:
        return "usage: unavailable"
    fields = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    details = usage.prompt_tokens_details
    reported = details.model_dump() if details is not None else {}  # video_tokens is not (yet) an SDK field
    for name in ("image_tokens", "video_tokens"):
        if reported.get(name) is not None:
            fields[name] = int(reported[name])
    return "usage: " + " ".join(f"{k}={v}" for k, v in fields.items())


def first_model(client: OpenAI) -> str:
    """The first model the server lists (``GET /v1/models``)."""
    models = client.models.list().data
    if not models:
        raise ValueError("the server lists no models; pass --model")
    return models[0].id


def _error(exc: openai.OpenAIError) -> str:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or exc.message
        code = body.get("code")
        return f"{exc.status_code}{f' {code}' if code else ''}: {message}"
    if isinstance(exc, openai.APIConnectionError):
        return f"{exc.message} ({exc.request.url})"
    if isinstance(exc, openai.APIError):
        return exc.message
    return str(exc)


def _chat(args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    client = OpenAI(
        base_url=args.url.rstrip("/") + "/v1", api_key=args.api_key or "unused", timeout=args.timeout, max_retries=0
    )
    model = args.model or first_model(client)
    messages = [user_message(*media_parts(args.media, max_pixels=args.max_pixels, fps=args.fps), args.prompt)]
    if args.system:
        messages.insert(0, system_message(args.system))
    temperature = openai.omit if args.temperature is None else args.temperature
    if args.no_stream:
        reply = client.chat.completions.create(
            model=model, messages=messages, max_tokens=args.max_tokens, temperature=temperature
        )
        out.write((reply.choices[0].message.content or "") + "\n")
        usage = reply.usage
    else:
        usage = None
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=args.max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        for chunk in stream:
            for choice in chunk.choices:
                if choice.delta.content:
                    out.write(choice.delta.content)
                    out.flush()
            usage = chunk.usage or usage
        out.write("\n")
    out.flush()
    print(format_usage(usage), file=err)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["batch"]:  # qwen3vl-chat batch FILE.jsonl: clients.batch_cli
        from clients import batch_cli

        return batch_cli.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        _chat(args, sys.stdout, sys.stderr)
    except openai.OpenAIError as exc:
        print(f"error: {_error(exc)}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:  # an unreadable file, a bad control value
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
