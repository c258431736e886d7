"""Running one task attempt as a subprocess, and making sure nothing of it outlives the attempt.

Each attempt runs in its own session (``start_new_session=True``), so its process id is also
the id of a process group that holds everything the task forks. Whatever way the attempt ends —
the task exits, its deadline passes, the caller cancels it, the caller's scope is cancelled, or
the caller's ``on_started`` hook fails — the group is emptied before `run_attempt` returns or
raises: SIGTERM to the whole group, up to ``term_grace_s`` for it to go, then SIGKILL. That
includes children that outlived a task which exited normally ("contain the leftovers"): an
attempt that is over has no processes. A task that calls ``setsid`` itself escapes its group;
containing that would take cgroups, which arcod does not use.

Output goes straight to the attempt's log file: the child's stdout and stderr are the file
itself, not pipes, so a task that floods its output can never block on a pipe nobody drains.
arcod appends its own notes to the same file, prefixed ``[arcod]``, when it stops a task or
cannot start one.

The task's context reaches it only through the environment (``ARCOD_*``); a partition key is
never spliced into a command line, so a key such as ``$(rm -rf ~);x`` is inert even for tasks
declared as shell strings.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import anyio
import anyio.abc
import msgspec

# Statuses of an `AttemptOutcome`.
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
CANCELED = "canceled"
# How an attempt can end besides exiting (not a status: it ends FAILED, see `_judge`).
LOG_LIMIT = "log_limit"

# The environment variables through which a task learns what it is materialising.
CONTEXT_ENV_VARS = (
    "ARCOD_RUN_ID",
    "ARCOD_ASSET",
    "ARCOD_PARTITION_KEY",
    "ARCOD_PARTITION_START",
    "ARCOD_PARTITION_END",
    "ARCOD_ATTEMPT",
)

# How often to look whether a process group has emptied, and how long to keep looking after
# SIGKILL (delivery is immediate, disappearance from the process table almost so).
_POLL_S = 0.02
_AFTER_KILL_S = 1.0
_LOG_POLL_S = 0.25  # how often a running task's log size is compared with max_log_bytes


class AttemptSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything needed to start one attempt; exactly one of `command` and `python` is set.

    `command` is an argv list, or a string run by ``/bin/sh -c``. `python` is
    ``"module:function"``, run by `arcod.executor.worker` with `cwd` on its import path.
    """

    run_id: str
    asset: str
    partition: str | None
    attempt: int
    command: list[str] | str | None = None
    python: str | None = None
    cwd: str
    log_path: str
    timeout_s: float | None = None
    partition_start: str | None = None
    partition_end: str | None = None
    extra_env: dict[str, str] = {}

    def __post_init__(self) -> None:
        if (self.command is None) == (self.python is None):
            raise ValueError(
                f"asset {self.asset!r}: an attempt needs exactly one of `command` and `python`"
            )
        if isinstance(self.command, list) and not self.command:
            raise ValueError(f"asset {self.asset!r}: `command` must not be an empty list")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ValueError(
                f"asset {self.asset!r}: timeout_s must be > 0 seconds (got {self.timeout_s!r})"
            )


class AttemptOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """How an attempt ended.

    `exit_code` is the raw status of the task's main process as subprocess reports it: >= 0 for
    an exit, ``-N`` when signal N killed it, None when no process was ever started (then `pid`
    is None too). `status` is what the run's state machine acts on; `reason` is for people.
    """

    status: str
    exit_code: int | None
    reason: str
    pid: int | None
    started_at: str
    finished_at: str


def task_argv(spec: AttemptSpec) -> list[str]:
    """The argv that runs the attempt: the list, ``/bin/sh -c`` for a string, or the worker."""
    if spec.python is not None:
        return [sys.executable, "-m", "arcod.executor.worker", spec.python]
    if isinstance(spec.command, str):
        return ["/bin/sh", "-c", spec.command]
    assert spec.command is not None
    return list(spec.command)


