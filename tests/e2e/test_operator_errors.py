"""Operator mistakes and readings through the real daemon: filters and ids that name nothing are
refused with what does exist, hints on finished backfills agree with each other, progress
keeps finished and succeeded apart, run documents carry SPEC §7's fields, and the README's
dynamic-partitions steps work on the shipped demo project."""

from __future__ import annotations

import shutil

import pytest

from tests.e2e.harness import ROOT, Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

PARTITIONS = '''
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2024-01-11"
'''
ASSETS = (asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("p", partitions="daily")
          + asset_toml("g", extra='group = "geo"'))
DAYS = [f"2024-01-{d:02d}" for d in range(1, 11)]
RUN_FIELDS = {"run_id", "run_key", "state", "parent_run_id", "root_run_id", "rerun_kind", "backfill_id",
              "fingerprint", "created", "tasks"}


@pytest.fixture
def d(tmp_path, daemons) -> Daemon:
    root = write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS)
    config = root / "arcod.toml"
    config.write_text(config.read_text().replace("max_concurrent_runs = 4", "max_concurrent_runs = 6"))
    return daemons(root)


def finished_run(d: Daemon, *args: str) -> dict:
    run = d.ok("run", *args)
    return d.wait_run(run["run_id"])


def watch(d: Daemon, backfill_id: str) -> dict:
    return d.cli("backfill", "watch", backfill_id).json


def poll(d: Daemon, backfill_id: str, done, what: str, timeout: float = 60.0) -> dict:
    return d.poll_backfill(backfill_id, done, what, timeout)


# 1 ────────────────────────────────────────────────────────────────────────


def test_logs_refuses_an_asset_or_partition_the_run_does_not_hold(d: Daemon):
    run = finished_run(d, "--select", "p", "--partitions", "2024-01-01..2024-01-03")
    rid = run["run_id"]
    err = d.refused("logs", rid, "--asset", "nope/x", code="not_found")
    assert "'nope/x'" in err["message"] and "its assets: p" in err["message"]
    assert err["details"]["assets"] == ["p"]
    err = d.refused("logs", rid, "--partition", "2024-01-09", code="not_found")
    assert "'2024-01-09'" in err["message"] and "2024-01-01, 2024-01-02, 2024-01-03" in err["message"]
    d.refused("logs", rid, "--asset", "bad key!", code="invalid_key")
    # Without --json: exit 1 and the message on stderr, nothing printed as if all were fine.
    human = d.cli("logs", rid, "--asset", "nope/x", json_output=False)
    assert human.code == 1 and "nope/x" in human.stderr and human.stdout == ""
    # What the run does hold still works.
    logs = d.ok("logs", rid, "--asset", "p", "--partition", "2024-01-02")
    assert [(a["asset"], a["partition"]) for a in logs["attempts"]] == [("p", "2024-01-02")]
    plain = finished_run(d, "--select", "a")
    err = d.refused("logs", plain["run_id"], "--partition", "2024-01-01", code="not_found")
    assert "no partitioned task" in err["message"]


# 2 ────────────────────────────────────────────────────────────────────────


def test_runs_list_refuses_an_unknown_backfill_or_root(d: Daemon):
    err = d.refused("runs", "list", "--backfill", "b-nope", code="not_found")
    assert "b-nope" in err["message"] and err["details"] == {"what": "backfill", "id": "b-nope"}
    assert d.refused("runs", "list", "--root", "r-nope", code="not_found")["details"]["id"] == "r-nope"
    # An existing backfill with no runs lists empty: every chunk was skipped by --reprocess.
    finished_run(d, "--select", "p", "--partitions", "2024-01-01..2024-01-02")
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-02",
               "--reprocess", "missing")["backfill_id"]
    assert watch(d, bid)["state"] == "SUCCEEDED"
    assert d.ok("runs", "list", "--backfill", bid) == {"runs": []}


# 3 ────────────────────────────────────────────────────────────────────────


def test_subset_rerun_of_assets_outside_the_plan_says_so_however_they_are_selected(d: Daemon):
    parent = finished_run(d, "--select", "a+")
    assert parent["state"] == "SUCCEEDED"
    by_label = d.refused("rerun", parent["run_id"], "--select", "group:geo", code="empty_selection")
    by_key = d.refused("rerun", parent["run_id"], "--select", "g", code="unknown_assets")
    for err in (by_label, by_key):
        assert f"plan of run {parent['run_id']}" in err["message"]
        assert "can only take assets the parent planned (a, b)" in err["message"]
        assert err["details"]["parent_assets"] == ["a", "b"]
    assert "check the names" not in by_label["message"] and "it matches g, outside the plan" in by_label["message"]


# 4 ────────────────────────────────────────────────────────────────────────


def test_a_succeeded_backfill_never_suggests_retry_failed_and_retry_says_nothing_failed(d: Daemon):
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-02")["backfill_id"]
    assert watch(d, bid)["state"] == "SUCCEEDED"
    for action in ("pause", "resume", "cancel"):
        err = d.refused("backfill", action, bid, code="invalid_transition")
        assert "retry-failed" not in err["message"] and "every partition succeeded" in err["message"]
    err = d.refused("backfill", "retry-failed", bid, code="invalid_transition")
    assert "every partition succeeded" in err["message"] and "nothing to retry" in err["message"]
    assert "pause or cancel" not in err["message"] and "wait for it to finish" not in err["message"]


