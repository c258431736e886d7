"""Typed errors that travel unchanged from the core to the operator.

Every refusal arcod makes is an `ArcodError` with a stable machine-readable `code`, a
message that says what was wrong and what to do, and `details` for programs. The control
server serialises it as ``{"error": {"code", "message", "details"}}`` and the CLI maps it to
exit status 1, so the core decides the wording once.
"""

from __future__ import annotations

from typing import Any


class ArcodError(Exception):
    """A refusal with a stable code. Raised by the core, carried verbatim to the client."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __repr__(self) -> str:
        return f"ArcodError({self.code!r}, {self.message!r}, {self.details!r})"


# The codes, in one place so clients can rely on them.
BAD_REQUEST = "bad_request"  # a malformed frame or a field of the wrong type
UNKNOWN_COMMAND = "unknown_command"
FRAME_TOO_LARGE = "frame_too_large"
PARSE_ERROR = "parse_error"  # a selection expression that does not parse; details.column
UNKNOWN_ASSETS = "unknown_assets"  # details.keys: every unknown key, sorted
EMPTY_SELECTION = "empty_selection"
INVALID_KEY = "invalid_key"
DEFINITIONS_ERROR = "definitions_error"  # details.file, details.asset
NOT_FOUND = "not_found"
RUN_KEY_CONFLICT = "run_key_conflict"
VERSION_CONFLICT = "version_conflict"
INVALID_TRANSITION = "invalid_transition"
PARTITION_ERROR = "partition_error"
MIXED_PARTITIONS = "mixed_partitions"
INTERNAL = "internal"
# The control socket closed a connection (it was silent too long, or made room for another).
IDLE_TIMEOUT = "idle_timeout"
TOO_MANY_CONNECTIONS = "too_many_connections"
# The database could not take a write; nothing of the request was recorded, retry later.
DATABASE_BUSY = "database_busy"  # another process holds SQLite's write lock
STORAGE_ERROR = "storage_error"  # the disk is full or failing
