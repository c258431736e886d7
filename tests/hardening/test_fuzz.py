"""Protocol fuzzing against the running daemon's socket (SPEC §8: bad input gets a clear error,
the daemon keeps serving and loses nothing).

Every frame, however broken, must end in one of two ways: a typed error (never `internal`),
or a clean close of that connection. And whatever came before, the next client is answered.
Hypothesis drives the shapes; examples are bounded so the module stays well under a minute.
"""

from __future__ import annotations

import json
import socket
import time

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arcod.control import protocol
from tests.hardening.wire import (
    check_reply,
    closed_by_peer,
    connect,
    exchange,
    read_line,
    read_lines,
    request,
    rss_kib,
)

pytestmark = pytest.mark.e2e

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
                derandomize=True)

# Field values that probe types, bounds and the places a string goes (selections, keys, paths).
TRICKY_STRINGS = st.sampled_from([
    "", " ", "a", "b", "*", "key:a", "a+", "+a", "tag:tier", "../../etc/passwd", "$(touch PWNED)",
    "2024-01-01", "2024-01-01..2024-01-31", "all", "r-20240101-deadbeef", "x" * 300, "\x00", "é",
    "a\nb", "null", "{}", "a,b", "a|b", "QUEUED", "running", "from_failure",
])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), TRICKY_STRINGS, st.text(max_size=40),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = sorted({f for t in protocol.REQUEST_TYPES for f in t.__struct_fields__})
# Commands whose well-typed random requests may change state: keep their reach small.
MUTATING = {"run", "rerun", "cancel", "reload", "partitions.edit"}


def status_ok(d) -> None:
    """The daemon still answers a fresh client."""
    reply = request(d.socket, {"cmd": "status"})
    assert reply["result"]["pid"] == d.proc.pid, reply


@given(data=st.binary(min_size=1, max_size=2048))
@FUZZ
def test_random_bytes_get_a_typed_error_or_nothing(fuzz_daemon, data):
    frame = data.replace(b"\n", b" ")
    line = exchange(fuzz_daemon.socket, frame + b"\n")
    if not frame.strip():
        assert line == b""  # a blank line is skipped; we closed, so no reply at all
    else:
        reply = check_reply(line)
        assert reply["error"]["code"] in ("bad_request", "unknown_command"), reply
    status_ok(fuzz_daemon)


@given(cmd=st.sampled_from(protocol.KNOWN_COMMANDS), fields=st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES, max_size=5))
@FUZZ
def test_any_fields_of_any_command_never_make_an_internal_error(fuzz_daemon, cmd, fields):
    """Wrong types in every field, unknown fields, missing fields, and well-typed nonsense."""
    if cmd in MUTATING:
        fields = {k: v for k, v in fields.items() if k not in ("select", "partitions")}
    reply = check_reply(exchange(fuzz_daemon.socket, json.dumps({**fields, "cmd": cmd}).encode() + b"\n"))
    request_type = next(t for t in protocol.REQUEST_TYPES if t.__struct_config__.tag == cmd)
    try:
        msgspec.convert({**fields, "cmd": cmd}, request_type, strict=True)
    except msgspec.ValidationError as exc:
        # Refused at the door, naming what was wrong.
        assert reply["error"]["code"] == "bad_request", reply
        assert str(exc) in reply["error"]["message"], (str(exc), reply)
    status_ok(fuzz_daemon)


@pytest.mark.parametrize("request_type", protocol.REQUEST_TYPES, ids=lambda t: t.__struct_config__.tag)
def test_a_wrong_type_in_every_field_is_named(fuzz_daemon, request_type):
    """One field at a time gets a value no field accepts (a nested object of the wrong shape)."""
    for field in request_type.__struct_fields__:
        frame = {"cmd": request_type.__struct_config__.tag, field: {"not": ["a", "valid", "value"]}}
        reply = request(fuzz_daemon.socket, frame)
        assert reply["error"]["code"] == "bad_request", (field, reply)
        assert f"$.{field}" in reply["error"]["message"], (field, reply)


