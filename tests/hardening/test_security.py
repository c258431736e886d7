"""Security (docs/security.md): who may talk to the daemon, what a key can make it run, and
where ids can make it write.

- the socket is 0600 in a 0700 state directory, and even if those permissions are loosened a
  peer of another uid is refused by SO_PEERCRED;
- partition keys, asset keys and tags never reach a shell unquoted;
- log and state paths built from ids stay inside the state directory, however hostile or long
  the id;
- the daemon refuses a world-writable state directory, or one that belongs to someone else.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import pytest

from arcod.control.server import ControlServer
from tests.e2e.harness import asset_toml, write_project
from tests.hardening.conftest import start_daemon, stop
from tests.hardening.wire import check_reply, closed_by_peer, connect, request

pytestmark = pytest.mark.e2e

NOBODY = 65534


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("sec") / "proj")
    yield daemon
    stop(daemon)


def test_socket_0600_state_dir_0700_and_private_files(d):
    state = d.socket.parent
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "arcod.lock").stat().st_mode) == 0o600
    assert state.stat().st_uid == os.getuid() == d.socket.stat().st_uid


def _connect_as_nobody(path: Path) -> tuple[bool, bytes]:
    """Fork, become uid/gid 65534, connect, send `status`; report (closed, what came back)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery from here on, only os._exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect(str(path))
            try:
                s.sendall(b'{"cmd": "status"}\n')
                data = s.recv(65536)
            except (BrokenPipeError, ConnectionResetError):
                data = b""  # closed before we could even send
            os.write(w, b"closed:" + data)
        except BaseException as exc:  # noqa: BLE001 - report anything to the parent
            os.write(w, f"error:{exc!r}".encode())
        finally:
            os._exit(0)
    os.close(w)
    out = b""
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    os.waitpid(pid, 0)
    assert out.startswith(b"closed:"), out
    return True, out[len(b"closed:"):]


def test_a_peer_of_another_uid_is_refused_even_when_permissions_are_loosened():
    """Defence in depth: file permissions are the first wall; SO_PEERCRED the second.

    As root, the test loosens the socket and directory permissions (as a careless operator
    might) and connects from uid 65534: the daemon closes the connection without a word. As
    another user (who cannot switch uid), the real control server runs in-process believing
    it belongs to another uid, and refuses us the same way.
    """
    if os.geteuid() == 0:
        base = Path(tempfile.mkdtemp(prefix="arcod-sec-"))
        try:
            os.chmod(base, 0o755)
            daemon = start_daemon(base / "proj")
            try:
                os.chmod(base / "proj", 0o755)
                os.chmod(daemon.socket.parent, 0o711)
                os.chmod(daemon.socket, 0o666)
                closed, data = _connect_as_nobody(daemon.socket)
                assert closed and data == b"", data
                assert "refused peer of another user" in daemon.log_path.read_text()
                assert request(daemon.socket, {"cmd": "status"})["result"]["pid"] == daemon.proc.pid
            finally:
                stop(daemon)
        finally:
            subprocess.run(["rm", "-rf", str(base)])
        return

    async def scenario(path: Path) -> bytes:
        async def handler(req):  # never reached
            raise AssertionError("a refused peer's request was handled")

        server = ControlServer(path, handler)
        server.uid = os.getuid() + 1  # the daemon's user is someone else
        async with anyio.create_task_group() as tg:
            await tg.start(server.serve)
            s = await anyio.to_thread.run_sync(connect, path)
            s.sendall(b'{"cmd": "status"}\n')
            closed, data = await anyio.to_thread.run_sync(closed_by_peer, s, 5.0)
            s.close()
            assert closed
            tg.cancel_scope.cancel()
        return data

    with tempfile.TemporaryDirectory() as tmp:
        assert anyio.run(scenario, Path(tmp) / "s.sock") == b""