def task_environment(spec: AttemptSpec, base: dict[str, str] | None = None) -> dict[str, str]:
    """The daemon's environment, then `extra_env`, then the ARCOD_* context on top.

    Context variables inherited from the daemon's own environment are dropped first, so an
    unpartitioned task never sees a stale ``ARCOD_PARTITION_KEY``. The context is applied last
    so that `extra_env` cannot make a task lie about which partition it is running.
    """
    env = dict(os.environ if base is None else base)
    for name in CONTEXT_ENV_VARS:
        env.pop(name, None)
    env.update(spec.extra_env)
    env["ARCOD_RUN_ID"] = spec.run_id
    env["ARCOD_ASSET"] = spec.asset
    env["ARCOD_ATTEMPT"] = str(spec.attempt)
    if spec.partition is not None:
        env["ARCOD_PARTITION_KEY"] = spec.partition
    if spec.partition_start is not None:
        env["ARCOD_PARTITION_START"] = spec.partition_start
    if spec.partition_end is not None:
        env["ARCOD_PARTITION_END"] = spec.partition_end
    return env


async def run_attempt(
    spec: AttemptSpec,
    *,
    on_started: Callable[[int], Awaitable[None] | None] | None = None,
    term_grace_s: float = 5.0,
    cancel_event: anyio.Event | None = None,
    max_log_bytes: int | None = None,
) -> AttemptOutcome:
    """Run one attempt to its end and say how it ended.

    Failing to start (missing executable, missing cwd, a log file that cannot be created:
    disk full, directory unwritable, ...) is a "failed" outcome, not an exception.

    `on_started(pid)` is called (and awaited if it returns an awaitable) as soon as the process
    exists, so the caller can persist the pid — which is also the process group id — for crash
    recovery.

    `max_log_bytes` bounds the log: a task whose output grows past it is stopped like a timed
    out one and fails, and the log is cut back to the limit (output goes to the file directly,
    so the size is checked every `_LOG_POLL_S`; what the task writes in between is cut).

    To cancel an attempt and still learn its outcome, set `cancel_event`: the group is stopped
    and a "canceled" outcome is returned normally. If instead the calling scope is cancelled (or
    `on_started` raises), the group is stopped inside a shielded cleanup and the cancellation
    (or error) propagates; no outcome is returned, but no process is left behind either.
    """
    started_at = _now()
    argv = task_argv(spec)
    env = task_environment(spec)
    log_path = Path(spec.log_path)
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a+b", buffering=0)
    except OSError as exc:
        return AttemptOutcome(
            status=FAILED, exit_code=None, pid=None, started_at=started_at, finished_at=_now(),
            reason=f"cannot open the task's log file {log_path}: {exc.strerror or exc}; the task was not started",
        )  # fmt: skip
    with log_file as log:
        if cancel_event is not None and cancel_event.is_set():
            _note(log, "canceled before start")
            return AttemptOutcome(
                status=CANCELED, exit_code=None, reason="canceled", pid=None,
                started_at=started_at, finished_at=_now(),
            )  # fmt: skip
        try:
            # Shielded: a cancellation landing mid-spawn could otherwise leave a process we
            # never got a handle on. Spawning is quick; cancellation is honoured right after.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log.fileno(),
                    stderr=log.fileno(),
                    cwd=spec.cwd,
                    env=env,
                    start_new_session=True,
                )
        except (OSError, ValueError) as exc:
            reason = _start_failure_reason(exc, argv, spec.cwd)
            _note(log, reason)
            return AttemptOutcome(
                status=FAILED, exit_code=None, reason=reason, pid=None,
                started_at=started_at, finished_at=_now(),
            )  # fmt: skip

        pid = process.pid
        ending: str | None = None
        try:
            if on_started is not None:
                result = on_started(pid)
                if inspect.isawaitable(result):
                    await result
            ending = await _wait_for_end(process, spec.timeout_s, cancel_event, log.fileno(), max_log_bytes)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    # Timed out, canceled, or our caller is going away: stop the whole group.
                    if ending == TIMED_OUT:
                        _note(log, f"timed out after {spec.timeout_s}s; stopping the task")
                    elif ending == CANCELED:
                        _note(log, "canceled; stopping the task")
                    await _stop_group(process, pid, term_grace_s, log)
                    if ending == LOG_LIMIT:
                        _cut_log(log, max_log_bytes)
                else:
                    # It exited on its own, possibly racing a deadline or cancel event we had
                    # not acted on yet; then its own exit status is the truth.
                    ending = None
                    if _group_alive(pid):
                        _note(log, "the task exited but left processes behind; stopping them")
                        await _stop_group(process, pid, term_grace_s, log)
                await process.wait()

        exit_code = process.returncode
        status, reason = _judge(ending, exit_code, spec.timeout_s, max_log_bytes)
        return AttemptOutcome(
            status=status, exit_code=exit_code, reason=reason, pid=pid,
            started_at=started_at, finished_at=_now(),
        )  # fmt: skip


