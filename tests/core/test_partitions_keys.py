"""SPEC §3 key rules: what a partition key may not contain."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARTITION_ERROR, ArcodError
from arcod.core.partitions import key_problem, validate_partition_key


@pytest.mark.parametrize(
    "key",
    ["2024-01-01", "eu", "a.b", "x y", "über", "2024-11-03-01:00_POST_DST_TRANSITION", "a=b;c", "."],
)
def test_ordinary_keys_are_accepted(key: str) -> None:
    validate_partition_key(key)
    assert key_problem(key) is None


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("", "empty"),
        (" eu", "whitespace"),
        ("eu\t", "whitespace"),
        ("a,b", "','"),
        ("a|b", "'|'"),
        ("a..b", "'..'"),
        ("a\nb", "control"),
        ("a\x00b", "control"),
        ("a\x7fb", "control"),
        ("a\x85b", "control"),
        ("all", "reserved"),
    ],
)
def test_forbidden_keys_are_refused_with_the_rule(key: str, fragment: str) -> None:
    with pytest.raises(ArcodError) as info:
        validate_partition_key(key)
    assert info.value.code == PARTITION_ERROR
    assert fragment in info.value.message
    assert info.value.details["key"] == key


def test_non_strings_are_refused() -> None:
    with pytest.raises(ArcodError):
        validate_partition_key(5)  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=12))
def test_a_key_is_valid_exactly_when_it_breaks_no_rule(key: str) -> None:
    breaks_a_rule = (
        key == ""
        or key != key.strip()
        or key == "all"
        or any(c in key for c in ",|")
        or ".." in key
        or any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in key)
    )
    assert (key_problem(key) is not None) == breaks_a_rule
