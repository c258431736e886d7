"""What every partitions definition offers, and the shared wording of its refusals.

A definition is a total order over its keys. Callers (selectors, the backfill controller,
the planner) only ever ask four questions of it — how many, where is this key, which key is
there, and which keys lie between two positions — so that a million partitions cost the same
as ten: nothing here enumerates a definition to answer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from arcod.core.errors import PARTITION_ERROR, ArcodError


@runtime_checkable
class PartitionsDefinition(Protocol):
    """A named, totally ordered set of partition keys.

    `as_of` is the instant that decides how many windows an open-ended time definition has
    (windows complete by then, plus `end_offset`). The core never reads a clock: callers pass
    it. Where it is None, `index` and `key` check only the lower bound; `size` refuses.
    Definitions that do not grow with time ignore it.

    Inside this package every definition also has `_limit(as_of)` (the size when it is known,
    None for an open-ended time definition without `as_of`) and `_key_at(i)` (the key at a
    position already checked), which the selector code uses to bound once and then generate.
    """

    name: str

    @property
    def kind(self) -> str: ...

    @property
    def open_ended(self) -> bool:
        """True when the set can gain keys later (time windows without `end`, dynamic)."""
        ...

    def size(self, as_of: datetime | None = None) -> int: ...

    def index(self, key: str, as_of: datetime | None = None) -> int: ...

    def key(self, index: int, as_of: datetime | None = None) -> str: ...

    def key_range(self, start: int, stop: int, as_of: datetime | None = None) -> list[str]:
        """Keys at positions [start, stop), in definition order, in O(stop - start)."""
        ...


def check_index(defn_name: str, index: object, limit: int | None) -> int:
    """Refuse an index that is not an int within [0, limit) (no upper bound when None)."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise ArcodError(
            PARTITION_ERROR,
            f"a partition index must be an integer, not {type(index).__name__}",
            {"partitions": defn_name},
        )
    if index < 0 or (limit is not None and index >= limit):
        bound = "0 or more" if limit is None else (
            f"0..{limit - 1}" if limit > 0 else "nothing: the definition has no partitions yet"
        )
        raise ArcodError(
            PARTITION_ERROR,
            f"partition index {index} is out of range for {defn_name!r}: expected {bound}",
            {"partitions": defn_name, "index": index, "size": limit},
        )
    return index


def check_span(defn_name: str, start: int, stop: int, limit: int | None) -> None:
    """Refuse a [start, stop) span that does not lie inside [0, limit)."""
    for value in (start, stop):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ArcodError(
                PARTITION_ERROR,
                f"partition positions must be integers, not {type(value).__name__}",
                {"partitions": defn_name},
            )
    if start < 0 or stop < start or (limit is not None and stop > limit):
        raise ArcodError(
            PARTITION_ERROR,
            f"positions [{start}, {stop}) are not inside {defn_name!r} "
            f"(expected 0 <= start <= stop{'' if limit is None else f' <= {limit}'})",
            {"partitions": defn_name, "start": start, "stop": stop, "size": limit},
        )


def needs_as_of(defn_name: str, what: str) -> ValueError:
    """The error for a caller that forgot `as_of` where the answer depends on it.

    A ValueError rather than an ArcodError: it is a bug in the caller, not bad operator input.
    """
    return ValueError(
        f"partitions {defn_name!r} is open-ended: {what} depends on time, pass as_of explicitly"
    )


def instant(as_of: datetime) -> int:
    """`as_of` as whole POSIX seconds, rounded down (windows end on whole seconds)."""
    if as_of.tzinfo is None or as_of.utcoffset() is None:
        raise ValueError("as_of must be timezone-aware (the core never assumes a local zone)")
    ts = as_of.timestamp()
    whole = int(ts)
    return whole - 1 if whole > ts else whole


def not_a_key(
    defn_name: str, kind: str, key: object, expected: str, **details: object
) -> ArcodError:
    """The refusal for a key that does not belong to a definition, naming the expected form."""
    return ArcodError(
        PARTITION_ERROR,
        f"{key!r} is not a partition of {kind} definition {defn_name!r}: {expected}",
        {"partitions": defn_name, "key": key if isinstance(key, str) else None, **details},
    )
