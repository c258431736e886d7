"""Static and dynamic partitions: ordered unique keys located in O(1)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions import (
    AnyPartitionsDefinition,
    DynamicPartitions,
    StaticPartitions,
    bind_dynamic_keys,
    parse_definition,
    parse_definitions,
    with_dynamic_keys,
)

key_text = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="_-:."), min_size=1, max_size=6).filter(
    lambda k: ".." not in k and k != "all"
)
key_lists = st.lists(key_text, min_size=1, max_size=30, unique=True)


@settings(max_examples=150, deadline=None)
@given(key_lists, st.data())
def test_static_index_and_key_are_inverse_and_keep_declared_order(keys, data) -> None:
    defn = parse_definition("s", {"kind": "static", "keys": keys})
    assert defn.size() == len(keys)
    i = data.draw(st.integers(0, len(keys) - 1))
    assert defn.key(i) == keys[i]
    assert defn.index(keys[i]) == i
    assert defn.key_range(0, len(keys)) == keys


@settings(max_examples=100, deadline=None)
@given(key_lists)
def test_dynamic_snapshot_keeps_insertion_order(keys) -> None:
    defn = with_dynamic_keys(parse_definition("d", {"kind": "dynamic"}), keys)
    assert [defn.index(k) for k in keys] == list(range(len(keys)))
    assert defn.key_range(0, len(keys)) == keys
    assert defn.open_ended


def test_unknown_static_key_lists_the_expected_keys() -> None:
    defn = parse_definition("region", {"kind": "static", "keys": ["eu", "us", "apac"]})
    with pytest.raises(ArcodError) as info:
        defn.index("asia")
    assert info.value.code == PARTITION_ERROR
    assert "expected one of 'eu', 'us', 'apac'" in info.value.message
    with pytest.raises(ArcodError, match=r"0\.\.2"):
        defn.key(3)


def test_long_key_lists_are_summarised_in_errors() -> None:
    defn = StaticPartitions(name="big", keys=tuple(f"k{i}" for i in range(1000)))
    with pytest.raises(ArcodError, match=r"\(1000 keys\)"):
        defn.index("nope")


def test_unknown_dynamic_key_says_how_to_add_it() -> None:
    defn = with_dynamic_keys(DynamicPartitions(name="customers"), [])
    with pytest.raises(ArcodError, match="arcod partitions add customers KEY"):
        defn.index("acme")
    assert defn.size() == 0


def test_dynamic_snapshot_refuses_bad_and_repeated_keys() -> None:
    base = DynamicPartitions(name="d")
    with pytest.raises(ArcodError, match="repeated: 'a'"):
        with_dynamic_keys(base, ["a", "b", "a"])
    with pytest.raises(ArcodError, match="','"):
        with_dynamic_keys(base, ["a,b"])


def test_bind_dynamic_keys_reaches_multi_dimensions_by_name() -> None:
    defs = parse_definitions({
        "customers": {"kind": "dynamic"},
        "daily": {"kind": "daily", "start": "2024-01-01", "end": "2024-01-03"},
        "by_customer": {"kind": "multi", "dimensions": {"customer": "customers", "date": "daily"}},
    })
    bound = bind_dynamic_keys(defs["by_customer"], {"customers": ["acme", "zeta"]})
    assert bound.size() == 4
    assert bound.key(3) == "zeta|2024-01-02"
    assert defs["by_customer"].size() == 0  # the unbound value is untouched
    assert bind_dynamic_keys(defs["daily"], {}) is defs["daily"]
    assert bind_dynamic_keys(defs["by_customer"], {}).size() == 0  # no keys stored yet
    assert bind_dynamic_keys(defs["customers"], lambda name: ["x"]).keys == ("x",)


def test_definitions_survive_a_msgspec_round_trip() -> None:
    defn = parse_definition("region", {"kind": "static", "keys": ["eu", "us"]})
    data = msgspec.json.encode(defn)
    assert msgspec.json.decode(data) == {"kind": "static", "name": "region", "keys": ["eu", "us"]}
    back = msgspec.json.decode(data, type=AnyPartitionsDefinition)
    assert back == defn and back.index("us") == 1
