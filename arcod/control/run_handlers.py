"""Run requests: start, rerun, cancel, list, show, trace lineage, read logs.

Starting, rerunning and cancelling are messages to the planner and dispatcher (the reply
comes back once the change is committed); the rest are reads of the store.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from arcod.actors.run_messages import CancelRun, PlanRerun, PlanRun
from arcod.control import protocol as p
from arcod.core import errors
from arcod.core.backfill_state import backfill_not_found
from arcod.core.errors import ArcodError
from arcod.core.task_filter import check_task_filter
from arcod.store import backfills as backfills_store
from arcod.store import runs as runs_store

if TYPE_CHECKING:
    from arcod.daemon import Daemon


class RunHandlers:
    daemon: Daemon

    TABLE = {
        p.Run: "run",
        p.RunsList: "runs_list",
        p.RunsShow: "runs_show",
        p.RunsTree: "runs_tree",
        p.Cancel: "cancel",
        p.Rerun: "rerun",
        p.Logs: "logs",
    }

    @staticmethod
    def request_key() -> str:
        """The idempotency key of one operator request (repeat safety comes from run keys)."""
        return f"req:{uuid.uuid4().hex}"


    async def run(self, req: p.Run) -> dict:
        msg = PlanRun(
            idem_key=self.request_key(), select=tuple(req.select), upstream=req.upstream,
            downstream=req.downstream, partition=req.partition, partitions=req.partitions,
            run_key=req.run_key, tags=req.tags,
        )
        return await self.daemon.system.submit("planner", msg)

    async def rerun(self, req: p.Rerun) -> dict:
        if req.kind == "subset" and not req.select:
            raise ArcodError(errors.BAD_REQUEST, "a subset rerun needs --select EXPR")
        if req.kind != "subset" and req.select:
            raise ArcodError(errors.BAD_REQUEST, "--select goes with a subset rerun only")
        msg = PlanRerun(
            idem_key=self.request_key(), parent_run_id=req.run_id, kind=req.kind, select=tuple(req.select),
            upstream=req.upstream, downstream=req.downstream, run_key=req.run_key,
        )
        return await self.daemon.system.submit("planner", msg)

    async def cancel(self, req: p.Cancel) -> dict:
        return await self.daemon.system.submit("dispatcher", CancelRun(idem_key=self.request_key(), run_id=req.run_id))

    async def _run_or_404(self, run_id: str) -> dict:
        run = await runs_store.run_with_tasks(self.daemon.db, run_id)
        if run is None:
            raise ArcodError(errors.NOT_FOUND, f"no run {run_id!r}; see `arcod runs list`", {"what": "run", "id": run_id})
        return run

    async def _run_exists(self, run_id: str) -> None:
        if await self.daemon.db.read_one("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)) is None:
            raise ArcodError(errors.NOT_FOUND, f"no run {run_id!r}; see `arcod runs list`", {"what": "run", "id": run_id})

    async def runs_show(self, req: p.RunsShow) -> dict:
        run = await self._run_or_404(req.run_id)
        run["created"] = False  # SPEC §5's flag: a read never creates (`created_at` is the time)
        rows = await self.daemon.db.read_all(
            "SELECT task_id, attempt, state, exit_code, reason, pid, log_path, started_at, finished_at"
            " FROM attempts WHERE run_id = ? ORDER BY task_id, attempt", (req.run_id,))
        run["attempts"] = [dict(r) for r in rows]
        return run

    async def runs_list(self, req: p.RunsList) -> dict:
        if req.limit < 1 or req.limit > 10_000:
            raise ArcodError(errors.BAD_REQUEST, "--limit must be between 1 and 10000")
        if req.backfill_id is not None and await backfills_store.get_backfill(self.daemon.db, req.backfill_id) is None:
            raise backfill_not_found(req.backfill_id)
        if req.root_run_id is not None:
            await self._run_exists(req.root_run_id)
        clauses, params = [], []
        if req.state is not None:
            clauses.append("state = ?")
            params.append(req.state.upper())
        for column in ("backfill_id", "root_run_id"):
            value = getattr(req, column)
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self.daemon.db.read_all(
            f"SELECT {runs_store.RUN_COLUMNS} FROM runs {where} ORDER BY seq DESC LIMIT ?", (*params, req.limit))
        runs = [runs_store.run_row_to_dict(r) for r in rows]
        counts = await self._task_counts([r["run_id"] for r in runs])
        for run in runs:
            run["created"] = False
            run["counts"] = counts.get(run["run_id"], {})
        return {"runs": runs}

    async def _task_counts(self, run_ids: list[str]) -> dict[str, dict[str, int]]:
        if not run_ids:
            return {}
        marks = ",".join("?" * len(run_ids))
        rows = await self.daemon.db.read_all(
            f"SELECT run_id, state, COUNT(*) AS n FROM tasks WHERE run_id IN ({marks}) GROUP BY run_id, state", run_ids)
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            counts.setdefault(r["run_id"], {})[r["state"]] = r["n"]
        return counts

    async def runs_tree(self, req: p.RunsTree) -> dict:
        run = await self._run_or_404(req.run_id)
        rows = await self.daemon.db.read_all(
            f"SELECT {runs_store.RUN_COLUMNS} FROM runs WHERE root_run_id = ? ORDER BY seq", (run["root_run_id"],))
        runs = [runs_store.run_row_to_dict(r) for r in rows]
        counts = await self._task_counts([r["run_id"] for r in runs])
        tasks = await self.daemon.db.read_all(
            f"SELECT run_id, task_id FROM tasks WHERE run_id IN ({','.join('?' * len(runs))}) ORDER BY run_id, position",
            [r["run_id"] for r in runs])
        by_run: dict[str, list[str]] = {}
        for t in tasks:
            by_run.setdefault(t["run_id"], []).append(t["task_id"])
        for r in runs:
            r["created"] = False
            r["counts"] = counts.get(r["run_id"], {})
            r["task_ids"] = by_run.get(r["run_id"], [])
        return {"root_run_id": run["root_run_id"], "runs": runs}

    LOG_CHUNK = 256 * 1024

    async def logs(self, req: p.Logs) -> dict:
        await self._run_exists(req.run_id)
        if req.asset is not None or req.partition is not None:
            tasks = await self.daemon.db.read_all(
                "SELECT asset, partition FROM tasks WHERE run_id = ? ORDER BY position", (req.run_id,))
            check_task_filter(req.run_id, [(t["asset"], t["partition"]) for t in tasks], req.asset, req.partition)
        clauses, params = ["run_id = ?"], [req.run_id]
        if req.asset is not None:
            clauses.append("asset = ?")
            params.append(req.asset)
        if req.partition is not None:
            clauses.append("partition = ?")
            params.append(req.partition)
        rows = await self.daemon.db.read_all(
            "SELECT task_id, attempt, asset, partition, state, log_path FROM attempts WHERE "
            + " AND ".join(clauses) + " ORDER BY started_at IS NULL, started_at, task_id, attempt", params)
        logs_dir = self.daemon.settings.logs_dir
        budget = self.LOG_CHUNK
        out = []
        for r in rows:
            ident = f"{r['task_id']}#{r['attempt']}"
            offset = req.offsets.get(ident, 0)
            path = Path(r["log_path"])
            if logs_dir not in path.parents:
                continue  # never read outside the state directory, whatever the row says
            try:
                with path.open("rb") as f:
                    f.seek(offset)
                    data = f.read(max(budget, 0))
            except FileNotFoundError:
                data = b""
            budget -= len(data)
            out.append({"id": ident, "task_id": r["task_id"], "asset": r["asset"], "partition": r["partition"],
                        "attempt": r["attempt"], "state": r["state"], "offset": offset + len(data),
                        "text": data.decode("utf-8", "replace")})
        run = await self.daemon.db.read_one("SELECT state FROM runs WHERE run_id = ?", (req.run_id,))
        return {"run_id": req.run_id, "run_state": run["state"], "attempts": out, "more": budget <= 0}
