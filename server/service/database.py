"""The stores' databases: an embedded SQLite file, or PostgreSQL shared by several replicas.

Both are used the one way: ``await db.run(work)`` runs ``work(conn)`` in one transaction on a thread of the database's
own, off the event loop (committed if it returns, rolled back if it raises); ``conn.execute(sql, params)`` and
``conn.executemany`` take ``?`` placeholders on both (translated for PostgreSQL). ``immediate`` asks for the writes
that read what they change to be serialized: SQLite's ``BEGIN IMMEDIATE``; on PostgreSQL a transaction-scoped
advisory lock (the rows such a write then changes are also taken ``FOR UPDATE SKIP LOCKED`` where the SQL says so).

SQLite runs in WAL mode so every API process of one server can open the same file; ``synchronous=NORMAL`` (a commit
survives a killed process). PostgreSQL is reached by a ``postgresql://`` URL (psycopg); a connection that broke is
opened again on the next call. The URL may hold a password: it is never logged.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

T = TypeVar("T")
Dialect = Literal["sqlite", "postgres"]
_ADVISORY_KEY = 0x71776E33  # "qwn3": the one lock the serialized writes take


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Conn(Protocol):
    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any: ...


class Database(Protocol):
    dialect: Dialect

    async def open(self, schema: str) -> None: ...

    async def run(self, work: Callable[[Conn], T], immediate: bool = False) -> T: ...

    async def close(self) -> None: ...


class _OnThread:
    """One worker thread per database: its connection is only ever used there."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=name)

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def shutdown(self) -> None:
        self._thread.shutdown(wait=True)


class SqliteFile:
    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self._name = name
        self._thread = _OnThread(name)
        self._db: sqlite3.Connection | None = None

    async def open(self, schema: str) -> None:
        def connect() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            self._db = db

        await self._thread.call(connect)

    async def run(self, work: Callable[[Conn], T], immediate: bool = False) -> T:
        def call() -> T:
            db = self._db
            if db is None:
                raise RuntimeError(f"the {self._name} is closed")
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                result = work(db)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return result

        return await self._thread.call(call)

    async def close(self) -> None:
        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._thread.call(disconnect)
        self._thread.shutdown()


class _PgConn:
    """A psycopg connection that takes ``?`` placeholders (no statement here has a literal ``?`` or ``%``)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> Cursor:
        cursor: Cursor = self._conn.execute(sql.replace("?", "%s"), params)
        return cursor

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> Any:
        with self._conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), list(params))


class PostgresDatabase:
    dialect: Dialect = "postgres"

    def __init__(self, url: str, name: str) -> None:
        self._url = url
        self._name = name
        self._thread = _OnThread(name)
        self._conn: Any = None
        self._closed = False

    def _connect(self) -> Any:
        import psycopg  # only a server with a PostgreSQL URL needs the driver loaded

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self._url, connect_timeout=30, autocommit=True)
        return self._conn

    async def open(self, schema: str) -> None:
        def create() -> None:
            conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))  # replicas starting at once
                for statement in filter(str.strip, schema.split(";")):
                    conn.execute(statement)

        await self._thread.call(create)

    async def run(self, work: Callable[[Conn], T], immediate: bool = False) -> T:
        def call() -> T:
            if self._closed:
                raise RuntimeError(f"the {self._name} is closed")
            conn = self._connect()
            with conn.transaction():
                if immediate:
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ADVISORY_KEY,))
                return work(_PgConn(conn))

        return await self._thread.call(call)

    async def close(self) -> None:
        def disconnect() -> None:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await self._thread.call(disconnect)
        self._thread.shutdown()