@given(cmd=st.text(min_size=0, max_size=60).filter(lambda c: c not in protocol.KNOWN_COMMANDS))
@FUZZ
def test_unknown_request_kinds(fuzz_daemon, cmd):
    reply = request(fuzz_daemon.socket, {"cmd": cmd})
    assert reply["error"]["code"] == "unknown_command", reply
    assert "status" in reply["error"]["details"]["known"]


@given(cut=st.integers(min_value=0, max_value=200), newline=st.booleans(),
       body=st.sampled_from([
           {"cmd": "status"}, {"cmd": "select", "select": ["a+"], "upstream": -1},
           {"cmd": "runs.list", "limit": 5, "state": "FAILED"},
           {"cmd": "run", "select": ["a"], "run_key": "fuzz-truncated", "tags": {"k": "v"}},
       ]))
@FUZZ
def test_truncated_frames(fuzz_daemon, body, cut, newline):
    """Cut a valid request anywhere: with a newline it is a bad frame, without one and then
    half-closed it is an incomplete frame, and the daemon just closes that connection."""
    whole = json.dumps(body).encode()
    part = whole[: min(cut, len(whole) - 1)]
    with connect(fuzz_daemon.socket) as s:
        s.sendall(part + (b"\n" if newline else b""))
        s.shutdown(socket.SHUT_WR)
        line = read_line(s)
    if newline and part.strip():
        assert check_reply(line)["error"]["code"] in ("bad_request", "unknown_command")
    else:
        assert line == b""  # a clean close, no reply to an incomplete frame
    status_ok(fuzz_daemon)


