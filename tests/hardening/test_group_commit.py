"""Group commit in the actor runtime: a receiver draining its outbox backlog applies many
messages per transaction, with exactly the outcome of applying them one by one.

Found by the soak (docs/reliability.md, "Load and soak"): with one commit per message, the
history indexer (two messages per task) fell further behind for as long as load lasted.
"""

from __future__ import annotations

import anyio
import pytest

from arcod.actors import runtime
from arcod.actors.messages import Message, encode_message, message_kind
from arcod.actors.runtime import Actor, ActorSystem, Outcome
from arcod.core import errors
from arcod.core.errors import ArcodError
from arcod.store.database import Transaction, open_database

pytestmark = pytest.mark.anyio


class Add(Message, frozen=True, kw_only=True):
    amount: int


class Note(Message, frozen=True, kw_only=True):
    text: str


class Summer(Actor):
    """Adds amounts; refuses negative ones; fails on 13 until told otherwise; forwards notes."""

    name = "summer"
    accepts = (Add,)

    def __init__(self) -> None:
        self.fail_13 = True

    async def apply(self, tx: Transaction, msg: Add) -> Outcome:
        if msg.amount < 0:
            raise ArcodError(errors.BAD_REQUEST, "negative")
        if msg.amount == 13 and self.fail_13:
            raise RuntimeError("unlucky")
        await tx.execute("UPDATE total SET value = value + ?", (msg.amount,))
        return Outcome(send=[("notes", Note(idem_key=f"note:{msg.idem_key}", text=str(msg.amount)))])


class Notes(Actor):
    name = "notes"
    accepts = (Note,)

    async def apply(self, tx: Transaction, msg: Note) -> Outcome:
        await tx.execute("INSERT INTO notes (text) VALUES (?)", (msg.text,))
        return Outcome()


class CountingDb:
    """Counts the write transactions a database is asked for."""

    def __init__(self, db) -> None:
        self.db = db
        self.transactions = 0

    def __getattr__(self, name):
        return getattr(self.db, name)

    def transaction(self):
        self.transactions += 1
        return self.db.transaction()


async def drained(db, target: str) -> None:
    with anyio.fail_after(20):
        while (await db.read_one("SELECT COUNT(*) AS n FROM outbox WHERE target = ?", (target,)))["n"]:
            await anyio.sleep(0.01)


async def test_a_backlog_is_applied_in_batches_with_the_same_outcome(tmp_path, anyio_backend, monkeypatch):
    monkeypatch.setattr(runtime, "RETRY_AFTER_S", 0.05)
    amounts = [1, 2, -1, 3, 13, 4] + list(range(100, 300))  # a refusal and a failure among them
    async with open_database(tmp_path / "db.sqlite") as raw:
        async with raw.transaction() as tx:
            await tx.execute("CREATE TABLE total (value INTEGER NOT NULL)")
            await tx.execute("INSERT INTO total VALUES (0)")
            await tx.execute("CREATE TABLE notes (text TEXT NOT NULL)")
            for i, amount in enumerate(amounts):
                msg = Add(idem_key=f"add:{i}", amount=amount)
                await tx.execute("INSERT INTO outbox (target, idem_key, kind, body) VALUES ('summer', ?, ?, ?)",
                                 (msg.idem_key, message_kind(msg), encode_message(msg)))
            # one already applied (a duplicate left in the outbox by a crash): no effect
            await tx.execute("INSERT INTO events (actor, idem_key, kind, body) VALUES ('summer', 'add:0', 'Add', x'00')")
        db = CountingDb(raw)
        summer = Summer()
        system = ActorSystem(db, [summer, Notes()])
        async with anyio.create_task_group() as tg:
            await tg.start(system.run)
            with anyio.fail_after(20):  # everything but the failing 13 is applied
                while (await raw.read_one("SELECT COUNT(*) AS n FROM outbox WHERE target = 'summer'"))["n"] > 1:
                    await anyio.sleep(0.02)
            good = sum(a for a in amounts[1:] if a >= 0 and a != 13)
            assert (await raw.read_one("SELECT value FROM total"))["value"] == good
            assert (await raw.read_one("SELECT idem_key FROM outbox WHERE target = 'summer'"))["idem_key"] == "add:4"
            summer.fail_13 = False  # the outage ends: the kept message is retried and applied
            await drained(raw, "summer")
            await drained(raw, "notes")
            tg.cancel_scope.cancel()
        assert (await raw.read_one("SELECT value FROM total"))["value"] == good + 13
        notes = [r["text"] for r in await raw.read_all("SELECT text FROM notes")]
        assert sorted(map(int, notes)) == sorted(a for a in amounts[1:] if a >= 0)  # each once
        refused = await raw.read_one("SELECT 1 FROM events WHERE idem_key = 'add:2'")
        assert refused is None  # a refusal is recorded nowhere
        # 206 messages for the summer and as many notes, in far fewer transactions than messages.
        assert db.transactions < len(amounts), db.transactions
