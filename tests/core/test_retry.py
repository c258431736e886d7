"""The retry policy: which attempts are allowed and how long to wait before each."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.retry import MAX_DELAY_S, RetryPolicy, delay_before_attempt, max_attempts

policies = st.builds(
    RetryPolicy,
    max=st.integers(min_value=0, max_value=50),
    delay_s=st.floats(min_value=0.0, max_value=3600.0),
    backoff=st.floats(min_value=0.0, max_value=10.0),
)


def test_documented_example() -> None:
    policy = RetryPolicy(max=2, delay_s=1.0, backoff=2.0)
    assert [delay_before_attempt(policy, n) for n in range(0, 5)] == [None, 0.0, 1.0, 2.0, None]


def test_default_policy_allows_one_attempt() -> None:
    policy = RetryPolicy()
    assert max_attempts(policy) == 1
    assert delay_before_attempt(policy, 1) == 0.0
    assert delay_before_attempt(policy, 2) is None


def test_fixed_interval_and_shrinking_backoff() -> None:
    fixed = RetryPolicy(max=3, delay_s=5.0)
    assert [delay_before_attempt(fixed, n) for n in (2, 3, 4)] == [5.0, 5.0, 5.0]
    halving = RetryPolicy(max=3, delay_s=8.0, backoff=0.5)
    assert [delay_before_attempt(halving, n) for n in (2, 3, 4)] == [8.0, 4.0, 2.0]


def test_huge_backoff_is_capped_instead_of_overflowing() -> None:
    policy = RetryPolicy(max=5000, delay_s=1.0, backoff=10.0)
    assert delay_before_attempt(policy, 5000) == MAX_DELAY_S


@settings(max_examples=150, deadline=None)
@given(policies, st.integers(min_value=-5, max_value=60))
def test_an_attempt_is_allowed_exactly_up_to_max_plus_one(policy, attempt) -> None:
    delay = delay_before_attempt(policy, attempt)
    if 1 <= attempt <= policy.max + 1:
        assert delay is not None and 0.0 <= delay <= MAX_DELAY_S
    else:
        assert delay is None


@settings(max_examples=150, deadline=None)
@given(policies.filter(lambda p: p.backoff >= 1.0))
def test_delays_never_shrink_when_backoff_is_at_least_one(policy) -> None:
    delays = [delay_before_attempt(policy, n) for n in range(1, policy.max + 2)]
    assert delays[0] == 0.0
    assert all(a is not None and b is not None and a <= b for a, b in zip(delays, delays[1:]))
    if policy.max >= 1:
        assert delays[1] == policy.delay_s


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"max": -1}, "retries.max"),
        ({"delay_s": -0.5}, "retries.delay_s"),
        ({"delay_s": float("nan")}, "retries.delay_s"),
        ({"backoff": float("inf")}, "retries.backoff"),
        ({"backoff": -2.0}, "retries.backoff"),
    ],
)
def test_invalid_policies_are_refused(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**fields)


def test_decoding_from_definitions() -> None:
    raw = b'{"max": 2, "delay_s": 1.5, "backoff": 2}'
    assert msgspec.json.decode(raw, type=RetryPolicy) == RetryPolicy(
        max=2, delay_s=1.5, backoff=2.0
    )
    with pytest.raises(msgspec.ValidationError, match="retries.max"):
        msgspec.json.decode(b'{"max": -3}', type=RetryPolicy)
    with pytest.raises(msgspec.ValidationError, match="delays"):
        msgspec.json.decode(b'{"max": 1, "delays": 3}', type=RetryPolicy)
