"""Canonical JSON: one byte encoding per value, so fingerprints mean "the same request"."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.canonical import canonical_json, fingerprint


class Selector(msgspec.Struct, frozen=True, kw_only=True):
    zeta: int
    alpha: str
    keys: tuple[str, ...] = ()


@dataclasses.dataclass
class Window:
    end: str
    start: str
    offset: object = 0


def test_sorted_keys_no_whitespace_utf8() -> None:
    assert canonical_json({"b": 1, "a": [True, None, "é"], "A": {"z": 1, "y": 2}}) == (
        '{"A":{"y":2,"z":1},"a":[true,null,"é"],"b":1}'.encode()
    )


def test_structs_dataclasses_and_tuples() -> None:
    assert canonical_json(Selector(zeta=1, alpha="x", keys=("b", "a"))) == b'{"alpha":"x","keys":["b","a"],"zeta":1}'
    assert canonical_json(Window(end="2", start="1")) == b'{"end":"2","offset":0,"start":"1"}'
    assert canonical_json((1, 2)) == canonical_json([1, 2]) == b"[1,2]"


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (1.5, "$"),
        ({"a": [1, {"b": 0.0}]}, "$.a[1].b"),
        ([Window(end="x", start="y", offset=float("nan"))], "$[0].offset"),
        ({"tags": {"w": float("inf")}}, "$.tags.w"),
    ],
)
def test_floats_are_refused_naming_the_path(value: object, path: str) -> None:
    with pytest.raises(TypeError, match="floats") as info:
        canonical_json(value)
    assert path in str(info.value)


def test_float_inside_a_struct_is_refused() -> None:
    class Loose(msgspec.Struct):
        weight: object

    with pytest.raises(TypeError, match=r"\$\[1\]\.weight"):
        canonical_json([0, Loose(weight=0.5)])


def test_unordered_or_ambiguous_values_are_refused() -> None:
    with pytest.raises(TypeError, match="sets"):
        canonical_json({"assets": {"a", "b"}})
    with pytest.raises(TypeError, match="string keys"):
        canonical_json({1: "a"})


def test_fingerprint_is_sha256_of_the_canonical_bytes() -> None:
    assert fingerprint({"b": 1, "a": 2}) == hashlib.sha256(b'{"a":2,"b":1}').hexdigest()
    assert len(fingerprint([])) == 64


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(json_values, st.randoms(use_true_random=False))
def test_encoding_ignores_insertion_order_and_round_trips(value: object, rnd) -> None:  # type: ignore[no-untyped-def]
    def shuffled(v: object) -> object:
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)
            return {k: shuffled(x) for k, x in items}
        if isinstance(v, list):
            return [shuffled(x) for x in v]
        return v

    data = canonical_json(value)
    assert canonical_json(shuffled(value)) == data
    assert json.loads(data) == value
    assert data == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
