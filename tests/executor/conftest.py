"""Shared fixtures for the executor tests: attempt specs in a scratch project, and process probes.

The probes read /proc directly (not the executor's own helpers) so a bug in the executor's
group bookkeeping cannot hide itself from the tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from arcod.executor.process import AttemptSpec


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    # Mirrors tests/conftest.py so these process tests always cover both backends.
    return request.param


@pytest.fixture
def make_spec(tmp_path: Path) -> Callable[..., AttemptSpec]:
    """An AttemptSpec running in `tmp_path`, logging to `tmp_path/logs/attempt.log`."""

    def make(**overrides: Any) -> AttemptSpec:
        fields: dict[str, Any] = {
            "run_id": "run-1",
            "asset": "sales/daily",
            "partition": None,
            "attempt": 1,
            "cwd": str(tmp_path),
            "log_path": str(tmp_path / "logs" / "attempt.log"),
        }
        fields.update(overrides)
        return AttemptSpec(**fields)

    return make


def process_state(pid: int) -> str | None:
    """The /proc state letter of `pid` ("R", "S", "Z", ...), or None if there is no such pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[0].decode()


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a dead child waiting for a non-reaping PID 1 runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return process_state(pid) not in (None, "Z", "X")


def live_group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(entry))
    return members


def read_pid_file(path: Path) -> int | None:
    """The pid a task wrote (``echo $! > file``) into `path`, once completely written."""
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    return int(raw) if raw.endswith("\n") and raw.strip().isdigit() else None


async def wait_for_pid_file(path: Path, timeout_s: float = 5.0) -> int:
    with anyio.fail_after(timeout_s):
        while (pid := read_pid_file(path)) is None:
            await anyio.sleep(0.01)
    return pid