@pytest.mark.parametrize("depth", [64, 1000, 100_000])
def test_deep_nesting_is_a_bad_request(fuzz_daemon, depth):
    for frame in (b"[" * depth + b"]" * depth, b'{"cmd": "status", "x": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"):
        if len(frame) >= protocol.MAX_FRAME_BYTES:
            continue
        reply = check_reply(exchange(fuzz_daemon.socket, frame + b"\n"))
        assert reply["error"]["code"] == "bad_request", reply
    status_ok(fuzz_daemon)


@pytest.mark.parametrize("size, code", [
    (protocol.MAX_FRAME_BYTES - 1, "bad_request"),  # the largest frame still read: answered
    (protocol.MAX_FRAME_BYTES, "frame_too_large"),  # one byte more (the newline does not fit)
    (8 * protocol.MAX_FRAME_BYTES, "frame_too_large"),
])
def test_huge_frames_at_and_past_the_limit(fuzz_daemon, size, code):
    payload = b'{"cmd": "status", "x": "' + b"a" * (size - 26) + b'"}'
    assert len(payload) == size
    reply = check_reply(exchange(fuzz_daemon.socket, payload + b"\n"))
    assert reply["error"]["code"] == code, reply
    status_ok(fuzz_daemon)


def test_pipelined_frames_each_get_their_answer_in_order(fuzz_daemon):
    frames = [b"garbage", b'{"cmd": "status"}', b"", b'{"cmd": "nope"}', b'{"cmd": "select", "select": ["a+"]}']
    with connect(fuzz_daemon.socket) as s:
        s.sendall(b"\n".join(frames) + b"\n")
        replies = [check_reply(line) for line in read_lines(s, 4)]
    assert len(replies) == 4
    assert [next(iter(r)) for r in replies] == ["error", "result", "error", "result"]
    assert replies[0]["error"]["code"] == "bad_request" and replies[2]["error"]["code"] == "unknown_command"
    assert replies[3]["result"]["keys"] == ["a", "b", "c"]


def test_half_open_and_silent_clients_are_closed_and_never_block_others(fuzz_daemon):
    half = connect(fuzz_daemon.socket)
    half.sendall(b'{"cmd": "sta')
    half.shutdown(socket.SHUT_WR)
    silent = connect(fuzz_daemon.socket)
    partial = connect(fuzz_daemon.socket)
    partial.sendall(b'{"cmd": "status"')  # never finishes its frame, never closes
    try:
        started = time.monotonic()
        status_ok(fuzz_daemon)  # answered at once, whatever the others do
        assert time.monotonic() - started < 1.5
        closed, data = closed_by_peer(half, 5)
        assert closed and data == b""  # an incomplete frame then EOF: closed without a word
        for s in (silent, partial):  # idle timeout is 2 s in this daemon
            closed, data = closed_by_peer(s, 10)
            assert closed, "a silent client was never closed"
            assert json.loads(data)["error"]["code"] == "idle_timeout"
        assert time.monotonic() - started < 8
    finally:
        for s in (half, silent, partial):
            s.close()
    status_ok(fuzz_daemon)


def test_a_crowd_of_silent_clients_cannot_lock_the_operator_out(fuzz_daemon):
    """16 connections allowed: 40 silent clients later, a new client is still answered, and the
    clients closed to make room were told why."""
    crowd = [connect(fuzz_daemon.socket) for _ in range(40)]
    try:
        reply = request(fuzz_daemon.socket, {"cmd": "status"})
        assert reply["result"]["pid"] == fuzz_daemon.proc.pid
        told = []
        for s in crowd[:20]:  # the oldest were evicted first
            closed, data = closed_by_peer(s, 5)
            if closed and data:
                told.append(json.loads(data)["error"]["code"])
        assert told and set(told) == {"too_many_connections"}, told
    finally:
        for s in crowd:
            s.close()
    status_ok(fuzz_daemon)


def test_a_client_that_never_reads_does_not_hold_the_daemon(fuzz_daemon):
    """Pipelined requests whose replies are never read: the daemon's sends block, then time out
    (idle timeout), and the connection is dropped; others are served throughout."""
    s = connect(fuzz_daemon.socket)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        frame = b'{"cmd": "assets.list"}\n'
        try:
            s.settimeout(0.5)
            for _ in range(20_000):
                s.sendall(frame)
        except (TimeoutError, socket.timeout, BrokenPipeError, ConnectionResetError):
            pass  # our send buffer is full too: the daemon stopped reading from us
        status_ok(fuzz_daemon)
        s.settimeout(15)
        # Drain: the daemon must have closed us within its idle timeout of a blocked send.
        deadline = time.monotonic() + 15
        closed = False
        while time.monotonic() < deadline:
            try:
                if not s.recv(1 << 20):
                    closed = True
                    break
            except ConnectionResetError:
                closed = True
                break
        assert closed
    finally:
        s.close()
    status_ok(fuzz_daemon)


def test_memory_stays_bounded_under_bad_frames(fuzz_daemon):
    """Rounds of the worst frames (oversized, deeply nested, garbage): the daemon's RSS after
    the last round is about what it was after the first; nothing accumulates per frame."""
    def one_round() -> None:
        for _ in range(5):
            exchange(fuzz_daemon.socket, b'{"cmd": "status", "x": "' + b"a" * (2 * protocol.MAX_FRAME_BYTES))
            exchange(fuzz_daemon.socket, b"[" * 50_000 + b"\n")
            exchange(fuzz_daemon.socket, b'{"cmd": "select", "select": ["' + b"(" * 30_000 + b'"]}\n')
        for i in range(100):
            exchange(fuzz_daemon.socket, b'{"cmd": "runs.show", "run_id": "nope-%d"}\n' % i)

    one_round()
    after_first = rss_kib(fuzz_daemon.proc.pid)
    for _ in range(3):
        one_round()
    after_last = rss_kib(fuzz_daemon.proc.pid)
    assert after_last - after_first < 16 * 1024, (after_first, after_last)  # KiB
    status_ok(fuzz_daemon)
