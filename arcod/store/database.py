"""The one SQLite database that holds all of arcod's state, behind one async interface.

Durability and ordering come from SQLite itself, configured once here: WAL journal,
`synchronous=FULL` (a commit is on disk before the daemon answers "ok"), foreign keys on, and a
busy timeout so a second process writing to the same file makes us wait, then fail clearly,
instead of failing at once.

There is exactly one writer connection. Every write is a `transaction()`: an `anyio.Lock`
serialises them inside the process, and `BEGIN IMMEDIATE` takes SQLite's write lock up front,
so a transaction never discovers half-way through that it cannot commit. Reads outside a
transaction use a few read-only connections: under WAL they see the last committed state and
never queue behind the writer lock, and a long read (100,000 status rows) does not hold up the
short ones behind it. Reads inside a transaction go through the writer, so a transaction sees
its own writes.

The same SQL runs on both anyio backends. On asyncio the connections are aiosqlite's. On trio
(where aiosqlite cannot run) each connection is a plain `sqlite3.Connection` confined to one
dedicated thread that owns it for its whole life: callers hand it callables through a queue and
the thread hands results back with trio's `run_sync_soon`. A thread pool would not do, because
a sqlite3 connection must not hop between threads. Both backends keep one property the
transaction logic relies on: work for a connection runs in submission order, and work already
submitted still runs if the caller is cancelled while waiting for it.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import msgspec
import sniffio

from arcod.store.schema import MIGRATIONS

Params = Sequence[Any] | Mapping[str, Any]
T = TypeVar("T")

DEFAULT_BUSY_TIMEOUT = 5.0  # seconds a write waits for another process's write lock
WAL_SIZE_LIMIT = 16 << 20  # bytes the WAL file is truncated to after a checkpoint, at most
READERS = 3  # read-only connections; each is a thread (aiosqlite's, or our own on trio)


class StorageError(Exception):
    """The database could not take a write (disk full, I/O error, read-only file): nothing of
    the transaction was recorded. `code` is the error code a client is given."""

    code = "storage_error"


class DatabaseBusyError(StorageError):
    """Another process held the database's write lock for longer than the busy timeout."""

    code = "database_busy"


class SchemaVersionError(Exception):
    """The database was written by a newer arcod whose schema this one does not know."""


class ExecResult(msgspec.Struct, frozen=True):
    """What a write statement reports: rows changed, and the rowid of the last INSERT."""

    rowcount: int
    lastrowid: int | None


class _Connection(Protocol):
    """What the store needs from a connection; one implementation per anyio backend."""

    async def execute(self, sql: str, params: Params) -> ExecResult: ...
    async def executemany(self, sql: str, seq_of_params: list[Params]) -> None: ...
    async def fetch_all(self, sql: str, params: Params) -> list[sqlite3.Row]: ...
    async def fetch_one(self, sql: str, params: Params) -> sqlite3.Row | None: ...
    async def close(self) -> None: ...


