"""The invariant checker itself: a clean database passes, each seeded corruption is caught.

One small real workload (a failing run and its from-failure rerun, a retried task, a
backfill of three chunks) produces the database; every test corrupts a copy in one way
and expects exactly the invariant that forbids it to fail.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from tests.faults import invariants
from tests.faults.driver import Driver
from tests.faults.workload import Workload, make_project

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = make_project(tmp_path_factory.mktemp("inv") / "proj")
    drv = Driver(root)
    drv.start()
    try:
        work = Workload(drv)
        work.touch("fail", "b")
        work.run_cmd("R1", "run", "--select", "a+", "--run-key", "k1")
        work.wait_runs("R1")
        work.rm("fail", "b")
        work.run_cmd("R2", "rerun", work.runs["R1"], "--from-failure")
        work.touch("fail", "flaky")
        work.run_cmd("R3", "run", "--select", "flaky")
        work.backfill_cmd("B1", "create", "--select", "p+", "--partitions", "2024-01-01..2024-01-03",
                          "--chunk-size", "1", "--max-concurrency", "1", "--request-id", "b1")
        work.wait_runs("R2", "R3")
        work.wait_backfill("B1")
        work.settle()
        drv.stop()
    finally:
        if drv.alive():
            drv.daemon.proc.kill()
    return root, drv.accepted


@pytest.fixture
def copy(clean, tmp_path) -> tuple[Path, list[dict]]:
    root, accepted = clean
    dst = tmp_path / "proj"
    shutil.copytree(root, dst, ignore=shutil.ignore_patterns("*.sock", "*.lock", "logs"))
    return dst, json.loads(json.dumps(accepted))


def db_of(root: Path) -> Path:
    return root / ".arcod" / "arcod.db"


def corrupt(root: Path, *statements: str, params: tuple = ()) -> None:
    con = sqlite3.connect(db_of(root), isolation_level=None)
    try:
        con.execute("PRAGMA foreign_keys = OFF")
        con.execute("PRAGMA legacy_alter_table = ON")
        for sql in statements:
            con.execute(sql, params if "?" in sql else ())
    finally:
        con.close()


def one(root: Path, sql: str, params: tuple = ()) -> tuple:
    con = sqlite3.connect(db_of(root))
    try:
        return con.execute(sql, params).fetchone()
    finally:
        con.close()


def failed_invariants(root: Path, accepted: list[dict] = ()) -> set[str]:
    report = invariants.check(db_of(root), accepted=accepted, counters_dir=root / "counters")
    return {v.invariant for v in report.violations}


def drop_constraints(root: Path, table: str) -> None:
    """Rebuild `table` without its UNIQUE/PRIMARY KEY constraints (CREATE TABLE AS keeps none)."""
    corrupt(root, f"ALTER TABLE {table} RENAME TO {table}_old", f"CREATE TABLE {table} AS SELECT * FROM {table}_old",
            f"DROP TABLE {table}_old")


def test_the_clean_database_passes_every_invariant(clean):
    root, accepted = clean
    report = invariants.check(db_of(root), accepted=accepted, counters_dir=root / "counters")
    assert report.ok, str(report)
    assert set(report.checked) == set(invariants.INVARIANTS)
    assert {c["cmd"] for c in accepted} == {"run", "rerun", "backfill.create"}


def test_a_duplicated_run_key(copy):
    root, accepted = copy
    drop_constraints(root, "runs")
    corrupt(root, "INSERT INTO runs SELECT seq + 1000, run_id || '-dup', run_key, state, fingerprint, code_version,"
                  " parent_run_id, root_run_id, rerun_kind, backfill_id, chunk_index, request, partition_selection,"
                  " tags, plan, created_at, started_at, finished_at, tasks_version FROM runs WHERE run_key = 'k1'")
    assert "run_key_unique" in failed_invariants(root, accepted)


def test_a_gap_in_state_versions(copy):
    root, accepted = copy
    (bf,) = one(root, "SELECT backfill_id FROM backfills")
    corrupt(root, "DELETE FROM backfill_transitions WHERE backfill_id = ? AND version = 1", params=(bf,))
    assert failed_invariants(root, accepted) == {"state_versions_contiguous"}


def test_a_repeated_state_version(copy):
    root, accepted = copy
    drop_constraints(root, "backfill_transitions")
    corrupt(root, "INSERT INTO backfill_transitions SELECT * FROM backfill_transitions WHERE version = 2")
    assert failed_invariants(root, accepted) == {"state_versions_contiguous"}


def test_a_chunk_planned_twice(copy):
    root, accepted = copy
    corrupt(root, "INSERT INTO runs (run_id, run_key, state, fingerprint, code_version, root_run_id, backfill_id,"
                  " chunk_index, request, tags, plan, created_at) SELECT run_id || '-again', run_key || '-again',"
                  " state, fingerprint, code_version, run_id || '-again', backfill_id, chunk_index, request, tags,"
                  " '{\"tasks\":[]}', created_at FROM runs WHERE chunk_index = 1")
    assert "chunk_planned_once" in failed_invariants(root, accepted)


def test_an_attempt_started_twice(copy):
    root, accepted = copy
    path = root / "counters" / "a"
    line = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + line + "\n")
    assert failed_invariants(root, accepted) == {"attempt_started_once", "succeeded_attempt_ran"}


def test_a_process_that_ran_alongside_another(copy):
    root, accepted = copy
    run_id, start = (root / "counters" / "flaky").read_text().splitlines()[0].split()[::2]
    with (root / "ends" / "flaky").open("a") as f:  # attempt 1 "ended" after attempt 2 started
        f.write(f"{run_id} 1 {float(start) + 3600}\n")
    assert failed_invariants(root, accepted) == {"one_process_at_a_time"}


def test_a_task_outside_the_plan(copy):
    root, accepted = copy
    (run_id,) = one(root, "SELECT run_id FROM runs WHERE run_key = 'k1'")
    corrupt(root, "INSERT INTO tasks (run_id, task_id, position, asset, state) VALUES (?, 'flaky', 9, 'flaky',"
                  " 'SKIPPED')", params=(run_id,))
    assert failed_invariants(root, accepted) == {"tasks_match_plan"}


def test_a_process_of_a_task_no_run_planned(copy):
    root, accepted = copy
    (run_id,) = one(root, "SELECT run_id FROM runs WHERE run_key = 'k1'")
    (root / "counters" / "flaky").write_text((root / "counters" / "flaky").read_text() + f"{run_id} 1 0\n")
    assert failed_invariants(root, accepted) == {"ran_only_planned_tasks"}


def test_from_failure_running_a_task_that_succeeded(copy):
    root, accepted = copy
    (parent,) = one(root, "SELECT run_id FROM runs WHERE run_key = 'k1'")
    (rerun, plan) = one(root, "SELECT run_id, plan FROM runs WHERE parent_run_id = ?", (parent,))
    tasks = json.loads(plan)["tasks"]
    plan = json.dumps({"tasks": [{"task_id": "a", "asset": "a", "partition": None, "deps": []}] + tasks})
    con = sqlite3.connect(db_of(root))
    con.execute("UPDATE runs SET plan = ? WHERE run_id = ?", (plan, rerun))
    con.execute("INSERT INTO tasks (run_id, task_id, position, asset, state) VALUES (?, 'a', 9, 'a', 'SKIPPED')",
                (rerun,))
    con.commit()
    con.close()
    assert "from_failure_exact" in failed_invariants(root, accepted)


def test_an_accepted_command_that_is_gone(copy):
    root, accepted = copy
    (run_id,) = one(root, "SELECT run_id FROM runs WHERE run_key = 'k1'")
    corrupt(root, "UPDATE runs SET run_key = 'other' WHERE run_id = ?", params=(run_id,))
    assert failed_invariants(root, accepted) == {"accepted_commands_present"}


def test_a_gap_in_attempt_numbers(copy):
    root, accepted = copy
    corrupt(root, "DELETE FROM attempts WHERE task_id = 'flaky' AND attempt = 1")
    assert "attempts_contiguous" in failed_invariants(root, accepted)


def test_something_left_in_flight(copy):
    root, accepted = copy
    corrupt(root, "INSERT INTO outbox (target, idem_key, kind, body) VALUES ('history', 'x', 'TaskChanged', x'7b7d')")
    assert failed_invariants(root, accepted) == {"quiescent"}


def test_a_succeeded_backfill_that_materialised_a_partition_twice(copy):
    root, accepted = copy
    (run_id,) = one(root, "SELECT run_id FROM runs WHERE chunk_index = 0")
    corrupt(root, "UPDATE tasks SET partition = '2024-01-02', task_id = 'p[2024-01-02]' WHERE run_id = ?"
                  " AND asset = 'p'", params=(run_id,))
    assert "succeeded_backfill_exactly_once" in failed_invariants(root, accepted)


def test_more_chunk_runs_at_once_than_allowed(copy):
    root, accepted = copy
    corrupt(root, "UPDATE backfill_chunks SET planned_at = (SELECT MIN(planned_at) FROM backfill_chunks),"
                  " finished_at = (SELECT MAX(finished_at) FROM backfill_chunks)")
    assert failed_invariants(root, accepted) == {"backfill_concurrency"}


def test_a_run_whose_state_contradicts_its_tasks(copy):
    root, accepted = copy
    corrupt(root, "UPDATE runs SET state = 'SUCCEEDED' WHERE run_key = 'k1'")
    assert failed_invariants(root, accepted) == {"run_state_consistent"}
