"""Model-based test: random operator sessions against the real daemon and a reference model.

Hypothesis drives sequences of operator commands (run with and without run keys, cancel,
rerun from-failure/all/subset, backfill create/pause/resume/cancel with and without
--expect-version, retry-failed, and toggling what fails or holds) against a real daemon over
its socket. `Model` is SPEC §5 and §6 written as plainly as possible: what each command
answers (created or not, changed or not, or which refusal) and where every run and backfill
ends. After each step, once the daemon has settled, every run's state and task states and
every backfill's state and state_version must equal the model's.

CI runs 6 fixed (derandomized) sessions of 20 steps per backend; explore by hand with
`ARCOD_MODEL_RANDOM=1 ARCOD_MODEL_EXAMPLES=200 pytest tests/faults/test_model.py`.

Outcomes are made deterministic by files, not timing: `fail/b` makes asset b fail,
`fail/p__2024-01-02` one partition; `hold/slow` and `hold/p` keep tasks running until
released, which is how a run or backfill stays active for cancel and pause to act on.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from arcod.control import protocol as p
from arcod.control.client import Client, RequestRefused
from tests.e2e.harness import Daemon, asset_toml, write_project
from tests.faults.workload import FAULT_JOB

pytestmark = pytest.mark.e2e

DAILY = '[partitions.daily]\nkind = "daily"\nstart = "2024-01-01"\nend = "2024-01-05"\n'
ASSETS = (asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("c", deps=["b"]) + asset_toml("slow")
          + asset_toml("p", partitions="daily"))
DEPS = {"a": (), "b": ("a",), "c": ("b",), "slow": ()}
ORDER = ("a", "b", "c", "slow")
DAYS = ("2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04")
FAILING_DAY = "2024-01-02"
SELECTIONS = {"a": {"a"}, "a+": {"a", "b", "c"}, "b+": {"b", "c"}, "c": {"c"}, "slow": {"slow"}}
FINISHED = {"SUCCEEDED", "FAILED", "CANCELED"}


# ── the reference model ──────────────────────────────────────────────────────────────────


@dataclass
class MRun:
    run_id: str
    tasks: dict[str, str]  # task (asset) -> state
    state: str
    parent: str | None = None
    root: str | None = None
    kind: str | None = None


@dataclass
class MBackfill:
    backfill_id: str
    days: tuple[str, ...]
    state: str = "RUNNING"
    version: int = 1
    failed: bool = False  # a chunk failed (the failing day ran while fail/p was set)
    planned: int = 0  # days planned into chunk runs (chunk size 1, one at a time)
    succeeded: int = 0  # planned days whose chunk succeeded
    parent: str | None = None
    children: dict[str, str] = field(default_factory=dict)  # request id -> child id


@dataclass
class Model:
    fail_b: bool = False
    fail_p: bool = False
    hold_slow: bool = False
    hold_p: bool = False
    runs: dict[str, MRun] = field(default_factory=dict)
    keys: dict[str, tuple[frozenset, str]] = field(default_factory=dict)  # run_key -> (assets, run id)
    reruns: dict[tuple, str] = field(default_factory=dict)  # (parent, kind, tasks) -> run id
    backfills: dict[str, MBackfill] = field(default_factory=dict)

    def outcome(self, assets: set[str]) -> tuple[dict[str, str], str]:
        """Task states and run state of a run over `assets`, as the daemon must end it."""
        tasks: dict[str, str] = {}
        for asset in ORDER:
            if asset not in assets:
                continue
            deps = [d for d in DEPS[asset] if d in assets]
            if any(tasks[d] in ("FAILED", "SKIPPED") for d in deps):
                tasks[asset] = "SKIPPED"
            elif asset == "slow" and self.hold_slow:
                tasks[asset] = "RUNNING"
            elif asset == "b" and self.fail_b:
                tasks[asset] = "FAILED"
            else:
                tasks[asset] = "SUCCEEDED"
        states = set(tasks.values())
        state = "RUNNING" if "RUNNING" in states else "SUCCEEDED" if states == {"SUCCEEDED"} else "FAILED"
        return tasks, state

    def active_runs(self) -> list[MRun]:
        return [r for r in self.runs.values() if r.state not in FINISHED]

    def live_backfill(self) -> MBackfill | None:
        return next((b for b in self.backfills.values() if b.state not in FINISHED), None)

    def run_backfill_chunks(self, bf: MBackfill) -> None:
        """Plan and run chunks as the daemon would until the held one, or the end."""
        while bf.state == "RUNNING" and bf.planned < len(bf.days):
            day = bf.days[bf.planned]
            bf.planned += 1
            if self.hold_p:
                return  # this chunk stays active until released
            self.chunk_ends(bf, day)
        if bf.state == "RUNNING" and bf.planned == len(bf.days):
            bf.state, bf.version = ("FAILED" if bf.failed else "SUCCEEDED"), bf.version + 1

    def chunk_ends(self, bf: MBackfill, day: str) -> None:
        if day == FAILING_DAY and self.fail_p:
            bf.failed = True
        else:
            bf.succeeded += 1


# ── the state machine ────────────────────────────────────────────────────────────────────


class Session(RuleBasedStateMachine):
    runs = Bundle("runs")
    backfills = Bundle("backfills")

    # One daemon serves every example (set by the test): each example starts from no holds
    # and no failures, uses run keys of its own, and compares only what it created.
    daemon: Daemon

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.root = self.daemon.project
        self.client = Client(self.daemon.socket, timeout=30)
        self.active_chunk: dict[str, bool] = {}  # backfill id -> a held chunk is active
        self.example = uuid.uuid4().hex[:8]
        self.steps = 0

    def teardown(self) -> None:
        if os.environ.get("ARCOD_MODEL_TRACE"):
            print(f"{self.steps} steps; runs", [(r.state, r.kind, tuple(r.tasks.values())) for r in self.model.runs.values()],
                  "backfills", [(b.state, b.version, b.parent is not None) for b in self.model.backfills.values()])
        try:  # leave nothing running or failing for the next example
            for kind, name in (("hold", "slow"), ("hold", "p"), ("fail", "b"), ("fail", f"p__{FAILING_DAY}")):
                self.flag(kind, name, False)
            deadline = time.monotonic() + 60
            while self.client.call(p.RunsList(state="RUNNING"))["runs"] or self.client.call(
                    p.RunsList(state="CANCELING"))["runs"] or self.client.call(p.RunsList(state="QUEUED"))["runs"]:
                assert time.monotonic() < deadline, "runs of the last example do not finish"
                time.sleep(0.03)
            for bf in self.client.call(p.BackfillList(state="PAUSED"))["backfills"]:
                self.client.call(p.BackfillTransition(backfill_id=bf["backfill_id"], action="cancel"))
        finally:
            self.client.close()

    # ── plumbing ──

    def call(self, request: p.Request):
        try:
            return self.client.call(request), None
        except RequestRefused as exc:
            return None, exc.error.code

    def flag(self, kind: str, name: str, on: bool) -> None:
        path = self.root / kind / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def settle(self) -> None:
        """Wait until every run and backfill is where the model says it comes to rest."""
        deadline = time.monotonic() + 60
        while True:
            if self._settled():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon did not settle: {self.describe()}\n{self.daemon.daemon_log_tail()}")
            time.sleep(0.03)

    def _settled(self) -> bool:
        for r in self.model.runs.values():
            got = self.client.call(p.RunsShow(run_id=r.run_id))
            if r.state in FINISHED:
                if got["state"] != r.state:
                    return False
            elif {t["asset"]: t["state"] for t in got["tasks"]} != r.tasks:
                return False  # held tasks not RUNNING yet
        for b in self.model.backfills.values():
            got = self.client.call(p.BackfillShow(backfill_id=b.backfill_id))
            if got["state"] != b.state or got["state_version"] != b.version:
                return False
            if b.state in ("RUNNING", "PAUSED", "CANCELING") and self.active_chunk.get(b.backfill_id):
                if not got["counts"]["chunks"].get("RUNNING"):
                    return False
            if b.state == "PAUSED" and not self.active_chunk.get(b.backfill_id) and got["counts"]["chunks"].get("RUNNING"):
                return False
        return True

    def describe(self) -> str:
        return f"model {self.model}"

    # ── runs ──

    @rule(target=runs, selection=st.sampled_from(sorted(SELECTIONS)), key=st.sampled_from([None, "k1", "k2"]))
    def run(self, selection: str, key: str | None):
        m = self.model
        key = None if key is None else f"{self.example}-{key}"
        assets = frozenset(SELECTIONS[selection])
        if "slow" in assets and (m.hold_slow and any("slow" in r.tasks for r in m.active_runs())):
            return None  # two runs of one held asset would queue behind each other; not modelled
        result, error = self.call(p.Run(select=[selection], run_key=key))
        if key is not None and key in m.keys:
            known_assets, run_id = m.keys[key]
            if known_assets != assets:
                assert error == "run_key_conflict", (result, error)
                return None
            assert error is None and result["created"] is False and result["run_id"] == run_id, (result, error)
            return run_id
        assert error is None and result["created"] is True, (result, error)
        tasks, state = m.outcome(assets)
        m.runs[result["run_id"]] = MRun(result["run_id"], tasks, state, root=result["run_id"])
        if key is not None:
            m.keys[key] = (assets, result["run_id"])
        self.settle()
        return result["run_id"]

    @rule(run_id=runs)
    def cancel(self, run_id: str | None):
        if run_id is None:
            return
        m = self.model
        r = m.runs[run_id]
        result, error = self.call(p.Cancel(run_id=run_id))
        if r.state in ("SUCCEEDED", "FAILED"):
            assert error == "invalid_transition", (result, error)
            return
        assert error is None, error
        assert result["changed"] is (r.state != "CANCELED"), result
        if r.state != "CANCELED":
            r.state = "CANCELED"
            r.tasks = {a: "CANCELED" if s in ("RUNNING", "PENDING") else s for a, s in r.tasks.items()}
        self.settle()

    @rule(target=runs, parent=runs, kind=st.sampled_from(["from_failure", "all", "subset"]))
    def rerun(self, parent: str | None, kind: str):
        if parent is None:
            return None
        m = self.model
        pr = m.runs[parent]
        allowed = {"from_failure": {"FAILED", "CANCELED"}}.get(kind, FINISHED)
        if pr.state in allowed:
            if kind == "from_failure":
                assets = {a for a, s in pr.tasks.items() if s != "SUCCEEDED"}
            elif kind == "all":
                assets = set(pr.tasks)
            else:
                assets = {"b"}
            if "slow" in assets and m.hold_slow and any("slow" in r.tasks for r in m.active_runs()):
                return None
        result, error = self.call(p.Rerun(run_id=parent, kind=kind, select=["b"] if kind == "subset" else []))
        if pr.state not in allowed:
            assert error == "invalid_transition", (result, error)
            return None
        if kind == "subset" and "b" not in pr.tasks:
            assert error == "unknown_assets", (result, error)
            return None
        assert error is None, error
        assert set(t["asset"] for t in result["tasks"]) == assets, result
        assert result["parent_run_id"] == parent and result["root_run_id"] == pr.root and result["rerun_kind"] == kind
        known = m.reruns.get((parent, kind, frozenset(assets)))
        if known is not None:
            assert result["created"] is False and result["run_id"] == known, result
            return known
        assert result["created"] is True, result
        tasks, state = m.outcome(assets)
        m.runs[result["run_id"]] = MRun(result["run_id"], tasks, state, parent=parent, root=pr.root, kind=kind)
        m.reruns[(parent, kind, frozenset(assets))] = result["run_id"]
        self.settle()
        return result["run_id"]

    @rule()
    def toggle_fail_b(self):
        self.model.fail_b = not self.model.fail_b
        self.flag("fail", "b", self.model.fail_b)

    @precondition(lambda self: not self.model.hold_slow and not self.model.active_runs())
    @rule()
    def hold_slow(self):
        self.model.hold_slow = True
        self.flag("hold", "slow", True)

    @precondition(lambda self: self.model.hold_slow)
    @rule()
    def release_slow(self):
        m = self.model
        m.hold_slow = False
        self.flag("hold", "slow", False)
        for r in m.active_runs():
            if "slow" in r.tasks and r.tasks["slow"] == "RUNNING":
                r.tasks["slow"] = "SUCCEEDED"
                r.state = "SUCCEEDED" if set(r.tasks.values()) == {"SUCCEEDED"} else "FAILED"
        self.settle()

    # ── backfills ──

    @precondition(lambda self: self.model.live_backfill() is None)
    @rule(target=backfills, first=st.integers(0, 3), count=st.integers(1, 4), held=st.booleans())
    def backfill_create(self, first: int, count: int, held: bool):
        m = self.model
        days = DAYS[first:first + count]
        m.hold_p = held
        self.flag("hold", "p", held)
        result, error = self.call(p.BackfillCreate(select=["p"], partitions=f"{days[0]}..{days[-1]}", chunk_size=1,
                                                   max_concurrency=1))
        assert error is None, error
        assert (result["state"], result["state_version"], result["partitions_total"]) == ("RUNNING", 1, len(days))
        bf = m.backfills[result["backfill_id"]] = MBackfill(result["backfill_id"], days)
        m.run_backfill_chunks(bf)
        self.active_chunk[bf.backfill_id] = held
        self.settle()
        return bf.backfill_id

    @rule(backfill_id=backfills, action=st.sampled_from(["pause", "resume", "cancel"]),
          expect=st.sampled_from([None, "current", "stale"]))
    def backfill_transition(self, backfill_id: str, action: str, expect: str | None):
        m = self.model
        bf = m.backfills[backfill_id]
        expect_version = {None: None, "current": bf.version, "stale": bf.version - 1}[expect]
        result, error = self.call(p.BackfillTransition(backfill_id=backfill_id, action=action,
                                                       expect_version=expect_version))
        if expect == "stale":
            assert error == "version_conflict", (result, error)
            return
        already = {"pause": {"PAUSED"}, "resume": {"RUNNING"}, "cancel": {"CANCELING", "CANCELED"}}[action]
        table = {"pause": {"RUNNING": "PAUSED"}, "resume": {"PAUSED": "RUNNING"},
                 "cancel": {"RUNNING": "CANCELING", "PAUSED": "CANCELING"}}[action]
        if bf.state in already:
            assert error is None and result["changed"] is False and result["state_version"] == bf.version, (result, error)
            return
        if bf.state not in table:
            assert error == "invalid_transition", (result, error)
            return
        assert error is None and result["changed"] is True, (result, error)
        bf.state, bf.version = table[bf.state], bf.version + 1
        assert (result["state"], result["state_version"]) == (bf.state, bf.version), result
        if bf.state == "CANCELING":  # the held chunk (if any) is canceled; nothing else starts
            bf.state, bf.version = "CANCELED", bf.version + 1
            self.active_chunk[backfill_id] = False
        elif bf.state == "RUNNING" and not self.active_chunk.get(backfill_id):
            m.run_backfill_chunks(bf)
            self.active_chunk[backfill_id] = m.hold_p and bf.state == "RUNNING"
        self.settle()

    @precondition(lambda self: self.model.hold_p)
    @rule()
    def release_p(self):
        m = self.model
        m.hold_p = False
        self.flag("hold", "p", False)
        bf = m.live_backfill()
        if bf is not None and self.active_chunk.get(bf.backfill_id):
            self.active_chunk[bf.backfill_id] = False
            m.chunk_ends(bf, bf.days[bf.planned - 1])
            m.run_backfill_chunks(bf)
        self.settle()

    @precondition(lambda self: self.model.live_backfill() is None)
    @rule()
    def toggle_fail_p(self):
        self.model.fail_p = not self.model.fail_p
        self.flag("fail", f"p__{FAILING_DAY}", self.model.fail_p)

    @precondition(lambda self: self.model.live_backfill() is None and not self.model.hold_p and not self.model.fail_p)
    @rule(target=backfills, backfill_id=backfills, request_id=st.sampled_from([None, "again"]))
    def retry_failed(self, backfill_id: str, request_id: str | None):
        m = self.model
        bf = m.backfills[backfill_id]
        result, error = self.call(p.BackfillRetryFailed(backfill_id=backfill_id, request_id=request_id))
        if bf.state not in ("FAILED", "CANCELED"):
            assert error == "invalid_transition", (result, error)
            return backfill_id
        known = bf.children.get(request_id or "")
        if known is not None:
            assert error is None and result["created"] is False and result["backfill_id"] == known, (result, error)
            return known
        left = len(bf.days) - bf.succeeded
        if left == 0:
            assert error == "empty_selection", (result, error)
            return backfill_id
        assert error is None, error
        assert result["created"] is True and result["parent_backfill_id"] == backfill_id, result
        assert result["partitions_total"] == left, (result, bf)
        child = MBackfill(result["backfill_id"], days=tuple(range(result["partitions_total"])), parent=backfill_id)
        child.state, child.version = "SUCCEEDED", 2  # nothing fails or holds now (precondition)
        m.backfills[child.backfill_id] = child
        bf.children[request_id or ""] = child.backfill_id
        self.settle()
        return child.backfill_id

    # ── the comparison ──

    @invariant()
    def daemon_matches_model(self):
        self.steps += 1
        for r in self.model.runs.values():
            got = self.client.call(p.RunsShow(run_id=r.run_id))
            assert got["state"] == r.state, (r, got["state"])
            assert {t["asset"]: t["state"] for t in got["tasks"]} == r.tasks, (r, got["tasks"])
            assert (got["parent_run_id"], got["root_run_id"], got["rerun_kind"]) == (r.parent, r.root, r.kind)
        for b in self.model.backfills.values():
            got = self.client.call(p.BackfillShow(backfill_id=b.backfill_id))
            assert (got["state"], got["state_version"], got["parent_backfill_id"]) == (b.state, b.version, b.parent), (
                b, got["state"], got["state_version"], got["transitions"])


def model_project(root: Path) -> Path:
    write_project(root, ASSETS, partitions=DAILY, settings="term_grace_s = 1.0\n")
    (root / "job.py").write_text(FAULT_JOB)
    (root / "hold").mkdir(exist_ok=True)
    return root


@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_operator_sessions_match_the_model(tmp_path, daemons, backend):
    Session.daemon = daemons(model_project(tmp_path / "proj"), backend=backend)
    Session.TestCase.settings = settings(
        max_examples=int(os.environ.get("ARCOD_MODEL_EXAMPLES", "6")), stateful_step_count=20, deadline=None,
        derandomize=not os.environ.get("ARCOD_MODEL_RANDOM"), database=None, suppress_health_check=list(HealthCheck))
    Session.TestCase().runTest()
