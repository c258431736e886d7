"""Messages the backfill controller accepts (besides `RunFinished` from the dispatcher).

Operator requests carry the request's idempotency key (a repeated `--request-id` gives the
same key, so a retried request replays the recorded answer). The controller's own wake-ups
are keyed by what they are about: `plan:{backfill}:v{version}:c{next_chunk}` names the exact
point a planning pass stopped at, so a duplicate is a no-op and a new one never collides.
"""

from __future__ import annotations

from arcod.actors.messages import Message


class CreateBackfill(Message, frozen=True, kw_only=True):
    select: tuple[str, ...]
    upstream: int | None = None
    downstream: int | None = None
    partitions: str
    chunk_size: int | None = None
    max_concurrency: int | None = None
    newest_first: bool = False
    reprocess: str = "all"
    request_id: str | None = None


class TransitionBackfill(Message, frozen=True, kw_only=True):
    """An operator's pause, resume or cancel."""

    backfill_id: str
    action: str  # pause | resume | cancel
    expect_version: int | None = None
    request_id: str | None = None


class RetryFailedBackfill(Message, frozen=True, kw_only=True):
    backfill_id: str
    request_id: str | None = None


class PlanChunks(Message, frozen=True, kw_only=True):
    """Plan what slots allow for one backfill: sent by the controller to itself when a
    planning pass hit its per-transaction budget, after creation, and on every start."""

    backfill_id: str


class ResumeBackfills(Message, frozen=True, kw_only=True):
    """Sent once per daemon start: wake every unfinished backfill (one PlanChunks each)."""
