"""Reruns through the real daemon, proved with counter files the task commands append to."""

from __future__ import annotations

import pytest

from tests.e2e.harness import Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

DAILY = '''
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2024-01-11"
'''
ASSETS = (asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("c", deps=["b"])
          + asset_toml("p", partitions="daily") + asset_toml("q", deps=["p"], partitions="daily"))


@pytest.fixture(params=["asyncio", "trio"])
def proj(request, tmp_path, daemons) -> Daemon:
    return daemons(write_project(tmp_path / "proj", ASSETS, partitions=DAILY), backend=request.param)


def failed_chain(d: Daemon) -> dict:
    (d.project / "fail" / "b").touch()
    r = d.cli("run", "--select", "a+", "--wait")
    assert r.code == 1
    return r.json


def test_from_failure_runs_exactly_what_did_not_succeed(proj: Daemon):
    parent = failed_chain(proj)
    assert parent["state"] == "FAILED"
    assert {t["asset"]: t["state"] for t in parent["tasks"]} == {"a": "SUCCEEDED", "b": "FAILED", "c": "SKIPPED"}
    (proj.project / "fail" / "b").unlink()
    r = proj.cli("rerun", parent["run_id"], "--from-failure", "--wait")
    assert r.code == 0, r.stderr
    rerun = r.json
    assert rerun["state"] == "SUCCEEDED"
    assert sorted(t["asset"] for t in rerun["tasks"]) == ["b", "c"]
    assert rerun["parent_run_id"] == parent["run_id"] and rerun["root_run_id"] == parent["run_id"]
    assert rerun["rerun_kind"] == "from_failure"
    assert rerun["run_key"].startswith(f"rerun:{parent['run_id']}:from_failure:")
    assert len(proj.counter("a")) == 1  # never run again
    assert len(proj.counter("b")) == 2 and len(proj.counter("c")) == 1
    # Repeating the request returns the same rerun and runs nothing.
    again = proj.ok("rerun", parent["run_id"], "--from-failure")
    assert again["created"] is False and again["run_id"] == rerun["run_id"]
    assert len(proj.counter("b")) == 2


def test_rerun_of_a_rerun_keeps_the_root_and_tree_shows_the_group(proj: Daemon):
    parent = failed_chain(proj)
    first = proj.cli("rerun", parent["run_id"], "--from-failure", "--wait").json  # b still fails
    assert first["state"] == "FAILED"
    (proj.project / "fail" / "b").unlink()
    second = proj.cli("rerun", first["run_id"], "--from-failure", "--wait").json
    assert second["state"] == "SUCCEEDED"
    assert second["parent_run_id"] == first["run_id"] and second["root_run_id"] == parent["run_id"]
    tree = proj.ok("runs", "tree", second["run_id"])
    assert tree["root_run_id"] == parent["run_id"]
    assert [r["run_id"] for r in tree["runs"]] == [parent["run_id"], first["run_id"], second["run_id"]]
    human = proj.cli("runs", "tree", parent["run_id"], json_output=False).stdout
    assert parent["run_id"] in human and "from_failure" in human and "└─" in human
    lineage = proj.ok("runs", "list", "--root", parent["run_id"])["runs"]
    assert len(lineage) == 3


def test_from_failure_refused_on_succeeded_or_running_parent(proj: Daemon):
    ok = proj.cli("run", "--select", "a", "--wait").json
    err = proj.refused("rerun", ok["run_id"], "--from-failure", code="invalid_transition")
    assert "SUCCEEDED" in err["message"]
    (proj.project / "sleep" / "a").write_text("30")
    running = proj.ok("run", "--select", "a")
    err = proj.refused("rerun", running["run_id"], "--from-failure", code="invalid_transition")
    assert running["run_id"] in err["message"] or "QUEUED" in err["message"] or "RUNNING" in err["message"]
    proj.refused("rerun", running["run_id"], "--all", code="invalid_transition")
    proj.ok("cancel", running["run_id"])


def test_subset_rerun_stays_inside_the_parent_plan(proj: Daemon):
    parent = proj.cli("run", "--select", "a", "--downstream=1", "--wait").json  # plan {a, b}
    assert sorted(t["asset"] for t in parent["tasks"]) == ["a", "b"]
    sub = proj.cli("rerun", parent["run_id"], "--select", "a", "--downstream", "--wait").json
    assert sorted(t["asset"] for t in sub["tasks"]) == ["a", "b"]  # c is downstream, but not in the plan
    assert sub["rerun_kind"] == "subset" and proj.counter("c") == []
    err = proj.refused("rerun", parent["run_id"], "--select", "c or zz", code="unknown_assets")
    assert err["details"]["keys"] == ["c", "zz"] and "not in the plan" in err["message"]
    only_b = proj.ok("rerun", parent["run_id"], "--select", "b")
    assert [t["asset"] for t in only_b["tasks"]] == ["b"]


def test_rerun_all_and_explicit_run_key_conflict(proj: Daemon):
    parent = proj.cli("run", "--select", "a+", "--wait").json
    everything = proj.ok("rerun", parent["run_id"], "--all", "--run-key", "again")
    assert sorted(t["asset"] for t in everything["tasks"]) == ["a", "b", "c"]
    assert everything["run_key"] == "again"
    err = proj.refused("rerun", parent["run_id"], "--select", "a", "--run-key", "again", code="run_key_conflict")
    assert err["details"]["existing_run_id"] == everything["run_id"]


def test_only_failed_partitions_are_rerun(proj: Daemon):
    for day in ("2024-01-03", "2024-01-07"):
        (proj.project / "fail" / f"p__{day}").touch()
    parent = proj.cli("run", "--select", "p+", "--partitions", "2024-01-01..2024-01-10", "--wait").json
    assert parent["state"] == "FAILED" and len(parent["tasks"]) == 20
    failed = sorted(t["partition"] for t in parent["tasks"] if t["asset"] == "p" and t["state"] == "FAILED")
    assert failed == ["2024-01-03", "2024-01-07"]
    for day in ("2024-01-03", "2024-01-07"):
        (proj.project / "fail" / f"p__{day}").unlink()
    rerun = proj.cli("rerun", parent["run_id"], "--from-failure", "--wait").json
    assert rerun["state"] == "SUCCEEDED"
    assert sorted((t["asset"], t["partition"]) for t in rerun["tasks"]) == [
        ("p", "2024-01-03"), ("p", "2024-01-07"), ("q", "2024-01-03"), ("q", "2024-01-07")]
    assert len(proj.counter("p__2024-01-01")) == 1 and len(proj.counter("p__2024-01-03")) == 2
