"""Runs through the real daemon: exact selections, failure semantics, retries, run keys,
cancel, logs, and two runs never materialising one (asset, partition) at once."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

CHAIN = asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("c", deps=["b"])
RUN_FIELDS = {"run_id", "run_key", "state", "parent_run_id", "root_run_id", "rerun_kind", "backfill_id",
              "fingerprint", "created", "tasks"}


@pytest.fixture(params=["asyncio", "trio"])
def chain(request, tmp_path, daemons) -> Daemon:
    extra = asset_toml("flaky", extra="retries = { max = 2, delay_s = 0.3, backoff = 2.0 }")
    extra += asset_toml("slow", command='"sleep 300 & sleep 300"')  # a shell string that forks
    return daemons(write_project(tmp_path / "proj", CHAIN + extra), backend=request.param)


def run(d: Daemon, *args: str) -> dict:
    return d.ok("run", *args)


def test_selecting_a_runs_exactly_a(chain: Daemon):
    r = run(chain, "--select", "a")
    assert RUN_FIELDS <= set(r) and r["created"] is True
    assert [t["asset"] for t in r["tasks"]] == ["a"]
    assert {"asset", "partition", "state", "attempts"} <= set(r["tasks"][0])
    done = chain.wait_run(r["run_id"])
    assert done["state"] == "SUCCEEDED"
    assert len(chain.counter("a")) == 1
    assert chain.counter("b") == [] and chain.counter("c") == []


def test_downstream_runs_all_three_in_order(chain: Daemon):
    r = run(chain, "--select", "a", "--downstream")
    done = chain.wait_run(r["run_id"])
    assert done["state"] == "SUCCEEDED"
    times = [float(chain.counter(k)[0].split()[2]) for k in ("a", "b", "c")]
    assert times == sorted(times)
    assert [t["asset"] for t in done["tasks"]] == ["a", "b", "c"]


def test_failing_b_skips_c_and_fails_the_run(chain: Daemon):
    (chain.project / "fail" / "b").touch()
    r = chain.cli("run", "--select", "a+", "--wait")
    assert r.code == 1  # --wait: the run ended other than SUCCEEDED, its JSON still printed
    done = r.json
    states = {t["asset"]: t for t in done["tasks"]}
    assert done["state"] == "FAILED"
    assert states["a"]["state"] == "SUCCEEDED" and states["b"]["state"] == "FAILED"
    assert states["c"]["state"] == "SKIPPED" and states["c"]["skipped_because"] == "b"
    assert chain.counter("c") == []


def test_retries_follow_the_policy_and_every_attempt_is_recorded(chain: Daemon):
    (chain.project / "fail" / "flaky").touch()
    r = run(chain, "--select", "flaky")
    done = chain.wait_run(r["run_id"])
    assert done["state"] == "FAILED" and done["tasks"][0]["attempts"] == 3
    attempts = [a for a in done["attempts"] if a["task_id"] == "flaky"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3]
    assert all(a["state"] == "FAILED" and a["exit_code"] == 3 for a in attempts)
    starts = [float(line.split()[2]) for line in chain.counter("flaky")]
    assert len(starts) == 3
    assert starts[1] - starts[0] >= 0.3 and starts[2] - starts[1] >= 0.6  # delay, then delay * backoff
    logs = chain.ok("logs", r["run_id"])
    assert [a["attempt"] for a in logs["attempts"]] == [1, 2, 3]
    assert all("failing on purpose" in a["text"] for a in logs["attempts"])
    assert all(f"'ARCOD_ATTEMPT': '{a['attempt']}'" in a["text"] for a in logs["attempts"])


def test_run_key_semantics(chain: Daemon):
    first = run(chain, "--select", "a", "--run-key", "nightly")
    assert first["created"] and first["run_key"] == "nightly"
    chain.wait_run(first["run_id"])
    again = run(chain, "--select", "a", "--run-key", "nightly")
    assert again["created"] is False and again["run_id"] == first["run_id"] and again["state"] == "SUCCEEDED"
    time.sleep(0.3)
    assert len(chain.counter("a")) == 1  # nothing new executed
    err = chain.refused("run", "--select", "b", "--run-key", "nightly", code="run_key_conflict")
    d = err["details"]
    assert d["existing_run_id"] == first["run_id"]
    assert d["existing_fingerprint"] == first["fingerprint"] and d["requested_fingerprint"] != first["fingerprint"]
    # A refused request never reserves its key.
    chain.refused("run", "--select", "nope", "--run-key", "fresh", code="unknown_assets")
    assert run(chain, "--select", "b", "--run-key", "fresh")["created"] is True


def test_two_concurrent_identical_keyed_requests_create_one_run(chain: Daemon):
    results: list = [None] * 6

    def request(i: int) -> None:
        results[i] = chain.ok("run", "--select", "c", "--run-key", "concurrent")

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r["run_id"] for r in results}) == 1
    assert sum(r["created"] for r in results) == 1
    chain.wait_run(results[0]["run_id"])
    assert len(chain.counter("c")) == 1
    assert len(chain.ok("runs", "list")["runs"]) == 1


def _processes_of_run(run_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if f"ARCOD_RUN_ID={run_id}".encode() in environ.split(b"\0") and ") Z " not in stat:
            pids.append(int(entry.name))
    return pids


def test_cancel_stops_the_process_group_and_leaves_no_orphan(chain: Daemon):
    r = run(chain, "--select", "slow")
    deadline = time.monotonic() + 20
    while len(_processes_of_run(r["run_id"])) < 3:  # sh, and its two sleeps
        assert time.monotonic() < deadline, "task processes did not start"
        time.sleep(0.05)
    result = chain.ok("cancel", r["run_id"])
    assert result["changed"] and result["state"] == "CANCELING"
    done = chain.wait_run(r["run_id"], timeout=30)
    assert done["state"] == "CANCELED" and done["tasks"][0]["state"] == "CANCELED"
    assert _processes_of_run(r["run_id"]) == []
    again = chain.ok("cancel", r["run_id"])
    assert again["changed"] is False and again["state"] == "CANCELED"


def test_cancel_of_a_finished_run_is_refused(chain: Daemon):
    r = run(chain, "--select", "a")
    chain.wait_run(r["run_id"])
    chain.refused("cancel", r["run_id"], code="invalid_transition")
    chain.refused("cancel", "r-nope", code="not_found")


def test_two_runs_never_materialise_one_asset_at_once(chain: Daemon):
    (chain.project / "sleep" / "a").write_text("3")
    first = run(chain, "--select", "a")
    deadline = time.monotonic() + 10
    while not chain.counter("a"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    second = run(chain, "--select", "a")
    deadline = time.monotonic() + 10
    while not (shown := chain.ok("runs", "show", second["run_id"]))["tasks"][0]["waiting_for"]:
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)
    assert shown["tasks"][0]["state"] == "PENDING"
    assert shown["tasks"][0]["waiting_for"] == first["run_id"]
    assert chain.ok("runs", "show", first["run_id"])["state"] == "RUNNING"
    human = chain.cli("runs", "show", second["run_id"], json_output=False).stdout
    assert f"waits for run {first['run_id']}" in human
    chain.wait_run(second["run_id"])
    lines = chain.counter("a")
    start1, start2 = float(lines[0].split()[2]), float(lines[1].split()[2])
    assert start2 - start1 >= 3  # the second started only after the first finished


def test_runs_list_filters_and_wait_succeeds(chain: Daemon):
    ok = chain.cli("run", "--select", "a", "--wait")
    assert ok.code == 0 and ok.json["state"] == "SUCCEEDED"
    (chain.project / "fail" / "b").touch()
    bad = chain.cli("run", "--select", "b", "--wait")
    assert bad.code == 1 and bad.json["state"] == "FAILED"
    listed = chain.ok("runs", "list", "--state", "failed")["runs"]
    assert [r["run_id"] for r in listed] == [bad.json["run_id"]]
    assert len(chain.ok("runs", "list")["runs"]) == 2


def test_backfill_chunk_keys_are_reserved(chain: Daemon):
    err = chain.refused("run", "--select", "a", "--run-key", "backfill:bf-x:chunk:0", code="bad_request")
    assert "reserved" in err["message"]


def test_a_keyed_request_stays_idempotent_when_its_partition_set_grows(tmp_path, daemons):
    """The fingerprint covers the partition selection as requested (`all`), not as pinned, so
    repeating the request after a new key appeared returns the run it made."""
    dyn = '[partitions.customers]\nkind = "dynamic"\n'
    d = daemons(write_project(tmp_path / "dyn", asset_toml("c", partitions="customers"), partitions=dyn))
    d.ok("partitions", "add", "customers", "acme", "globex")
    first = d.ok("run", "--select", "c", "--partitions", "all", "--run-key", "all-customers")
    assert sorted(t["partition"] for t in first["tasks"]) == ["acme", "globex"]
    d.ok("partitions", "add", "customers", "initech")
    again = d.ok("run", "--select", "c", "--partitions", "all", "--run-key", "all-customers")
    assert again["created"] is False and again["run_id"] == first["run_id"]
    d.wait_run(first["run_id"])
