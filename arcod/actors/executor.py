"""The executor actor: turns `LaunchAttempt` messages into processes, and processes into
`AttemptFinished` messages.

Applying a LaunchAttempt only checks that the attempt is still wanted; the process itself is
an after-commit effect in the actor system's task group, so it belongs to the daemon's one
task tree and is cancelled with it. The pid is persisted as soon as the process exists: it is
also the process group id, which is what recovery after a crash kills.

Cancellation is cooperative and per run: `cancel_run(run_id)` sets the cancel event of every
attempt of that run this process knows (waiting out a retry delay or running); each reports
itself finished as `canceled`.
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
from arcod.store import runs as runs_store
from arcod.store.database import Database, Transaction
from arcod.store.definitions_store import assets_decoder

log = structlog.get_logger("arcod.executor")


class Executor(Actor):
    name = "executor"
    accepts = (LaunchAttempt,)

    def __init__(self, db: Database, *, project_dir: Path, term_grace_s: float,
                 window_for: Callable[[str, str], tuple[str, str] | None] | None = None,
                 send: Callable[[str, Any], Any] | None = None) -> None:
        self.db = db
        self.window_for = window_for
        self.project_dir = project_dir
        self.term_grace_s = term_grace_s
        self.send = send  # ActorSystem.send, set once the system exists
        self._cancel: dict[str, dict[tuple[str, int], anyio.Event]] = {}
        self._assets: dict[str, dict[str, AssetDef]] = {}

    def cancel_run(self, run_id: str) -> None:
        for event in self._cancel.get(run_id, {}).values():
            event.set()

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

        async def started(pid: int) -> None:
            async with self.db.transaction() as tx:
                await tx.execute(
                    "UPDATE attempts SET state = 'RUNNING', pid = ?, started_at = ? WHERE run_id = ? AND task_id = ?"
                    " AND attempt = ? AND state = 'SCHEDULED'",
                    (pid, runs_store.now_iso(), msg.run_id, msg.task_id, msg.attempt))

        outcome: AttemptOutcome = await run_attempt(spec, on_started=started, term_grace_s=self.term_grace_s,
                                                    cancel_event=event)
        log.info("attempt finished", run_id=msg.run_id, task_id=msg.task_id, attempt=msg.attempt,
                 status=outcome.status, reason=outcome.reason)
        await self._report(AttemptFinished(
            idem_key=finished_key(msg.run_id, msg.task_id, msg.attempt), run_id=msg.run_id, task_id=msg.task_id,
            attempt=msg.attempt, status=outcome.status, reason=outcome.reason, exit_code=outcome.exit_code,
            finished_at=outcome.finished_at))

    async def _report(self, finished: AttemptFinished) -> None:
        assert self.send is not None
        with anyio.CancelScope(shield=True):
            await self.send("dispatcher", finished)

    @staticmethod
    def _finished(msg: LaunchAttempt, status: str, reason: str, exit_code: int | None) -> AttemptFinished:
        return AttemptFinished(idem_key=finished_key(msg.run_id, msg.task_id, msg.attempt), run_id=msg.run_id,
                               task_id=msg.task_id, attempt=msg.attempt, status=status, reason=reason,
                               exit_code=exit_code, finished_at=runs_store.now_iso())

    async def _asset(self, tx: Transaction, code_version: str, asset: str) -> AssetDef:
        assets = self._assets.get(code_version)
        if assets is None:
            row = await tx.fetch_one("SELECT assets FROM code_versions WHERE code_version = ?", (code_version,))
            assets = self._assets[code_version] = assets_decoder.decode(row["assets"])
        return assets[asset]

    async def _window(self, code_version: str, asset: AssetDef, partition: str | None) -> dict[str, Any]:
        """ARCOD_PARTITION_START/_END for time-window partitions (set by the daemon's hook)."""
        if partition is None or asset.partitions is None or self.window_for is None:
            return {}
        window = self.window_for(asset.partitions, partition)
        if window is None:
            return {}
        return {"partition_start": window[0], "partition_end": window[1]}
