"""Partitions through the real daemon: runs over one partition and a range carry the key and
window bounds, `partitions list` follows history (successes, failures, a task in progress, a
cancel), and dynamic keys added over the socket are usable at once and survive a restart."""

from __future__ import annotations

import ast
import time

import pytest

from tests.e2e.harness import Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

PARTITIONS = """
[partitions.daily]
kind = "daily"
start = "2024-01-01"
end = "2025-01-01"

[partitions.berlin]
kind = "daily"
start = "2024-01-01"
timezone = "Europe/Berlin"

[partitions.customers]
kind = "dynamic"
"""
ASSETS = (asset_toml("p", partitions="daily") + asset_toml("b", partitions="berlin")
          + asset_toml("c", partitions="customers") + asset_toml("u"))


@pytest.fixture
def proj(tmp_path, daemons, request) -> Daemon:
    backend = getattr(request, "param", "asyncio")
    return daemons(write_project(tmp_path / "proj", ASSETS, partitions=PARTITIONS), backend=backend)


def task_env(d: Daemon, run_id: str) -> dict[str, str]:
    """The ARCOD_* variables the job printed (COUNTING_JOB prints them as a dict)."""
    logs = d.ok("logs", run_id)
    line = next(line for a in logs["attempts"] for line in a["text"].splitlines() if line.startswith("env "))
    return ast.literal_eval(line[len("env "):])


def listing(d: Daemon, asset: str, *args: str) -> dict:
    return d.ok("partitions", "list", asset, *args)


def states(result: dict) -> dict[str, str]:
    return {p["key"]: p["state"] for p in result["partitions"]}


def wait_state(d: Daemon, asset: str, key: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in listing(d, asset, "--state", state)["partitions"]:
            if entry["key"] == key:
                return entry
        time.sleep(0.05)
    raise AssertionError(f"{asset}[{key}] never became {state}: {listing(d, asset)}")


def test_runs_carry_the_window_and_status_follows_history(proj: Daemon):
    # One partition: the task's environment has the key and the window, in the zone's offset.
    one = proj.cli("run", "--select", "p", "--partition", "2024-01-05", "--wait").json
    assert one["state"] == "SUCCEEDED" and [t["partition"] for t in one["tasks"]] == ["2024-01-05"]
    env = task_env(proj, one["run_id"])
    assert env["ARCOD_PARTITION_KEY"] == "2024-01-05"
    assert env["ARCOD_PARTITION_START"] == "2024-01-05T00:00:00+00:00"
    assert env["ARCOD_PARTITION_END"] == "2024-01-06T00:00:00+00:00"
    berlin = proj.cli("run", "--select", "b", "--partition", "2024-03-31", "--wait").json  # 23-hour DST day
    env = task_env(proj, berlin["run_id"])
    assert (env["ARCOD_PARTITION_START"], env["ARCOD_PARTITION_END"]) == (
        "2024-03-31T00:00:00+01:00", "2024-04-01T00:00:00+02:00")

    # A range: one task per partition; one of them fails (after its retries: none here).
    (proj.project / "fail" / "p__2024-01-03").touch()
    rng = proj.cli("run", "--select", "p", "--partitions", "2024-01-01..2024-01-04", "--wait")
    assert rng.code == 1
    assert sorted(t["partition"] for t in rng.json["tasks"]) == ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]
    got = listing(proj, "p")
    assert got["partitions_total"] == 366 and got["definition"] == "daily" and len(got["health"]) == 60
    assert got["counts"] == {"MATERIALIZED": 4, "FAILED": 1, "IN_PROGRESS": 0, "MISSING": 361}
    assert got["health"][0] == "FAILED" and set(got["health"][1:]) == {"MISSING"}
    assert list(states(got).items())[:6] == [
        ("2024-01-01", "MATERIALIZED"), ("2024-01-02", "MATERIALIZED"), ("2024-01-03", "FAILED"),
        ("2024-01-04", "MATERIALIZED"), ("2024-01-05", "MATERIALIZED"), ("2024-01-06", "MISSING")]

    # A failed retry never hides a good materialisation: last materialisation and last attempt apart.
    (proj.project / "fail" / "p__2024-01-03").unlink()
    (proj.project / "fail" / "p__2024-01-02").touch()
    first = next(p for p in got["partitions"] if p["key"] == "2024-01-02")
    again = proj.cli("run", "--select", "p", "--partitions", "2024-01-02,2024-01-03", "--wait").json
    got = listing(proj, "p", "--state", "FAILED")
    assert [p["key"] for p in got["partitions"]] == ["2024-01-02"]
    failed = got["partitions"][0]
    assert failed["last_attempt_state"] == "FAILED" and failed["last_attempt_run"] == again["run_id"]
    assert failed["last_materialized_run"] == first["last_materialized_run"] == rng.json["run_id"]
    assert failed["last_materialized_at"] == first["last_materialized_at"]
    assert listing(proj, "p")["counts"] == {"MATERIALIZED": 4, "FAILED": 1, "IN_PROGRESS": 0, "MISSING": 361}

    # MISSING pages walk definition order without listing the materialised ones.
    missing = listing(proj, "p", "--state", "missing", "--limit", "3")
    assert [p["key"] for p in missing["partitions"]] == ["2024-01-06", "2024-01-07", "2024-01-08"]
    assert missing["matching"] == 361 and missing["next_offset"] == 3
    tail = listing(proj, "p", "--state", "MISSING", "--offset", "359")
    assert [p["key"] for p in tail["partitions"]] == ["2024-12-30", "2024-12-31"] and tail["next_offset"] is None

    # In progress while its task runs; a cancel leaves it as history says (never materialised: MISSING).
    (proj.project / "sleep" / "p").write_text("30")
    slow = proj.ok("run", "--select", "p", "--partition", "2024-02-01")
    wait_state(proj, "p", "2024-02-01", "IN_PROGRESS")
    assert listing(proj, "p")["counts"]["IN_PROGRESS"] == 1
    proj.ok("cancel", slow["run_id"])
    assert proj.wait_run(slow["run_id"])["state"] == "CANCELED"
    entry = wait_state(proj, "p", "2024-02-01", "MISSING")
    assert entry["last_attempt_state"] == "CANCELED" and entry["last_materialized_at"] is None

    # The human form: counts line, a one-line health bar, an aligned table.
    human = proj.cli("partitions", "list", "p", "--limit", "3", json_output=False)
    assert human.code == 0
    lines = human.stdout.splitlines()
    assert lines[1].startswith("materialized 4   failed 1   in progress 0   missing 361")
    assert lines[2] == "[F" + "." * 59 + "]"
    assert lines[5].split()[:2] == ["PARTITION", "STATE"] and lines[6].split()[:2] == ["2024-01-01", "MATERIALIZED"]


