"""The actor runtime's guarantees, on a toy system of a counter and a forwarder.

The forwarder turns `Forward(times=n)` into n `Increment`s for the counter, and the counter
acknowledges each forwarded increment back to the forwarder: a cycle, like the daemon's
dispatcher and executor. The final state lives in the database, so every test checks it there.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcod.actors.messages import Message, decode_message
from arcod.actors.runtime import Actor, ActorSystem, NoFailpoints, Outcome
from arcod.core import errors
from arcod.core.errors import ArcodError
from arcod.store.database import Database, Transaction, open_database

pytestmark = pytest.mark.anyio


class Increment(Message, frozen=True, kw_only=True):
    amount: int


class Boom(Message, frozen=True, kw_only=True):
    pass


class Forward(Message, frozen=True, kw_only=True):
    amount: int
    times: int = 1


class Ack(Message, frozen=True, kw_only=True):
    of: str


class Counter(Actor):
    name = "counter"
    accepts = (Increment, Boom)

    def __init__(self, *, boom_raises: bool = True) -> None:
        self.boom_raises = boom_raises

    async def apply(self, tx: Transaction, msg: Message) -> Outcome:
        if isinstance(msg, Boom):
            await tx.execute("UPDATE counter SET value = value + 100")
            if self.boom_raises:
                raise RuntimeError("boom")
            return Outcome(reply="survived")
        assert isinstance(msg, Increment)
        if msg.amount < 0:
            raise ArcodError(errors.INVALID_TRANSITION, f"cannot add {msg.amount}; amounts are positive")
        await tx.execute("UPDATE counter SET value = value + ?", (msg.amount,))
        (value,) = await tx.fetch_one("SELECT value FROM counter")
        send = []
        if msg.idem_key.startswith("fwd:"):
            send.append(("forwarder", Ack(idem_key=f"ack:{msg.idem_key}", of=msg.idem_key)))
        return Outcome(reply={"value": value}, send=send)


class Forwarder(Actor):
    name = "forwarder"
    accepts = (Forward, Ack)

    async def apply(self, tx: Transaction, msg: Message) -> Outcome:
        if isinstance(msg, Ack):
            await tx.execute("INSERT INTO acks (of) VALUES (?)", (msg.of,))  # a second insert would fail
            return Outcome()
        assert isinstance(msg, Forward)
        sends = [
            ("counter", Increment(idem_key=f"fwd:{msg.idem_key}:{i}", amount=msg.amount)) for i in range(msg.times)
        ]
        return Outcome(reply=len(sends), send=sends)


async def create_tables(db: Database) -> None:
    async with db.transaction() as tx:
        await tx.execute("CREATE TABLE counter (value INTEGER NOT NULL)")
        await tx.execute("INSERT INTO counter VALUES (0)")
        await tx.execute("CREATE TABLE acks (of TEXT PRIMARY KEY)")


@asynccontextmanager
async def toy_database(path: Path) -> AsyncIterator[Database]:
    async with open_database(path) as db:
        if await db.read_one("SELECT name FROM sqlite_master WHERE name = 'counter'") is None:
            await create_tables(db)
        yield db


@asynccontextmanager
async def running(db: Database, actors: list[Actor] | None = None, **options: Any) -> AsyncIterator[ActorSystem]:
    system = ActorSystem(db, actors if actors is not None else [Counter(), Forwarder()], **options)
    async with anyio.create_task_group() as tg:
        await tg.start(system.run)
        yield system
        tg.cancel_scope.cancel()


async def counter_value(db: Database) -> int:
    return (await db.read_one("SELECT value FROM counter"))[0]


async def outbox_size(db: Database) -> int:
    return (await db.read_one("SELECT count(*) FROM outbox"))[0]


async def settle(db: Database) -> None:
    """Wait until every message sent has been applied (or refused).

    Every application deletes its outbox row in the transaction that commits its own sends,
    so an empty outbox means there is nothing left in flight.
    """
    with anyio.fail_after(10):
        while await outbox_size(db):
            await anyio.sleep(0.002)


async def snapshot(db: Database) -> dict[str, Any]:
    events = await db.read_all("SELECT actor, idem_key, kind, result FROM events ORDER BY actor, idem_key")
    acks = await db.read_all("SELECT of FROM acks ORDER BY of")
    return {
        "counter": await counter_value(db),
        "events": [(r["actor"], r["idem_key"], r["kind"], msgspec.json.decode(r["result"])) for r in events],
        "acks": [r["of"] for r in acks],
        "outbox": await outbox_size(db),
    }


class Recording(NoFailpoints):
    def __init__(self, *, duplicate: bool = False, fail_at: str | None = None, hang_at: str | None = None) -> None:
        self.hits: list[str] = []
        self.duplicate = duplicate
        self.fail_at = fail_at
        self.hang_at = hang_at

    def hit(self, name: str) -> Awaitable[None] | None:
        self.hits.append(name)
        if name == self.fail_at:
            raise RuntimeError(f"failpoint {name}")
        if name == self.hang_at:
            return anyio.sleep_forever()
        return None

    def should_duplicate(self, name: str) -> bool:
        return self.duplicate


async def test_applying_a_message_and_recording_it_are_one_transaction(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db) as system:
        assert await system.submit("counter", Increment(idem_key="k1", amount=5)) == {"value": 5}
        row = await db.read_one("SELECT actor, idem_key, kind, body, result FROM events")
        assert (row["actor"], row["idem_key"], row["kind"]) == ("counter", "k1", "Increment")
        assert decode_message(row["body"], [Increment]) == Increment(idem_key="k1", amount=5)
        assert msgspec.json.decode(row["result"]) == {"value": 5}

        # A failure half-way through apply takes its writes back with it, and is not recorded.
        with pytest.raises(RuntimeError, match="boom"):
            await system.submit("counter", Boom(idem_key="b1"))
        assert await counter_value(db) == 5
        assert await db.read_one("SELECT 1 FROM events WHERE idem_key = 'b1'") is None
        # ...and the system goes on serving.
        assert await system.submit("counter", Increment(idem_key="k2", amount=1)) == {"value": 6}


async def test_a_duplicate_changes_nothing_and_gets_the_first_reply(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db) as system:
        assert await system.submit("counter", Increment(idem_key="k1", amount=5)) == {"value": 5}
        assert await system.submit("counter", Increment(idem_key="k2", amount=1)) == {"value": 6}
        # Same key: the stored reply, even though the state moved on and the body differs.
        assert await system.submit("counter", Increment(idem_key="k1", amount=5)) == {"value": 5}
        assert await system.submit("counter", Increment(idem_key="k1", amount=70)) == {"value": 5}
        assert await counter_value(db) == 6
        assert len(await db.read_all("SELECT * FROM events")) == 2
        # A key is per actor: the forwarder may use "k1" for something else.
        assert await system.submit("forwarder", Forward(idem_key="k1", amount=1)) == 1


async def test_a_refusal_records_nothing_and_leaves_the_key_free(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db) as system:
        with pytest.raises(ArcodError) as refused:
            await system.submit("counter", Increment(idem_key="k", amount=-1))
        assert refused.value.code == errors.INVALID_TRANSITION
        assert await db.read_all("SELECT * FROM events") == []
        assert await system.submit("counter", Increment(idem_key="k", amount=2)) == {"value": 2}
        assert await system.submit("counter", Increment(idem_key="k", amount=-1)) == {"value": 2}  # now a duplicate


async def test_messages_between_actors_are_applied_once_each(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db) as system:
        assert await system.submit("forwarder", Forward(idem_key="f1", amount=2, times=3)) == 3
        await settle(db)
        state = await snapshot(db)
    assert state["counter"] == 6
    assert state["acks"] == ["fwd:f1:0", "fwd:f1:1", "fwd:f1:2"]
    assert sorted((actor, key) for actor, key, _, _ in state["events"]) == sorted(
        [("forwarder", "f1")]
        + [("counter", f"fwd:f1:{i}") for i in range(3)]
        + [("forwarder", f"ack:fwd:f1:{i}") for i in range(3)]
    )


async def test_send_from_outside_is_durable_before_it_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with toy_database(path) as db:
        system = ActorSystem(db, [Counter(), Forwarder()])
        await system.send("counter", Increment(idem_key="early", amount=3))  # not running yet
        assert await outbox_size(db) == 1
        async with running(db) as system:
            await system.send("counter", Increment(idem_key="late", amount=4))
            await system.send("counter", Increment(idem_key="late", amount=4))
            await settle(db)
        assert await counter_value(db) == 7


async def test_the_outbox_left_by_a_crash_is_applied_exactly_once_on_restart(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with toy_database(path) as db:
        # The forwarder commits, then the process "dies" before posting what it sent.
        system = ActorSystem(db, [Counter(), Forwarder()], failpoints=Recording(hang_at="actor.forwarder.after_persist"))
        system_scope = anyio.CancelScope()

        async def run_system(*, task_status: Any) -> None:
            with system_scope:
                await system.run(task_status=task_status)

        async def caller() -> None:
            with pytest.raises(RuntimeError, match="stopped before answering"):
                await system.submit("forwarder", Forward(idem_key="f1", amount=2, times=3))

        async with anyio.create_task_group() as tg:
            await tg.start(run_system)
            tg.start_soon(caller)
            with anyio.fail_after(5):
                while await db.read_one("SELECT 1 FROM events WHERE idem_key = 'f1'") is None:
                    await anyio.sleep(0.002)
            system_scope.cancel()  # the caller learns it was never answered

        assert await counter_value(db) == 0
        assert await outbox_size(db) == 3

    async with toy_database(path) as db:
        async with running(db) as system:
            await settle(db)
        first = await snapshot(db)
        assert first["counter"] == 6 and len(first["acks"]) == 3
        async with running(db) as system:
            assert await system.submit("forwarder", Forward(idem_key="f1", amount=2, times=3)) == 3
            await settle(db)
        assert await snapshot(db) == first


async def test_outbox_rows_of_applied_messages_are_only_deleted(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db:
        async with db.transaction() as tx:
            for key, amount in (("x", 4), ("y", 50)):
                body = msgspec.json.encode(Increment(idem_key=key, amount=amount))
                await tx.execute(
                    "INSERT INTO outbox (target, idem_key, kind, body) VALUES ('counter', ?, 'Increment', ?)",
                    (key, body),
                )
            # "y" was applied already (say the sender re-sent it after a crash).
            await tx.execute(
                "INSERT INTO events (actor, idem_key, kind, body, result) "
                "VALUES ('counter', 'y', 'Increment', x'7b7d', '{\"value\":50}')"
            )
        async with running(db):
            await settle(db)
        assert await counter_value(db) == 4
        assert len(await db.read_all("SELECT * FROM events")) == 2


async def test_a_failing_message_from_the_outbox_stays_there_until_it_can_be_applied(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with toy_database(path) as db:
        with structlog.testing.capture_logs() as logs:
            async with running(db) as system:
                await system.send("counter", Boom(idem_key="b1"))
                with anyio.fail_after(5):
                    while not any(entry.get("idem_key") == "b1" for entry in logs):
                        await anyio.sleep(0.002)
                assert await system.submit("counter", Increment(idem_key="k", amount=1)) == {"value": 1}
        failure = next(entry for entry in logs if entry.get("idem_key") == "b1")
        assert failure["log_level"] == "error"
        assert (failure["actor"], failure["kind"]) == ("counter", "Boom")
        assert await outbox_size(db) == 1
        assert await counter_value(db) == 1
        # Next start, with the bug fixed: applied, once.
        async with running(db, [Counter(boom_raises=False), Forwarder()]):
            await settle(db)
        async with running(db, [Counter(boom_raises=False), Forwarder()]):
            await anyio.sleep(0.01)
        assert await counter_value(db) == 101


async def test_a_refused_message_from_the_outbox_is_dropped(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db:
        with structlog.testing.capture_logs() as logs:
            async with running(db) as system:
                assert await system.submit("forwarder", Forward(idem_key="f", amount=-1, times=2)) == 2
                await settle(db)
        state = await snapshot(db)
        assert state["counter"] == 0 and state["acks"] == []
        assert [key for actor, key, _, _ in state["events"]] == ["f"]
        refusals = [entry for entry in logs if entry["log_level"] == "warning"]
        assert sorted(entry["idem_key"] for entry in refusals) == ["fwd:f:0", "fwd:f:1"]
        assert {entry["code"] for entry in refusals} == {errors.INVALID_TRANSITION}


async def test_cycles_never_deadlock_even_with_tiny_channels(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db, buffer_size=1) as system:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for n in range(4):
                    tg.start_soon(system.submit, "forwarder", Forward(idem_key=f"f{n}", amount=1, times=30))
                    tg.start_soon(system.send, "counter", Increment(idem_key=f"direct{n}", amount=1000))
            await settle(db)
        state = await snapshot(db)
    assert state["counter"] == 4 * 30 + 4 * 1000
    assert len(state["acks"]) == 120


async def test_failpoints_are_hit_at_every_boundary_in_order(tmp_path: Path) -> None:
    failpoints = Recording()
    async with toy_database(tmp_path / "a.db") as db, running(db, failpoints=failpoints) as system:
        await system.submit("counter", Increment(idem_key="k", amount=1))
    assert failpoints.hits == [
        "actor.counter.before_persist",
        "actor.counter.after_persist",
        "actor.counter.before_emit",
        "actor.counter.after_emit",
    ]


@pytest.mark.parametrize("point", ["after_persist", "before_emit"])
async def test_an_error_after_the_commit_is_reported_but_the_outcome_is_carried_out(
    tmp_path: Path, point: str
) -> None:
    failpoints = Recording(fail_at=f"actor.forwarder.{point}")
    async with toy_database(tmp_path / "a.db") as db, running(db, failpoints=failpoints) as system:
        with pytest.raises(RuntimeError, match="failpoint"):
            await system.submit("forwarder", Forward(idem_key="f", amount=1, times=3))
        await settle(db)
        assert await counter_value(db) == 3
        failpoints.fail_at = None
        assert await system.submit("forwarder", Forward(idem_key="f", amount=1, times=3)) == 3  # the retry


async def test_an_error_before_persisting_leaves_the_message_unapplied(tmp_path: Path) -> None:
    failpoints = Recording(fail_at="actor.counter.before_persist")
    async with toy_database(tmp_path / "a.db") as db, running(db, failpoints=failpoints) as system:
        with pytest.raises(RuntimeError, match="failpoint"):
            await system.submit("counter", Increment(idem_key="k", amount=1))
        assert await counter_value(db) == 0 and await db.read_all("SELECT * FROM events") == []


_db_numbers = itertools.count()
operations = st.lists(
    st.tuples(
        st.sampled_from(["submit", "send", "forward"]),
        st.sampled_from(["a", "b", "c"]),  # few keys, so that duplicates are common
        st.integers(-1, 3),
    ),
    min_size=1,
    max_size=6,
)


async def play(path: Path, ops: list[tuple[str, str, int]], **options: Any) -> tuple[list[Any], dict[str, Any]]:
    """Run `ops` one after another, settling in between; return the replies and the final state."""
    replies: list[Any] = []
    async with toy_database(path) as db, running(db, **options) as system:
        for op, key, amount in ops:
            try:
                if op == "submit":
                    replies.append(await system.submit("counter", Increment(idem_key=key, amount=amount)))
                elif op == "send":
                    replies.append(await system.send("counter", Increment(idem_key=key, amount=amount)))
                else:
                    replies.append(await system.submit("forwarder", Forward(idem_key=key, amount=amount, times=2)))
            except ArcodError as exc:
                replies.append(exc.code)
            await settle(db)
        state = await snapshot(db)
    return replies, state


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations)
async def test_duplicating_every_delivery_changes_nothing(tmp_path: Path, ops: list[tuple[str, str, int]]) -> None:
    n = next(_db_numbers)
    plain = await play(tmp_path / f"plain{n}.db", ops)
    assert await play(tmp_path / f"dup{n}.db", ops, failpoints=Recording(duplicate=True)) == plain
    assert await play(tmp_path / f"tiny{n}.db", ops, failpoints=Recording(duplicate=True), buffer_size=1) == plain


async def test_after_commit_effects_see_the_commit_and_their_failures_are_contained(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Spawner(Actor):
        name = "spawner"
        accepts = (Increment,)

        async def apply(self, tx: Transaction, msg: Message) -> Outcome:
            async def observe() -> None:
                row = await db.read_one("SELECT idem_key FROM events WHERE actor = 'spawner' AND idem_key = ?", (msg.idem_key,))
                seen.append(row["idem_key"] if row else None)

            async def fail() -> None:
                raise OSError("could not spawn")

            return Outcome(reply="ok", after_commit=[observe, fail])

    async with toy_database(tmp_path / "a.db") as db:
        with structlog.testing.capture_logs() as logs:
            async with running(db, [Spawner()]) as system:
                await system.submit("spawner", Increment(idem_key="s1", amount=1))
                await system.submit("spawner", Increment(idem_key="s1", amount=1))  # duplicate: no effects
                await system.submit("spawner", Increment(idem_key="s2", amount=1))
                with anyio.fail_after(5):
                    while len(seen) < 2:
                        await anyio.sleep(0.002)
                await anyio.sleep(0.02)
        assert seen == ["s1", "s2"]
        failures = [entry for entry in logs if entry["event"] == "after-commit effect failed"]
        assert [entry["idem_key"] for entry in failures] == ["s1", "s2"]


async def test_cancelling_the_system_is_clean_and_a_restart_finishes_the_work(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    async with toy_database(path) as db:
        for delay in (0, 0.001, 0.005):
            with anyio.fail_after(5):
                async with running(db, buffer_size=2) as system:
                    for n in range(5):
                        await system.send("forwarder", Forward(idem_key=f"d{delay}:{n}", amount=1, times=10))
                    await anyio.sleep(delay)
            # Nothing is left half-written: the writer is free and the state is consistent.
            async with db.transaction() as tx:
                applied = (await tx.fetch_one("SELECT count(*) FROM events WHERE actor = 'counter'"))[0]
                assert (await tx.fetch_one("SELECT value FROM counter"))[0] == applied
        async with running(db) as system:
            await settle(db)
        state = await snapshot(db)
    assert state["counter"] == 3 * 5 * 10
    assert len(state["acks"]) == 150


async def test_a_cancelled_caller_does_not_disturb_the_system(tmp_path: Path) -> None:
    async with toy_database(tmp_path / "a.db") as db, running(db) as system:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await system.submit("counter", Increment(idem_key="k", amount=1))
        with anyio.move_on_after(0):
            await system.submit("counter", Increment(idem_key="j", amount=1))
        assert await system.submit("counter", Increment(idem_key="k", amount=1)) in ({"value": 1}, {"value": 2})
        assert await system.submit("counter", Increment(idem_key="z", amount=10)) == {"value": await counter_value(db)}


async def test_misaddressed_messages_are_programming_errors(tmp_path: Path) -> None:
    class Misrouting(Actor):
        name = "misrouting"
        accepts = (Increment,)

        async def apply(self, tx: Transaction, msg: Message) -> Outcome:
            await tx.execute("UPDATE counter SET value = 99")
            return Outcome(send=[("nobody", Increment(idem_key="x", amount=1))])

    async with toy_database(tmp_path / "a.db") as db:
        system = ActorSystem(db, [Counter(), Misrouting()])
        with pytest.raises(RuntimeError, match="not running"):
            await system.submit("counter", Increment(idem_key="k", amount=1))
        async with running(db, [Counter(), Misrouting()]) as system:
            with pytest.raises(ValueError, match="no actor named 'counter2'"):
                await system.submit("counter2", Increment(idem_key="k", amount=1))
            with pytest.raises(TypeError, match="does not accept Forward"):
                await system.submit("counter", Forward(idem_key="k", amount=1))
            with pytest.raises(ValueError, match="empty idem_key"):
                await system.send("counter", Increment(idem_key="", amount=1))
            with pytest.raises(ValueError, match="nobody"):
                await system.submit("misrouting", Increment(idem_key="m", amount=1))
        assert await counter_value(db) == 0
        assert await db.read_all("SELECT * FROM events") == []
    with pytest.raises(ValueError, match="unique"):
        ActorSystem(db, [Counter(), Counter()])
    with pytest.raises(ValueError, match="at least 1"):
        ActorSystem(db, [Counter()], buffer_size=0)
    with pytest.raises(RuntimeError, match="already run"):
        await system.run()
