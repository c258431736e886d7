"""Raw control-socket clients for the hardening tests: bytes in, frames out, no CLI in between.

The CLI would refuse most of what these tests send before it reached the daemon; the point is
to see what the daemon itself does with it.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

ERROR_CODES = {
    "bad_request", "unknown_command", "frame_too_large", "parse_error", "unknown_assets",
    "empty_selection", "invalid_key", "definitions_error", "not_found", "run_key_conflict",
    "version_conflict", "invalid_transition", "partition_error", "mixed_partitions",
    "idle_timeout", "too_many_connections", "database_busy", "storage_error",
}


def connect(path: Path, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def read_line(s: socket.socket) -> bytes:
    """One reply line, or b'' if the daemon closed the connection without a (full) line."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return b""
        if not chunk:
            return b""
        data += chunk
    return data


def read_lines(s: socket.socket, n: int) -> list[bytes]:
    """The next `n` reply lines (fewer if the daemon closed first), each with its newline."""
    data = b""
    while data.count(b"\n") < n:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return [line + b"\n" for line in data.split(b"\n")[:n] if line]


def exchange(path: Path, payload: bytes, timeout: float = 10.0) -> bytes:
    """Send `payload` on a fresh connection and read one reply line (b'' if closed without one)."""
    with connect(path, timeout) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)  # nothing more from us: a frame without reply ends in EOF
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered and closed before we finished writing: read the answer
        return read_line(s)


def request(path: Path, obj: Any) -> dict:
    line = exchange(path, json.dumps(obj).encode() + b"\n")
    assert line, f"no reply to {obj!r}"
    return json.loads(line)


def closed_by_peer(s: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Wait up to `timeout` for the daemon to close `s`; return (closed, what it sent first)."""
    s.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (TimeoutError, socket.timeout):
            return False, data
        except ConnectionResetError:
            return True, data
        if not chunk:
            return True, data
        data += chunk
    return False, data


def check_reply(line: bytes) -> dict:
    """A reply is one JSON object with exactly `result` or a typed, non-internal `error`."""
    assert line.endswith(b"\n"), line[:200]
    reply = json.loads(line)
    assert isinstance(reply, dict) and len(reply) == 1 and set(reply) <= {"result", "error"}, reply
    if "error" in reply:
        err = reply["error"]
        assert set(err) == {"code", "message", "details"}, err
        assert err["code"] in ERROR_CODES, err
        assert isinstance(err["message"], str) and err["message"], err
    return reply


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS line")
