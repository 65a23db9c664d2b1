"""The in-memory multipart reader of uploads: what the SDK sends is read; hostile bodies are a clear 400."""

from __future__ import annotations

import random

import httpx
import pytest

from server.api.multipart import MAX_PARTS, read_form
from server.errors import InvalidRequestError


def _encoded(files: dict[str, tuple[str, bytes]], data: dict[str, str]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.headers["content-type"], request.read()


def test_a_form_as_clients_send_it() -> None:
    content_type, body = _encoded({"file": ("in.jsonl", b'{"a": 1}\n' * 1000)}, {"purpose": "batch"})
    form = read_form(content_type, body)
    assert form.fields == {"purpose": "batch"} and form.files["file"] == ("in.jsonl", b'{"a": 1}\n' * 1000)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data", b"--x\r\n"),
        ("multipart/form-data; boundary=x", b"--x\r\ncontent-disposition: form-data; name=a\r\n\r\n" + b"v" * 2000),
        (
            "multipart/form-data; boundary=x",
            b"".join(b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\nv\r\n" for _ in range(MAX_PARTS + 1)),
        ),
    ],
)
def test_refusals(content_type: str, body: bytes) -> None:
    with pytest.raises(InvalidRequestError) as info:
        read_form(content_type, body)
    assert info.value.code == "invalid_upload"


def test_random_bytes_never_escape_as_anything_but_a_400() -> None:
    rng = random.Random(19)
    content_type, good = _encoded({"file": ("f.jsonl", b"{}\n")}, {"purpose": "batch"})
    codes: list[str] = []
    for _ in range(500):
        body = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            body[rng.randrange(len(body))] = rng.randrange(256)
        try:
            form = read_form(content_type, bytes(body))
        except InvalidRequestError as exc:  # anything else (a parser exception, a crash) fails the test
            codes.append(exc.code)
        else:
            assert all(isinstance(value, str) for value in form.fields.values())
    assert codes and set(codes) == {"invalid_upload"}
