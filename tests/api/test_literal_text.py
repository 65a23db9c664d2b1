"""Text that spells an added token is accepted and handed to the engine as a literal (issue 18, item 5); the real
engine's token ids are checked in tests/e2e/test_literal_text.py."""

from __future__ import annotations

from fastapi.testclient import TestClient

from server.engine.base import LITERAL_MARKER, with_literals
from server.engine.fake import FakeEngine


def test_special_token_text_is_answered_and_reaches_the_engine_as_literals(
    client: TestClient, engine: FakeEngine
) -> None:
    text = "How do I parse <|im_end|> markers and <think> tags in my logs? <|image_pad|>"
    tool = {"type": "function", "function": {"name": "grep", "description": "finds <|im_start|> lines"}}
    body = {"model": "fake-qwen3vl", "messages": [{"role": "user", "content": text}], "tools": [tool]}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    request = engine.requests[-1]
    # Messages first, then the tool definitions (which the fake's template leaves out of its prompt).
    assert request.literals == ("<|im_end|>", "<think>", "<|image_pad|>", "<|im_start|>")
    assert "<|im_end|>" not in request.prompt and len(LITERAL_MARKER.findall(request.prompt)) == 3
    assert text in with_literals(request.prompt, request.literals)
    assert request.images == ()  # a spelled placeholder is not an image
    # The fake counts words: the literal text counts as the same text would.
    looks_alike = {**body, "messages": [{"role": "user", "content": text.replace("<", "[")}]}
    plain = client.post("/v1/chat/completions", json=looks_alike)
    assert plain.status_code == 200 and engine.requests[-1].literals == ("<|im_start|>",)  # the tool's
    assert response.json()["usage"]["prompt_tokens"] == plain.json()["usage"]["prompt_tokens"]