def kill_process_group(
    pgid: int, grace_s: float, *, expect_env: Mapping[str, str] | None = None
) -> None:
    """Stop a process group left over by a dead daemon: SIGTERM, up to `grace_s`, SIGKILL.

    Synchronous because it runs during recovery, before the daemon serves anything. A group
    that no longer exists is the normal case after a reboot and is not an error. It refuses
    (ValueError) to signal group 0/1 or the caller's own group, which a corrupt stored pgid
    would otherwise turn into killing the daemon itself or everything.

    A stored pgid can outlive its processes and be reused by an unrelated program. Pass
    `expect_env` (e.g. ``{"ARCOD_RUN_ID": run_id, "ARCOD_ASSET": asset}``) to signal the group
    only if one of its live members was started with those variables; on Linux this reads
    /proc/PID/environ, and a member we cannot read is not taken as ours. Where /proc does not
    exist the check cannot be made and the group is signalled.
    """
    _check_foreign_group(pgid)
    if expect_env is not None and os.path.isdir("/proc"):
        if not any(_started_with_env(pid, expect_env) for pid in _group_members(pgid)):
            return
    if not _signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + max(grace_s, 0.0)
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    if _group_alive(pgid):
        _signal_group(pgid, signal.SIGKILL)
        deadline = time.monotonic() + _AFTER_KILL_S
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(_POLL_S)


async def _wait_for_end(
    process: anyio.abc.Process, timeout_s: float | None, cancel_event: anyio.Event | None,
    log_fd: int | None = None, max_log_bytes: int | None = None,
) -> str | None:
    """Wait for the process to exit, the deadline, the cancel event, or its log to outgrow
    `max_log_bytes`, whichever comes first.

    Returns None when the process exited on its own, else TIMED_OUT, CANCELED or LOG_LIMIT (the
    process is then still running and the caller stops it).
    """
    ending: str | None = None

    async with anyio.create_task_group() as tg:

        async def end_on_cancel_event(event: anyio.Event) -> None:
            nonlocal ending
            await event.wait()
            if ending is None:
                ending = CANCELED
            tg.cancel_scope.cancel()

        async def end_on_deadline(seconds: float) -> None:
            nonlocal ending
            await anyio.sleep(seconds)
            if ending is None:
                ending = TIMED_OUT
            tg.cancel_scope.cancel()

        async def end_on_log_limit(fd: int, limit: int) -> None:
            nonlocal ending
            while os.fstat(fd).st_size <= limit:
                await anyio.sleep(_LOG_POLL_S)
            if ending is None:
                ending = LOG_LIMIT
            tg.cancel_scope.cancel()

        if cancel_event is not None:
            tg.start_soon(end_on_cancel_event, cancel_event)
        if timeout_s is not None:
            tg.start_soon(end_on_deadline, timeout_s)
        if log_fd is not None and max_log_bytes:
            tg.start_soon(end_on_log_limit, log_fd, max_log_bytes)
        await process.wait()
        tg.cancel_scope.cancel()
    return ending


