"""The operator workload the crash campaign replays, and the summary of where it ends.

The workload is what an operator does on a bad day: runs that fail, a task that keeps
failing through its retries, a run cancelled mid-task, every kind of rerun, the same keyed
request twice; backfills with a failing partition and retry-failed, one paused and resumed
while a chunk is in flight, one cancelled mid-chunk and retried. Every step waits for what it
needs (a task really RUNNING before the cancel, say) by polling, and its outcome is fixed by
files the test controls, not by timing, so the same workload ends in the same state however
many times the daemon dies on the way: that is what `summarize` captures and the campaign
compares with a run without faults.

Files the job reads (in the project): `fail/<asset>[__<partition>]` makes it fail,
`hold/<asset>` makes it wait (up to two minutes) until the file is gone. It writes
`counters/<name>` when it starts and `ends/<name>` when it is done (unless it was killed),
each line `<run_id> <attempt> <unix time>`: the outside view of which processes ran when.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from arcod.control import protocol as p
from tests.e2e.harness import COUNTING_JOB, asset_toml, write_project
from tests.faults.driver import Driver, WorkloadError

FAULT_JOB = COUNTING_JOB.replace(
    'if (here / "fail" / asset).exists()',
    'hold = here / "hold" / asset\n'
    'deadline = time.time() + 120\n'
    'while hold.exists() and time.time() < deadline:\n'
    '    time.sleep(0.02)\n'
    '(here / "ends").mkdir(exist_ok=True)\n'
    'with open(here / "ends" / name, "a") as f:\n'
    '    f.write(os.environ["ARCOD_RUN_ID"] + " " + os.environ["ARCOD_ATTEMPT"] + " " + str(time.time()) + "\\n")\n'
    'if (here / "fail" / asset).exists()', 1)
assert FAULT_JOB != COUNTING_JOB

DAILY = '''
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2024-01-09"
'''
ASSETS = (asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("c", deps=["b"])
          + asset_toml("p", partitions="daily") + asset_toml("q", deps=["p"], partitions="daily")
          + asset_toml("flaky", extra="retries = { max = 1, delay_s = 0.1, backoff = 1.0 }")
          + asset_toml("slow") + asset_toml("after_slow", deps=["slow"]))
FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")


def make_project(root: Path, *, term_grace_s: float = 2.0, settings: str = "") -> Path:
    write_project(root, ASSETS, partitions=DAILY,
                  settings=f"max_tasks_per_run = 4\nterm_grace_s = {term_grace_s}\n{settings}")
    (root / "job.py").write_text(FAULT_JOB)
    (root / "hold").mkdir(exist_ok=True)
    return root


class Workload:
    """One pass of the workload against `drv`; `labels` name what it created."""

    def __init__(self, drv: Driver, *, backfills: bool = True) -> None:
        self.drv = drv
        self.project = drv.daemon.project
        self.backfills = backfills
        self.runs: dict[str, str] = {}
        self.bfs: dict[str, str] = {}

    # ── files the job reads ────────────────────────────────────────────────

    def touch(self, kind: str, name: str) -> None:
        (self.project / kind / name).touch()

    def rm(self, kind: str, name: str) -> None:
        (self.project / kind / name).unlink(missing_ok=True)

    # ── steps ──────────────────────────────────────────────────────────────

    def run_cmd(self, label: str, *args: str) -> dict:
        result = self.drv.cli(*args, accept="rerun" if args[0] == "rerun" else "run").json
        self.runs[label] = result["run_id"]
        return result

    def backfill_cmd(self, label: str, *args: str) -> dict:
        result = self.drv.cli("backfill", *args, accept=f"backfill.{args[0]}").json
        self.bfs[label] = result["backfill_id"]
        return result

    def run_state(self, label: str) -> dict:
        return self.drv.call(p.RunsShow(run_id=self.runs[label]))

    def wait_runs(self, *labels: str) -> None:
        for label in labels:
            self.drv.wait(f"run {label} to finish", lambda r: r["state"] in FINISHED,
                          p.RunsShow(run_id=self.runs[label]))

    def wait_task_running(self, run_id: str, task_id: str) -> None:
        self.drv.wait(f"{task_id} of {run_id} to run", lambda r: any(
            t["task_id"] == task_id and t["state"] == "RUNNING" for t in r["tasks"]), p.RunsShow(run_id=run_id))

    def wait_backfill(self, label: str, predicate=lambda b: b["state"] in FINISHED) -> dict:
        return self.drv.wait(f"backfill {label}", predicate, p.BackfillShow(backfill_id=self.bfs[label]))

    def chunk_run(self, label: str, index: int) -> str:
        def planned(r: dict) -> bool:
            return any(c["chunk_index"] == index and c["run_id"] for c in r["chunks"])
        chunks = self.drv.wait(f"chunk {index} of {label} to be planned", planned,
                               p.BackfillChunks(backfill_id=self.bfs[label]))
        return next(c["run_id"] for c in chunks["chunks"] if c["chunk_index"] == index)

    def run(self) -> None:
        d = self.drv
        # Phase 1: failures, retries, a cancel mid-task.
        for kind, name in (("fail", "b"), ("fail", "p__2024-01-03"), ("fail", "flaky"), ("hold", "slow")):
            self.touch(kind, name)
        self.run_cmd("R1", "run", "--select", "a+", "--run-key", "w1")
        self.run_cmd("R2", "run", "--select", "p+", "--partitions", "2024-01-01..2024-01-04", "--run-key", "w2")
        self.run_cmd("R3", "run", "--select", "flaky", "--run-key", "w3")
        self.run_cmd("R4", "run", "--select", "slow+", "--run-key", "w4")
        if self.backfills:
            self.touch("fail", "p__2024-01-06")
            self.backfill_cmd("B1", "create", "--select", "p+", "--partitions", "2024-01-05..2024-01-08",
                              "--chunk-size", "1", "--max-concurrency", "2", "--request-id", "bf1")
        self.wait_task_running(self.runs["R4"], "slow")
        d.cli("cancel", self.runs["R4"], accept="cancel")
        self.wait_runs("R1", "R2", "R3", "R4")
        if self.backfills:
            self.wait_backfill("B1")

        # Phase 2: the causes are fixed; every kind of rerun, and a keyed request repeated.
        for kind, name in (("fail", "b"), ("fail", "p__2024-01-03"), ("fail", "p__2024-01-06"), ("hold", "slow")):
            self.rm(kind, name)
        self.run_cmd("R5", "rerun", self.runs["R1"], "--from-failure")
        self.run_cmd("R6", "rerun", self.runs["R2"], "--from-failure")
        self.run_cmd("R7", "rerun", self.runs["R4"], "--from-failure")
        self.run_cmd("R8", "rerun", self.runs["R3"], "--all")
        self.run_cmd("R9", "rerun", self.runs["R1"], "--select", "b", "--downstream")
        again = d.cli("run", "--select", "a+", "--run-key", "w1", accept="run").json
        if again["created"] or again["run_id"] != self.runs["R1"]:
            raise WorkloadError(f"run key w1 gave a new run: {again}")
        if self.backfills:
            self.backfill_cmd("B2", "retry-failed", self.bfs["B1"], "--request-id", "rf1")
        self.wait_runs("R5", "R6", "R7", "R8", "R9")
        if not self.backfills:
            return
        self.wait_backfill("B2")

        # Phase 3: pause/resume with a chunk in flight; cancel mid-chunk, then retry what was left.
        self.touch("hold", "p")
        self.backfill_cmd("B3", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04",
                          "--chunk-size", "2", "--max-concurrency", "1", "--request-id", "bf3")
        self.backfill_cmd("B4", "create", "--select", "p", "--partitions", "2024-01-05..2024-01-08",
                          "--chunk-size", "2", "--max-concurrency", "1", "--request-id", "bf4")
        self.wait_task_running(self.chunk_run("B3", 0), "p[2024-01-01]")
        d.cli("backfill", "pause", self.bfs["B3"], "--request-id", "pause3", accept="backfill.pause")
        self.wait_task_running(self.chunk_run("B4", 0), "p[2024-01-05]")
        d.cli("backfill", "cancel", self.bfs["B4"], "--request-id", "cancel4", accept="backfill.cancel")
        self.rm("hold", "p")
        self.wait_backfill("B4")
        self.wait_backfill("B3", lambda b: b["state"] == "PAUSED" and not b["counts"]["chunks"].get("RUNNING"))
        d.cli("backfill", "resume", self.bfs["B3"], "--request-id", "resume3", accept="backfill.resume")
        self.backfill_cmd("B5", "retry-failed", self.bfs["B4"], "--request-id", "rf4")
        self.wait_backfill("B3")
        self.wait_backfill("B5")

    def settle(self) -> None:
        """Wait until nothing is in flight (the last messages reach the history indexer)."""
        db = self.project / ".arcod" / "arcod.db"

        def quiet(_: Any) -> bool:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                busy = con.execute("SELECT (SELECT COUNT(*) FROM outbox) + (SELECT COUNT(*) FROM runs WHERE state"
                                   " NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED'))").fetchone()[0]
            finally:
                con.close()
            return busy == 0
        self.drv.wait("the daemon to settle", quiet, p.Status())

    def labels(self) -> dict[str, dict[str, str]]:
        return {"runs": dict(self.runs), "backfills": dict(self.bfs)}


def summarize(db_path: Path, labels: dict[str, dict[str, str]]) -> dict[str, Any]:
    """Where the workload ended, without ids, times or attempt counts (which faults change)."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        run_label = {rid: label for label, rid in labels["runs"].items()}
        bf_label = {bid: label for label, bid in labels["backfills"].items()}

        def tasks(run_id: str) -> dict[str, str]:
            return {r["task_id"]: r["state"] for r in con.execute(
                "SELECT task_id, state FROM tasks WHERE run_id = ? ORDER BY task_id", (run_id,))}

        runs = {}
        for label, run_id in sorted(labels["runs"].items()):
            r = con.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            runs[label] = {"state": r["state"], "rerun_kind": r["rerun_kind"], "run_key": r["run_key"] if not (
                r["run_key"] or "").startswith("rerun:") else "derived",
                "parent": run_label.get(r["parent_run_id"]), "root": run_label.get(r["root_run_id"]),
                "tasks": tasks(run_id)}
        backfills = {}
        for label, bf_id in sorted(labels["backfills"].items()):
            b = con.execute("SELECT * FROM backfills WHERE backfill_id = ?", (bf_id,)).fetchone()
            chunks = [{"index": c["chunk_index"], "state": c["state"], "partitions": c["partitions"],
                       "first": c["first_partition"], "last": c["last_partition"],
                       "tasks": tasks(c["run_id"]) if c["run_id"] else {}}
                      for c in con.execute("SELECT * FROM backfill_chunks WHERE backfill_id = ? ORDER BY chunk_index",
                                           (bf_id,))]
            backfills[label] = {
                "state": b["state"], "state_version": b["state_version"], "parent": bf_label.get(b["parent_backfill_id"]),
                "partitions_total": b["partitions_total"], "chunks_total": b["chunks_total"], "chunks": chunks,
                "log": [(t["version"], t["from_state"], t["to_state"]) for t in con.execute(
                    "SELECT * FROM backfill_transitions WHERE backfill_id = ? ORDER BY version", (bf_id,))]}
        status = {f"{r['asset']}|{r['partition']}": [r["last_materialized_run"] is not None, r["last_attempt_state"]]
                  for r in con.execute("SELECT * FROM partition_status ORDER BY asset, partition")}
        totals = dict(con.execute("SELECT 'runs', COUNT(*) FROM runs UNION ALL SELECT 'tasks', COUNT(*) FROM tasks"
                                  ).fetchall())
        return msgspec.to_builtins({"runs": runs, "backfills": backfills, "partition_status": status, "totals": totals})
    finally:
        con.close()


