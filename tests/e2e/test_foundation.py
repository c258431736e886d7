"""The foundation through the real daemon: CLI basics, the socket's robustness and security."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from tests.e2e.harness import ROOT, Daemon, asset_toml, write_project

pytestmark = pytest.mark.e2e

CHAIN = asset_toml("a", extra='group = "ingest"\ntags = { tier = "bronze" }') + asset_toml(
    "b", deps=["a"], extra='group = "transform"\ntags = { tier = "gold" }'
) + asset_toml("c", deps=["b"], extra='group = "transform"')


@pytest.fixture
def chain(tmp_path, daemons):
    return daemons(write_project(tmp_path / "proj", CHAIN))


def raw_exchange(path, payload: bytes, read: bool = True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        try:
            s.sendall(payload)
        except BrokenPipeError:
            pass  # the daemon answered and closed before we finished writing: read the answer
        if not read:
            return b""
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def test_status_assets_and_select(chain: Daemon):
    status = chain.ok("status")
    assert status["assets"] == 3 and status["pid"] == chain.proc.pid
    listed = chain.ok("assets", "list")
    assert [a["key"] for a in listed["assets"]] == ["a", "b", "c"]
    shown = chain.ok("assets", "show", "b")
    assert shown["deps"] == ["a"] and shown["children"] == ["c"] and shown["group"] == "transform"
    sel = chain.ok("select", "group:ingest+", "--explain")
    assert sel["keys"] == ["a", "b", "c"]
    why = {e["key"]: e["text"] for e in sel["explain"]}
    assert why["a"].startswith("root") and "depth 2" in why["c"]
    assert chain.ok("select", "b")["keys"] == ["b"]  # no closure unless asked
    assert chain.ok("select", "b", "--upstream")["keys"] == ["a", "b"]
    assert chain.ok("select", "c", "--upstream=1")["keys"] == ["b", "c"]


def test_human_output_is_aligned_and_short(chain: Daemon):
    r = chain.cli("select", "group:ingest+", "--explain", json_output=False)
    assert r.code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ASSET", "WHY"]
    assert len({line.index(line.split()[1]) for line in lines[1:]}) == 1  # one column start


def test_selection_errors(chain: Daemon):
    err = chain.refused("select", "zz or b or yy", code="unknown_assets")
    assert err["details"]["keys"] == ["yy", "zz"]
    err = chain.refused("select", "a and (b", code="parse_error")
    assert err["details"]["column"] == 7  # the `(` that is never closed
    err = chain.refused("select", "a and or b", code="parse_error")
    assert err["details"]["column"] == 7  # the unexpected `or`
    chain.refused("select", "*a", code="parse_error")
    chain.refused("select", "tag:nothing", code="empty_selection")


def test_exit_codes_usage_and_unreachable(chain: Daemon, tmp_path):
    r = chain.cli("select", "a", "--upstream=0")  # with --json: the usage error is the document
    assert r.code == 2 and json.loads(r.stdout)["error"]["code"] == "usage"
    assert "depth" in json.loads(r.stdout)["error"]["message"]
    r = chain.cli("select", "a", "--upstream=0", json_output=False)
    assert r.code == 2 and "depth" in r.stderr and r.stdout == ""
    r = subprocess.run([sys.executable, "-m", "arcod", "status", "--json", "--socket", str(tmp_path / "nope.sock")],
                       capture_output=True, text=True)
    assert r.returncode == 3
    assert json.loads(r.stdout)["error"]["code"] == "daemon_unreachable"
    r = subprocess.run([sys.executable, "-m", "arcod", "status", "--socket", str(tmp_path / "nope.sock")],
                       capture_output=True, text=True)
    assert r.returncode == 3 and r.stdout == "" and "make run" in r.stderr


@pytest.mark.parametrize(
    "frame, code",
    [
        (b"this is not json\n", "bad_request"),
        (b"[1, 2, 3]\n", "bad_request"),
        (b'{"no_cmd": 1}\n', "unknown_command"),
        (b'{"cmd": "launch_missiles"}\n', "unknown_command"),
        (b'{"cmd": "assets.show", "key": 42}\n', "bad_request"),
        (b'{"cmd": "assets.show"}\n', "bad_request"),
        (b'{"cmd": "select", "select": ["a"], "surprise": true}\n', "bad_request"),
        (b'\xff\xfe\x00garbage\n', "bad_request"),
    ],
)
def test_malformed_frames_get_typed_errors_and_daemon_keeps_serving(chain: Daemon, frame, code):
    reply = json.loads(raw_exchange(chain.socket, frame))
    assert reply["error"]["code"] == code, reply
    assert reply["error"]["message"]
    assert chain.ok("status")["assets"] == 3


def test_connection_survives_a_bad_frame(chain: Daemon):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(chain.socket))
        s.sendall(b'garbage\n{"cmd": "status"}\n')
        data = b""
        while data.count(b"\n") < 2:
            data += s.recv(65536)
    first, second = data.splitlines()[:2]
    assert json.loads(first)["error"]["code"] == "bad_request"
    assert json.loads(second)["result"]["assets"] == 3


def test_oversized_frame_is_refused_and_daemon_keeps_serving(chain: Daemon):
    reply = json.loads(raw_exchange(chain.socket, b'{"cmd": "status", "x": "' + b"a" * (2 << 20)))
    assert reply["error"]["code"] == "frame_too_large"
    assert chain.ok("status")["assets"] == 3


def test_silent_and_half_open_clients_do_not_block_others(chain: Daemon):
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(chain.socket))
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half.connect(str(chain.socket))
    half.sendall(b'{"cmd": "sta')
    half.shutdown(socket.SHUT_WR)
    try:
        assert chain.ok("status")["assets"] == 3
    finally:
        idle.close()
        half.close()


def test_socket_and_state_dir_permissions(chain: Daemon):
    assert stat.S_IMODE(chain.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(chain.socket.parent.stat().st_mode) == 0o700


def test_second_daemon_refuses_and_stale_socket_is_replaced(chain: Daemon, daemons):
    second = daemons(chain.project, start=False)
    env = {**os.environ}
    p = subprocess.run([sys.executable, "-m", "arcod", "serve", "--config", str(chain.config)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert p.returncode == 1 and "already serving" in p.stderr
    assert chain.ok("status")["pid"] == chain.proc.pid  # the first still owns its socket
    chain.kill9()
    assert chain.socket.exists()  # stale socket left by the dead daemon
    second.start()
    assert second.ok("status")["pid"] == second.proc.pid


def test_reload_and_sighup(chain: Daemon):
    before = chain.ok("status")["code_version"]
    (chain.project / "assets.toml").write_text(CHAIN + asset_toml("d", deps=["c"]))
    result = chain.ok("reload")
    assert result["changed"] and result["assets"] == 4
    (chain.project / "assets.toml").write_text(CHAIN)
    chain.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while chain.ok("status")["code_version"] != before:
        assert time.monotonic() < deadline, "SIGHUP did not reload"
        time.sleep(0.05)
    # A broken file is refused and the daemon keeps the definitions it had.
    (chain.project / "assets.toml").write_text(CHAIN + asset_toml("e", deps=["nope"]))
    err = chain.refused("reload", code="definitions_error")
    assert "assets.toml" in err["message"] and "nope" in err["message"]
    assert chain.ok("status")["code_version"] == before


def test_bad_config_is_a_clear_startup_error(tmp_path):
    proj = write_project(tmp_path / "p", asset_toml("a", deps=["b"]) + asset_toml("b", deps=["a"]))
    p = subprocess.run([sys.executable, "-m", "arcod", "serve", "--config", str(proj / "arcod.toml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "cycle" in p.stderr and "assets.toml" in p.stderr


def test_world_writable_state_dir_is_refused(tmp_path):
    proj = write_project(tmp_path / "p", asset_toml("a"))
    (proj / ".arcod").mkdir()
    os.chmod(proj / ".arcod", 0o777)
    p = subprocess.run([sys.executable, "-m", "arcod", "serve", "--config", str(proj / "arcod.toml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1 and "world-writable" in p.stderr


def test_demo_config_loads():
    """The shipped demo project is valid (the daemon would refuse to start otherwise)."""
    from arcod.config import load_definitions, load_settings

    defs = load_definitions(load_settings(ROOT / "config" / "arcod.toml"))
    assert len(defs.assets) == 14  # README: "14 assets in the groups ..."
    assert {a.group for a in defs.assets.values()} == {"ingest", "transform", "analytics", "reports", "geo", "exports"}
    # The README's `arcod partitions add customers ...` needs a dynamic `customers` and an asset on it.
    assert defs.partitions["customers"].kind == "dynamic"
    assert defs.assets["exports/customer_feed"].partitions == "customers"
