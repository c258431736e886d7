"""The dispatcher's memory of a run never outlives a transaction that rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest

from arcod.actors.dispatcher import Dispatcher
from arcod.actors.run_messages import AttemptFinished, LaunchAttempt, RunQueued
from arcod.core.plan import Plan, PlanTask
from arcod.store import runs as runs_store
from arcod.store.database import open_database

pytestmark = pytest.mark.anyio

CHAIN = Plan(tasks=(
    PlanTask(task_id="a", asset="a"),
    PlanTask(task_id="b", asset="b", deps=("a",)),
    PlanTask(task_id="c", asset="c", deps=("b",)),
))


class Interrupted(Exception):
    """Stands for anything that aborts a transaction after the dispatcher applied a message."""


def succeeded(task_id: str) -> AttemptFinished:
    return AttemptFinished(idem_key=f"done:{task_id}", run_id="r1", task_id=task_id, attempt=1,
                           status="succeeded", reason="exit 0", exit_code=0, finished_at=runs_store.now_iso())


async def task_states(db) -> dict[str, str]:
    return {r["task_id"]: r["state"] for r in await db.read_all("SELECT task_id, state FROM tasks WHERE run_id = 'r1'")}


def launched(outcome) -> list[str]:
    return [m.task_id for target, m in outcome.send if target == "executor" and isinstance(m, LaunchAttempt)]


async def start_chain(db, tmp_path: Path) -> Dispatcher:
    """A queued run of CHAIN, admitted by a fresh dispatcher (one task at a time): `a` starts."""
    dispatcher = Dispatcher(max_concurrent_runs=1, max_tasks_per_run=1, logs_dir=tmp_path / "logs")
    async with db.transaction() as tx:
        await runs_store.insert_run(tx, run_id="r1", run_key=None, fingerprint="f", code_version="v",
                                    plan=CHAIN, request={}, partition_selection=None, tags={})
    async with db.transaction() as tx:
        assert launched(await dispatcher.apply(tx, RunQueued(idem_key="q", run_id="r1"))) == ["a"]
    return dispatcher


async def test_a_rolled_back_message_leaves_no_trace_in_the_next_one(tmp_path: Path) -> None:
    async with open_database(tmp_path / "a.db") as db:
        dispatcher = await start_chain(db, tmp_path)
        async with db.transaction() as tx:  # what the executor records once `a` has a process
            await tx.execute("UPDATE attempts SET state = 'RUNNING' WHERE run_id = 'r1'")

        # `a` succeeds and `b` starts, in memory and in the transaction; then it rolls back.
        with pytest.raises(Interrupted):
            async with db.transaction() as tx:
                assert launched(await dispatcher.apply(tx, succeeded("a"))) == ["b"]
                raise Interrupted
        assert await task_states(db) == {"a": "RUNNING", "b": "PENDING", "c": "PENDING"}

        # The same message again (the runtime redelivers it): it must start `b` again, as the
        # table says `b` never started, although the dispatcher's memory had it RUNNING.
        async with db.transaction() as tx:
            assert launched(await dispatcher.apply(tx, succeeded("a"))) == ["b"]
        assert await task_states(db) == {"a": "SUCCEEDED", "b": "RUNNING", "c": "PENDING"}

        # And the run goes on to the end from there.
        async with db.transaction() as tx:
            await tx.execute("UPDATE attempts SET state = 'RUNNING' WHERE run_id = 'r1' AND task_id = 'b'")
            assert launched(await dispatcher.apply(tx, succeeded("b"))) == ["c"]
            await tx.execute("UPDATE attempts SET state = 'RUNNING' WHERE run_id = 'r1' AND task_id = 'c'")
        async with db.transaction() as tx:
            assert launched(await dispatcher.apply(tx, succeeded("c"))) == []
        assert await task_states(db) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"}
        assert (await db.read_one("SELECT state FROM runs WHERE run_id = 'r1'"))["state"] == "SUCCEEDED"


async def test_a_change_made_by_another_writer_is_seen(tmp_path: Path) -> None:
    """If the tasks table moves under the dispatcher (another daemon on the file, a repair by
    hand) together with its version, the next message reads it again."""
    async with open_database(tmp_path / "a.db") as db:
        dispatcher = await start_chain(db, tmp_path)
        async with db.transaction() as tx:
            await tx.execute("UPDATE tasks SET state = 'SUCCEEDED' WHERE run_id = 'r1' AND task_id IN ('a', 'b')")
            await tx.execute("UPDATE runs SET tasks_version = tasks_version + 1 WHERE run_id = 'r1'")
        async with db.transaction() as tx:
            assert launched(await dispatcher.apply(tx, RunQueued(idem_key="q2", run_id="r1"))) == ["c"]