# What the workload must end in, with or without faults (the daemon's semantics, written out).
EXPECTED_RUN_STATES = {
    "R1": "FAILED", "R2": "FAILED", "R3": "FAILED", "R4": "CANCELED", "R5": "SUCCEEDED", "R6": "SUCCEEDED",
    "R7": "SUCCEEDED", "R8": "FAILED", "R9": "SUCCEEDED",
}
EXPECTED_BACKFILL_STATES = {"B1": "FAILED", "B2": "SUCCEEDED", "B3": "SUCCEEDED", "B4": "CANCELED", "B5": "SUCCEEDED"}


def expectation_errors(summary: dict[str, Any]) -> list[str]:
    """Differences from what the SPEC says this workload ends in (a check of the reference itself)."""
    out = []
    runs, bfs = summary["runs"], summary["backfills"]
    for label, state in EXPECTED_RUN_STATES.items():
        if runs[label]["state"] != state:
            out.append(f"{label} is {runs[label]['state']}, expected {state}")
    for label, state in EXPECTED_BACKFILL_STATES.items():
        if label in bfs and bfs[label]["state"] != state:
            out.append(f"{label} is {bfs[label]['state']}, expected {state}")
    if runs["R1"]["tasks"] != {"a": "SUCCEEDED", "b": "FAILED", "c": "SKIPPED"}:
        out.append(f"R1 tasks {runs['R1']['tasks']}")
    if runs["R4"]["tasks"] != {"after_slow": "CANCELED", "slow": "CANCELED"}:
        out.append(f"R4 tasks {runs['R4']['tasks']}")
    if sorted(runs["R5"]["tasks"]) != ["b", "c"] or sorted(runs["R6"]["tasks"]) != ["p[2024-01-03]", "q[2024-01-03]"]:
        out.append(f"from-failure reruns ran {runs['R5']['tasks']} and {runs['R6']['tasks']}")
    if "B3" in bfs and [v[2] for v in bfs["B3"]["log"]] != ["RUNNING", "PAUSED", "RUNNING", "SUCCEEDED"]:
        out.append(f"B3 went {bfs['B3']['log']}")
    if "B4" in bfs and [v[2] for v in bfs["B4"]["log"]] != ["RUNNING", "CANCELING", "CANCELED"]:
        out.append(f"B4 went {bfs['B4']['log']}")
    return out
