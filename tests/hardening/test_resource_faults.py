"""Resource faults (SPEC §8): the database locked by another process, a full disk, an
unwritable log directory, a task that floods its output, a task that forks and exits. Each is
met with a clear error or contained; whatever the daemon answered "ok" to is in the database
and finishes; the daemon keeps serving once the fault is gone.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.harness import Daemon, asset_toml, write_project
from tests.hardening.conftest import stop
from tests.hardening.wire import request, rss_kib

pytestmark = pytest.mark.e2e

FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")


def wait_all(d: Daemon, run_ids, timeout: float = 60.0) -> dict[str, dict]:
    runs = {}
    for run_id in run_ids:
        runs[run_id] = d.wait_run(run_id, timeout=timeout)
    return runs


def run_ids_in_db(d: Daemon) -> set[str]:
    with contextlib.closing(sqlite3.connect(f"file:{d.project / '.arcod' / 'arcod.db'}?mode=ro", uri=True)) as db:
        return {r[0] for r in db.execute("SELECT run_id FROM runs")}


@dataclass
class ElsewhereDaemon(Daemon):
    """A daemon whose state directory is not the project's `.arcod`."""

    state: Path | None = None

    @property
    def socket(self) -> Path:
        return self.state / "arcod.sock"


@pytest.fixture
def simple(tmp_path):
    started: list[Daemon] = []

    def make(assets: str, settings: str = "", state_dir: Path | None = None) -> Daemon:
        project = write_project(tmp_path / f"p{len(started)}", assets, settings=settings)
        if state_dir is None:
            d = Daemon(project)
        else:
            text = (project / "arcod.toml").read_text().replace('state_dir = ".arcod"', f'state_dir = "{state_dir}"')
            (project / "arcod.toml").write_text(text)
            d = ElsewhereDaemon(project, state=state_dir)
        started.append(d)
        d.start()
        return d

    yield make
    for d in started:
        stop(d)


