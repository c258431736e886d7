"""Retention: `arcod runs prune --older-than AGE` and `retention_days` remove old finished runs
with their tasks, attempts, logs and event records, and never anything a live run, a lineage
or a backfill still needs (arcod/core/retention.py, arcod/store/retention.py).

Runs are aged by moving their finish time back in the database (another process writing to
it, as an operator's sqlite3 shell would), not by waiting 30 days.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import anyio
import pytest

from arcod.core.retention import BackfillInfo, RunInfo, decide_prune
from arcod.store.database import open_database
from arcod.store.retention import prune_daily
from tests.e2e.harness import Daemon, asset_toml, write_project
from tests.hardening.conftest import stop

pytestmark = pytest.mark.e2e

CUT = "2024-06-01T00:00:00.000+00:00"
OLD = "2024-01-01T00:00:00.000+00:00"
NEW = "2024-07-01T00:00:00.000+00:00"


def run(run_id, state="SUCCEEDED", finished=OLD, parent=None, backfill=None) -> RunInfo:
    return RunInfo(run_id=run_id, parent_run_id=parent, state=state,
                   finished_at=None if state in ("QUEUED", "RUNNING", "CANCELING") else finished, backfill_id=backfill)


def bf(backfill_id, state="SUCCEEDED", finished=OLD, root=None) -> BackfillInfo:
    return BackfillInfo(backfill_id=backfill_id, root_backfill_id=root or backfill_id, state=state,
                        finished_at=None if state in ("RUNNING", "PAUSED", "CANCELING") else finished)


# ── the decision (pure) ─────────────────────────────────────────────────────

def test_only_finished_runs_older_than_the_cutoff_go():
    d = decide_prune([run("old"), run("new", finished=NEW), run("live", state="RUNNING"),
                      run("queued", state="QUEUED"), run("failed", state="FAILED"), run("canceled", state="CANCELED")],
                     [], run_cutoff=CUT)
    assert d.runs == {"old", "failed", "canceled"}


def test_a_kept_run_keeps_its_ancestors_but_not_its_siblings():
    runs = [run("root", state="FAILED"), run("child", state="FAILED", parent="root"),
            run("grandchild", state="RUNNING", parent="child"), run("sibling", parent="root"),
            run("other-root"), run("other-child", finished=NEW, parent="other-root")]
    d = decide_prune(runs, [], run_cutoff=CUT)
    assert d.runs == {"sibling"}  # the kept part of each lineage is still a tree with its root
    assert d.kept_lineage == 3  # root, child, other-root


def test_busy_runs_are_kept_and_counted():
    d = decide_prune([run("a"), run("b", parent="a"), run("c")], [], run_cutoff=CUT, busy=frozenset({"b"}))
    assert d.runs == {"c"} and d.kept_busy == 1 and d.kept_lineage == 1


def test_backfill_families_go_all_or_nothing():
    runs = [run("c1", backfill="bf1"), run("c2", backfill="bf1"), run("c3", backfill="bf2"),
            run("c4", backfill="bf3"), run("c5", backfill="bf3"), run("rerun-c5", finished=NEW, parent="c5"),
            run("c6", backfill="bf4"), run("c7", backfill="bf5")]
    backfills = [bf("bf1"), bf("bf2", state="FAILED"), bf("bf2-retry", state="RUNNING", root="bf2"),
                 bf("bf3"), bf("bf4", state="CANCELED", finished=NEW)]  # bf5 is not in the universe
    d = decide_prune(runs, backfills, run_cutoff=CUT)
    assert d.backfills == {"bf1"} and d.runs == {"c1", "c2"}
    # bf2: its retry child is running; bf3: a chunk run has a recent rerun; bf4: finished too
    # recently; bf5: unknown. Their chunk runs stay.
    assert d.kept_backfill == 4 and d.kept_lineage == 1  # c3, c4, c6, c7; c5 for its rerun


# ── through the daemon ──────────────────────────────────────────────────────

PARTITIONS = '[partitions.daily]\nkind = "daily"\nstart = "2024-01-01"\nend = "2024-01-07"\n'
ASSETS = asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("p", partitions="daily")


def db_rows(d: Daemon, sql: str, params=()) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(d.project / ".arcod" / "arcod.db", timeout=10)) as db:
        return db.execute(sql, params).fetchall()


def age(d: Daemon, run_ids=(), backfill_ids=(), days: int = 40) -> None:
    """Move finish (and creation) times `days` back, as if the runs were that old."""
    when = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")
    with contextlib.closing(sqlite3.connect(d.project / ".arcod" / "arcod.db", timeout=10)) as db:
        for run_id in run_ids:
            db.execute("UPDATE runs SET finished_at = ?, created_at = ? WHERE run_id = ?", (when, when, run_id))
        for backfill_id in backfill_ids:
            db.execute("UPDATE backfills SET finished_at = ? WHERE backfill_id = ?", (when, backfill_id))
        db.commit()


def traces(d: Daemon, run_id: str) -> dict[str, int]:
    """Everything the database and the log directory hold for a run."""
    logs = d.project / ".arcod" / "logs"
    return {
        "runs": db_rows(d, "SELECT COUNT(*) FROM runs WHERE run_id = ?", (run_id,))[0][0],
        "tasks": db_rows(d, "SELECT COUNT(*) FROM tasks WHERE run_id = ?", (run_id,))[0][0],
        "attempts": db_rows(d, "SELECT COUNT(*) FROM attempts WHERE run_id = ?", (run_id,))[0][0],
        "events": db_rows(d, "SELECT COUNT(*) FROM events WHERE instr(idem_key, ?) > 0", (run_id,))[0][0],
        "logs": int(any(p.name == run_id for p in logs.iterdir())) if logs.exists() else 0,
    }


@pytest.fixture
def proj(tmp_path, daemons) -> Daemon:
    return daemons(write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS))


def finished_run(d: Daemon, *args: str) -> dict:
    r = d.ok("run", *args)
    return d.wait_run(r["run_id"])


def test_prune_removes_old_runs_with_everything_of_theirs_and_nothing_else(proj: Daemon):
    old = [finished_run(proj, "--select", "a+"), finished_run(proj, "--select", "p", "--partitions", "all")]
    young = finished_run(proj, "--select", "a")
    (proj.project / "sleep" / "b").write_text("30")
    live = proj.ok("run", "--select", "a+")
    deadline = time.monotonic() + 30  # `a` of the live run done, `b` sleeping: its status settled
    while proj.ok("runs", "show", live["run_id"])["tasks"][0]["state"] != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    age(proj, [r["run_id"] for r in old] + [young["run_id"]], days=40)
    age(proj, [young["run_id"]], days=10)
    assert all(traces(proj, r["run_id"])["logs"] and traces(proj, r["run_id"])["events"] for r in old)
    status_before = db_rows(proj, "SELECT asset, partition, last_materialized_run FROM partition_status ORDER BY 1, 2")

    assert proj.ok("runs", "prune", "--older-than", "60d")["runs"] == 0
    dry = proj.ok("runs", "prune", "--older-than", "30d", "--dry-run")
    assert dry["dry_run"] and dry["runs"] == 2 and dry["tasks"] == 2 + 6 and dry["attempts"] == 8
    assert dry["log_dirs"] == 2 and dry["log_bytes"] > 0 and dry["events"] > 0
    assert all(traces(proj, r["run_id"])["runs"] == 1 for r in old)  # a dry run removes nothing

    done = proj.ok("runs", "prune", "--older-than", "30d")
    assert {k: done[k] for k in ("runs", "tasks", "attempts", "log_dirs")} == \
           {k: dry[k] for k in ("runs", "tasks", "attempts", "log_dirs")}
    assert sorted(done["run_ids"]) == sorted(r["run_id"] for r in old)
    for r in old:
        assert traces(proj, r["run_id"]) == {"runs": 0, "tasks": 0, "attempts": 0, "events": 0, "logs": 0}
        assert proj.refused("runs", "show", r["run_id"])["code"] == "not_found"
    for r in (young, live):
        assert traces(proj, r["run_id"])["runs"] == 1 and traces(proj, r["run_id"])["tasks"] >= 1
    # Partition status is the history of the data: it stays.
    assert db_rows(proj, "SELECT asset, partition, last_materialized_run FROM partition_status ORDER BY 1, 2") \
        == status_before
    # The daemon carries on: the live run finishes, new work runs.
    (proj.project / "sleep" / "b").unlink()
    proj.ok("cancel", live["run_id"])
    assert finished_run(proj, "--select", "a+")["state"] == "SUCCEEDED"


def test_prune_keeps_a_lineage_while_any_descendant_is_kept(proj: Daemon):
    (proj.project / "fail" / "b").touch()
    parent = finished_run(proj, "--select", "a+")
    assert parent["state"] == "FAILED"
    (proj.project / "fail" / "b").unlink()
    (proj.project / "sleep" / "b").write_text("30")
    child = proj.ok("rerun", parent["run_id"], "--from-failure")
    age(proj, [parent["run_id"]])
    result = proj.ok("runs", "prune", "--older-than", "30d")
    assert result["runs"] == 0 and result["kept_lineage"] == 1
    proj.ok("cancel", child["run_id"])
    proj.wait_run(child["run_id"])
    age(proj, [child["run_id"]])
    result = proj.ok("runs", "prune", "--older-than", "30d")
    assert result["runs"] == 2 and sorted(result["run_ids"]) == sorted([parent["run_id"], child["run_id"]])


def wait_backfill(d: Daemon, backfill_id: str, states=("SUCCEEDED", "FAILED", "CANCELED")) -> dict:
    deadline = time.monotonic() + 60
    while (bf := d.ok("backfill", "show", backfill_id))["state"] not in states:
        assert time.monotonic() < deadline, bf
        time.sleep(0.05)
    return bf


def test_prune_takes_a_finished_backfill_whole_and_never_a_live_ones_chunks(proj: Daemon):
    done = proj.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04", "--chunk-size", "2")
    assert wait_backfill(proj, done["backfill_id"])["state"] == "SUCCEEDED"
    done_runs = [r["run_id"] for r in proj.ok("runs", "list", "--backfill", done["backfill_id"])["runs"]]
    (proj.project / "sleep" / "p").write_text("1")  # the first chunk runs long enough to pause behind it
    live = proj.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-05..2024-01-06", "--chunk-size", "1",
                   "--max-concurrency", "1")
    deadline = time.monotonic() + 30
    while not proj.ok("runs", "list", "--backfill", live["backfill_id"])["runs"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proj.ok("backfill", "pause", live["backfill_id"])
    (proj.project / "sleep" / "p").unlink()
    first = proj.ok("runs", "list", "--backfill", live["backfill_id"])["runs"][0]
    proj.wait_run(first["run_id"])  # a finished chunk run of a paused (not finished) backfill
    age(proj, done_runs + [first["run_id"]], [done["backfill_id"]])

    result = proj.ok("runs", "prune", "--older-than", "30d")
    assert result["backfills"] == 1 and sorted(result["run_ids"]) == sorted(done_runs)
    assert result["kept_backfill"] == 1
    assert proj.refused("backfill", "show", done["backfill_id"])["code"] == "not_found"
    assert not db_rows(proj, "SELECT * FROM backfill_chunks WHERE backfill_id = ?", (done["backfill_id"],))
    assert proj.ok("runs", "show", first["run_id"])["backfill_id"] == live["backfill_id"]
    proj.ok("backfill", "resume", live["backfill_id"])
    assert wait_backfill(proj, live["backfill_id"])["state"] == "SUCCEEDED"


def test_the_daemon_prunes_by_itself_when_retention_days_is_set(tmp_path):
    project = write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS)
    d = Daemon(project)
    d.start()
    try:
        old = finished_run(d, "--select", "a+")
        young = finished_run(d, "--select", "a")
        age(d, [old["run_id"]], days=31)
    finally:
        stop(d)
    with open(project / "arcod.toml", "a") as f:
        f.write("retention_days = 30\n")
    d = Daemon(project)
    d.start()
    try:
        deadline = time.monotonic() + 30
        while traces(d, old["run_id"])["runs"]:
            assert time.monotonic() < deadline, d.daemon_log_tail()
            time.sleep(0.1)
        assert traces(d, old["run_id"]) == {"runs": 0, "tasks": 0, "attempts": 0, "events": 0, "logs": 0}
        assert traces(d, young["run_id"])["runs"] == 1
        assert '"event": "prune finished"' in d.log_path.read_text()
    finally:
        stop(d)


@pytest.mark.anyio
async def test_prune_daily_survives_a_failed_pass_and_runs_again(tmp_path, anyio_backend):
    """A pass that fails (here: the database is locked by another process) is logged and the
    next one runs; the task never ends on its own."""
    async with open_database(tmp_path / "arcod.db", busy_timeout=0.2) as db:
        async with db.transaction() as tx:  # one old finished run, as the planner would leave it
            await tx.execute(
                "INSERT INTO runs (run_id, state, fingerprint, code_version, root_run_id, request, tags, plan,"
                " created_at, finished_at) VALUES ('r-old', 'SUCCEEDED', 'f', 'c', 'r-old', x'7b7d', x'7b7d', x'7b7d', ?, ?)",
                (OLD, OLD))
        other = sqlite3.connect(tmp_path / "arcod.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: prune_daily(db, logs_dir=tmp_path / "logs", retention_days=30,
                                              first_after_s=0, every_s=0.3))
            await anyio.sleep(0.5)  # the first pass fails on the lock
            assert await db.read_one("SELECT 1 FROM runs WHERE run_id = 'r-old'") is not None
            other.execute("ROLLBACK")
            other.close()
            with anyio.fail_after(10):
                while await db.read_one("SELECT 1 FROM runs WHERE run_id = 'r-old'") is not None:
                    await anyio.sleep(0.05)
            tg.cancel_scope.cancel()


def test_log_dirs_left_by_a_crash_between_commit_and_removal_are_swept(proj: Daemon):
    r = finished_run(proj, "--select", "a")
    logs = proj.project / ".arcod" / "logs"
    orphan = logs / "r-20200101-deadbeef"
    (orphan / "a").mkdir(parents=True)
    (orphan / "a" / "1.log").write_text("left behind")
    old = time.time() - 40 * 86400
    os.utime(orphan, (old, old))
    result = proj.ok("runs", "prune", "--older-than", "30d")
    assert result["runs"] == 0 and result["log_dirs"] == 1
    assert not orphan.exists() and (logs / r["run_id"]).exists()


async def _seed(db) -> None:
    """Ten lineage groups and a backfill family of three chunk runs, all finished long ago,
    except one rerun that still runs (its group stays) and one chunk run with a young rerun
    (its family stays)."""
    async with db.transaction() as tx:
        async def add(run_id, parent=None, root=None, state="SUCCEEDED", finished=OLD, backfill=None):
            await tx.execute(
                "INSERT INTO runs (run_id, state, fingerprint, code_version, parent_run_id, root_run_id, backfill_id,"
                " request, tags, plan, created_at, finished_at) VALUES (?, ?, 'f', 'c', ?, ?, ?, x'7b7d', x'7b7d',"
                " x'7b7d', ?, ?)", (run_id, state, parent, root or run_id, backfill, OLD,
                                     None if state == "RUNNING" else finished))
        for i in range(10):
            await add(f"r{i}")
            await add(f"r{i}-child", parent=f"r{i}", root=f"r{i}")
        await add("r3-grandchild", parent="r3-child", root="r3", state="RUNNING")
        for bf_id, chunks in (("bf-old", ("c1", "c2")), ("bf-kept", ("c3",))):
            await tx.execute(
                "INSERT INTO backfill_definitions (digest, body) VALUES (?, x'00') ON CONFLICT DO NOTHING", ("d",))
            await tx.execute(
                "INSERT INTO backfills (backfill_id, fingerprint, state, state_version, assets, definition,"
                " definition_digest, selector, as_of, selector_count, span_lo, span_hi, partitions_total, chunk_size,"
                " chunks_total, max_concurrency, newest_first, reprocess, code_version, root_backfill_id, request,"
                " created_at, updated_at, finished_at) VALUES (?, 'f', 'SUCCEEDED', 2, x'5b5d', 'daily', 'd', x'7b7d',"
                " ?, 1, 0, 1, 1, 1, 1, 1, 0, 'all', 'c', ?, x'7b7d', ?, ?, ?)", (bf_id, OLD, bf_id, OLD, OLD, OLD))
            for i, chunk in enumerate(chunks):
                await add(chunk, backfill=bf_id)
                await tx.execute(
                    "INSERT INTO backfill_chunks (backfill_id, chunk_index, state, run_id, partitions, first_partition,"
                    " last_partition, tasks, planned_at) VALUES (?, ?, 'SUCCEEDED', ?, 1, 'a', 'a', 1, ?)",
                    (bf_id, i, chunk, OLD))
        await add("c3-rerun", parent="c3", root="c3", finished=NEW)


@pytest.mark.anyio
@pytest.mark.parametrize("batch_roots", [1, 3, 100])
async def test_batches_decide_like_one_pass(tmp_path, anyio_backend, batch_roots):
    """However the groups are cut into batches, the same runs go, the dry run counts exactly
    what the real run removes, and each kept run is counted once."""
    from arcod.store.retention import prune

    async with open_database(tmp_path / "arcod.db") as db:
        await _seed(db)
        now = datetime(2024, 7, 15, tzinfo=timezone.utc)  # cutoff 2024-06-15: OLD is older, NEW is not
        dry = await prune(db, logs_dir=tmp_path / "logs", older_than_s=30 * 86400, dry_run=True, now=now,
                          batch_roots=batch_roots)
        real = await prune(db, logs_dir=tmp_path / "logs", older_than_s=30 * 86400, now=now, batch_roots=batch_roots)
        left = sorted(r["run_id"] for r in await db.read_all("SELECT run_id FROM runs"))
        backfills = sorted(r["backfill_id"] for r in await db.read_all("SELECT backfill_id FROM backfills"))
    assert left == ["c3", "c3-rerun", "r3", "r3-child", "r3-grandchild"]
    assert backfills == ["bf-kept"]
    assert real.runs == dry.runs == 20 and real.backfills == dry.backfills == 1
    # r3 and r3-child for the running grandchild, c3 for its young rerun (which also keeps bf-kept)
    assert (real.kept_lineage, real.kept_backfill) == (dry.kept_lineage, dry.kept_backfill) == (3, 0)


def test_a_pruned_runs_key_stays_taken(tmp_path, daemons):
    """SPEC §5: a key maps to at most one run, ever, even after retention pruned the run."""
    from tests.e2e.harness import asset_toml, write_project

    d = daemons(write_project(tmp_path / "keys", asset_toml("a") + asset_toml("b")))
    first = d.ok("run", "--select", "a", "--run-key", "nightly")
    d.wait_run(first["run_id"])
    report = d.ok("runs", "prune", "--older-than", "0s")
    assert report["runs"] >= 1
    d.refused("runs", "show", first["run_id"], code="not_found")
    again = d.ok("run", "--select", "a", "--run-key", "nightly")
    assert again["created"] is False and again["run_id"] == first["run_id"] and again["pruned"] is True
    assert again["state"] == "SUCCEEDED"
    assert len(d.counter("a")) == 1  # nothing ran again
    err = d.refused("run", "--select", "b", "--run-key", "nightly", code="run_key_conflict")
    assert err["details"]["existing_run_id"] == first["run_id"]
