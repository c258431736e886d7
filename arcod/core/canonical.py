"""Canonical JSON and the fingerprints built on it.

A fingerprint decides whether two requests are "the same" (run_key idempotency, rerun keys,
code versions), so its input must have exactly one byte encoding: keys sorted, no whitespace,
UTF-8. Floats are refused because the same value can print several ways across versions
and platforms; sets and non-string mapping keys are refused because they have no order of
their own (a set of strings iterates in a different order in every process).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

import msgspec

__all__ = ["canonical_json", "fingerprint"]


def _check(value: Any, path: str) -> None:
    """Refuse what has no single canonical encoding, naming where it is."""
    if isinstance(value, float):
        raise TypeError(f"canonical JSON refuses floats: {path} = {value!r}; use an int or a string")
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"canonical JSON refuses sets (they have no order): {path}; pass a sorted list")
    if isinstance(value, (str, bytes, int, bool)) or value is None:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"canonical JSON needs string keys: {path} has key {k!r}")
            _check(v, f"{path}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check(v, f"{path}[{i}]")
    elif isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            _check(getattr(value, name), f"{path}.{name}")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _check(getattr(value, field.name), f"{path}.{field.name}")
    # Anything else (datetimes, enums, UUIDs...) is left to msgspec, which encodes it
    # deterministically or raises TypeError.


def canonical_json(obj: Any) -> bytes:
    """The one encoding of `obj`: sorted keys, no whitespace, UTF-8, no floats."""
    _check(obj, "$")
    return msgspec.json.encode(obj, order="sorted")


def fingerprint(obj: Any) -> str:
    """Hex SHA-256 of `canonical_json(obj)`."""
    return hashlib.sha256(canonical_json(obj)).hexdigest()
