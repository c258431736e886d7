"""Faults on purpose against the real daemon, one at a time: what each must lead to.

Crash with a process whose pid was never recorded, SIGTERM with a task that finishes within
the grace period and one that does not, injected errors that must be retried rather than
leave work stuck, delays, and the failpoint configuration itself (status, refusal of typos).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.e2e.harness import DUPLICATE_EVERY_DELIVERY, Daemon, duplicate_mode
from tests.faults.workload import make_project

pytestmark = pytest.mark.e2e


def project(tmp_path: Path, settings: str = "", term_grace_s: float = 2.0) -> Path:
    return make_project(tmp_path / "proj", term_grace_s=term_grace_s, settings=settings)


def query(d: Daemon, sql: str, params: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(f"file:{d.project / '.arcod' / 'arcod.db'}?mode=ro", uri=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def processes_of(run_id: str, attempt: int) -> list[int]:
    """Live processes started with this attempt's ARCOD_* variables."""
    found = []
    want = [f"ARCOD_RUN_ID={run_id}".encode(), f"ARCOD_ATTEMPT={attempt}".encode()]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if all(w in env for w in want) and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def poll(what: str, predicate, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_attempt(d: Daemon, run_id: str, attempt: int, state: str) -> None:
    poll(f"attempt {attempt} {state}", lambda: query(
        d, "SELECT 1 FROM attempts WHERE run_id = ? AND attempt = ? AND state = ?", (run_id, attempt, state)))


def test_a_process_started_before_its_pid_was_recorded_is_stopped_on_restart(tmp_path, daemons):
    root = project(tmp_path)
    (root / "hold" / "slow").touch()
    d = daemons(root, env={"ARCOD_FAILPOINTS": "executor.after_spawn=1*crash"})
    r = d.cli("run", "--select", "slow", "--run-key", "k")
    if r.code == 3:  # the crash beat the answer; the key makes asking again safe
        d.proc.wait(20)
        d.env = {}
        d.start()
        r = d.cli("run", "--select", "slow", "--run-key", "k")
    run_id = r.json["run_id"]
    assert d.proc.wait(20) == -signal.SIGKILL
    poll("the orphan to run", lambda: processes_of(run_id, 1))
    assert query(d, "SELECT pid, state FROM attempts WHERE run_id = ?", (run_id,)) == [(None, "SCHEDULED")]
    d.env = {}
    d.start()
    poll("the orphan to be stopped", lambda: not processes_of(run_id, 1), timeout=10)
    assert query(d, "SELECT attempt, state, reason FROM attempts WHERE run_id = ? AND attempt = 1", (run_id,)) == [
        (1, "FAILED", "daemon_restart")]
    wait_attempt(d, run_id, 2, "RUNNING")
    (root / "hold" / "slow").unlink()
    assert d.wait_run(run_id)["state"] == "SUCCEEDED"
    assert [line.split()[1] for line in d.counter("slow")] == ["1", "2"]
    assert [line.split()[1] for line in (root / "ends" / "slow").read_text().splitlines()] == ["2"]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_sigterm_drains_running_tasks_starts_nothing_new_and_exits_0(tmp_path, daemons, backend):
    root = project(tmp_path, term_grace_s=10.0)
    (root / "sleep" / "slow").write_text("1.5")
    d = daemons(root, backend=backend)
    run_id = d.ok("run", "--select", "slow+")["run_id"]
    wait_attempt(d, run_id, 1, "RUNNING")
    started = time.monotonic()
    d.proc.send_signal(signal.SIGTERM)
    # Draining: no new connections while the running task is given its time.
    poll("the socket to refuse", lambda: d.cli("status").code == 3, timeout=5)
    assert d.proc.poll() is None
    assert d.proc.wait(30) == 0
    assert time.monotonic() - started < 8  # the task's 1.5 s, not the 10 s grace
    assert query(d, "SELECT task_id, state FROM tasks WHERE run_id = ? ORDER BY task_id", (run_id,)) == [
        ("after_slow", "PENDING"), ("slow", "SUCCEEDED")]
    assert d.counter("after_slow") == []  # finished during the drain; its successor waits for the restart
    d.start()
    assert d.wait_run(run_id)["state"] == "SUCCEEDED"
    assert len(d.counter("slow")) == 1 and len(d.counter("after_slow")) == 1


def test_sigterm_stops_what_outlives_the_grace_period(tmp_path, daemons):
    root = project(tmp_path, term_grace_s=0.5)
    (root / "hold" / "slow").touch()
    d = daemons(root)
    run_id = d.ok("run", "--select", "slow")["run_id"]
    wait_attempt(d, run_id, 1, "RUNNING")
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert processes_of(run_id, 1) == []
    d.start()
    assert query(d, "SELECT state, reason FROM attempts WHERE run_id = ? AND attempt = 1", (run_id,)) == [
        ("FAILED", "daemon_restart")]
    wait_attempt(d, run_id, 2, "RUNNING")
    (root / "hold" / "slow").unlink()
    assert d.wait_run(run_id)["state"] == "SUCCEEDED"


def test_injected_errors_are_retried_instead_of_leaving_work_stuck(tmp_path, daemons):
    # The dispatcher's 2nd and 3rd applications fail (the first is its start-up pass), the
    # history indexer's first: each message stays in the outbox and is applied a second later.
    fp = "actor.dispatcher.before_persist=1*off->2*error;actor.history.before_persist=1*error"
    d = daemons(project(tmp_path), env={"ARCOD_FAILPOINTS": fp})
    run_id = d.ok("run", "--select", "a+")["run_id"]
    assert d.wait_run(run_id, timeout=30)["state"] == "SUCCEEDED"
    active = d.ok("status")["failpoints"]["active"]
    assert active["actor.dispatcher.before_persist"]["fired"] == 2
    assert active["actor.history.before_persist"]["fired"] == 1
    assert query(d, "SELECT COUNT(*) FROM outbox") == [(0,)] or poll(
        "the outbox to empty", lambda: query(d, "SELECT COUNT(*) FROM outbox") == [(0,)])
    assert len(d.counter("a")) == len(d.counter("b")) == len(d.counter("c")) == 1


def test_an_executor_failure_around_a_process_fails_the_attempt_instead_of_hanging(tmp_path, daemons):
    # Recording the pid fails once: the process is stopped and the attempt reported failed,
    # so the retry policy (flaky: max 1) takes over instead of the attempt staying RUNNING.
    d = daemons(project(tmp_path), env={"ARCOD_FAILPOINTS": "executor.after_spawn=1*error"})
    run_id = d.ok("run", "--select", "flaky")["run_id"]
    done = d.wait_run(run_id, timeout=30)
    assert done["state"] == "SUCCEEDED"
    assert [(a["attempt"], a["state"], a["reason"].split(":")[0]) for a in done["attempts"]] == [
        (1, "FAILED", "executor error"), (2, "SUCCEEDED", "exit status 0")]


def test_an_error_around_the_answer_is_an_internal_error_and_the_command_is_durable(tmp_path, daemons):
    d = daemons(project(tmp_path), env={"ARCOD_FAILPOINTS": "control.before_answer=1*off->1*error"})
    err = d.refused("run", "--select", "a", "--run-key", "once", code="internal")
    assert "may have been applied" in err["message"]
    again = d.ok("run", "--select", "a", "--run-key", "once")
    assert again["created"] is False  # the first request was applied; asking again is safe


def test_failpoints_from_config_and_env_show_in_status_and_delay_stalls(tmp_path, daemons):
    root = project(tmp_path, 'failpoints = "actor.history.after_emit=off;actor.planner.before_persist=off"\n'
                             'failpoints_seed = "from-config"\n')
    d = daemons(root, env={"ARCOD_FAILPOINTS": "actor.planner.before_persist=1*delay(600)"})
    t = time.monotonic()
    d.ok("run", "--select", "a")
    assert time.monotonic() - t >= 0.6
    fp = d.ok("status")["failpoints"]
    assert fp["seed"] == "from-config"
    planner = fp["active"]["actor.planner.before_persist"]
    assert (planner["actions"], planner["fired"]) == ("1*delay(600)", 1)
    assert planner["hits"] == (2 if duplicate_mode() else 1)  # a duplicate passes the point too
    assert fp["active"]["actor.history.after_emit"]["actions"] == "off"
    assert "executor.after_spawn" in fp["points"] and "actor.backfill.deliver" in fp["points"]


def test_a_failpoint_typo_stops_the_daemon_from_starting(tmp_path):
    d = Daemon(project(tmp_path), env={"ARCOD_FAILPOINTS": "actor.planer.before_persist=crash"})
    with pytest.raises(RuntimeError, match="daemon exited with 1") as info:
        d.start()
    assert "applies to no failpoint of this daemon" in str(info.value)
    d.env = {"ARCOD_FAILPOINTS": "actor.planner.before_persist=sometimes"}
    with pytest.raises(RuntimeError, match="unknown action 'sometimes'"):
        d.start()


def test_status_without_failpoints_lists_none(tmp_path, daemons):
    d = daemons(project(tmp_path))
    expected = {DUPLICATE_EVERY_DELIVERY.split("=")[0]} if duplicate_mode() else set()
    assert set(d.ok("status")["failpoints"]["active"]) == expected
