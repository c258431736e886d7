"""The control socket: accept connections, frame requests, hand them to the daemon, reply.

Security and robustness live here, before any request reaches the daemon:
- the socket file is created mode 0600 inside a 0700 state directory, and a peer whose uid
  differs from ours (SO_PEERCRED) is closed without a word;
- a frame is one line of at most `MAX_FRAME_BYTES`; a longer one gets `frame_too_large` and
  the connection is closed (there is no way to find the next frame boundary we can trust);
- a frame that is not JSON, not an object, names an unknown command, or has a field of the
  wrong type gets a typed error and the connection stays open for the next frame;
- an unexpected exception in a handler becomes an `internal` error for that request only; a
  database that cannot take a write (locked by another process, disk full) becomes
  `database_busy` / `storage_error`, which say what to do.
A connection is a task in the server's task group. What a client can hold is bounded: at most
`max_connections` connections (at the limit the longest-idle one is closed to make room), one
frame of buffer each, and `idle_timeout_s` of silence (or of not reading our reply) before the
connection is closed with `idle_timeout` (docs/security.md).

`stop_accepting()` is the first step of a graceful shutdown: the listener closes (a new client
finds nobody: exit status 3), connections waiting for their next frame are closed, and a
request being handled still gets its answer. The failpoints `control.before_answer` (the
request was handled, the answer not sent) and `control.after_answer` sit around each answer.

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
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import anyio
import msgspec
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from arcod.control import protocol
from arcod.core import errors
from arcod.core.errors import ArcodError
from arcod.failpoints import Failpoints
from arcod.store.database import StorageError

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
    except RecursionError:
        raise ArcodError(errors.BAD_REQUEST, "frame is nested too deeply; a request is a flat JSON object") from None
    if not isinstance(raw, dict):
        raise ArcodError(
            errors.BAD_REQUEST,
            f"a request is a JSON object with a \"cmd\" field, got {type(raw).__name__}",
        )
    cmd = raw.get("cmd")
    if cmd not in protocol.KNOWN_COMMANDS:
        shown = repr(cmd) if len(repr(cmd)) <= 100 else repr(cmd)[:100] + "..."
        raise ArcodError(
            errors.UNKNOWN_COMMAND,
            f"unknown command {shown}; known commands: {', '.join(protocol.KNOWN_COMMANDS)}",
            {"cmd": cmd if isinstance(cmd, (int, float, bool)) or cmd is None
             or (isinstance(cmd, str) and len(cmd) <= 100) else shown,
             "known": list(protocol.KNOWN_COMMANDS)},
        )
    try:
        return msgspec.convert(raw, protocol.AnyRequest, strict=True)
    except msgspec.ValidationError as exc:
        raise ArcodError(errors.BAD_REQUEST, f"invalid {cmd!r} request: {exc}{_enum_hint(cmd, str(exc))}",
                         {"cmd": cmd}) from None


def _enum_hint(cmd: str, message: str) -> str:
    """msgspec says "Invalid enum value 'x' - at `$.state`"; add the values it would take."""
    if not message.startswith("Invalid enum value") or "`$." not in message:
        return ""
    field = message.rpartition("`$.")[2].rstrip("`")
    request_type = next((t for t in protocol.REQUEST_TYPES if t.__struct_config__.tag == cmd), None)
    if request_type is None:
        return ""
    values = _literal_values(get_type_hints(request_type).get(field))
    return f"; expected one of {', '.join(map(str, values))}" if values else ""


def _literal_values(tp: Any) -> list[Any]:
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    if get_origin(tp) is Union or type(tp).__name__ == "UnionType":
        return [v for arg in get_args(tp) for v in _literal_values(arg)]
    return []


class ControlServer:
    def __init__(self, socket_path: Path, handler: Handler, *, failpoints: Failpoints | None = None,
                 max_connections: int = 128, idle_timeout_s: float = 300.0) -> None:
        self.socket_path = socket_path
        self.handler = handler
        self.uid = os.getuid()
        self.failpoints = failpoints if failpoints is not None else Failpoints()
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._accepting: anyio.CancelScope | None = None
        self._idle_reads: set[anyio.CancelScope] = set()
        self._closing = False
        self._open = 0  # connections accepted and not yet closed
        self._idle_since: dict[anyio.CancelScope, float] = {}  # waiting for a frame, since when
        self._evicted: set[anyio.CancelScope] = set()

    def stop_accepting(self) -> None:
        """Close the listener and idle connections; requests in progress still get answered."""
        self._closing = True
        if self._accepting is not None:
            self._accepting.cancel()
        for scope in self._idle_reads:
            scope.cancel()

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        old_umask = os.umask(0o177)  # the socket file is born 0600, no window where it is wider
        try:
            listener = await anyio.create_unix_listener(self.socket_path)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        async with anyio.create_task_group() as connections:
            with anyio.CancelScope() as self._accepting:
                async with listener:
                    task_status.started()
                    log.info("control socket listening", socket=str(self.socket_path))
                    await self._accept(listener, connections)
            log.info("control socket closed; finishing the requests in progress")

    async def _accept(self, listener: anyio.abc.SocketListener, connections: anyio.abc.TaskGroup) -> None:
        """Accept connections until cancelled, within `max_connections`.

        anyio's `Listener.serve` ends (and would take the daemon with it) on the first failed
        accept, e.g. EMFILE when the process is out of file descriptors; here a failed accept is
        logged and retried a moment later. At the limit, the connection that has waited longest
        for its next frame is closed to make room, so a crowd of silent clients cannot lock the
        operator out; if every connection is busy with a request, the newcomer is told so.
        """
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                raise
            except (OSError, anyio.BrokenResourceError) as exc:
                log.error("cannot accept a connection; retrying", error=repr(exc.__cause__ or exc))
                await anyio.sleep(0.1)
                continue
            if self._open >= self.max_connections and not self._evict_idlest():
                connections.start_soon(self._refuse_busy, stream)
                continue
            self._open += 1
            connections.start_soon(self._connection, stream)

    def _evict_idlest(self) -> bool:
        idle = [scope for scope in self._idle_since if scope not in self._evicted]
        if not idle:
            return False
        oldest = min(idle, key=self._idle_since.__getitem__)
        self._evicted.add(oldest)
        oldest.cancel()
        return True

    async def _refuse_busy(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await self._send(stream, error_frame(ArcodError(
                errors.TOO_MANY_CONNECTIONS,
                f"the daemon is handling requests on all {self.max_connections} connections it allows; "
                "retry in a moment (raise max_connections in arcod.toml if this is normal load)",
                {"max_connections": self.max_connections},
            )), timeout=1.0)

    def _closed_frame(self, scope: anyio.CancelScope) -> bytes:
        """What a connection is told when we close it while it waits for its next frame."""
        if scope in self._evicted:
            self._evicted.discard(scope)
            return error_frame(ArcodError(
                errors.TOO_MANY_CONNECTIONS,
                f"closed to make room: {self.max_connections} connections were open and this one "
                "had been idle longest; reconnect to send another request",
                {"max_connections": self.max_connections},
            ))
        return error_frame(ArcodError(
            errors.IDLE_TIMEOUT,
            f"closed after {self.idle_timeout_s:g}s without a complete request; reconnect to send one",
            {"idle_timeout_s": self.idle_timeout_s},
        ))

    async def _connection(self, stream: anyio.abc.SocketStream) -> None:
        try:
            await self._serve_connection(stream)
        finally:
            self._open -= 1

    async def _serve_connection(self, stream: anyio.abc.SocketStream) -> None:
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
            while not self._closing:
                try:
                    with anyio.CancelScope(deadline=anyio.current_time() + self.idle_timeout_s) as idle:
                        self._idle_reads.add(idle)
                        self._idle_since[idle] = anyio.current_time()
                        try:
                            frame = await reader.receive_until(b"\n", protocol.MAX_FRAME_BYTES)
                        finally:
                            self._idle_reads.discard(idle)
                            self._idle_since.pop(idle, None)
                    if idle.cancelled_caught:
                        # Shutting down (no new request on this connection), silent too long,
                        # or evicted to make room for another client.
                        if not self._closing:
                            await self._send(stream, self._closed_frame(idle), timeout=1.0)
                        return
                    self._evicted.discard(idle)  # evicted just as its frame arrived: it stays
                    if len(frame) >= protocol.MAX_FRAME_BYTES:
                        # receive_until may return a line a little past its limit when the
                        # newline arrives in the same chunk; the limit counts the newline.
                        raise anyio.DelimiterNotFound(protocol.MAX_FRAME_BYTES)
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
                try:
                    await self._hit("control.before_answer")
                except Exception as exc:  # an injected fault: the request was handled, the answer is lost
                    log.warning("answer replaced by an internal error", error=str(exc))
                    reply = error_frame(ArcodError(errors.INTERNAL, f"{exc}; the request may have been applied"))
                if not await self._send(stream, reply):
                    return
                try:
                    await self._hit("control.after_answer")
                except Exception:
                    return  # an injected fault after answering: drop the connection

    async def _hit(self, name: str) -> None:
        pending = self.failpoints.hit(name)
        if pending is not None:
            await pending

    async def _answer(self, frame: bytes) -> bytes:
        try:
            request = decode_request(frame)
            result = await self.handler(request)
            return protocol.encode_frame({"result": result})
        except ArcodError as exc:
            return error_frame(exc)
        except StorageError as exc:  # disk full, database locked by another process: retry later
            log.warning("request refused: the database cannot take writes", error=str(exc))
            return error_frame(ArcodError(exc.code, str(exc)))
        except Exception as exc:  # a bug in one handler must not take the daemon down
            log.exception("request failed", error=repr(exc))
            return error_frame(ArcodError(
                errors.INTERNAL,
                f"internal error while handling the request: {exc!r}; the daemon is still running, see its log",
            ))

    async def _send(self, stream: anyio.abc.SocketStream, data: bytes, timeout: float | None = None) -> bool:
        """Send a frame; False if the peer is gone or does not read it within the idle timeout
        (a client that never reads must not hold its reply, and a task, forever)."""
        try:
            with anyio.move_on_after(self.idle_timeout_s if timeout is None else timeout):
                await stream.send(data)
                return True
            return False
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
            return False
