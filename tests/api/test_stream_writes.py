"""A stream's chunks leave in one write per group known at once (``Run.batches``, ``server.api.sse``): fewer passes
through the middleware, the HTTP framing and the socket, with no chunk held back waiting for the engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi.testclient import TestClient

from server.engine.fake import FakeEngine


async def _asgi_post(app: Any, path: str, body: bytes) -> list[dict[str, Any]]:
    """One request straight through the ASGI app, recording every message it sends (each one a write)."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client stays
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "path": path}
    scope |= {"raw_path": path.encode(), "query_string": b"", "headers": headers, "scheme": "http"}
    scope |= {"client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "root_path": "", "app": app}
    await app(scope, receive, send)
    return sent


def test_a_stream_writes_what_is_known_at_once_together(client: TestClient, engine: FakeEngine) -> None:
    """Opening and first token in one write, the last token with the usage chunk in one, then [DONE]."""
    request = {
        "model": engine.model.name,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert client.portal is not None
    sent = client.portal.call(_asgi_post, client.app, "/v1/chat/completions", json.dumps(request).encode())
    writes = [m["body"] for m in sent if m["type"] == "http.response.body" and m.get("body")]
    events = [[json.loads(e.removeprefix(b"data: ")) for e in w.split(b"\n\n")[:-1]] for w in writes[:-1]]
    assert writes[-1] == b"data: [DONE]\n\n"
    assert [len(w) for w in events] == [2, 1, 1, 2]  # the script: "Hello", ",", " world", "!"
    assert events[0][0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert events[0][1]["choices"][0]["delta"] == {"content": "Hello"}
    assert events[-1][0]["choices"][0]["finish_reason"] == "stop" and events[-1][1]["usage"]["completion_tokens"] == 4
