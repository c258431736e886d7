"""Backfills through the real daemon, proved with counter files the task commands append to
and with the runs the daemon recorded (no mocks, no sleeps as synchronisation)."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.e2e.harness import DAILY_AND_REGION, Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

PARTITIONS = DAILY_AND_REGION
ASSETS = (asset_toml("p", partitions="daily") + asset_toml("q", deps=["p"], partitions="daily")
          + asset_toml("u") + asset_toml("r", partitions="region"))
DAYS = [f"2024-01-{d:02d}" for d in range(1, 11)]


def project(tmp_path):
    """The test project, with room for more runs than any backfill here may use, so a
    backfill's max_concurrency is what binds."""
    root = write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS)
    config = root / "arcod.toml"
    config.write_text(config.read_text().replace("max_concurrent_runs = 4", "max_concurrent_runs = 6"))
    assert "max_concurrent_runs = 6" in config.read_text()
    return root


@pytest.fixture
def proj(tmp_path, daemons) -> Daemon:
    return daemons(project(tmp_path))


@pytest.fixture(params=["asyncio", "trio"])
def proj_both(request, tmp_path, daemons) -> Daemon:
    return daemons(project(tmp_path), backend=request.param)


def poll(d: Daemon, backfill_id: str, done, what: str, timeout: float = 60.0) -> dict:
    return d.poll_backfill(backfill_id, done, what, timeout)


def chunk_runs(d: Daemon, backfill_id: str) -> list[dict]:
    runs = d.ok("runs", "list", "--backfill", backfill_id, "--limit", "1000")["runs"]
    return sorted(runs, key=lambda r: r["chunk_index"])


def pairs_of(d: Daemon, runs: list[dict]) -> set[tuple[str, str]]:
    return {(t["asset"], t["partition"]) for r in runs for t in d.ok("runs", "show", r["run_id"])["tasks"]}


def max_overlap(runs: list[dict]) -> int:
    """The most runs that were RUNNING at the same instant, from their recorded start/finish."""
    events = []
    for r in runs:
        events.append((datetime.fromisoformat(r["started_at"]), 1))
        events.append((datetime.fromisoformat(r["finished_at"]), -1))
    events.sort(key=lambda e: (e[0], e[1]))  # a finish at the same instant as a start comes first
    current = peak = 0
    for _, step in events:
        current += step
        peak = max(peak, current)
    return peak


def counts_of(d: Daemon, assets=("p", "q"), days=DAYS) -> dict[str, int]:
    return {f"{a}__{day}": len(d.counter(f"{a}__{day}")) for a in assets for day in days}


def test_dry_run_creates_nothing_and_decides_like_create(proj: Daemon):
    d = proj
    d.ok("run", "--select", "p", "--partition", "2024-01-02", "--wait")
    dry = d.ok("backfill", "create", "--select", "p+", "--partitions", "2024-01-01..2024-01-07",
               "--chunk-size", "3", "--reprocess", "missing", "--dry-run")
    assert dry["dry_run"] is True
    assert (dry["partitions_total"], dry["chunks_total"], dry["chunk_size"]) == (7, 3, 3)
    assert [c["keys"] for c in dry["chunks"]] == [DAYS[0:3], DAYS[3:6], DAYS[6:7]]
    second = dry["chunks"][0]["partitions"][1]
    assert second["partition"] == "2024-01-02" and second["decision"] == "partial"
    assert {t["asset"]: (t["decision"], t["reason"]) for t in second["tasks"]} == {
        "p": ("skip", "already materialized"), "q": ("run", "missing")}
    assert dry["counts"]["tasks"] == {"run": 13, "skip": 1}
    assert dry["counts"]["skip_reasons"] == {"already materialized": 1}
    newest = d.ok("backfill", "create", "--select", "p", "--partitions", "all", "--chunk-size", "4",
                  "--newest-first", "--dry-run")
    assert [c["keys"] for c in newest["chunks"]] == [DAYS[9:5:-1], DAYS[5:1:-1], DAYS[1::-1]]
    human = d.cli("backfill", "create", "--select", "p", "--partitions", "all", "--dry-run", json_output=False)
    assert human.code == 0 and "nothing was created" in human.stdout and "2024-01-10" in human.stdout
    # Nothing was created by any of this.
    assert d.ok("backfill", "list")["backfills"] == []
    assert len(d.ok("runs", "list")["runs"]) == 1
    # Refusals, before anything is stored.
    d.refused("backfill", "create", "--select", "u", "--partitions", "all", code="partition_error")
    err = d.refused("backfill", "create", "--select", "p", "--select", "r", "--partitions", "all",
                    code="mixed_partitions")
    assert "daily: p" in err["message"] and "region: r" in err["message"]
    usage = d.cli("backfill", "create", "--select", "p", "--partitions", "all", "--chunk-size", "0")
    assert usage.code == 2 and usage.json["error"]["code"] == "usage", usage  # refused before any request
    d.refused("backfill", "create", "--select", "p", "--partitions", "2024-02-01..2024-02-03",
              code="partition_error")
    assert d.ok("backfill", "list")["backfills"] == []


