"""A decode worker process: ``python -m server.media.worker CONFIG_JSON`` (started by ``media.pool``, never by hand).

It imports the decoders, maps the two shared buffers the server handed over (input bytes in, RGB frames out), locks
itself in (``media.sandbox``), says it is ready, then serves one job at a time over its stdin/stdout pipes
(``media.wire``). A job: the server names the input's size; the worker answers with the header (or an error); the
server answers with the target grid (or ``abort``); the worker decodes into the output buffer and says how many bytes
it wrote. On ``MemoryError`` it exits with ``MEMORY_EXIT`` so that the server replaces it and counts why.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import mmap
import os
import pkgutil
import sys
from typing import Any

MEMORY_EXIT = 3
PROTOCOL_EXIT = 4


def _preload() -> None:
    """Import everything a decode may touch, while files can still be opened."""
    import av
    import av.logging
    from PIL import Image

    for module in pkgutil.walk_packages(av.__path__, "av."):
        importlib.import_module(module.name)
    av.logging.set_level(None)  # FFmpeg's own log lines would let a hostile file flood the server's stderr
    Image.init()
    for plugin in ("PngImagePlugin", "JpegImagePlugin", "WebPImagePlugin", "BmpImagePlugin", "GifImagePlugin"):
        importlib.import_module(f"PIL.{plugin}")


def _close_inherited(keep: set[int]) -> None:
    """Close every descriptor but stdio and ``keep``. The server starts workers with close_fds, but uvloop (uvicorn's
    event loop) ignores it: without this a decoder would hold whatever inheritable descriptors the server had (with
    ``--api-workers``, its listening socket: a connection handed to no process that reads it)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # the listing's own descriptor, already closed
                os.close(fd)


def _private_pipes() -> tuple[int, int]:
    """Move the control pipes off fds 0/1, so that nothing a library prints can corrupt the protocol."""
    control_in, control_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)
    os.close(null)
    return control_in, control_out


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[0])
    from server.media import decode, sandbox, wire

    sandbox.die_with_parent()
    _close_inherited({config["in_fd"], config["out_fd"]})
    control_in, control_out = _private_pipes()
    _preload()
    in_buf = mmap.mmap(config["in_fd"], config["in_bytes"])
    out_buf = mmap.mmap(config["out_fd"], config["out_bytes"])
    sandbox.limit_memory(config["memory_bytes"])
    checks = {"socket_refused": False, "open_refused": False}
    if config["sandbox"]:
        sandbox.install_filter()
        checks = sandbox.self_check()
    wire.send(control_out, {"ready": True, "pid": os.getpid(), **checks})
    serve = _Jobs(decode, wire, control_in, control_out, memoryview(in_buf), memoryview(out_buf))
    while True:
        try:
            message = wire.receive(control_in)
        except wire.WireError:
            return 0  # the server closed the pipe: time to go
        try:
            serve.run(message)
        except MemoryError:
            return MEMORY_EXIT
        except wire.WireError:
            return PROTOCOL_EXIT


class _Jobs:
    def __init__(
        self, decode: Any, wire: Any, control_in: int, control_out: int, in_buf: memoryview, out_buf: memoryview
    ):
        self.decode, self.wire = decode, wire
        self.control_in, self.control_out = control_in, control_out
        self.in_buf, self.out_buf = in_buf, out_buf

    def reply(self, message: dict[str, Any]) -> None:
        self.wire.send(self.control_out, message)

    def run(self, message: dict[str, Any]) -> None:
        op, size = message.get("op"), int(message.get("size", 0))
        if op not in ("image", "video") or not 0 < size <= len(self.in_buf):
            raise self.wire.WireError("unknown job")
        data = self.in_buf[:size]
        try:
            if op == "image":
                self._image(data, int(message["max_source_pixels"]))
            else:
                self._video(data)
        except self.decode.DecodeFailure as failure:
            self.reply({"error": failure.code, "detail": failure.detail})
        except (MemoryError, self.wire.WireError):
            raise
        except Exception:  # a decoder's unexpected exception: this job failed, the worker's state is still sound
            self.reply({"error": "decode_failed", "detail": ""})
        finally:
            data.release()

    def _go(self) -> dict[str, Any] | None:
        answer = self.wire.receive(self.control_in)
        return answer if answer.get("op") == "go" else None

    def _image(self, data: memoryview, max_source_pixels: int) -> None:
        image, header = self.decode.open_image(data, max_source_pixels=max_source_pixels)
        self.reply({"header": {"format": header.format, "width": header.width, "height": header.height}})
        go = self._go()
        if go is None:
            return
        written = self.decode.finish_image(image, int(go["height"]), int(go["width"]), self.out_buf)
        self.reply({"done": {"bytes": written}})

    def _video(self, data: memoryview) -> None:
        container, stream, header = self.decode.open_video(data)
        try:
            self.reply({"header": {k: getattr(header, k) for k in header.__dataclass_fields__}})
            go = self._go()
        except BaseException:
            container.close()
            raise
        if go is None:
            container.close()
            return
        written = self.decode.decode_video(
            container,
            stream,
            [int(i) for i in go["indices"]],
            int(go["height"]),
            int(go["width"]),
            self.out_buf,
            max_decoded_frames=int(go["max_decoded_frames"]),
        )
        self.reply({"done": {"bytes": written}})


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
