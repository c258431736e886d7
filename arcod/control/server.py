"""The control socket: accept connections, frame requests, hand them to the daemon, reply.

Security and robustness live here, before any request reaches the daemon:
- the socket file is created mode 0600 inside a 0700 state directory, and a peer whose uid
  differs from ours (SO_PEERCRED) is closed without a word;
- a frame is one line of at most `MAX_FRAME_BYTES`; a longer one gets `frame_too_large` and
  the connection is closed (there is no way to find the next frame boundary we can trust);
- a frame that is not JSON, not an object, names an unknown command, or has a field of the
  wrong type gets a typed error and the connection stays open for the next frame;
- an unexpected exception in a handler becomes an `internal` error for that request only.
A connection is a task in the server's task group; a client that never sends only holds its
own task.

Binding is guarded by an exclusive lock file: anyio's Unix listener removes an existing socket
file before binding, so without the lock a second daemon would silently steal the socket of a
live one. With it, a second daemon refuses to start, and a stale socket left by a dead daemon
(whose lock the kernel released) is replaced.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import msgspec
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from arcod.control import protocol
from arcod.core import errors
from arcod.core.errors import ArcodError

log = structlog.get_logger("arcod.control")

Handler = Callable[[protocol.Request], Awaitable[Any]]


class StateDirLocked(Exception):
    """Another daemon holds the state directory."""


def acquire_state_lock(state_dir: Path) -> int:
    """Take the daemon's exclusive lock on `state_dir/arcod.lock`; return the fd to keep open."""
    fd = os.open(state_dir / "arcod.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirLocked(
            f"another arcod daemon is already serving {state_dir} "
            f"(its socket is {state_dir / 'arcod.sock'}); stop it first or use another state_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def error_frame(exc: ArcodError) -> bytes:
    return protocol.encode_frame({"error": exc.to_dict()})


def decode_request(frame: bytes) -> protocol.Request:
    """Decode one frame or raise the ArcodError that tells the client what was wrong."""
    try:
        raw = msgspec.json.decode(frame)
    except msgspec.DecodeError as exc:
        raise ArcodError(errors.BAD_REQUEST, f"frame is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ArcodError(
            errors.BAD_REQUEST,
            f"a request is a JSON object with a \"cmd\" field, got {type(raw).__name__}",
        )
    cmd = raw.get("cmd")
    if cmd not in protocol.KNOWN_COMMANDS:
        raise ArcodError(
            errors.UNKNOWN_COMMAND,
            f"unknown command {cmd!r}; known commands: {', '.join(protocol.KNOWN_COMMANDS)}",
            {"cmd": cmd if isinstance(cmd, (str, int, float, bool)) or cmd is None else repr(cmd)[:100],
             "known": list(protocol.KNOWN_COMMANDS)},
        )
    try:
        return msgspec.convert(raw, protocol.AnyRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise ArcodError(errors.BAD_REQUEST, f"invalid {cmd!r} request: {exc}") from None


class ControlServer:
    def __init__(self, socket_path: Path, handler: Handler) -> None:
        self.socket_path = socket_path
        self.handler = handler
        self.uid = os.getuid()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        old_umask = os.umask(0o177)  # the socket file is born 0600, no window where it is wider
        try:
            listener = await anyio.create_unix_listener(self.socket_path)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        async with listener:
            task_status.started()
            log.info("control socket listening", socket=str(self.socket_path))
            await listener.serve(self._connection)

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw_sock = stream.extra(SocketAttribute.raw_socket)
            try:
                uid = peer_uid(raw_sock)
            except OSError:
                return
            if uid != self.uid:
                log.warning("refused peer of another user", peer_uid=uid)
                return
            reader = BufferedByteReceiveStream(stream)
            while True:
                try:
                    frame = await reader.receive_until(b"\n", protocol.MAX_FRAME_BYTES)
                except anyio.DelimiterNotFound:
                    await self._send(stream, error_frame(ArcodError(
                        errors.FRAME_TOO_LARGE,
                        f"frame exceeds {protocol.MAX_FRAME_BYTES} bytes without a newline; "
                        "send one JSON request per line",
                        {"max_bytes": protocol.MAX_FRAME_BYTES},
                    )))
                    return
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.BrokenResourceError,
                        anyio.ClosedResourceError, ConnectionError):
                    return
                if not frame.strip():
                    continue
                reply = await self._answer(frame)
                if not await self._send(stream, reply):
                    return

    async def _answer(self, frame: bytes) -> bytes:
        try:
            request = decode_request(frame)
            result = await self.handler(request)
            return protocol.encode_frame({"result": result})
        except ArcodError as exc:
            return error_frame(exc)
        except Exception as exc:  # a bug in one handler must not take the daemon down
            log.exception("request failed", error=repr(exc))
            return error_frame(ArcodError(
                errors.INTERNAL,
                f"internal error while handling the request: {exc!r}; the daemon is still running, see its log",
            ))

    @staticmethod
    async def _send(stream: anyio.abc.SocketStream, data: bytes) -> bool:
        try:
            await stream.send(data)
            return True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            return False
