"""Every test session gets a state directory of its own: what a server writes there by default (the stored responses'
and batches' SQLite files) stays out of the user's ~/.local/state, and concurrent sessions do not share it. The tests
that need PostgreSQL share one server per session (``postgres_url``), started on first use."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests.postgres import postgres_server

_STATE = "XDG_STATE_HOME"


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_previous] = os.environ.get(_STATE)
    os.environ[_STATE] = tempfile.mkdtemp(prefix="qwen3vl-test-state-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ[_STATE], ignore_errors=True)
    previous = config.stash.get(_previous, None)
    if previous is None:
        os.environ.pop(_STATE, None)
    else:
        os.environ[_STATE] = previous


_previous = pytest.StashKey[str | None]()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url