def test_request_id_makes_create_repeat_safe(proj: Daemon):
    d = proj
    args = ("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-02", "--request-id", "R1")
    first = d.ok(*args)
    assert first["created"] is True and first["request_id"] == "R1" and first["state_version"] == 1
    again = d.ok(*args)
    assert again["created"] is False and again["backfill_id"] == first["backfill_id"]
    err = d.refused(*args, "--chunk-size", "1", code="request_id_conflict")
    assert err["details"]["existing_backfill_id"] == first["backfill_id"]
    assert d.cli("backfill", "watch", first["backfill_id"]).code == 0
    assert len(d.ok("backfill", "list")["backfills"]) == 1
    assert counts_of(d, ("p",), DAYS[:2]) == {"p__2024-01-01": 1, "p__2024-01-02": 1}


def test_each_partition_runs_once_in_deterministic_chunks_under_max_concurrency(proj_both: Daemon):
    d = proj_both
    (d.project / "sleep" / "p").write_text("0.2")
    bf = d.ok("backfill", "create", "--select", "p+", "--partitions", "all", "--chunk-size", "2",
              "--max-concurrency", "2")
    assert (bf["partitions_total"], bf["chunks_total"], bf["max_concurrency"]) == (10, 5, 2)
    bid = bf["backfill_id"]
    r = d.cli("backfill", "watch", bid)
    assert r.code == 0, r.stdout + r.stderr
    final = r.json
    assert final["state"] == "SUCCEEDED" and final["state_version"] == 2
    assert final["counts"]["partitions"]["SUCCEEDED"] == 10 and final["counts"]["chunks"]["SUCCEEDED"] == 5
    assert [(t["version"], t["from_state"], t["to_state"]) for t in final["transitions"]] == [
        (1, None, "RUNNING"), (2, "RUNNING", "SUCCEEDED")]
    # Each (asset, partition) ran exactly once.
    assert set(counts_of(d).values()) == {1}
    # One run per chunk, keyed deterministically, holding exactly that chunk's partitions.
    runs = chunk_runs(d, bid)
    assert [r["run_key"] for r in runs] == [f"backfill:{bid}:chunk:{i}" for i in range(5)]
    assert all(r["counts"] == {"SUCCEEDED": 4} for r in runs)  # 2 partitions x 2 assets each
    chunks = d.ok("backfill", "chunks", bid)["chunks"]
    assert [(c["chunk_index"], c["run_id"], c["state"]) for c in chunks] == [
        (r["chunk_index"], r["run_id"], "SUCCEEDED") for r in runs]
    # Chunk i holds days 2i and 2i+1, each with its two tasks, in chunk i's run.
    parts = d.ok("backfill", "partitions", bid)["partitions"]
    assert [(e["partition"], e["state"], e["chunk_index"], e["run_id"], e["tasks"]) for e in parts] == [
        (day, "SUCCEEDED", i // 2, runs[i // 2]["run_id"], {"p": "SUCCEEDED", "q": "SUCCEEDED"})
        for i, day in enumerate(DAYS)]
    assert pairs_of(d, runs[:1]) == {(a, day) for a in ("p", "q") for day in DAYS[:2]}
    # Never more than max_concurrency chunk runs at once, and the cap was reached.
    assert max_overlap(runs) == 2


def test_pause_lets_active_chunks_finish_and_resume_continues(proj: Daemon):
    d = proj
    (d.project / "sleep" / "p").write_text("1.0")
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04",
               "--chunk-size", "1", "--max-concurrency", "1")["backfill_id"]
    deadline = time.monotonic() + 20
    while not [r for r in chunk_runs(d, bid) if r["state"] == "RUNNING"]:
        assert time.monotonic() < deadline, d.daemon_log_tail()
        time.sleep(0.05)
    paused = d.ok("backfill", "pause", bid, "--expect-version", "1")
    assert (paused["state"], paused["state_version"], paused["changed"]) == ("PAUSED", 2, True)
    again = d.ok("backfill", "pause", bid)
    assert (again["state"], again["state_version"], again["changed"]) == ("PAUSED", 2, False)
    err = d.refused("backfill", "resume", bid, "--expect-version", "1", code="version_conflict")
    assert err["details"] == {"expected": 1, "actual": 2, "state": "PAUSED"}
    # The active chunk run finishes; no new one starts while paused.
    shown = poll(d, bid, lambda b: b["counts"]["chunks"]["SUCCEEDED"] == 1, "chunk 0 finishing")
    assert shown["state"] == "PAUSED" and shown["state_version"] == 2
    assert len(chunk_runs(d, bid)) == 1 and shown["counts"]["chunks"]["PENDING"] == 3
    pending = d.ok("backfill", "chunks", bid, "--state", "PENDING")["chunks"]
    assert [(c["chunk_index"], c["first_partition"], c["run_id"]) for c in pending] == [
        (i, DAYS[i], None) for i in (1, 2, 3)]
    assert [e["partition"] for e in d.ok("backfill", "partitions", bid, "--state", "PENDING")["partitions"]] == DAYS[1:4]
    (d.project / "sleep" / "p").unlink()
    resumed = d.ok("backfill", "resume", bid, "--expect-version", "2")
    assert (resumed["state"], resumed["state_version"], resumed["changed"]) == ("RUNNING", 3, True)
    final = d.cli("backfill", "watch", bid).json
    assert final["state"] == "SUCCEEDED" and final["state_version"] == 4
    assert [(t["version"], t["to_state"]) for t in final["transitions"]] == [
        (1, "RUNNING"), (2, "PAUSED"), (3, "RUNNING"), (4, "SUCCEEDED")]
    assert set(counts_of(d, ("p",), DAYS[:4]).values()) == {1}
    d.refused("backfill", "pause", bid, code="invalid_transition")
    d.refused("backfill", "show", "b-nope", code="not_found")


