"""One streamed chat completion, sent and measured: the request body, the SSE decoding, what the chunks said and the
``RequestRecord`` they make.

Times are read when a chunk arrives (``time.perf_counter``), so TTFT, ITL and E2E are what a client sees; how they are
summarized is ``benchmarks.report``'s business.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.datasets import RequestSpec
from benchmarks.report import RequestRecord

__all__ = ["SSEDecoder", "StreamState", "error_code", "request_body", "send_request"]


class SSEDecoder:
    """Incremental server-sent-events decoder: feed text as it arrives, get each complete event's ``data``.

    Handles events split across reads, ``\\r\\n`` line ends, comment lines (``:ping``), fields other than ``data`` and
    multi-line data (joined with ``\\n``), per the SSE spec.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        events: list[str] = []
        while True:
            cut = min((i for i in (self._buffer.find("\n"), self._buffer.find("\r")) if i >= 0), default=-1)
            if cut < 0:
                return events
            line = self._buffer[:cut]
            skip = 2 if self._buffer.startswith("\r\n", cut) else 1
            if self._buffer[cut] == "\r" and cut + 1 == len(self._buffer):
                return events  # a lone \r at the end may be the first half of \r\n: wait for more
            self._buffer = self._buffer[cut + skip :]
            if event := self._line(line):
                events.append(event)

    def close(self) -> list[str]:
        """Flush a final event that was not followed by a blank line."""
        events = self.feed("\n\n") if self._buffer or self._data else []
        return events

    def _line(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            event, self._data = "\n".join(self._data), []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None


def error_code(payload: Any, status: int | None) -> tuple[str, str]:
    """(code, message) from an OpenAI error body (``code``, else ``type``), else ``http_<status>``."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        message = str(error.get("message") or "")
        if code:
            return str(code), message
        return (f"http_{status}" if status else "error"), message
    return (f"http_{status}" if status else "error"), str(payload)[:500]


@dataclass
class StreamState:
    """What a streamed chat completion said, chunk by chunk (times on the ``perf_counter`` clock)."""

    start: float
    first_content: float | None = None
    first_choice: float | None = None
    last_choice: float | None = None
    content_times: list[float] = field(default_factory=list)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    error_code: str | None = None
    error: str | None = None
    done: bool = False

    def on_event(self, data: str, now: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            self.error_code, self.error = "bad_sse_payload", data[:500]
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.error_code, self.error = error_code(chunk, None)
            return
        choices = chunk.get("choices") or []
        if choices:
            self.first_choice = self.first_choice if self.first_choice is not None else now
            self.last_choice = now
            for choice in choices:
                if (choice.get("delta") or {}).get("content"):
                    self.first_content = self.first_content if self.first_content is not None else now
                    self.content_times.append(now)
                    break
            for choice in choices:
                if choice.get("finish_reason"):
                    self.finish_reason = choice["finish_reason"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)

    def fill(self, record: RequestRecord) -> None:
        """Complete ``record`` from the stream: ok when no error event came and the stream finished with tokens."""
        record.finish_reason = self.finish_reason
        record.content_chunks = len(self.content_times)
        record.itl_s = [b - a for a, b in itertools.pairwise(self.content_times)]
        # TTFT is the first content chunk; a completion whose tokens all decode to empty text falls back to its
        # first chunk with choices (what vLLM's bench serve always uses).
        first = self.first_content if self.first_content is not None else self.first_choice
        record.usage_reported = self.completion_tokens is not None
        record.prompt_tokens = self.prompt_tokens or 0
        record.completion_tokens = (
            self.completion_tokens if self.completion_tokens is not None else len(self.content_times)
        )
        if self.error_code is not None:
            record.error_code, record.error = self.error_code, self.error
        elif first is None or self.last_choice is None or self.finish_reason is None:
            record.error_code = "incomplete_stream"
            record.error = "the stream ended before a finished choice"
        else:
            record.ok = True
        if first is not None and self.last_choice is not None:
            record.ttft_s = first - self.start
            record.e2e_s = self.last_choice - self.start


def request_body(
    spec: RequestSpec, model: str, *, ignore_eos: bool = True, extra_body: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": spec.chat_messages(),
        "max_tokens": spec.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True
    body.update(extra_body or {})
    return body


async def send_request(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    *,
    index: int = -1,
    max_tokens: int | None = None,
    timeout_s: float = 600,
) -> RequestRecord:
    """POST one streamed chat completion (``body`` already JSON-encoded) and measure it."""
    start = time.perf_counter()
    record = RequestRecord(ok=False, start_s=start, ttft_s=None, e2e_s=None, index=index, max_tokens=max_tokens)
    state = StreamState(start)
    try:
        async with (
            asyncio.timeout(timeout_s),
            client.stream("POST", url, content=body, headers={"content-type": "application/json"}) as response,
        ):
            record.status = response.status_code
            if response.status_code != 200:
                raw = await response.aread()
                try:
                    payload: Any = json.loads(raw)
                except ValueError:
                    payload = raw.decode(errors="replace")
                record.error_code, record.error = error_code(payload, response.status_code)
                return record
            decoder = SSEDecoder()
            async for text in response.aiter_text():
                now = time.perf_counter()
                for data in decoder.feed(text):
                    state.on_event(data, now)
            for data in decoder.close():
                state.on_event(data, time.perf_counter())
        state.fill(record)
    except TimeoutError:
        state.fill(record)
        record.ok, record.error_code, record.error = False, "client_timeout", f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        state.fill(record)
        record.ok, record.error_code, record.error = False, type(exc).__name__, str(exc)[:500]
    return record
