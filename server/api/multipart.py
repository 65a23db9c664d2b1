"""A ``multipart/form-data`` body (an upload of ``/v1/files``) read in memory, by python-multipart's parser.

Starlette's ``request.form()`` spools a file part over 1 MB to a temporary file on disk; a request must not make the
server write to disk on its own, so the (already size-limited) body is parsed here, in memory, with the same
library's push parser (callers run it off the event loop: its work grows with the body). Only what this server asks for is kept: a few small text fields and one file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from server.errors import InvalidRequestError

MAX_PARTS = 8
MAX_FIELD_BYTES = 1024


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name -> (filename, content)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: list[memoryview] = field(default_factory=list)  # views of the body: the part is copied once, when joined
    size: int = 0


def read_form(content_type: str, body: bytes) -> Form:
    kind, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise InvalidRequestError("the upload must be multipart/form-data with a boundary", code="invalid_upload")
    form, parts = Form(), 0
    ended: list[bool] = []  # the closing boundary was read
    current = _Part()
    header_field: list[bytes] = []
    header_value: list[bytes] = []

    def on_part_begin() -> None:
        nonlocal current, parts
        parts += 1
        if parts > MAX_PARTS:
            raise InvalidRequestError(f"the upload has more than {MAX_PARTS} parts", code="invalid_upload")
        current = _Part()

    def on_header_end() -> None:
        current.headers[b"".join(header_field).lower()] = b"".join(header_value)
        header_field.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current.data.append(memoryview(data)[start:end])
        current.size += end - start
        if b"filename" not in current.headers.get(b"content-disposition", b"") and current.size > MAX_FIELD_BYTES:
            raise InvalidRequestError(f"a form field is longer than {MAX_FIELD_BYTES} bytes", code="invalid_upload")

    def on_part_end() -> None:
        _, disposition = parse_options_header(current.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        content = b"".join(current.data)
        if b"filename" in disposition:
            form.files[name] = (disposition[b"filename"].decode("utf-8", "replace")[:256], content)
        else:
            form.fields[name] = content.decode("utf-8", "replace")

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": lambda data, start, end: header_field.append(data[start:end]),
            "on_header_value": lambda data, start, end: header_value.append(data[start:end]),
            "on_header_end": on_header_end,
            "on_end": lambda: ended.append(True),
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except InvalidRequestError:
        raise
    except Exception as exc:  # the parser's own errors: a malformed body
        raise InvalidRequestError("the multipart body is malformed", code="invalid_upload") from exc
    if not ended:
        raise InvalidRequestError("the multipart body ends before its closing boundary", code="invalid_upload")
    return form