def test_cancel_ends_active_chunk_runs_and_retry_takes_the_rest(proj: Daemon):
    d = proj
    (d.project / "sleep" / "p").write_text("1.0")
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04",
               "--chunk-size", "1", "--max-concurrency", "1")["backfill_id"]
    poll(d, bid, lambda b: b["counts"]["chunks"]["SUCCEEDED"] == 1, "chunk 0 succeeding")
    canceled = d.ok("backfill", "cancel", bid)
    assert canceled["changed"] is True and canceled["state"] in ("CANCELING", "CANCELED")
    final = poll(d, bid, lambda b: b["state"] == "CANCELED", "the cancel")
    assert [(t["version"], t["to_state"]) for t in final["transitions"]] == [
        (1, "RUNNING"), (2, "CANCELING"), (3, "CANCELED")]
    runs = chunk_runs(d, bid)
    assert [(r["chunk_index"], r["state"]) for r in runs] == [(0, "SUCCEEDED"), (1, "CANCELED")]
    assert final["counts"]["chunks"] == {"PENDING": 2, "RUNNING": 0, "SUCCEEDED": 1, "FAILED": 0,
                                         "CANCELED": 1, "SKIPPED": 0}
    assert d.ok("backfill", "cancel", bid)["changed"] is False
    (d.project / "sleep" / "p").unlink()
    child = d.ok("backfill", "retry-failed", bid)
    assert child["created"] is True and child["partitions_total"] == 3
    assert (child["parent_backfill_id"], child["root_backfill_id"]) == (bid, bid)
    listed = d.ok("backfill", "partitions", child["backfill_id"])["partitions"]
    assert [e["partition"] for e in listed] == DAYS[1:4]
    assert d.cli("backfill", "watch", child["backfill_id"]).code == 0
    assert pairs_of(d, chunk_runs(d, child["backfill_id"])) == {("p", day) for day in DAYS[1:4]}
    assert len(d.counter("p__2024-01-01")) == 1  # succeeded in the parent: never again
    assert len(d.counter("p__2024-01-02")) in (1, 2)  # canceled in the parent (maybe before it started)
    assert all(len(d.counter(f"p__{day}")) == 1 for day in DAYS[2:4])
    assert d.ok("backfill", "retry-failed", bid)["backfill_id"] == child["backfill_id"]
    d.refused("backfill", "retry-failed", child["backfill_id"], code="invalid_transition")


