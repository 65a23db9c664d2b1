"""A real PostgreSQL server for the tests (Debian's ``postgresql`` package, which ``make tools`` installs), started as
an unprivileged user: ``postgres`` when the tests run as root (PostgreSQL refuses to run as root), else the tests' own
user. It listens on a Unix socket in its own data directory only (no TCP port to pick), with fsync off (a test
database need not survive a power cut), and is stopped and removed at the end of the session."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

START_TIMEOUT_S = 120


def _bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: run `make tools` (Debian's postgresql package)")
    return found[-1].parent


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a running server's ``postgres`` database (user ``qwen``, trusted on its socket)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="qwen3vl-pg-"))
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        for path in (root, data):
            shutil.chown(path, "postgres", "postgres")
    run = {"check": True, "capture_output": True, "timeout": START_TIMEOUT_S}
    subprocess.run(_as_server_user([str(bindir / "initdb"), "-D", str(data), "-U", "qwen", "-A", "trust", "-N"]), **run)
    options = f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off -c max_connections=200"
    log = root / "server.log"
    ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", str(START_TIMEOUT_S)]
    subprocess.run(_as_server_user([*ctl, "start"]), **run)
    try:
        yield f"postgresql://qwen@/postgres?host={root}"
    finally:
        subprocess.run(_as_server_user([*ctl[:2], str(data), "-m", "immediate", "stop"]), check=False, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(url: str) -> str:
    """A new, empty database on the server of ``url``: each test its own."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return url.replace("/postgres?", f"/{name}?")
