"""The store's contract: durable, serialised writes; readers that see committed data only."""

from __future__ import annotations

import itertools
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcod.store.database import (
    DatabaseBusyError,
    SchemaVersionError,
    open_database,
    split_statements,
)
from arcod.store.schema import MIGRATIONS

pytestmark = pytest.mark.anyio


async def create_items(db) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)")


async def names(db) -> list[str]:
    return [row["name"] for row in await db.read_all("SELECT name FROM items ORDER BY id")]


async def test_connection_settings_are_durable(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db", busy_timeout=2.5) as db:
        async with db.transaction() as tx:
            assert (await tx.fetch_one("PRAGMA journal_mode"))[0] == "wal"
            assert (await tx.fetch_one("PRAGMA synchronous"))[0] == 2  # FULL
            assert (await tx.fetch_one("PRAGMA foreign_keys"))[0] == 1
            assert (await tx.fetch_one("PRAGMA busy_timeout"))[0] == 2500
        assert (await db.read_one("PRAGMA journal_mode"))[0] == "wal"
    # WAL is a property of the file, not only of our connection.
    plain = sqlite3.connect(tmp_path / "a.db")
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        plain.close()


async def test_fresh_database_has_every_migration_and_reopening_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with open_database(path) as db:
        assert (await db.read_one("PRAGMA user_version"))[0] == len(MIGRATIONS)
        schema = await db.read_all("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        assert {"events", "outbox"} <= {row["name"] for row in schema}
    async with open_database(path) as db:
        assert (await db.read_one("PRAGMA user_version"))[0] == len(MIGRATIONS)
        again = await db.read_all("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        assert [tuple(r) for r in again] == [tuple(r) for r in schema]


async def test_a_version_1_database_upgrades_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with open_database(path, migrations=MIGRATIONS[:1]) as db:
        async with db.transaction() as tx:
            await tx.execute(
                "INSERT INTO events (actor, idem_key, kind, body) VALUES ('a', 'k', 'Ping', x'7b7d')"
            )
    later = [*MIGRATIONS[:1], "CREATE TABLE runs (id TEXT PRIMARY KEY); ALTER TABLE events ADD COLUMN note TEXT;"]
    async with open_database(path, migrations=later) as db:
        assert (await db.read_one("PRAGMA user_version"))[0] == 2
        row = await db.read_one("SELECT actor, idem_key, note FROM events")
        assert tuple(row) == ("a", "k", None)
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO runs (id) VALUES ('r1')")
    # An older arcod must refuse the newer file instead of running against an unknown schema.
    with pytest.raises(SchemaVersionError, match="schema version 2"):
        async with open_database(path, migrations=MIGRATIONS[:1]):
            pass


async def test_a_failing_migration_leaves_the_previous_version_intact(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with open_database(path, migrations=MIGRATIONS[:1]):
        pass
    broken = [*MIGRATIONS[:1], "CREATE TABLE half (x); INSERT INTO no_such_table VALUES (1);"]
    with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
        async with open_database(path, migrations=broken):
            pass
    async with open_database(path, migrations=MIGRATIONS[:1]) as db:
        assert (await db.read_one("PRAGMA user_version"))[0] == 1
        assert await db.read_one("SELECT name FROM sqlite_master WHERE name = 'half'") is None


async def test_an_exception_rolls_the_whole_transaction_back(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        with pytest.raises(ZeroDivisionError):
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (name) VALUES ('a')")
                await tx.execute("INSERT INTO items (name) VALUES ('b')")
                1 / 0
        assert await names(db) == []
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('c')")
        assert await names(db) == ["c"]


async def test_cancellation_inside_a_transaction_rolls_back_and_frees_the_writer(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        with anyio.move_on_after(0.05) as scope:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO items (name) VALUES ('a')")
                await anyio.sleep_forever()
        assert scope.cancelled_caught
        assert await names(db) == []
        # Cancelled at assorted points of short transactions, including while BEGIN, an
        # INSERT or the COMMIT is still running on the connection's thread: a transaction is
        # in the database exactly when its block completed.
        committed = []
        for i in range(60):
            with anyio.move_on_after(i * 0.0002):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO items (name) VALUES (?)", (f"b{i}",))
                    await tx.execute("INSERT INTO items (name) VALUES (?)", (f"c{i}",))
                committed += [f"b{i}", f"c{i}"]
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('last')")
        assert await names(db) == [*committed, "last"]
        assert committed[:1] != ["b0"] and committed  # both outcomes happened


async def test_transactions_from_many_tasks_serialise(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE counter (n INTEGER NOT NULL)")
            await tx.execute("INSERT INTO counter VALUES (0)")

        async def increment() -> None:
            async with db.transaction() as tx:
                (n,) = await tx.fetch_one("SELECT n FROM counter")
                await anyio.sleep(0)  # let every other task try to get in between
                await tx.execute("UPDATE counter SET n = ?", (n + 1,))

        async with anyio.create_task_group() as tg:
            for _ in range(40):
                tg.start_soon(increment)
        assert (await db.read_one("SELECT n FROM counter"))[0] == 40


async def test_readers_see_committed_data_only_and_never_wait_for_the_writer(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('a')")
            assert [r["name"] for r in await tx.fetch_all("SELECT name FROM items")] == ["a"]
            with anyio.fail_after(2):  # the transaction holds the writer lock all along
                assert await names(db) == []
                assert await db.read_one("SELECT name FROM items") is None
        assert await names(db) == ["a"]


async def test_a_long_read_does_not_hold_up_short_reads(tmp_path: Path) -> None:
    """Reads share a few connections: a client listing 100,000 rows must not make every
    `status` behind it wait. Order, not time, is asserted: the short reads, started after
    the long one, finish before it; and a burst of more reads than connections all finish."""
    long_query = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
                  " SELECT count(*) FROM c")
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        finished: list[str] = []
        started = anyio.Event()

        async def long_read() -> None:
            started.set()
            assert (await db.read_one(long_query))[0] == 1_000_000
            finished.append("long")

        async def short_reads() -> None:
            await started.wait()
            await anyio.sleep(0.01)  # the long query is on its connection by now
            for _ in range(5):
                assert await names(db) == []
            finished.append("short")

        async with anyio.create_task_group() as tg:
            tg.start_soon(long_read)
            tg.start_soon(short_reads)
        assert finished == ["short", "long"]

        results: list[int] = []

        async def count() -> None:
            results.append((await db.read_one("SELECT count(*) FROM items"))[0])

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(count)
        assert results == [0] * 20


async def test_writes_go_only_through_transactions(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            await db.read_all("INSERT INTO items (name) VALUES ('sneaky')")
        async with db.transaction() as tx:
            pass
        with pytest.raises(RuntimeError, match="ended"):
            await tx.execute("INSERT INTO items (name) VALUES ('late')")
        assert await names(db) == []


async def test_execute_reports_rows_and_ids_and_takes_both_parameter_styles(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        async with db.transaction() as tx:
            first = await tx.execute("INSERT INTO items (name) VALUES (?)", ("a",))
            second = await tx.execute("INSERT INTO items (name) VALUES (:name)", {"name": "b"})
            await tx.executemany("INSERT INTO items (name) VALUES (?)", (( f"m{i}",) for i in range(5)))
            updated = await tx.execute("UPDATE items SET name = name || '!' WHERE name LIKE 'm%'")
            assert await tx.fetch_one("SELECT name FROM items WHERE name = 'zzz'") is None
        assert (first.lastrowid, second.lastrowid, first.rowcount) == (1, 2, 1)
        assert updated.rowcount == 5
        assert await names(db) == ["a", "b", "m0!", "m1!", "m2!", "m3!", "m4!"]
        row = await db.read_one("SELECT id, name FROM items WHERE name = :n", {"n": "b"})
        assert (row["id"], row["name"]) == (2, "b")


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "a.db"
    path.parent.mkdir()
    async with open_database(path) as db:
        await create_items(db)
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('kept')")
    async with open_database(path) as db:
        assert await names(db) == ["kept"]
    with pytest.raises(RuntimeError):
        await db.read_all("SELECT 1")


LOCK_HOLDER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
connection.execute("INSERT INTO items (name) VALUES ('other process')")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
"""


async def test_another_process_holding_the_write_lock_makes_us_wait_then_fail_clearly(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with open_database(path, busy_timeout=0.3) as db:
        await create_items(db)
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert await anyio.to_thread.run_sync(holder.stdout.readline) == "locked\n"
            started = time.monotonic()
            with pytest.raises(DatabaseBusyError, match="another arcod daemon"):
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO items (name) VALUES ('ours')")
            assert 0.25 <= time.monotonic() - started < 3
            assert await names(db) == []  # reads go on while the other process writes
        finally:
            holder.communicate("\n", timeout=10)
        assert holder.returncode == 0
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO items (name) VALUES ('ours')")
        assert await names(db) == ["other process", "ours"]


async def test_a_write_waits_for_another_process_within_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with open_database(path, busy_timeout=5) as db:
        await create_items(db)
        holder = subprocess.Popen(
            [sys.executable, "-c", LOCK_HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        try:
            assert await anyio.to_thread.run_sync(holder.stdout.readline) == "locked\n"

            async def release_soon() -> None:
                await anyio.sleep(0.2)
                holder.stdin.write("\n")
                holder.stdin.flush()

            async with anyio.create_task_group() as tg:
                tg.start_soon(release_soon)
                started = time.monotonic()
                async with db.transaction() as tx:
                    await tx.execute("INSERT INTO items (name) VALUES ('ours')")
                assert time.monotonic() - started >= 0.15
        finally:
            holder.communicate(timeout=10)
        assert await names(db) == ["other process", "ours"]


_db_numbers = itertools.count()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.lists(st.text(min_size=1, max_size=8), max_size=4), st.booleans()),
        max_size=12,
    )
)
async def test_the_database_holds_exactly_the_committed_transactions(tmp_path: Path, batches) -> None:
    """Any mix of committed and failed transactions leaves exactly the committed rows."""

    class Abort(Exception):
        pass

    expected: list[str] = []
    async with open_database(tmp_path / f"p{next(_db_numbers)}.db") as db:
        async with db.transaction() as tx:
            await tx.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        for values, commit in batches:
            try:
                async with db.transaction() as tx:
                    await tx.executemany("INSERT INTO items (name) VALUES (?)", [(v,) for v in values])
                    if not commit:
                        raise Abort
            except Abort:
                pass
            else:
                expected.extend(values)
            assert await names(db) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from("ab;' \n-"), max_size=10), min_size=1, max_size=6))
def test_split_statements_keeps_semicolons_inside_literals(texts: list[str]) -> None:
    statements = [f"INSERT INTO t VALUES ('{text.replace(chr(39), chr(39) * 2)}');" for text in texts]
    assert split_statements("\n".join(statements) + "\n") == statements
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE t (x)")
    for statement in split_statements("\n".join(statements)):
        connection.execute(statement)
    assert [row[0] for row in connection.execute("SELECT x FROM t")] == texts


def test_split_statements_keeps_trigger_bodies_whole() -> None:
    script = """
    CREATE TABLE t (x);
    CREATE TABLE log (x);
    CREATE TRIGGER t_log AFTER INSERT ON t BEGIN
        INSERT INTO log VALUES (NEW.x);
        INSERT INTO log VALUES (NEW.x + 1);
    END;
    -- a trailing comment; with a semicolon
    """
    statements = split_statements(script)
    assert statements[:2] == ["CREATE TABLE t (x);", "CREATE TABLE log (x);"]
    assert statements[2].startswith("CREATE TRIGGER") and statements[2].endswith("END;")
    connection = sqlite3.connect(":memory:")
    for statement in statements:
        connection.execute(statement)
    connection.execute("INSERT INTO t VALUES (1)")
    assert connection.execute("SELECT x FROM log ORDER BY x").fetchall() == [(1,), (2,)]
    with pytest.raises(ValueError, match="incomplete"):
        split_statements("CREATE TABLE t (x); INSERT INTO t VALUES ('open")


async def test_a_reader_left_running_by_a_cancelled_caller_is_handed_out_last(tmp_path: Path) -> None:
    """The abandoned query still runs on its connection: the next reads go to the others."""
    long_query = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)"
                  " SELECT count(*) FROM c")
    async with open_database(tmp_path / "a.db") as db:
        await create_items(db)
        busy = db._idle_readers[-1]  # the next one handed out
        with anyio.move_on_after(0.05):
            await db.read_one(long_query)
        assert db._idle_readers[0] is busy
        assert len(db._idle_readers) == 3
        for _ in range(3):
            assert await names(db) == []
