"""The one syntax of a tag, for asset definitions, run requests and the CLI alike.

A tag key is what `tag:KEY` selects and what a `--tag KEY=VALUE` flag names, so it must
survive the selection grammar and a command line unquoted: 1-64 letters, digits and
`_ . - / :` (Dagster's tag-key alphabet, plus `:` for namespaced keys like `team:data`). A value
is free text up to 256 characters without control characters. The patterns are also used as
msgspec constraints on the wire (`arcod.control.protocol`), hence plain strings anchored with
`\\Z` (a `$` would accept a trailing newline).
"""

from __future__ import annotations

import re

TAG_KEY_PATTERN = r"^[A-Za-z0-9_.:/-]{1,64}\Z"
TAG_VALUE_PATTERN = r"^[^\x00-\x1f\x7f]{0,256}\Z"
MAX_TAGS = 64

_KEY = re.compile(TAG_KEY_PATTERN)
_VALUE = re.compile(TAG_VALUE_PATTERN)


def tag_problem(key: object, value: object) -> str | None:
    """Why (key, value) is not a valid tag, or None when it is."""
    if not isinstance(key, str) or not _KEY.search(key):
        return (f"tag key {key!r} is not valid: expected 1 to 64 letters, digits or `_ . - / :` "
                "(e.g. tier, team:data)")
    if not isinstance(value, str) or not _VALUE.search(value):
        return f"tag {key}: the value must be at most 256 characters without control characters"
    return None
