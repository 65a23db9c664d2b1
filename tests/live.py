"""The real app under uvicorn on a loopback port, in a thread: what the e2e and browser tests talk to over HTTP."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI


@dataclass
class Uvicorn:
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread


@contextlib.contextmanager
def uvicorn_thread(app: FastAPI, shutdown_timeout: float = 60) -> Iterator[Uvicorn]:
    """Start serving ``app`` (lifespan on) and stop when the block ends; waiting for readiness is the caller's.

    The port is bound here once (port 0, read back) and the socket handed to uvicorn: no window in which another
    process could take a port that was probed and released."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        yield Uvicorn(f"http://127.0.0.1:{port}", server, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=shutdown_timeout)
        sock.close()