def test_a_failed_backfill_points_at_retry_failed_and_retry_takes_it(d: Daemon):
    (d.project / "fail" / "p__2024-01-02").touch()
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-02")["backfill_id"]
    assert watch(d, bid)["state"] == "FAILED"
    assert "retry-failed" in d.refused("backfill", "resume", bid, code="invalid_transition")["message"]
    (d.project / "fail" / "p__2024-01-02").unlink()
    assert d.ok("backfill", "retry-failed", bid)["partitions_total"] == 1


# 5 ────────────────────────────────────────────────────────────────────────


def test_progress_of_a_canceled_backfill_keeps_finished_and_succeeded_apart(d: Daemon):
    (d.project / "sleep" / "p").write_text("1.0")
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04",
               "--chunk-size", "1", "--max-concurrency", "1")["backfill_id"]
    poll(d, bid, lambda b: b["counts"]["chunks"]["SUCCEEDED"] == 1, "chunk 0 succeeding")
    d.ok("backfill", "cancel", bid)
    bf = poll(d, bid, lambda b: b["state"] == "CANCELED", "the cancel")
    parts, prog = bf["counts"]["partitions"], bf["progress"]
    assert parts["SUCCEEDED"] == 1 and parts["CANCELED"] == 1
    assert prog["partitions_succeeded"] == 1 and prog["fraction_succeeded"] == 0.25
    assert prog["partitions_finished"] == prog["partitions_done"] == 2
    assert prog["fraction_finished"] == prog["fraction"] == 0.5
    listed = d.ok("backfill", "list")["backfills"][0]
    assert listed["backfill_id"] == bid and listed["progress"]["fraction_succeeded"] == 0.25


def test_progress_of_a_backfill_whose_partitions_all_failed_shows_none_succeeded(d: Daemon):
    (d.project / "fail" / "p").touch()
    bid = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-04",
               "--chunk-size", "2")["backfill_id"]
    bf = watch(d, bid)
    assert bf["state"] == "FAILED" and bf["counts"]["partitions"]["FAILED"] == 4
    assert bf["progress"]["partitions_finished"] == 4 and bf["progress"]["fraction_finished"] == 1.0
    assert bf["progress"]["partitions_succeeded"] == 0 and bf["progress"]["fraction_succeeded"] == 0.0
    listed = d.ok("backfill", "list")["backfills"][0]["progress"]
    assert (listed["partitions_finished"], listed["partitions_succeeded"]) == (4, 0)


# 6 ────────────────────────────────────────────────────────────────────────


def test_readme_dynamic_partition_steps_work_on_the_demo_project(tmp_path, daemons):
    demo = tmp_path / "demo"
    demo.mkdir()
    for name in ("arcod.toml", "assets.toml"):
        shutil.copy(ROOT / "config" / name, demo / name)
    shutil.copytree(ROOT / "config" / "jobs", demo / "jobs", ignore=shutil.ignore_patterns("__pycache__"))
    d = daemons(demo, env={"ARCOD_DEMO_SLEEP": "0"})
    added = d.ok("partitions", "add", "customers", "acme", "globex")
    assert added["added"] == ["acme", "globex"], added
    run = d.cli("run", "--select", "exports/customer_feed", "--partition", "acme", "--wait")
    assert run.code == 0 and run.json["state"] == "SUCCEEDED", run.stdout + run.stderr
    assert (demo / "data" / "exports" / "customer_feed" / "acme.json").exists()
    listing = d.ok("partitions", "list", "exports/customer_feed")
    assert listing["counts"]["MATERIALIZED"] == 1 and listing["counts"]["MISSING"] == 1, listing
    assert d.ok("partitions", "remove", "customers", "acme")["removed"] == ["acme"]
    assert len(d.ok("assets", "list")["assets"]) == 14  # README: "14 assets"


# 7 ────────────────────────────────────────────────────────────────────────


def test_run_documents_carry_the_contract_fields(d: Daemon):
    created = d.ok("run", "--select", "a")
    assert RUN_FIELDS <= set(created) and created["created"] is True
    shown = d.wait_run(created["run_id"])
    assert RUN_FIELDS <= set(shown) and shown["created"] is False
    assert shown["created_at"] == created["created_at"]
    item = d.ok("runs", "list")["runs"][0]
    assert RUN_FIELDS - {"tasks"} <= set(item) and item["created"] is False and "counts" in item
    assert item["created_at"] == created["created_at"]


# 8 ────────────────────────────────────────────────────────────────────────


def test_a_malformed_asset_key_is_refused_as_invalid_syntax(d: Daemon):
    err = d.refused("assets", "show", "bad key!", code="invalid_key")
    assert "invalid asset key" in err["message"] and "letters, digits and `_`" in err["message"]
    assert "unknown asset" not in err["message"]
    d.refused("partitions", "list", "bad key!", code="invalid_key")
    assert "did you mean a" in d.refused("assets", "show", "aa", code="unknown_assets")["message"]
