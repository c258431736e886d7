"""A blocking control-socket client for the CLI.

One command is one connection, one request, one reply (or a few, for `--follow` and
`--wait`, which poll). Blocking sockets keep the CLI's start-up cost to the interpreter and
msgspec: `arcod status` must answer in well under 200 ms, and an event loop buys nothing
for a single request.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import msgspec

from arcod.control import protocol


class DaemonUnreachable(Exception):
    """No daemon answers on the socket (exit status 3)."""


class RequestRefused(Exception):
    """The daemon answered with an error (exit status 1)."""

    def __init__(self, error: protocol.ErrorBody) -> None:
        super().__init__(error.message)
        self.error = error


class Client:
    def __init__(self, socket_path: Path, timeout: float | None = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(os.fspath(self.socket_path))
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                sock.close()
                raise DaemonUnreachable(
                    f"no arcod daemon is listening on {self.socket_path} ({exc.strerror.lower()}); "
                    "start one with `make run` or `arcod serve --config PATH`"
                ) from None
            except OSError as exc:
                sock.close()
                raise DaemonUnreachable(f"cannot connect to {self.socket_path}: {exc}") from None
            self._sock = sock
        return self._sock

    def call(self, request: protocol.Request) -> Any:
        """Send one request; return its result or raise RequestRefused / DaemonUnreachable."""
        reply = self.call_raw(request)
        if reply.error is not None:
            raise RequestRefused(reply.error)
        return reply.result

    def call_raw(self, request: protocol.Request) -> protocol.Reply:
        sock = self._connect()
        try:
            sock.sendall(protocol.encode_frame(request))
            line = self._read_line(sock)
        except (TimeoutError, socket.timeout):
            raise DaemonUnreachable(f"the daemon on {self.socket_path} did not answer in {self.timeout}s") from None
        except (ConnectionError, BrokenPipeError) as exc:
            raise DaemonUnreachable(f"the daemon on {self.socket_path} closed the connection: {exc}") from None
        return protocol.reply_decoder.decode(line)

    def _read_line(self, sock: socket.socket) -> bytes:
        while b"\n" not in self._buffer:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed before a reply")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj)