class Transaction:
    """One write transaction on the writer connection; valid only inside `Database.transaction()`."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self._finished = False

    def _check(self) -> _Connection:
        if self._finished:
            raise RuntimeError("this transaction has ended; open a new one with db.transaction()")
        return self._connection

    async def execute(self, sql: str, params: Params = ()) -> ExecResult:
        return await self._check().execute(sql, params)

    async def executemany(self, sql: str, seq_of_params: Iterable[Params]) -> None:
        await self._check().executemany(sql, list(seq_of_params))

    async def fetch_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self._check().fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return await self._check().fetch_one(sql, params)


class Database:
    """The open database: reads on the reader connection, writes through `transaction()`."""

    def __init__(self, path: Path, writer: _Connection, *, busy_timeout: float) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self._writer = writer
        self._idle_readers: list[_Connection] = []  # filled once migrations have run
        self._reader_slots: anyio.Semaphore | None = None
        self._write_lock = anyio.Lock()

    async def read_all(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        """Rows of a query against the last committed state; never waits for writers."""
        return await self._read(lambda conn: conn.fetch_all(sql, params))

    async def read_one(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return await self._read(lambda conn: conn.fetch_one(sql, params))

    async def _read(self, query: Callable[[_Connection], Any]) -> Any:
        """Run `query` on an idle reader connection (waiting for one if all are busy).

        A connection goes back to the idle list even if the caller is cancelled mid-query:
        work already handed to it still runs, in order, before the next caller's. Such a
        connection goes to the far end of the list (the next caller takes from the near end),
        so a read behind an abandoned long query waits only when every connection is busy.
        """
        if self._reader_slots is None:
            raise RuntimeError("the database is not open for reading (closed, or still migrating)")
        async with self._reader_slots:
            conn = self._idle_readers.pop()
            finished = False
            try:
                result = await query(conn)
                finished = True
                return result
            except sqlite3.OperationalError as exc:
                finished = True
                if _is_busy(exc):
                    raise self._busy_error() from exc
                raise
            finally:
                if finished:
                    self._idle_readers.append(conn)
                else:
                    self._idle_readers.insert(0, conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """A write transaction: COMMIT when the block exits normally, ROLLBACK otherwise.

        The commit and the rollback run shielded from cancellation: a cancelled caller must
        still leave the writer connection outside any transaction for the next one.
        """
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE", ())
            except BaseException as exc:
                # Cancelled while BEGIN was queued: it may still run after we leave, and the
                # ROLLBACK queued behind it undoes it. If BEGIN failed, the ROLLBACK is a no-op.
                await self._rollback_quietly()
                if _is_busy(exc):
                    raise self._busy_error() from exc
                self._raise_storage_error(exc)
                raise
            tx = Transaction(self._writer)
            try:
                yield tx
            except BaseException as exc:
                tx._finished = True
                await self._rollback_quietly()
                self._raise_storage_error(exc)
                raise
            tx._finished = True
            try:
                with anyio.CancelScope(shield=True):
                    await self._writer.execute("COMMIT", ())
            except BaseException as exc:
                await self._rollback_quietly()
                self._raise_storage_error(exc)
                raise

    async def _rollback_quietly(self) -> None:
        with anyio.CancelScope(shield=True):
            try:
                await self._writer.execute("ROLLBACK", ())
            except sqlite3.OperationalError as exc:
                if "no transaction is active" in str(exc):
                    return
                if _storage_code(exc) is None:
                    raise
                # SQLite rolls back by itself after a failed write (disk full, I/O error);
                # the error the caller sees is the write's, not this one.

    def _raise_storage_error(self, exc: BaseException) -> None:
        """Turn a write that the disk refused into a StorageError that says what to do."""
        code = _storage_code(exc)
        if code is None:
            return
        if code == sqlite3.SQLITE_BUSY:
            raise self._busy_error() from exc
        raise StorageError(
            f"cannot write the database {self.path}: {exc}. The disk holding the state directory "
            f"is full, read-only or failing; nothing of this request was recorded. Free space "
            f"(or fix the disk), then retry."
        ) from exc

    def _busy_error(self) -> DatabaseBusyError:
        return DatabaseBusyError(
            f"database {self.path} stayed locked by another process for more than "
            f"{self.busy_timeout:g}s; another arcod daemon (or a sqlite3 shell) is writing "
            f"to the same state directory. Stop it, then retry."
        )


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


# Primary result codes that mean "the storage under the database failed", not "the SQL is wrong".
_STORAGE_CODES = frozenset({
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
})


def _storage_code(exc: BaseException) -> int | None:
    if not isinstance(exc, sqlite3.Error):
        return None
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code if code in _STORAGE_CODES else None


@asynccontextmanager
async def open_database(
    path: str | os.PathLike[str],
    *,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    migrations: Sequence[str] = MIGRATIONS,
) -> AsyncIterator[Database]:
    """Open (creating if needed) and migrate the database; close every connection on exit."""
    path = Path(path)
    connect = _connector_for(sniffio.current_async_library())
    writer = await connect(str(path), uri=False, busy_timeout=busy_timeout, label=f"arcod-sqlite-writer:{path.name}")
    try:
        await _configure_writer(writer, path, busy_timeout)
        db = Database(path, writer, busy_timeout=busy_timeout)
        await _migrate(db, migrations)
        readers: list[_Connection] = []
        try:
            for i in range(READERS):
                readers.append(await connect(
                    path.resolve().as_uri() + "?mode=ro",
                    uri=True,
                    busy_timeout=busy_timeout,
                    label=f"arcod-sqlite-reader-{i}:{path.name}",
                ))
            db._idle_readers = list(readers)
            db._reader_slots = anyio.Semaphore(len(readers))
            yield db
        finally:
            db._reader_slots = None
            db._idle_readers = []
            with anyio.CancelScope(shield=True):
                for reader in readers:
                    await reader.close()
    finally:
        with anyio.CancelScope(shield=True):
            await writer.close()


async def _configure_writer(writer: _Connection, path: Path, busy_timeout: float) -> None:
    await writer.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}", ())
    row = await writer.fetch_one("PRAGMA journal_mode = WAL", ())
    if row is None or str(row[0]).lower() != "wal":
        raise RuntimeError(
            f"could not switch {path} to WAL journaling (got {row[0] if row else None!r}); "
            "put the state directory on a local filesystem that supports shared memory"
        )
    await writer.execute("PRAGMA synchronous = FULL", ())
    # A WAL file keeps the largest size it ever reached (a burst of writes, a big prune) unless
    # told otherwise; a daemon that runs for months should give that space back.
    await writer.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}", ())
    await writer.execute("PRAGMA foreign_keys = ON", ())


async def _migrate(db: Database, migrations: Sequence[str]) -> None:
    """Apply every migration the database has not seen, one transaction each.

    The version is re-read inside each transaction, so two processes opening the same file
    at once cannot both apply a migration.
    """
    for target in range(0, len(migrations) + 1):
        async with db.transaction() as tx:
            version = await _user_version(tx)
            if version > len(migrations):
                raise SchemaVersionError(
                    f"database {db.path} has schema version {version}, but this arcod only knows "
                    f"versions up to {len(migrations)}; run the newer arcod that wrote it"
                )
            if target == 0 or version >= target:
                continue  # the version check alone, or a migration applied before
            for statement in split_statements(migrations[target - 1]):
                await tx.execute(statement)
            await tx.execute(f"PRAGMA user_version = {target}")


async def _user_version(tx: Transaction) -> int:
    row = await tx.fetch_one("PRAGMA user_version")
    assert row is not None
    return int(row[0])


def split_statements(script: str) -> list[str]:
    """Split an SQL script into statements, keeping `;` inside triggers and literals intact.

    `sqlite3.Connection.executescript` would do this, but it commits any open transaction
    first, which would break the one-transaction-per-migration rule.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of a script: {buffer.strip()!r}")
    return statements