def test_retry_failed_covers_exactly_the_failed_pairs(proj_both: Daemon):
    d = proj_both
    (d.project / "fail" / "p__2024-01-02").touch()
    (d.project / "fail" / "q__2024-01-05").touch()
    bid = d.ok("backfill", "create", "--select", "p+", "--partitions", "2024-01-01..2024-01-06",
               "--chunk-size", "2", "--max-concurrency", "2")["backfill_id"]
    r = d.cli("backfill", "watch", bid)
    assert r.code == 1 and r.json["state"] == "FAILED"
    assert r.json["counts"]["partitions"]["FAILED"] == 2 and r.json["counts"]["partitions"]["SUCCEEDED"] == 4
    failed = d.ok("backfill", "partitions", bid, "--state", "FAILED")["partitions"]
    assert [(e["partition"], e["tasks"]) for e in failed] == [
        ("2024-01-02", {"p": "FAILED", "q": "SKIPPED"}), ("2024-01-05", {"p": "SUCCEEDED", "q": "FAILED"})]
    for f in (d.project / "fail").iterdir():
        f.unlink()
    child = d.ok("backfill", "retry-failed", bid)
    assert child["created"] is True and child["partitions_total"] == 2 and child["parent_backfill_id"] == bid
    assert d.cli("backfill", "watch", child["backfill_id"]).code == 0
    assert pairs_of(d, chunk_runs(d, child["backfill_id"])) == {
        ("p", "2024-01-02"), ("q", "2024-01-02"), ("q", "2024-01-05")}
    expected = {key: 1 for key in counts_of(d, days=DAYS[:6])}
    expected.update({"p__2024-01-02": 2, "q__2024-01-05": 2})  # failed once, retried once
    assert counts_of(d, days=DAYS[:6]) == expected
    again = d.ok("backfill", "retry-failed", bid)
    assert again["created"] is False and again["backfill_id"] == child["backfill_id"]
    assert counts_of(d, days=DAYS[:6]) == expected


def test_a_restarted_daemon_finishes_the_backfill_without_planning_a_chunk_twice(proj: Daemon):
    d = proj
    (d.project / "sleep" / "p").write_text("0.5")
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-06",
               "--chunk-size", "1", "--max-concurrency", "2")["backfill_id"]
    poll(d, bid, lambda b: b["counts"]["chunks"]["SUCCEEDED"] >= 1, "a first chunk")
    d.kill9()
    (d.project / "sleep" / "p").unlink()
    d.start()
    r = d.cli("backfill", "watch", bid)
    assert r.code == 0, r.stdout
    runs = chunk_runs(d, bid)
    assert [r["run_key"] for r in runs] == [f"backfill:{bid}:chunk:{i}" for i in range(6)]
    assert all(len(d.counter(f"p__{day}")) >= 1 for day in DAYS[:6])
