"""The invariants of SPEC §8, checked over a daemon's database (and the tasks' own evidence).

`check(db_path, ...)` reads the SQLite file directly (read-only) after a workload, however
many crashes it went through, and returns a `Report`: which invariants were checked and every
violation found, each with enough detail to find the rows. It decides nothing about how the
state came about; it only says whether the state is one the SPEC allows.

It lives with the tests, not in the product: several invariants need evidence only a test
has (the commands the daemon answered "ok" to, the counter lines the test's tasks append at
each start), and the product's own guarantees are constraints and transactions, not a checker
an operator would run. The checker is tested on seeded corruptions (tests/faults/test_invariants.py).

Evidence from the tasks: the test job appends `<run_id> <attempt> <time>` to
`counters/<asset with / as __>[__<partition>]` when it starts, and (the fault workload's job)
to `ends/<same name>` when it is done; that is the outside view of which attempts really
started and when each process ran, independent of what the daemon recorded. A process that
was killed writes no end; one that outlived its daemon and was never stopped shows up as a
start..end interval around another process's start.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

FINISHED_RUN = {"SUCCEEDED", "FAILED", "CANCELED"}
TERMINAL_TASK = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"}
OPEN_ATTEMPT = {"SCHEDULED", "RUNNING"}
FINISHED_BACKFILL = {"SUCCEEDED", "FAILED", "CANCELED"}

# name -> what it promises. `Report.checked` lists those that applied to the database.
INVARIANTS = {
    "run_key_unique": "no run_key maps to two runs",
    "event_key_unique": "each (actor, idem_key) was applied once",
    "tasks_match_plan": "a run's tasks are exactly its plan's tasks",
    "rerun_lineage": "reruns link to an existing parent and its root; subset/all stay inside the parent's plan",
    "from_failure_exact": "a from_failure rerun runs exactly the parent's tasks that did not succeed",
    "attempts_contiguous": "a task's attempts are numbered 1..n, n = tasks.attempts",
    "attempt_matches_task": "a finished task's last attempt says the same",
    "run_state_consistent": "a run's state agrees with its tasks' states",
    "quiescent": "nothing is left in flight: no open run, task, attempt or outbox row",
    "one_materialisation_at_a_time": "two attempts of one (asset, partition) never ran at the same time",
    "attempt_started_once": "no attempt's process started twice (task evidence)",
    "succeeded_attempt_ran": "every succeeded attempt ran exactly once (task evidence)",
    "ran_only_planned_tasks": "no process ran for a task outside its run's plan (task evidence)",
    "one_process_at_a_time": "no two task processes of one (asset, partition) ever ran at once (task evidence)",
    "partition_status_agrees": "last materialisation per (asset, partition) is a succeeded task of that run",
    "accepted_commands_present": "every command the daemon answered ok to is in the database",
    "chunk_planned_once": "no chunk planned twice; chunk rows and chunk runs agree",
    "chunks_contiguous": "a backfill's chunks are 0..next_chunk-1",
    "state_versions_contiguous": "state_version logs are 1..n without gaps or repeats, each from the previous state",
    "backfill_state_consistent": "a backfill's state agrees with its chunks",
    "succeeded_backfill_exactly_once": "every partition of a SUCCEEDED backfill materialised exactly once from it",
    "backfill_concurrency": "no more than max_concurrency chunk runs of a backfill were active at once",
    "retry_failed_exact": "a retry-failed child never runs a pair that succeeded in its parent",
}


@dataclass
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class Report:
    checked: list[str] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        lines = [f"{len(self.checked)} invariants checked, {len(self.violations)} violations"]
        lines += [f"  {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"  ... {len(self.violations) - 50} more")
        return "\n".join(lines)


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def counter_name(asset: str, partition: str | None) -> str:
    """The counter file the test job writes for (asset, partition)."""
    return asset.replace("/", "__") + (f"__{partition}" if partition else "")


def check(db_path: Path, *, accepted: Iterable[dict[str, Any]] = (), counters_dir: Path | None = None,
          quiescent: bool = True) -> Report:
    """Check every invariant that applies; `quiescent` when the workload is over and drained."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        return _Checker(con, list(accepted), counters_dir, quiescent).run()
    finally:
        con.close()