def test_database_locked_by_another_process(simple):
    """Another process holds SQLite's write lock: reads go on, a write is refused with
    `database_busy` after the busy timeout (not an internal error), its run key stays free,
    and once the lock is gone everything works and the refused request left no trace."""
    d = simple(asset_toml("a"))
    first = d.ok("run", "--select", "a", "--run-key", "before")
    d.wait_run(first["run_id"])
    other = sqlite3.connect(d.project / ".arcod" / "arcod.db", isolation_level=None, timeout=1)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        assert d.ok("status")["runs"] == {"SUCCEEDED": 1}  # reads never wait for writers
        assert [r["run_id"] for r in d.ok("runs", "list")["runs"]] == [first["run_id"]]
        assert time.monotonic() - started < 2
        err = d.refused("run", "--select", "a", "--run-key", "during", code="database_busy")
        assert "locked by another process" in err["message"] and "retry" in err["message"].lower()
        assert d.ok("status")["pid"] == d.proc.pid
    finally:
        other.execute("ROLLBACK")
        other.close()
    again = d.ok("run", "--select", "a", "--run-key", "during")
    assert again["created"] is True  # the refused request never reserved its key
    assert d.wait_run(again["run_id"])["state"] == "SUCCEEDED"
    assert run_ids_in_db(d) == {first["run_id"], again["run_id"]}


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m"):
    """A tmpfs of `size` at `path` (root), yielding True; False where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        yield False
        return
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                       capture_output=True)
    if p.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """Write a file in `path` until the disk is full."""
    filler = path / "filler"
    chunk = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_disk_full(simple, tmp_path):
    """The state directory's disk fills up while runs are in flight. Requests that cannot be
    recorded are refused with `storage_error` (never an internal error, the daemon stays up);
    every request answered ok is in the database and its run finishes once space is back
    (outcomes of tasks that ended during the fault are recorded late, not lost); new work then
    runs normally.

    As root the state directory is a small tmpfs filled to the last byte (a real ENOSPC).
    Where mounting is not allowed, the daemon's RLIMIT_FSIZE is lowered to the size of its files
    instead (EFBIG, which SQLite reports as the same kind of failure). The test says which.
    """
    state = tmp_path / "state"
    with small_disk(state) as mounted:
        print("disk full by", "a full tmpfs" if mounted else "RLIMIT_FSIZE")
        d = simple(asset_toml("a") + asset_toml("b", deps=["a"]), state_dir=state)
        warm = d.ok("run", "--select", "a+")
        d.wait_run(warm["run_id"])
        (d.project / "sleep" / "a").write_text("1.5")
        in_flight = [d.ok("run", "--select", "a+", "--run-key", f"flight-{i}")["run_id"] for i in range(2)]
        deadline = time.monotonic() + 10
        while sum(1 for i in in_flight if d.ok("runs", "show", i)["state"] == "RUNNING") < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        # Empty the WAL, so that the next commit must grow a file rather than reuse WAL space.
        with contextlib.closing(sqlite3.connect(state / "arcod.db", isolation_level=None)) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if mounted:
            filler = fill(state)
        else:
            limits = resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE)
            size = max(os.path.getsize(state / n) for n in ("arcod.db", "arcod.db-wal"))
            resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, (size, limits[1]))
        accepted, refused = [], []
        try:
            for i in range(3):
                r = d.cli("run", "--select", "a+", "--run-key", f"full-{i}")
                if r.code == 0:
                    accepted.append(r.json["run_id"])
                else:
                    assert r.code == 1, (r.code, r.stdout, r.stderr)
                    err = r.json["error"]
                    assert err["code"] == "storage_error", err
                    assert "full" in err["message"] and "nothing of this request was recorded" in err["message"]
                    refused.append(f"full-{i}")
                assert request(d.socket, {"cmd": "status"})["result"]["pid"] == d.proc.pid
            assert refused, "the full disk refused nothing"
            time.sleep(1.0)  # the in-flight tasks (1.5 s) end now, while nothing can be recorded
            assert all(d.ok("runs", "show", i)["state"] == "RUNNING" for i in in_flight)
        finally:
            if mounted:
                filler.unlink()
            else:
                resource.prlimit(d.proc.pid, resource.RLIMIT_FSIZE, limits)
        (d.project / "sleep" / "a").unlink()
        # Space is back: what was accepted finishes, what was refused left no trace, new work runs.
        for run in wait_all(d, in_flight + accepted).values():
            assert run["state"] in FINISHED
        keys = {r["run_key"] for r in d.ok("runs", "list", "--limit", "100")["runs"]}
        assert not keys & set(refused)
        after = d.ok("run", "--select", "a+", "--run-key", refused[0])
        assert after["created"] is True
        assert d.wait_run(after["run_id"])["state"] == "SUCCEEDED"
        stop(d)


def test_unwritable_log_directory(simple):
    """The log directory cannot be created: the attempt fails with a reason that says so (it
    does not hang, the daemon does not crash); once fixed, runs work again."""
    d = simple(asset_toml("a"))
    logs = d.project / ".arcod" / "logs"
    logs.write_text("not a directory")  # unwritable for root too, unlike a chmod
    r = d.ok("run", "--select", "a")
    run = d.wait_run(r["run_id"], timeout=30)
    assert run["state"] == "FAILED"
    reasons = [a["reason"] for a in run["attempts"]]
    assert reasons and all("cannot open the task's log file" in x and "Not a directory" in x for x in reasons), reasons
    assert d.counter("a") == []  # the task was not started without a log
    logs.unlink()
    again = d.ok("run", "--select", "a")
    assert d.wait_run(again["run_id"])["state"] == "SUCCEEDED"


def test_a_task_that_floods_its_output_is_stopped_at_the_log_limit(simple):
    flood = asset_toml("flood", command='["python3", "-c", "import sys\\nwhile True: sys.stdout.write(\'x\' * 65536)"]')
    d = simple(flood + asset_toml("a"), settings="max_log_bytes = 1048576\n")
    rss_before = rss_kib(d.proc.pid)
    r = d.ok("run", "--select", "flood")
    started = time.monotonic()
    while time.monotonic() - started < 0.5:  # the daemon answers while the task floods
        t0 = time.monotonic()
        d.ok("status")
        assert time.monotonic() - t0 < 2
    run = d.wait_run(r["run_id"], timeout=30)
    assert run["state"] == "FAILED"
    assert "log limit" in run["attempts"][0]["reason"], run["attempts"]
    log = Path(run["attempts"][0]["log_path"])
    assert 1048576 <= log.stat().st_size < 1048576 + 4096  # cut back to the limit, plus our note
    assert b"log limit" in log.read_bytes()[-300:]
    logs = d.ok("logs", r["run_id"])  # `arcod logs` pages it: one bounded reply
    assert len(logs["attempts"][0]["text"]) <= 1048576 + 4096
    assert rss_kib(d.proc.pid) - rss_before < 32 * 1024
    assert d.wait_run(d.ok("run", "--select", "a")["run_id"])["state"] == "SUCCEEDED"


def processes_of_run(run_id: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if f"ARCOD_RUN_ID={run_id}".encode() in env.split(b"\0") and state not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def test_a_task_that_forks_children_and_exits_leaves_nothing(simple):
    """The task starts children (one ignoring SIGTERM) and exits 0: the run succeeds and no
    process of it survives the attempt."""
    forker = asset_toml("forker", command='"sleep 300 & (trap \\"\\" TERM; sleep 300) & echo forked"')
    d = simple(forker, settings="term_grace_s = 0.5\n")
    r = d.ok("run", "--select", "forker")
    run = d.wait_run(r["run_id"], timeout=30)
    assert run["state"] == "SUCCEEDED"
    deadline = time.monotonic() + 5
    while processes_of_run(r["run_id"]):
        assert time.monotonic() < deadline, f"left behind: {processes_of_run(r['run_id'])}"
        time.sleep(0.05)
    text = d.ok("logs", r["run_id"])["attempts"][0]["text"]
    assert "forked" in text and "left processes behind" in text


def test_out_of_file_descriptors_does_not_end_the_daemon(simple):
    """With its descriptor limit nearly reached, the daemon cannot accept more connections
    (EMFILE). That used to end the listener, and the daemon with it; now the failed accept is
    logged and retried, and once descriptors are free again new clients are served."""
    d = simple(asset_toml("a"))
    pid = d.proc.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    in_use = len(os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 3, limits[1]))
    crowd = []
    try:
        for _ in range(10):  # the kernel queues them; the daemon can take only a few
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(d.socket))
            crowd.append(s)
        deadline = time.monotonic() + 10
        while "cannot accept a connection" not in d.log_path.read_text():
            assert time.monotonic() < deadline, d.daemon_log_tail()
            time.sleep(0.05)
        assert d.proc.poll() is None
    finally:
        for s in crowd:
            s.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
    assert request(d.socket, {"cmd": "status"})["result"]["pid"] == pid
    assert d.wait_run(d.ok("run", "--select", "a")["run_id"])["state"] == "SUCCEEDED"
