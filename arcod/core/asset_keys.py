"""The syntax of asset keys: one or more segments of `[A-Za-z0-9_]` joined by `/`.

Kept this narrow on purpose: a key never needs quoting in a selection expression, can never
be confused with a task id suffix (`[`), a partition separator (`|`, `,`) or a wildcard
(`*`), and is safe to print anywhere. Keys are case-sensitive.
"""

from __future__ import annotations

import re

from arcod.core.errors import INVALID_KEY, ArcodError

# Anchored with \A and \Z so `.match` and `.fullmatch` agree (a `$` would accept a trailing newline).
ASSET_KEY_RE = re.compile(r"\A[A-Za-z0-9_]+(?:/[A-Za-z0-9_]+)*\Z")


def is_asset_key(key: object) -> bool:
    return isinstance(key, str) and ASSET_KEY_RE.match(key) is not None


def validate_asset_key(key: object) -> None:
    """Refuse anything that is not a well-formed asset key, saying what a key looks like."""
    if is_asset_key(key):
        return
    raise ArcodError(
        INVALID_KEY,
        f"invalid asset key {key!r}: a key is one or more segments of letters, digits and `_` "
        "joined by `/` (for example `sales/daily`)",
        {"key": key if isinstance(key, str) else repr(key)},
    )
