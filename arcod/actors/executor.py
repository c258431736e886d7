"""The executor actor: turns `LaunchAttempt` messages into processes, and processes into
`AttemptFinished` messages.

Applying a LaunchAttempt only checks that the attempt is still wanted; the process itself is
an after-commit effect in the actor system's task group, so it belongs to the daemon's one
task tree and is cancelled with it. The pid is persisted as soon as the process exists: it is
also the process group id, which is what recovery after a crash kills.

Cancellation is cooperative and per run: `cancel_run(run_id)` sets the cancel event of every
attempt of that run this process knows (waiting out a retry delay or running); each reports
itself finished as `canceled`.

A failure of the daemon around a process (the pid cannot be recorded, say) is not left hanging:
the process group is stopped and the attempt reported failed with reason `executor error: ...`.
While the daemon drains for shutdown (`draining`), no new process starts: such an attempt stays
SCHEDULED, and recovery on the next start records it as `daemon_restart` and retries it.
Failpoints: `executor.before_start`, `.after_spawn` (pid not yet recorded), `.after_start`,
`.before_finish_report`, `.after_finish_report`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import structlog

from arcod.actors.run_messages import AttemptFinished, LaunchAttempt, finished_key
from arcod.actors.runtime import Actor, Outcome
from arcod.core.definitions import AssetDef
from arcod.executor.process import AttemptOutcome, AttemptSpec, run_attempt
from arcod.failpoints import Failpoints
from arcod.store import runs as runs_store
from arcod.store.database import Database, StorageError, Transaction
from arcod.store.definitions_store import AssetsByCodeVersion

log = structlog.get_logger("arcod.executor")


class Executor(Actor):
    name = "executor"
    accepts = (LaunchAttempt,)

    def __init__(self, db: Database, *, project_dir: Path, term_grace_s: float,
                 window_for: Callable[[str, str], tuple[str, str] | None] | None = None,
                 send: Callable[[str, Any], Any] | None = None, max_log_bytes: int | None = None) -> None:
        self.db = db
        self.max_log_bytes = max_log_bytes or None  # 0: no limit
        self.window_for = window_for
        self.project_dir = project_dir
        self.term_grace_s = term_grace_s
        self.send = send  # ActorSystem.send, set once the system exists
        self.failpoints = Failpoints()  # the daemon's registry, set by the daemon
        self.draining = False  # set on shutdown: start no new process
        self._processes = 0  # attempts between process start and their report
        self._idle: anyio.Event | None = None
        self._cancel: dict[str, dict[tuple[str, int], anyio.Event]] = {}
        self._assets = AssetsByCodeVersion()

    def cancel_run(self, run_id: str) -> None:
        for event in self._cancel.get(run_id, {}).values():
            event.set()

    async def wait_idle(self) -> None:
        """Return once no attempt of this daemon has a running process (or an unsent outcome)."""
        while self._processes:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def apply(self, tx: Transaction, msg: Any) -> Outcome:
        if not isinstance(msg, LaunchAttempt):
            raise TypeError(f"executor cannot handle {type(msg).__name__}")
        row = await tx.fetch_one(
            "SELECT a.state, a.asset, a.partition, a.not_before, a.log_path, r.state AS run_state, r.code_version"
            " FROM attempts a JOIN runs r USING (run_id) WHERE a.run_id = ? AND a.task_id = ? AND a.attempt = ?",
            (msg.run_id, msg.task_id, msg.attempt))
        if row is None or row["state"] != "SCHEDULED":
            return Outcome()
        if row["run_state"] != "RUNNING":
            return Outcome(send=[("dispatcher", self._finished(msg, "canceled", "canceled before it started", None))])
        asset = await self._asset(tx, row["code_version"], row["asset"])
        spec = AttemptSpec(
            run_id=msg.run_id, asset=row["asset"], partition=row["partition"], attempt=msg.attempt,
            command=list(asset.command) if isinstance(asset.command, tuple) else asset.command,
            python=asset.python, cwd=str(self.project_dir), log_path=row["log_path"], timeout_s=asset.timeout_s,
            **(await self._window(row["code_version"], asset, row["partition"])),
        )
        event = anyio.Event()
        self._cancel.setdefault(msg.run_id, {})[(msg.task_id, msg.attempt)] = event
        not_before = datetime.fromisoformat(row["not_before"])

        async def launch() -> None:
            try:
                await self._run(msg, spec, not_before, event)
            finally:
                attempts = self._cancel.get(msg.run_id, {})
                attempts.pop((msg.task_id, msg.attempt), None)
                if not attempts:
                    self._cancel.pop(msg.run_id, None)

        return Outcome(after_commit=[launch])

    async def _run(self, msg: LaunchAttempt, spec: AttemptSpec, not_before: datetime, event: anyio.Event) -> None:
        wait = (not_before - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            with anyio.move_on_after(wait):
                await event.wait()
        if event.is_set():
            await self._report(self._finished(msg, "canceled", "canceled before it started", None))
            return
        if self.draining:
            log.info("not starting an attempt while shutting down; it is retried after the restart",
                     run_id=msg.run_id, task_id=msg.task_id, attempt=msg.attempt)
            return
        self._processes += 1
        try:
            await self._run_process(msg, spec, event)
        finally:
            self._processes -= 1
            if not self._processes and self._idle is not None:
                self._idle.set()

    async def _run_process(self, msg: LaunchAttempt, spec: AttemptSpec, event: anyio.Event) -> None:
        async def started(pid: int) -> None:
            await self._hit("executor.after_spawn")
            async with self.db.transaction() as tx:
                await tx.execute(
                    "UPDATE attempts SET state = 'RUNNING', pid = ?, started_at = ? WHERE run_id = ? AND task_id = ?"
                    " AND attempt = ? AND state = 'SCHEDULED'",
                    (pid, runs_store.now_iso(), msg.run_id, msg.task_id, msg.attempt))
            await self._hit("executor.after_start")

        try:
            await self._hit("executor.before_start")
            outcome: AttemptOutcome = await run_attempt(spec, on_started=started, term_grace_s=self.term_grace_s,
                                                        cancel_event=event, max_log_bytes=self.max_log_bytes)
            log.info("attempt finished", run_id=msg.run_id, task_id=msg.task_id, attempt=msg.attempt,
                     status=outcome.status, reason=outcome.reason)
            await self._hit("executor.before_finish_report")
        except Exception as exc:  # the daemon failed around the process (run_attempt stopped it)
            log.exception("attempt failed in the executor", run_id=msg.run_id, task_id=msg.task_id,
                          attempt=msg.attempt)
            await self._report(self._finished(msg, "failed", f"executor error: {exc}", None))
            return
        await self._report(AttemptFinished(
            idem_key=finished_key(msg.run_id, msg.task_id, msg.attempt), run_id=msg.run_id, task_id=msg.task_id,
            attempt=msg.attempt, status=outcome.status, reason=outcome.reason, exit_code=outcome.exit_code,
            finished_at=outcome.finished_at))
        await self._hit("executor.after_finish_report")

    async def _hit(self, name: str) -> None:
        pending = self.failpoints.hit(name)
        if pending is not None:
            await pending

    async def _report(self, finished: AttemptFinished) -> None:
        """Record how the attempt ended. While the database cannot take the write (disk full,
        locked by another process) keep trying: dropping the outcome would leave the run
        RUNNING until the next restart. A shutdown meanwhile ends the wait; recovery then
        records the attempt as `daemon_restart`."""
        assert self.send is not None
        delay = 0.1
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    await self.send("dispatcher", finished)
                return
            except StorageError as exc:
                log.warning("cannot record an attempt's outcome yet; retrying", idem_key=finished.idem_key,
                            error=str(exc), retry_in_s=delay)
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    @staticmethod
    def _finished(msg: LaunchAttempt, status: str, reason: str, exit_code: int | None) -> AttemptFinished:
        return AttemptFinished(idem_key=finished_key(msg.run_id, msg.task_id, msg.attempt), run_id=msg.run_id,
                               task_id=msg.task_id, attempt=msg.attempt, status=status, reason=reason,
                               exit_code=exit_code, finished_at=runs_store.now_iso())

    async def _asset(self, tx: Transaction, code_version: str, asset: str) -> AssetDef:
        return await self._assets.get(tx, code_version, asset)

    async def _window(self, code_version: str, asset: AssetDef, partition: str | None) -> dict[str, Any]:
        """ARCOD_PARTITION_START/_END for time-window partitions (set by the daemon's hook)."""
        if partition is None or asset.partitions is None or self.window_for is None:
            return {}
        window = self.window_for(asset.partitions, partition)
        if window is None:
            return {}
        return {"partition_start": window[0], "partition_end": window[1]}