def test_list_refusals_and_unpartitioned_assets(proj: Daemon):
    assert listing(proj, "u")["partitions"][0] == {
        "key": None, "state": "MISSING", "last_materialized_at": None, "last_materialized_run": None,
        "last_attempt_state": None, "last_attempt_at": None, "last_attempt_run": None}
    run = proj.cli("run", "--select", "u", "--wait").json
    got = listing(proj, "u")
    assert got["definition"] is None and got["partitions_total"] == 1
    assert got["counts"]["MATERIALIZED"] == 1 and got["partitions"][0]["last_materialized_run"] == run["run_id"]
    assert proj.refused("partitions", "list", "nope", code="unknown_assets")
    assert proj.cli("partitions", "list", "p", "--state", "weird").code == 2
    # Open-ended definitions are counted as of now, and say so.
    berlin = listing(proj, "b")
    assert berlin["as_of"] is not None and berlin["partitions_total"] > 300
    # Partitioned assets of different definitions in one run: refused, naming both.
    err = proj.refused("run", "--select", "p or b", "--partition", "2024-01-01", code="mixed_partitions")
    assert "daily: p" in err["message"] and "berlin: b" in err["message"]


@pytest.mark.parametrize("proj", ["trio"], indirect=True)  # the write path on the thread-confined store
def test_dynamic_keys_are_usable_at_once_and_survive_a_restart(proj: Daemon):
    added = proj.ok("partitions", "add", "customers", "acme", "globex")
    assert added["added"] == ["acme", "globex"] and added["keys_total"] == 2
    assert proj.cli("run", "--select", "c", "--partition", "globex", "--wait").json["state"] == "SUCCEEDED"
    again = proj.ok("partitions", "add", "customers", "zeta", "acme", "alpha")
    assert again["added"] == ["zeta", "alpha"] and again["unchanged"] == ["acme"]
    assert [p["key"] for p in listing(proj, "c")["partitions"]] == ["acme", "globex", "zeta", "alpha"]

    err = proj.refused("partitions", "add", "customers", "ok", "bad,key", code="partition_error")
    assert "bad,key" in err["message"]
    err = proj.refused("partitions", "add", "daily", "x", code="partition_error")
    assert "'daily' is daily, not dynamic" in err["message"]
    proj.refused("partitions", "remove", "nosuch", "x", code="not_found")

    # A key with a running task cannot be removed; once the run is over it can.
    (proj.project / "sleep" / "c").write_text("30")
    slow = proj.ok("run", "--select", "c", "--partition", "acme")
    err = proj.refused("partitions", "remove", "customers", "acme", code="partition_error")
    assert slow["run_id"] in err["message"] and err["details"]["keys"] == ["acme"]
    proj.ok("cancel", slow["run_id"])
    assert proj.wait_run(slow["run_id"])["state"] == "CANCELED"
    removed = proj.ok("partitions", "remove", "customers", "acme", "nope")
    assert removed["removed"] == ["acme"] and removed["unchanged"] == ["nope"]
    proj.refused("run", "--select", "c", "--partition", "acme", code="partition_error")
    (proj.project / "sleep" / "c").unlink()

    proj.stop()
    proj.start()
    got = listing(proj, "c")
    assert [p["key"] for p in got["partitions"]] == ["globex", "zeta", "alpha"]
    assert states(got)["globex"] == "MATERIALIZED"
    assert proj.cli("run", "--select", "c", "--partition", "alpha", "--wait").json["state"] == "SUCCEEDED"
    proj.ok("partitions", "add", "customers", "acme")  # re-added: at the end, insertion order
    assert [p["key"] for p in listing(proj, "c")["partitions"]] == ["globex", "zeta", "alpha", "acme"]
