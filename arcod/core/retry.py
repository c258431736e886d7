"""Retry policy: how many attempts a task gets and how long to wait between them.

This is the pure half of retrying. The executor's caller asks `delay_before_attempt` before it
starts attempt N; a `None` answer means the task has used up its attempts and counts as failed.
Attempts are numbered from 1 (the first try is not a retry), so a policy with ``max = 2``
allows attempts 1, 2 and 3.
"""

from __future__ import annotations

import math

import msgspec

# A ceiling on any single wait. A large backoff raised to a high attempt number would otherwise
# park a task for years (or overflow a float); a day is longer than any sane retry interval and
# still lets an operator see the task come back.
MAX_DELAY_S = 86_400.0


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `retries = { max, delay_s, backoff }` table of an asset definition.

    `max` counts retries after the first attempt. The wait before attempt 2 is `delay_s`, and
    each later wait is the previous one times `backoff` (so `backoff = 1` is a fixed interval,
    `backoff < 1` shrinks the wait, `backoff = 0` retries at once after the first wait).
    Invalid values are refused at construction, which msgspec turns into a decode error naming
    the field when the policy comes from a definitions file.
    """

    max: int = 0
    delay_s: float = 0.0
    backoff: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.max, bool) or not isinstance(self.max, int) or self.max < 0:
            raise ValueError(
                f"retries.max must be a whole number >= 0 (got {self.max!r}); "
                "use 0 for no retries"
            )
        if not math.isfinite(self.delay_s) or self.delay_s < 0:
            raise ValueError(
                f"retries.delay_s must be a finite number of seconds >= 0 (got {self.delay_s!r})"
            )
        if not math.isfinite(self.backoff) or self.backoff < 0:
            raise ValueError(
                f"retries.backoff must be a finite multiplier >= 0 (got {self.backoff!r}); "
                "use 1.0 for a fixed delay"
            )


def max_attempts(policy: RetryPolicy) -> int:
    """How many attempts the policy allows in total (the first one plus `max` retries)."""
    return policy.max + 1


def delay_before_attempt(policy: RetryPolicy, attempt: int) -> float | None:
    """Seconds to wait before starting attempt number `attempt`, or None if it is not allowed.

    Attempt 1 starts at once (0.0). Attempt 2 waits `delay_s`, attempt 3 `delay_s * backoff`,
    attempt k `delay_s * backoff ** (k - 2)`, capped at `MAX_DELAY_S`. Attempt numbers below 1
    or beyond `max + 1` get None, so a caller can simply ask about "the next attempt" and stop
    when the answer is None.
    """
    if attempt < 1 or attempt > max_attempts(policy):
        return None
    if attempt == 1:
        return 0.0
    if policy.delay_s == 0.0:
        return 0.0
    try:
        delay = policy.delay_s * policy.backoff ** (attempt - 2)
    except OverflowError:
        return MAX_DELAY_S
    return min(delay, MAX_DELAY_S)