def test_partition_keys_and_tags_never_reach_a_shell(d):
    """`odd/shell` is a shell-string command that uses $ARCOD_PARTITION_KEY (quoted, as the docs
    say). Keys full of shell syntax arrive as literal text and run nothing."""
    for key in ("$(touch PWNED)", "x;touch PWNED2", "`touch PWNED3`"):
        r = d.ok("run", "--select", "odd/shell", "--partition", key, "--tag", "note=$(touch PWNED4)")
        assert d.wait_run(r["run_id"])["state"] == "SUCCEEDED"
        assert (d.project / "seen_1.txt").read_text() == key
        assert r["tags"] == {"note": "$(touch PWNED4)"}
    assert not list(d.project.glob("PWNED*"))
    # Asset keys cannot carry shell syntax at all: they are `[A-Za-z0-9_]+` segments.
    err = d.refused("assets", "show", "$(touch PWNED5)")
    assert err["code"] in ("unknown_assets", "invalid_key", "parse_error")
    assert not list(d.project.glob("PWNED*"))


def test_log_paths_from_hostile_ids_stay_in_the_state_directory(d):
    logs = (d.socket.parent / "logs").resolve()
    for key in ("/etc/passwd", ".hidden", "%2e%2e", "sp ace", "é"):
        r = d.ok("run", "--select", "odd/plain", "--partition", key)
        run = d.wait_run(r["run_id"])
        assert run["state"] == "SUCCEEDED", run
        path = Path(run["attempts"][0]["log_path"]).resolve()
        assert logs in path.parents and path.exists()
        assert key in d.ok("logs", r["run_id"])["attempts"][0]["text"]  # and readable back
    # Ids that look like paths are looked up, never joined into one.
    for run_id in ("../../../etc/passwd", "..", "/", "r-1/../../x"):
        assert d.refused("runs", "show", run_id)["code"] == "not_found"
        assert d.refused("logs", run_id)["code"] == "not_found"


def test_a_very_long_partition_key_runs_and_logs(tmp_path, daemons):
    """A key longer than a file name may be still gets its own log directory (a digest ends it)."""
    key = "k" * 240 + "é" * 60
    partitions = f'[partitions.long]\nkind = "static"\nkeys = ["{key}", "{key}x"]\n'
    asset = asset_toml("a", partitions="long", command='["printenv", "ARCOD_PARTITION_KEY"]')
    daemon = daemons(write_project(tmp_path / "p", asset, partitions=partitions))
    runs = [daemon.ok("run", "--select", "a", "--partition", k) for k in (key, key + "x")]
    paths = set()
    for r in runs:
        run = daemon.wait_run(r["run_id"])
        assert run["state"] == "SUCCEEDED", run["attempts"]
        paths.add(run["attempts"][0]["log_path"])
        assert daemon.ok("logs", r["run_id"])["attempts"][0]["text"].startswith(run["tasks"][0]["partition"])
    assert len(paths) == 2


def serve_fails(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "arcod", "serve", "--config", str(project / "arcod.toml")],
                          capture_output=True, text=True, timeout=30)


def test_world_writable_or_foreign_state_dir_is_refused(tmp_path):
    proj = write_project(tmp_path / "p", asset_toml("a"))
    state = proj / ".arcod"
    state.mkdir()
    os.chmod(state, 0o777)
    p = serve_fails(proj)
    assert p.returncode == 1 and "world-writable" in p.stderr and "chmod 700" in p.stderr
    assert not (state / "arcod.db").exists()  # refused before touching anything
    if os.geteuid() == 0:
        os.chmod(state, 0o700)
        os.chown(state, NOBODY, NOBODY)
        p = serve_fails(proj)
        assert p.returncode == 1 and "belongs to uid" in p.stderr


def test_refusals_of_the_door_are_typed(d):
    """Frames a hostile local client might send: each gets a typed error, nothing more."""
    for frame in (b'{"cmd": "run", "select": ["a"], "run_key": "' + b"k" * 300 + b'"}\n',
                  b'{"cmd": "run", "select": ["a"], "tags": {"bad key": "v"}}\n',
                  b'{"cmd": "logs", "run_id": "x", "offsets": {"a": -5}}\n'):
        with connect(d.socket) as s:
            s.sendall(frame)
            data = b""
            while not data.endswith(b"\n"):
                data += s.recv(65536)
        assert check_reply(data)["error"]["code"] == "bad_request", json.loads(data)