class _Checker:
    def __init__(self, con: sqlite3.Connection, accepted: list[dict], counters_dir: Path | None,
                 quiescent: bool) -> None:
        self.con = con
        self.accepted = accepted
        self.counters_dir = counters_dir
        self.quiescent = quiescent
        self.report = Report()
        self.runs = {r["run_id"]: r for r in self.q("SELECT * FROM runs ORDER BY seq")}
        self.plans = {rid: msgspec.json.decode(r["plan"]) for rid, r in self.runs.items()}
        self.tasks: dict[str, dict[str, sqlite3.Row]] = defaultdict(dict)
        for t in self.q("SELECT * FROM tasks"):
            self.tasks[t["run_id"]][t["task_id"]] = t
        self.attempts: dict[tuple[str, str], list[sqlite3.Row]] = defaultdict(list)
        for a in self.q("SELECT * FROM attempts ORDER BY run_id, task_id, attempt"):
            self.attempts[(a["run_id"], a["task_id"])].append(a)
        self.has_backfills = self.q1("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'backfills'")

    def q(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        return self.con.execute(sql, params).fetchall()

    def q1(self, sql: str, params: tuple = ()) -> sqlite3.Row | None:
        return self.con.execute(sql, params).fetchone()

    def bad(self, invariant: str, detail: str) -> None:
        self.report.violations.append(Violation(invariant, detail))

    def run(self) -> Report:
        checks = [
            self.run_key_unique, self.event_key_unique, self.tasks_match_plan, self.rerun_lineage,
            self.attempts_contiguous, self.run_state_consistent, self.one_materialisation_at_a_time,
            self.partition_status_agrees, self.accepted_commands_present,
        ]
        if self.quiescent:
            checks.append(self.quiescent_state)
        if self.counters_dir is not None:
            checks.append(self.task_evidence)
        if self.has_backfills:
            checks += [self.chunk_planned_once, self.state_versions_contiguous, self.backfill_state_consistent,
                       self.succeeded_backfill_exactly_once, self.backfill_concurrency, self.retry_failed_exact]
        for check in checks:
            check()
        return self.report

    def mark(self, *names: str) -> None:
        self.report.checked.extend(n for n in names if n not in self.report.checked)

    # ── runs ───────────────────────────────────────────────────────────────

    def run_key_unique(self) -> None:
        self.mark("run_key_unique")
        for r in self.q("SELECT run_key, COUNT(*) AS n, GROUP_CONCAT(run_id) AS ids FROM runs"
                        " WHERE run_key IS NOT NULL GROUP BY run_key HAVING n > 1"):
            self.bad("run_key_unique", f"run_key {r['run_key']!r} maps to runs {r['ids']}")

    def event_key_unique(self) -> None:
        self.mark("event_key_unique")
        for r in self.q("SELECT actor, idem_key, COUNT(*) AS n FROM events GROUP BY actor, idem_key HAVING n > 1"):
            self.bad("event_key_unique", f"{r['actor']} applied {r['idem_key']!r} {r['n']} times")

    def tasks_match_plan(self) -> None:
        self.mark("tasks_match_plan")
        for run_id, plan in self.plans.items():
            planned = {t["task_id"]: (t["asset"], t.get("partition")) for t in plan["tasks"]}
            stored = {tid: (t["asset"], t["partition"]) for tid, t in self.tasks.get(run_id, {}).items()}
            if planned != stored:
                extra = sorted(set(stored) - set(planned))
                missing = sorted(set(planned) - set(stored))
                self.bad("tasks_match_plan", f"run {run_id}: tasks outside the plan {extra}, plan tasks missing {missing}")
        for (run_id, task_id) in self.attempts:
            if task_id not in self.tasks.get(run_id, {}):
                self.bad("tasks_match_plan", f"attempts of {run_id}/{task_id}, which is no task of that run")

    def rerun_lineage(self) -> None:
        self.mark("rerun_lineage", "from_failure_exact")
        for run_id, run in self.runs.items():
            parent_id = run["parent_run_id"]
            if parent_id is None:
                if run["root_run_id"] != run_id or run["rerun_kind"] is not None:
                    self.bad("rerun_lineage", f"run {run_id} has no parent but root {run['root_run_id']}"
                                              f" and kind {run['rerun_kind']}")
                continue
            parent = self.runs.get(parent_id)
            if parent is None:
                self.bad("rerun_lineage", f"run {run_id}: parent {parent_id} does not exist")
                continue
            if run["root_run_id"] != parent["root_run_id"]:
                self.bad("rerun_lineage", f"run {run_id}: root {run['root_run_id']} is not its parent's"
                                          f" root {parent['root_run_id']}")
            mine = {t["task_id"] for t in self.plans[run_id]["tasks"]}
            theirs = {t["task_id"] for t in self.plans[parent_id]["tasks"]}
            if not mine <= theirs:
                self.bad("rerun_lineage", f"rerun {run_id} plans tasks outside its parent's plan: {sorted(mine - theirs)}")
            kind = run["rerun_kind"]
            if kind == "all" and mine != theirs:
                self.bad("rerun_lineage", f"rerun --all {run_id} does not plan its parent's whole plan")
            if kind == "from_failure":
                succeeded = {tid for tid, t in self.tasks.get(parent_id, {}).items() if t["state"] == "SUCCEEDED"}
                again = mine & succeeded
                if again:
                    self.bad("from_failure_exact", f"rerun {run_id} runs tasks that succeeded in {parent_id}: {sorted(again)}")
                if parent["state"] in FINISHED_RUN and mine != theirs - succeeded:
                    self.bad("from_failure_exact", f"rerun {run_id} leaves out failed tasks of {parent_id}:"
                                                   f" {sorted(theirs - succeeded - mine)}")

    def attempts_contiguous(self) -> None:
        self.mark("attempts_contiguous", "attempt_matches_task")
        for run_id, tasks in self.tasks.items():
            for task_id, task in tasks.items():
                rows = self.attempts.get((run_id, task_id), [])
                numbers = [a["attempt"] for a in rows]
                if numbers != list(range(1, len(numbers) + 1)) or task["attempts"] != len(numbers):
                    self.bad("attempts_contiguous", f"{run_id}/{task_id}: attempts {numbers}, tasks.attempts = {task['attempts']}")
                open_ = [a["attempt"] for a in rows if a["state"] in OPEN_ATTEMPT]
                if len(open_) > 1 or (open_ and open_[-1] != len(numbers)):
                    self.bad("attempts_contiguous", f"{run_id}/{task_id}: open attempts {open_} of {numbers}")
                last = rows[-1]["state"] if rows else None
                want = {"SUCCEEDED": {"SUCCEEDED"}, "FAILED": {"FAILED"}}.get(task["state"])
                if want is not None and last not in want:
                    self.bad("attempt_matches_task", f"{run_id}/{task_id} is {task['state']} but its last attempt is {last}")
                if task["state"] in ("PENDING", "SKIPPED") and rows:
                    self.bad("attempt_matches_task", f"{run_id}/{task_id} is {task['state']} but has attempts {numbers}")
                if task["state"] in TERMINAL_TASK and open_:
                    self.bad("attempt_matches_task", f"{run_id}/{task_id} is {task['state']} with open attempt {open_}")

    def run_state_consistent(self) -> None:
        self.mark("run_state_consistent")
        for run_id, run in self.runs.items():
            states = Counter(t["state"] for t in self.tasks.get(run_id, {}).values())
            state = run["state"]
            unfinished = sum(n for s, n in states.items() if s not in TERMINAL_TASK)
            if state == "SUCCEEDED" and set(states) - {"SUCCEEDED"}:
                self.bad("run_state_consistent", f"run {run_id} SUCCEEDED with tasks {dict(states)}")
            elif state in ("FAILED", "CANCELED") and unfinished:
                self.bad("run_state_consistent", f"run {run_id} {state} with unfinished tasks {dict(states)}")
            elif state == "FAILED" and set(states) <= {"SUCCEEDED"}:
                self.bad("run_state_consistent", f"run {run_id} FAILED although every task succeeded")
            elif state not in FINISHED_RUN | {"QUEUED", "RUNNING", "CANCELING"}:
                self.bad("run_state_consistent", f"run {run_id} has unknown state {state}")
            if state == "QUEUED" and (states.get("RUNNING") or any(
                    self.attempts.get((run_id, tid)) for tid in self.tasks.get(run_id, {}))):
                self.bad("run_state_consistent", f"run {run_id} is QUEUED but has started tasks")

    def quiescent_state(self) -> None:
        self.mark("quiescent")
        for run_id, run in self.runs.items():
            if run["state"] not in FINISHED_RUN:
                self.bad("quiescent", f"run {run_id} is still {run['state']}")
        for (run_id, task_id), rows in self.attempts.items():
            for a in rows:
                if a["state"] in OPEN_ATTEMPT:
                    self.bad("quiescent", f"attempt {run_id}/{task_id}/{a['attempt']} is still {a['state']}")
        for r in self.q("SELECT target, kind, idem_key FROM outbox"):
            self.bad("quiescent", f"undelivered {r['kind']} {r['idem_key']!r} for {r['target']}")
        if self.has_backfills:
            for r in self.q("SELECT backfill_id, state FROM backfills WHERE state NOT IN"
                            " ('SUCCEEDED', 'FAILED', 'CANCELED', 'PAUSED')"):
                self.bad("quiescent", f"backfill {r['backfill_id']} is still {r['state']}")

    def one_materialisation_at_a_time(self) -> None:
        self.mark("one_materialisation_at_a_time")
        spans: dict[tuple[str, str | None], list[tuple[str, str, str]]] = defaultdict(list)
        for rows in self.attempts.values():
            for a in rows:
                if a["started_at"] and a["finished_at"]:
                    spans[(a["asset"], a["partition"])].append(
                        (_time(a["started_at"]), _time(a["finished_at"]), f"{a['run_id']}/{a['task_id']}/{a['attempt']}"))
        for pair, items in spans.items():
            items.sort()
            for (s1, e1, n1), (s2, e2, n2) in zip(items, items[1:]):
                if s2 < e1:
                    self.bad("one_materialisation_at_a_time", f"{pair}: {n1} [{s1}, {e1}] overlaps {n2} [{s2}, {e2}]")

    def partition_status_agrees(self) -> None:
        self.mark("partition_status_agrees")
        succeeded: dict[tuple[str, str], set[str]] = defaultdict(set)
        for run_id, tasks in self.tasks.items():
            for t in tasks.values():
                if t["state"] == "SUCCEEDED":
                    succeeded[(t["asset"], t["partition"] or "")].add(run_id)
        status = {(r["asset"], r["partition"]): r for r in self.q("SELECT * FROM partition_status")}
        for pair, runs in succeeded.items():
            row = status.get(pair)
            if row is None or row["last_materialized_run"] not in runs:
                self.bad("partition_status_agrees", f"{pair} succeeded in {sorted(runs)} but status says "
                                                    f"{None if row is None else row['last_materialized_run']}")
        for pair, row in status.items():
            if row["last_materialized_run"] is not None and pair not in succeeded:
                self.bad("partition_status_agrees", f"{pair} says materialised by {row['last_materialized_run']},"
                                                    " where it did not succeed")

    def accepted_commands_present(self) -> None:
        self.mark("accepted_commands_present")
        transitions = set()
        if self.has_backfills:
            transitions = {(r["backfill_id"], r["version"], r["to_state"])
                           for r in self.q("SELECT backfill_id, version, to_state FROM backfill_transitions")}
        for cmd in self.accepted:
            result, kind = cmd["result"], cmd["cmd"]
            if kind in ("run", "rerun"):
                run = self.runs.get(result["run_id"])
                if run is None:
                    self.bad("accepted_commands_present", f"{kind} answered ok with run {result['run_id']}, which is gone")
                elif (run["run_key"], run["fingerprint"], run["parent_run_id"]) != (
                        result["run_key"], result["fingerprint"], result.get("parent_run_id")):
                    self.bad("accepted_commands_present", f"run {result['run_id']} differs from the answer given")
            elif kind == "cancel":
                run = self.runs.get(result["run_id"])
                if run is None or (result["changed"] and run["state"] not in ("CANCELING", "CANCELED")):
                    self.bad("accepted_commands_present", f"cancel of {result['run_id']} answered ok, run is "
                                                          f"{None if run is None else run['state']}")
            elif kind in ("backfill.create", "backfill.retry-failed"):
                if not self.has_backfills or self.q1("SELECT 1 FROM backfills WHERE backfill_id = ?",
                                                     (result["backfill_id"],)) is None:
                    self.bad("accepted_commands_present", f"{kind} answered ok with {result['backfill_id']}, which is gone")
            elif kind.startswith("backfill.") and result.get("changed"):
                key = (result["backfill_id"], result["state_version"], result["state"])
                if key not in transitions:
                    self.bad("accepted_commands_present", f"{kind} answered ok as version {key[1]} -> {key[2]},"
                                                          " not in the transition log")

    def task_evidence(self) -> None:
        self.mark("attempt_started_once", "succeeded_attempt_ran", "ran_only_planned_tasks")
        by_name: dict[str, tuple[str, str | None]] = {}
        for tasks in self.tasks.values():
            for t in tasks.values():
                by_name[counter_name(t["asset"], t["partition"])] = (t["asset"], t["partition"])
        seen: Counter[tuple[str, str, int]] = Counter()
        for path in sorted(self.counters_dir.iterdir()) if self.counters_dir.exists() else ():
            pair = by_name.get(path.name)
            for line in path.read_text().splitlines():
                run_id, attempt = line.split()[:2]
                if pair is None:
                    self.bad("ran_only_planned_tasks", f"{path.name} ran in {run_id}, which plans no such task")
                    continue
                task_id = pair[0] if pair[1] is None else f"{pair[0]}[{pair[1]}]"
                if task_id not in self.tasks.get(run_id, {}):
                    self.bad("ran_only_planned_tasks", f"{task_id} ran in run {run_id}, outside its plan")
                    continue
                seen[(run_id, task_id, int(attempt))] += 1
        for (run_id, task_id, attempt), n in seen.items():
            if n > 1:
                self.bad("attempt_started_once", f"{run_id}/{task_id} attempt {attempt} started {n} times")
            numbers = {a["attempt"] for a in self.attempts.get((run_id, task_id), [])}
            if attempt not in numbers:
                self.bad("attempt_started_once", f"{run_id}/{task_id} attempt {attempt} ran but was never recorded")
        self.process_overlaps()
        for (run_id, task_id), rows in self.attempts.items():
            for a in rows:
                if a["state"] == "SUCCEEDED" and seen[(run_id, task_id, a["attempt"])] != 1:
                    self.bad("succeeded_attempt_ran", f"{run_id}/{task_id} attempt {a['attempt']} SUCCEEDED, started "
                                                      f"{seen[(run_id, task_id, a['attempt'])]} times")

    def process_overlaps(self) -> None:
        ends_dir = self.counters_dir.parent / "ends"
        if not ends_dir.exists():
            return
        self.mark("one_process_at_a_time")
        for path in sorted(self.counters_dir.iterdir()):
            starts = {tuple(line.split()[:2]): float(line.split()[2]) for line in path.read_text().splitlines()}
            end_file = ends_dir / path.name
            ends = {tuple(line.split()[:2]): float(line.split()[2])
                    for line in (end_file.read_text().splitlines() if end_file.exists() else [])}
            for who, end in ends.items():
                start = starts.get(who)
                if start is None:
                    continue
                inside = [other for other, t in starts.items() if other != who and start < t < end]
                if inside:
                    self.bad("one_process_at_a_time", f"{path.name}: {' '.join(who)} ran {start:.3f}..{end:.3f},"
                                                      f" while {inside} started")

    # ── backfills ──────────────────────────────────────────────────────────

    def backfills(self) -> dict[str, sqlite3.Row]:
        return {r["backfill_id"]: r for r in self.q("SELECT * FROM backfills ORDER BY seq")}

    def chunks(self) -> dict[str, list[sqlite3.Row]]:
        out: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for c in self.q("SELECT * FROM backfill_chunks ORDER BY backfill_id, chunk_index"):
            out[c["backfill_id"]].append(c)
        return out

    def chunk_planned_once(self) -> None:
        self.mark("chunk_planned_once", "chunks_contiguous")
        for r in self.q("SELECT backfill_id, chunk_index, COUNT(*) AS n, GROUP_CONCAT(run_id) AS ids FROM runs"
                        " WHERE backfill_id IS NOT NULL GROUP BY backfill_id, chunk_index HAVING n > 1"):
            self.bad("chunk_planned_once", f"chunk {r['chunk_index']} of {r['backfill_id']} has runs {r['ids']}")
        chunk_runs = {}
        for backfill_id, chunks in self.chunks().items():
            for c in chunks:
                if c["run_id"] is None:
                    continue
                chunk_runs[c["run_id"]] = (backfill_id, c["chunk_index"])
                run = self.runs.get(c["run_id"])
                if run is None or (run["backfill_id"], run["chunk_index"]) != (backfill_id, c["chunk_index"]) \
                        or run["run_key"] != f"backfill:{backfill_id}:chunk:{c['chunk_index']}":
                    self.bad("chunk_planned_once", f"chunk {c['chunk_index']} of {backfill_id} names run {c['run_id']},"
                                                   " which is not that chunk's run")
        for run_id, run in self.runs.items():
            if run["backfill_id"] is not None and run_id not in chunk_runs:
                self.bad("chunk_planned_once", f"run {run_id} says chunk {run['chunk_index']} of {run['backfill_id']},"
                                               " no chunk row names it")
        chunks = self.chunks()
        for backfill_id, bf in self.backfills().items():
            indexes = [c["chunk_index"] for c in chunks.get(backfill_id, [])]
            if indexes != list(range(bf["next_chunk"])) or bf["next_chunk"] > bf["chunks_total"]:
                self.bad("chunks_contiguous", f"backfill {backfill_id}: chunks {indexes}, next_chunk {bf['next_chunk']},"
                                              f" chunks_total {bf['chunks_total']}")

    def state_versions_contiguous(self) -> None:
        self.mark("state_versions_contiguous")
        log: dict[str, list[sqlite3.Row]] = defaultdict(list)
        for r in self.q("SELECT * FROM backfill_transitions ORDER BY backfill_id, version"):
            log[r["backfill_id"]].append(r)
        for backfill_id, bf in self.backfills().items():
            rows = log.get(backfill_id, [])
            versions = [r["version"] for r in rows]
            if versions != list(range(1, len(rows) + 1)) or bf["state_version"] != len(rows):
                self.bad("state_versions_contiguous", f"backfill {backfill_id}: versions {versions},"
                                                      f" state_version {bf['state_version']}")
                continue
            previous = None
            for r in rows:
                if r["from_state"] != previous:
                    self.bad("state_versions_contiguous", f"backfill {backfill_id} v{r['version']} goes from "
                                                          f"{r['from_state']}, but v{r['version'] - 1} ended {previous}")
                previous = r["to_state"]
            if previous != bf["state"]:
                self.bad("state_versions_contiguous", f"backfill {backfill_id} is {bf['state']}, its log ends {previous}")

    def backfill_state_consistent(self) -> None:
        self.mark("backfill_state_consistent")
        chunks = self.chunks()
        run_to_chunk = {"SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED", "CANCELED": "CANCELED"}
        for backfill_id, bf in self.backfills().items():
            mine = chunks.get(backfill_id, [])
            states = Counter(c["state"] for c in mine)
            if bf["state"] in FINISHED_BACKFILL and states.get("RUNNING"):
                self.bad("backfill_state_consistent", f"backfill {backfill_id} is {bf['state']} with running chunks")
            if bf["state"] in ("SUCCEEDED", "FAILED") and bf["next_chunk"] != bf["chunks_total"]:
                self.bad("backfill_state_consistent", f"backfill {backfill_id} is {bf['state']} with chunks unplanned")
            if bf["state"] == "SUCCEEDED" and set(states) - {"SUCCEEDED", "SKIPPED"}:
                self.bad("backfill_state_consistent", f"backfill {backfill_id} SUCCEEDED with chunks {dict(states)}")
            if bf["state"] == "FAILED" and set(states) <= {"SUCCEEDED", "SKIPPED"}:
                self.bad("backfill_state_consistent", f"backfill {backfill_id} FAILED with chunks {dict(states)}")
            for c in mine:
                run = self.runs.get(c["run_id"]) if c["run_id"] else None
                if run is not None and run["state"] in FINISHED_RUN and self.quiescent \
                        and c["state"] != run_to_chunk[run["state"]]:
                    self.bad("backfill_state_consistent", f"chunk {c['chunk_index']} of {backfill_id} is {c['state']},"
                                                          f" its run {run['run_id']} {run['state']}")

    def _chunk_tasks(self, backfill_id: str) -> list[sqlite3.Row]:
        return [t for r in self.runs.values() if r["backfill_id"] == backfill_id
                for t in self.tasks.get(r["run_id"], {}).values()]

    def succeeded_backfill_exactly_once(self) -> None:
        self.mark("succeeded_backfill_exactly_once")
        for backfill_id, bf in self.backfills().items():
            if bf["state"] != "SUCCEEDED":
                continue
            tasks = self._chunk_tasks(backfill_id)
            done = Counter((t["asset"], t["partition"]) for t in tasks if t["state"] == "SUCCEEDED")
            for pair, n in done.items():
                if n != 1:
                    self.bad("succeeded_backfill_exactly_once", f"backfill {backfill_id}: {pair} succeeded {n} times")
            not_done = [(t["asset"], t["partition"], t["state"]) for t in tasks if t["state"] != "SUCCEEDED"]
            if not_done:
                self.bad("succeeded_backfill_exactly_once", f"backfill {backfill_id} SUCCEEDED with {not_done[:5]}")
            covered = sum(c["partitions"] for c in self.chunks().get(backfill_id, []))
            if covered != bf["partitions_total"]:
                self.bad("succeeded_backfill_exactly_once", f"backfill {backfill_id}: chunks cover {covered} of"
                                                            f" {bf['partitions_total']} partitions")
            if bf["reprocess"] == "all":
                partitions = {p for _, p in done}
                assets = msgspec.json.decode(bf["assets"])
                if len(partitions) != bf["partitions_total"] or len(done) != len(partitions) * len(assets):
                    self.bad("succeeded_backfill_exactly_once", f"backfill {backfill_id}: {len(done)} materialisations"
                                                                f" over {len(partitions)} partitions, expected "
                                                                f"{bf['partitions_total']} x {len(assets)}")

    def backfill_concurrency(self) -> None:
        self.mark("backfill_concurrency")
        for backfill_id, bf in self.backfills().items():
            events = []
            for c in self.chunks().get(backfill_id, []):
                if c["run_id"] is None:
                    continue
                events.append((_time(c["planned_at"]), 1))
                if c["finished_at"]:
                    events.append((_time(c["finished_at"]), -1))
            active = peak = 0
            for _, delta in sorted(events, key=lambda e: (e[0], e[1])):  # ends before starts at one instant
                active += delta
                peak = max(peak, active)
            if peak > bf["max_concurrency"]:
                self.bad("backfill_concurrency", f"backfill {backfill_id}: {peak} chunk runs active at once,"
                                                 f" max_concurrency {bf['max_concurrency']}")

    def retry_failed_exact(self) -> None:
        self.mark("retry_failed_exact")
        for backfill_id, bf in self.backfills().items():
            parent = bf["parent_backfill_id"]
            if parent is None:
                continue
            ok_in_parent = {(t["asset"], t["partition"]) for t in self._chunk_tasks(parent) if t["state"] == "SUCCEEDED"}
            again = {(t["asset"], t["partition"]) for t in self._chunk_tasks(backfill_id)} & ok_in_parent
            if again:
                self.bad("retry_failed_exact", f"retry {backfill_id} of {parent} plans pairs that succeeded there:"
                                               f" {sorted(again)[:5]}")
