"""run_attempt against real subprocesses: statuses, environment, containment, output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest

from arcod.executor import AttemptOutcome, kill_process_group, run_attempt
from arcod.executor.process import task_argv, task_environment
from tests.executor.conftest import (
    is_running,
    live_group_members,
    read_pid_file,
    wait_for_pid_file,
)

pytestmark = pytest.mark.anyio

GRACE_S = 0.3
# A shell that puts a long-lived child in the background, records its pid, and waits.
FORK_AND_WAIT = "sleep 30 & echo $! > child.pid; wait"


def assert_contained(outcome: AttemptOutcome, child_pid: int | None = None) -> None:
    assert outcome.pid is not None
    assert live_group_members(outcome.pid) == []
    if child_pid is not None:
        assert not is_running(child_pid)


# -- statuses -------------------------------------------------------------------------------


async def test_exit_zero_succeeds_and_reports_pid(make_spec) -> None:
    seen: list[tuple[int, int]] = []

    def on_started(pid: int) -> None:
        seen.append((pid, os.getpgid(pid)))

    spec = make_spec(command=["sleep", "0.2"])  # alive while on_started looks at it
    outcome = await run_attempt(spec, on_started=on_started)
    assert (outcome.status, outcome.exit_code, outcome.reason) == ("succeeded", 0, "exit status 0")
    # The attempt leads its own process group, so its pid is also the group to signal.
    assert seen == [(outcome.pid, outcome.pid)]
    started = datetime.fromisoformat(outcome.started_at)
    finished = datetime.fromisoformat(outcome.finished_at)
    assert started.utcoffset() is not None and started.utcoffset().total_seconds() == 0
    assert started <= finished


async def test_async_on_started_is_awaited(make_spec) -> None:
    seen: list[int] = []

    async def on_started(pid: int) -> None:
        await anyio.sleep(0)
        seen.append(pid)

    outcome = await run_attempt(make_spec(command=["true"]), on_started=on_started)
    assert seen == [outcome.pid]


async def test_nonzero_exit_fails_with_its_status(make_spec) -> None:
    spec = make_spec(command="echo out; echo err >&2; exit 3")
    outcome = await run_attempt(spec)
    assert (outcome.status, outcome.exit_code, outcome.reason) == ("failed", 3, "exit status 3")
    log = Path(spec.log_path).read_text()
    assert "out\n" in log and "err\n" in log


async def test_death_by_signal_names_the_signal(make_spec) -> None:
    outcome = await run_attempt(make_spec(command="kill -KILL $$"))
    assert (outcome.status, outcome.exit_code) == ("failed", -signal.SIGKILL)
    assert outcome.reason == "killed by SIGKILL"


async def test_missing_executable_is_a_failed_attempt(make_spec) -> None:
    spec = make_spec(command=["no-such-program-arcod", "x"])
    outcome = await run_attempt(spec)
    assert outcome.status == "failed"
    assert outcome.reason == "command not found: no-such-program-arcod"
    assert (outcome.exit_code, outcome.pid) == (None, None)
    assert "command not found: no-such-program-arcod" in Path(spec.log_path).read_text()


async def test_missing_working_directory_is_a_failed_attempt(make_spec, tmp_path) -> None:
    missing = str(tmp_path / "gone")
    outcome = await run_attempt(make_spec(command=["true"], cwd=missing))
    assert outcome.status == "failed"
    assert outcome.reason.startswith(f"working directory not usable: {missing}")


async def test_log_parents_are_created_and_attempts_append(make_spec, tmp_path) -> None:
    log_path = tmp_path / "deep" / "er" / "a.log"
    spec = make_spec(command="echo one", log_path=str(log_path))
    await run_attempt(spec)
    await run_attempt(make_spec(command="echo two", log_path=str(log_path)))
    assert log_path.read_text() == "one\ntwo\n"


# -- environment ----------------------------------------------------------------------------


def env_dump_command(out: Path) -> list[str]:
    code = (
        "import json, os, sys; "
        "json.dump({k: v for k, v in os.environ.items() if k.startswith(('ARCOD_', 'X_'))}, "
        "open(sys.argv[1], 'w'))"
    )
    return [sys.executable, "-c", code, str(out)]


async def test_partitioned_task_sees_its_context(make_spec, tmp_path) -> None:
    out = tmp_path / "env.json"
    spec = make_spec(
        command=env_dump_command(out),
        run_id="r-42",
        partition="2024-03-01",
        partition_start="2024-03-01T00:00:00+00:00",
        partition_end="2024-03-02T00:00:00+00:00",
        attempt=3,
        extra_env={"X_EXTRA": "yes"},
    )
    assert (await run_attempt(spec)).status == "succeeded"
    assert json.loads(out.read_text()) == {
        "ARCOD_RUN_ID": "r-42",
        "ARCOD_ASSET": "sales/daily",
        "ARCOD_PARTITION_KEY": "2024-03-01",
        "ARCOD_PARTITION_START": "2024-03-01T00:00:00+00:00",
        "ARCOD_PARTITION_END": "2024-03-02T00:00:00+00:00",
        "ARCOD_ATTEMPT": "3",
        "X_EXTRA": "yes",
    }


async def test_unpartitioned_task_has_no_partition_variables(
    make_spec, tmp_path, monkeypatch
) -> None:
    # Even when the daemon itself inherited stale ARCOD_* values.
    monkeypatch.setenv("ARCOD_PARTITION_KEY", "stale")
    monkeypatch.setenv("ARCOD_PARTITION_START", "stale")
    out = tmp_path / "env.json"
    assert (await run_attempt(make_spec(command=env_dump_command(out)))).status == "succeeded"
    assert json.loads(out.read_text()) == {
        "ARCOD_RUN_ID": "run-1",
        "ARCOD_ASSET": "sales/daily",
        "ARCOD_ATTEMPT": "1",
    }


def test_extra_env_cannot_override_the_context(make_spec) -> None:
    spec = make_spec(
        command=["true"],
        partition="eu",
        extra_env={"ARCOD_PARTITION_KEY": "us", "ARCOD_ASSET": "other", "KEEP": "1"},
    )
    env = task_environment(spec, base={"PATH": "/bin"})
    assert env["ARCOD_PARTITION_KEY"] == "eu"
    assert (env["ARCOD_ASSET"], env["KEEP"]) == ("sales/daily", "1")
    assert env["PATH"] == "/bin"


async def test_partition_key_is_never_interpolated_into_a_shell_string(
    make_spec, tmp_path
) -> None:
    key = "x$(touch pwned1);touch pwned2 `touch pwned3` $HOME ' \" |touch pwned4"
    spec = make_spec(command="printf '%s' \"$ARCOD_PARTITION_KEY\" > key.txt", partition=key)
    assert not any(key in arg for arg in task_argv(spec))
    assert (await run_attempt(spec)).status == "succeeded"
    assert (tmp_path / "key.txt").read_text() == key
    assert sorted(p.name for p in tmp_path.glob("pwned*")) == []


# -- timeout, cancellation, containment -----------------------------------------------------


async def test_timeout_stops_the_whole_group_escalating_to_sigkill(make_spec, tmp_path) -> None:
    # The child ignores SIGTERM, so only the SIGKILL after the grace period can stop it.
    command = "(trap '' TERM; exec sleep 30) & echo $! > child.pid; wait"
    spec = make_spec(command=command, timeout_s=0.3)
    began = time.monotonic()
    outcome = await run_attempt(spec, term_grace_s=GRACE_S)
    elapsed = time.monotonic() - began
    assert (outcome.status, outcome.reason) == ("timed_out", "timed out after 0.3s")
    assert 0.3 + GRACE_S <= elapsed < 5
    child = read_pid_file(tmp_path / "child.pid")
    assert child is not None
    assert_contained(outcome, child)
    log = Path(spec.log_path).read_text()
    assert "timed out after 0.3s" in log and "SIGKILL" in log


async def test_timeout_that_obeys_sigterm_does_not_wait_for_the_grace(
    make_spec, tmp_path
) -> None:
    began = time.monotonic()
    outcome = await run_attempt(make_spec(command=FORK_AND_WAIT, timeout_s=0.2), term_grace_s=10.0)
    assert time.monotonic() - began < 5
    assert outcome.status == "timed_out"
    assert outcome.exit_code == -signal.SIGTERM
    child = read_pid_file(tmp_path / "child.pid")
    assert child is not None
    assert_contained(outcome, child)


async def test_cancel_event_returns_canceled_and_leaves_nothing(make_spec, tmp_path) -> None:
    cancel = anyio.Event()
    outcomes: list[AttemptOutcome] = []

    async def run() -> None:
        spec = make_spec(command=FORK_AND_WAIT)
        outcomes.append(await run_attempt(spec, cancel_event=cancel, term_grace_s=GRACE_S))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        child = await wait_for_pid_file(tmp_path / "child.pid")
        assert is_running(child)
        cancel.set()
    [outcome] = outcomes
    assert (outcome.status, outcome.reason) == ("canceled", "canceled")
    assert_contained(outcome, child)


async def test_cancel_event_already_set_starts_nothing(make_spec, tmp_path) -> None:
    cancel = anyio.Event()
    cancel.set()
    outcome = await run_attempt(make_spec(command="touch ran"), cancel_event=cancel)
    assert (outcome.status, outcome.pid, outcome.exit_code) == ("canceled", None, None)
    assert not (tmp_path / "ran").exists()


async def test_outer_cancellation_stops_the_group_and_propagates(make_spec, tmp_path) -> None:
    pids: list[int] = []
    with anyio.move_on_after(0.5) as scope:
        spec = make_spec(command=FORK_AND_WAIT)
        await run_attempt(spec, on_started=pids.append, term_grace_s=GRACE_S)
    assert scope.cancelled_caught
    child = read_pid_file(tmp_path / "child.pid")
    assert child is not None
    [pid] = pids
    assert live_group_members(pid) == []
    assert not is_running(child)


async def test_failing_on_started_hook_stops_the_group(make_spec, tmp_path) -> None:
    pids: list[int] = []

    def on_started(pid: int) -> None:
        pids.append(pid)
        raise RuntimeError("could not persist pid")

    with pytest.raises(RuntimeError, match="could not persist pid"):
        spec = make_spec(command="sleep 30")
        await run_attempt(spec, on_started=on_started, term_grace_s=GRACE_S)
    assert live_group_members(pids[0]) == []


async def test_children_outliving_a_finished_task_are_stopped(make_spec, tmp_path) -> None:
    spec = make_spec(command="sleep 30 & echo $! > child.pid; exit 0")
    outcome = await run_attempt(spec, term_grace_s=GRACE_S)
    assert outcome.status == "succeeded"
    child = read_pid_file(tmp_path / "child.pid")
    assert child is not None
    assert_contained(outcome, child)
    assert "left processes behind" in Path(spec.log_path).read_text()


async def test_flooding_output_completes_and_lands_in_the_log(make_spec) -> None:
    size = 50_000_000
    spec = make_spec(command=f"head -c {size} /dev/zero; echo done >&2", timeout_s=15)
    outcome = await run_attempt(spec)
    assert outcome.status == "succeeded"
    log_path = Path(spec.log_path)
    assert log_path.stat().st_size == size + len("done\n")
    with log_path.open("rb") as f:
        f.seek(size)
        assert f.read() == b"done\n"


# -- spec validation and recovery helper ----------------------------------------------------


def test_spec_needs_exactly_one_way_to_run(make_spec) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        make_spec()
    with pytest.raises(ValueError, match="exactly one"):
        make_spec(command=["true"], python="jobs:build")
    with pytest.raises(ValueError, match="empty"):
        make_spec(command=[])
    with pytest.raises(ValueError, match="timeout_s"):
        make_spec(command=["true"], timeout_s=0)


def test_argv_for_each_kind_of_task(make_spec) -> None:
    assert task_argv(make_spec(command=["a", "b c"])) == ["a", "b c"]
    assert task_argv(make_spec(command="a | b")) == ["/bin/sh", "-c", "a | b"]
    assert task_argv(make_spec(python="jobs.sales:build")) == [
        sys.executable, "-m", "arcod.executor.worker", "jobs.sales:build",
    ]  # fmt: skip


def spawn_stubborn_group(env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A detached group whose leader ignores SIGTERM, like a task left by a dead daemon."""
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; echo ready; sleep 30 & wait"],
        start_new_session=True,
        stdout=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def test_kill_process_group_escalates_and_tolerates_missing_groups() -> None:
    proc = spawn_stubborn_group()
    try:
        kill_process_group(proc.pid, 0.2)
        assert proc.wait(timeout=5) == -signal.SIGKILL
        assert live_group_members(proc.pid) == []
        kill_process_group(proc.pid, 0.2)  # already gone: nothing to do, no error
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_kill_process_group_checks_the_environment_when_asked() -> None:
    proc = spawn_stubborn_group({"ARCOD_RUN_ID": "run-7"})
    try:
        kill_process_group(proc.pid, 0.1, expect_env={"ARCOD_RUN_ID": "run-8"})
        assert proc.poll() is None and live_group_members(proc.pid) != []
        kill_process_group(proc.pid, 0.1, expect_env={"ARCOD_RUN_ID": "run-7"})
        assert proc.wait(timeout=5) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_kill_process_group_refuses_dangerous_groups() -> None:
    for pgid in (0, 1, -5, os.getpgrp()):
        with pytest.raises(ValueError, match="refusing"):
            kill_process_group(pgid, 0.1)
