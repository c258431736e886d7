"""Dynamic partitions: keys added and removed at run time, kept in insertion order.

The store owns the list (`arcod partitions add|remove`); the core only ever sees a snapshot
of it, bound into the definition with `with_dynamic_keys` / `bind_dynamic_keys`, so every
decision made with a definition value is reproducible from that value alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar, TypeVar

import msgspec

from arcod.core.partitions.static import KeyedPartitions, check_keys, describe_keys


class DynamicPartitions(KeyedPartitions, frozen=True, kw_only=True, dict=True, tag="dynamic"):
    """A snapshot of a dynamic definition's keys, in the order they were added."""

    kind: ClassVar[str] = "dynamic"

    @property
    def open_ended(self) -> bool:
        return True  # keys can be added after any decision made with this snapshot

    def _expected(self) -> str:
        hint = f"add it with `arcod partitions add {self.name} KEY`"
        if not self.keys:
            return f"it has no keys yet; {hint}"
        return f"{describe_keys(self.keys)}; or {hint}"


def with_dynamic_keys(defn: DynamicPartitions, keys: Sequence[str]) -> DynamicPartitions:
    """`defn` holding exactly `keys` (insertion order kept; invalid or repeated keys refused)."""
    if not isinstance(defn, DynamicPartitions):
        raise TypeError(f"with_dynamic_keys needs a dynamic definition, not {defn.kind!r}")
    return DynamicPartitions(name=defn.name, keys=check_keys(defn.name, keys))


D = TypeVar("D")


def bind_dynamic_keys(
    defn: D, keys_of: Mapping[str, Sequence[str]] | Callable[[str], Sequence[str]]
) -> D:
    """`defn` with every dynamic definition inside it (itself, or a multi dimension) bound
    to its keys, looked up by definition name (a name missing from a mapping has no keys yet).
    Other definitions come back unchanged.
    """
    if isinstance(keys_of, Mapping):
        table = keys_of
        lookup: Callable[[str], Sequence[str]] = lambda name: table.get(name, ())  # noqa: E731
    else:
        lookup = keys_of
    if isinstance(defn, DynamicPartitions):
        return with_dynamic_keys(defn, lookup(defn.name))  # type: ignore[return-value]
    dimensions = getattr(defn, "dimensions", None)
    if isinstance(dimensions, dict) and any(
        isinstance(d, DynamicPartitions) for d in dimensions.values()
    ):
        bound = {name: bind_dynamic_keys(d, lookup) for name, d in dimensions.items()}
        return msgspec.structs.replace(defn, dimensions=bound)  # type: ignore[type-var]
    return defn