# --- backends --------------------------------------------------------------------------------

Connector = Callable[..., Any]


def _connector_for(library: str) -> Connector:
    if library == "asyncio":
        return _AiosqliteConnection.open
    if library == "trio":
        return _ThreadConfinedConnection.open
    raise RuntimeError(f"arcod's store runs on asyncio or trio, not on {library!r}")


def _sqlite_connect(database: str, *, uri: bool, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode: the store issues BEGIN/COMMIT itself."""
    connection = sqlite3.connect(database, uri=uri, timeout=busy_timeout, isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


class _AiosqliteConnection:
    """The asyncio backend: aiosqlite already confines its connection to one thread."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    @classmethod
    async def open(cls, database: str, *, uri: bool, busy_timeout: float, label: str) -> _AiosqliteConnection:
        import aiosqlite

        connection = await aiosqlite.connect(database, uri=uri, timeout=busy_timeout, isolation_level=None)
        connection.row_factory = sqlite3.Row
        return cls(connection)

    async def execute(self, sql: str, params: Params) -> ExecResult:
        async with self._connection.execute(sql, params) as cursor:
            return ExecResult(rowcount=cursor.rowcount, lastrowid=cursor.lastrowid)

    async def executemany(self, sql: str, seq_of_params: list[Params]) -> None:
        async with self._connection.executemany(sql, seq_of_params):
            pass

    async def fetch_all(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return list(await self._connection.execute_fetchall(sql, params))

    async def fetch_one(self, sql: str, params: Params) -> sqlite3.Row | None:
        async with self._connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def close(self) -> None:
        await self._connection.close()


class _ThreadConfinedConnection:
    """The trio backend: a sqlite3 connection owned by one dedicated thread for its whole life.

    The connection is created on that thread with `check_same_thread` left on, so any use from
    elsewhere would fail loudly rather than corrupt state.
    """

    def __init__(self, label: str) -> None:
        import trio

        self._trio = trio
        self._token = trio.lowlevel.current_trio_token()
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Callable[..., None]]] = (
            queue.SimpleQueue()
        )
        self._connection: sqlite3.Connection | None = None
        self._closing = False  # set on the trio side: no new work may be queued
        self._stopped = False  # set on the connection's thread: its loop must end
        self._thread = threading.Thread(target=self._serve, name=label, daemon=True)

    @classmethod
    async def open(cls, database: str, *, uri: bool, busy_timeout: float, label: str) -> _ThreadConfinedConnection:
        self = cls(label)
        self._thread.start()
        try:
            await self._call(self._connect, database, uri, busy_timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        return self

    def _serve(self) -> None:
        while True:
            fn, args, settle = self._jobs.get()
            try:
                result: tuple[Any, BaseException | None] = (fn(*args), None)
            except BaseException as exc:
                result = (None, exc)
            try:
                self._token.run_sync_soon(settle, result)
            except self._trio.RunFinishedError:
                pass  # the trio run is over; nobody is waiting for this result
            if self._stopped:
                return

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closing:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return await self._run(fn, *args)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        done = self._trio.Event()
        box: list[tuple[Any, BaseException | None]] = []

        def settle(result: tuple[Any, BaseException | None]) -> None:
            box.append(result)
            done.set()

        self._jobs.put((fn, args, settle))
        await done.wait()
        value, error = box[0]
        if error is not None:
            raise error
        return value

    # These run on the connection's thread.

    def _connect(self, database: str, uri: bool, busy_timeout: float) -> None:
        self._connection = _sqlite_connect(database, uri=uri, busy_timeout=busy_timeout)

    def _conn(self) -> sqlite3.Connection:
        if self._connection is None:
            raise sqlite3.ProgrammingError("Cannot operate on a closed database.")
        return self._connection

    def _execute(self, sql: str, params: Params) -> ExecResult:
        cursor = self._conn().execute(sql, params)
        try:
            return ExecResult(rowcount=cursor.rowcount, lastrowid=cursor.lastrowid)
        finally:
            cursor.close()

    def _executemany(self, sql: str, seq_of_params: list[Params]) -> None:
        self._conn().executemany(sql, seq_of_params).close()

    def _fetch_all(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return self._conn().execute(sql, params).fetchall()

    def _fetch_one(self, sql: str, params: Params) -> sqlite3.Row | None:
        cursor = self._conn().execute(sql, params)
        try:
            return cursor.fetchone()
        finally:
            cursor.close()

    def _close_connection(self) -> None:
        self._stopped = True
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    # The async interface.

    async def execute(self, sql: str, params: Params) -> ExecResult:
        return await self._call(self._execute, sql, params)

    async def executemany(self, sql: str, seq_of_params: list[Params]) -> None:
        await self._call(self._executemany, sql, seq_of_params)

    async def fetch_all(self, sql: str, params: Params) -> list[sqlite3.Row]:
        return await self._call(self._fetch_all, sql, params)

    async def fetch_one(self, sql: str, params: Params) -> sqlite3.Row | None:
        return await self._call(self._fetch_one, sql, params)

    async def close(self) -> None:
        """Close the connection on its thread, after every job already queued, and end the thread."""
        if self._closing:
            return
        self._closing = True
        await self._run(self._close_connection)
        # The thread leaves its loop right after settling the close; the join is immediate.
        self._thread.join(timeout=1.0)