async def _stop_group(
    process: anyio.abc.Process, pgid: int, grace_s: float, log: IO[bytes]
) -> None:
    """SIGTERM the group, give it `grace_s` to empty, SIGKILL whatever is left. Must be shielded.

    The main process is reaped through `process.wait()`; the rest of the group (re-parented
    away from us) can only be watched for, which `_group_alive` does.
    """
    _signal_group(pgid, signal.SIGTERM)
    with anyio.move_on_after(max(grace_s, 0.0)):
        await process.wait()
        while _group_alive(pgid):
            await anyio.sleep(_POLL_S)
    if process.returncode is None or _group_alive(pgid):
        _note(log, f"still running {grace_s}s after SIGTERM; sending SIGKILL")
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()
        with anyio.move_on_after(_AFTER_KILL_S):
            while _group_alive(pgid):
                await anyio.sleep(_POLL_S)


def _judge(ending: str | None, exit_code: int | None, timeout_s: float | None,
           max_log_bytes: int | None = None) -> tuple[str, str]:
    if ending == CANCELED:
        return CANCELED, "canceled"
    if ending == LOG_LIMIT:
        return FAILED, f"output passed the {max_log_bytes}-byte log limit (max_log_bytes); stopped"
    if ending == TIMED_OUT:
        return TIMED_OUT, f"timed out after {timeout_s}s"
    assert exit_code is not None
    if exit_code == 0:
        return SUCCEEDED, "exit status 0"
    if exit_code > 0:
        return FAILED, f"exit status {exit_code}"
    return FAILED, f"killed by {_signal_name(-exit_code)}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _start_failure_reason(exc: OSError | ValueError, argv: list[str], cwd: str) -> str:
    # subprocess reports a failed chdir as FileNotFoundError/NotADirectoryError naming the
    # directory, and a failed exec as an error naming the program; tell the two apart.
    if isinstance(exc, OSError) and exc.filename is not None and os.fsdecode(exc.filename) == cwd:
        return f"working directory not usable: {cwd} ({exc.strerror})"
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {argv[0]}"
    if isinstance(exc, PermissionError):
        return f"command not executable: {argv[0]} (permission denied)"
    return f"could not start {argv[0]}: {exc}"


def _check_foreign_group(pgid: int) -> None:
    if pgid <= 1:
        raise ValueError(f"refusing to signal process group {pgid}: not a task's group")
    if pgid == os.getpgrp():
        raise ValueError(f"refusing to signal process group {pgid}: it is arcod's own group")


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # A member we may not signal (e.g. a setuid child); nothing more we can do for it.
        return True
    return True


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in group `pgid`.

    Zombies do not count: a re-parented child that died is waiting for its new parent (often
    PID 1) to reap it, and may never be if PID 1 does not reap; it runs nothing. On systems
    without /proc, fall back to asking the kernel, which counts zombies too.
    """
    # Ask the kernel first: after the leader is reaped the group is usually gone, and this
    # one syscall spares a scan of every /proc entry after every task.
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if os.path.isdir("/proc"):
        return bool(_group_members(pgid))
    return True


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in group `pgid`, read from /proc (Linux)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _started_with_env(pid: int, expected: Mapping[str, str]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    env = dict(
        item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item
    )
    return all(env.get(k.encode()) == v.encode() for k, v in expected.items())


def _note(log: IO[bytes], message: str) -> None:
    """Append an arcod note to the attempt's log, on a line of its own.

    Best effort: a note that cannot be written (disk full) must not stop what comes after it,
    such as emptying the task's process group.
    """
    try:
        fd = log.fileno()
        size = os.fstat(fd).st_size
        lead = b"\n" if size and os.pread(fd, 1, size - 1) != b"\n" else b""
        log.write(lead + f"[arcod] {_now()} {message}\n".encode())
    except OSError:
        pass


def _cut_log(log: IO[bytes], limit: int | None) -> None:
    """Cut a log that outgrew its limit back to it, and say so at the end."""
    try:
        if limit and os.fstat(log.fileno()).st_size > limit:
            os.ftruncate(log.fileno(), limit)
    except OSError:
        pass
    _note(log, f"output passed the {limit}-byte log limit; the task was stopped and the log cut there")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
