"""The rules every partition key obeys, whatever its definition (SPEC §3).

Keys travel through places that give some characters a meaning: `,` separates keys and `..`
makes a range in the CLI selector syntax, `|` joins the two values of a multi key, and keys
end up in environment variables and log lines. Refusing those characters once, here, is what
lets every other module split and join keys without quoting.
"""

from __future__ import annotations

import re

from arcod.core.errors import PARTITION_ERROR, ArcodError

MULTI_SEPARATOR = "|"

# The selector word for "every partition". A key spelled the same would make
# `--partitions all` mean two things, and picking either silently would widen or narrow
# someone's backfill, so it is reserved.
RESERVED_KEYS = frozenset({"all"})

_FORBIDDEN = re.compile(r"[,|\x00-\x1f\x7f-\x9f]|\.\.")


def key_problem(key: object) -> str | None:
    """Why `key` cannot be a partition key, or None when it can.

    Split from `validate_partition_key` so that callers which check many keys (a definition
    file, a batch of dynamic keys) can collect every problem before raising once.
    """
    if not isinstance(key, str):
        return f"a partition key must be a string, not {type(key).__name__}"
    if not key:
        return "a partition key may not be empty"
    if key != key.strip():
        return f"partition key {key!r} has leading or trailing whitespace; remove it"
    if key in RESERVED_KEYS:
        return f"partition key {key!r} is reserved: the selector {key!r} selects every partition"
    bad = _FORBIDDEN.search(key)
    if bad is not None:
        found = bad.group()
        what = "'..'" if found == ".." else repr(found)
        return (
            f"partition key {key!r} contains {what}; keys may not contain ',', '|', '..' "
            "or control characters (they separate keys, multi dimensions and ranges)"
        )
    return None


def validate_partition_key(key: str) -> None:
    """Refuse a key that breaks SPEC §3, saying which rule it breaks."""
    problem = key_problem(key)
    if problem is not None:
        raise ArcodError(PARTITION_ERROR, problem, {"key": key if isinstance(key, str) else None})
