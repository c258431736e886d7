"""Pure decisions behind operator refusals and progress: log filters, subset reruns outside the
parent's plan, hints on finished backfills, retry-failed refusals, finished vs succeeded
progress, and asset key syntax on lookup."""

from __future__ import annotations

import pytest

from arcod.core.backfill_chunks import (
    ChunkState,
    backfill_progress,
    partitions_to_retry,
    progress,
    progress_dict,
)
from arcod.core.backfill_state import (
    BackfillState,
    apply_backfill_event,
    backfill_not_found,
    check_retry_failed,
    decide_transition,
    finished_hint,
)
from arcod.core.definitions import build_definitions
from arcod.core.errors import (
    EMPTY_SELECTION,
    INVALID_KEY,
    INVALID_TRANSITION,
    NOT_FOUND,
    UNKNOWN_ASSETS,
    ArcodError,
)
from arcod.core.plan import Plan, PlanTask
from arcod.core.rerun import resolve_subset
from arcod.core.selection import SelectionRequest
from arcod.core.task_filter import check_task_filter

S = BackfillState


def refusal(fn, *args, **kwargs) -> ArcodError:
    with pytest.raises(ArcodError) as info:
        fn(*args, **kwargs)
    return info.value


# ── logs --asset / --partition ───────────────────────────────────────────────

DAYS = [f"2024-03-{d:02d}" for d in range(1, 11)]
TASKS = [("raw/orders", d) for d in DAYS] + [("clean/orders", d) for d in DAYS[:2]]


def test_a_filter_that_names_a_task_passes():
    check_task_filter("r1", TASKS, "raw/orders", None)
    check_task_filter("r1", TASKS, None, "2024-03-10")
    check_task_filter("r1", TASKS, "clean/orders", "2024-03-02")
    check_task_filter("r1", [("a", None)], "a", None)


def test_an_asset_the_run_lacks_is_not_found_naming_its_assets():
    err = refusal(check_task_filter, "r1", TASKS, "nope/x", None)
    assert err.code == NOT_FOUND
    assert "r1" in err.message and "'nope/x'" in err.message and "raw/orders, clean/orders" in err.message
    assert err.details["assets"] == ["raw/orders", "clean/orders"] and err.details["what"] == "asset"


def test_a_partition_the_run_lacks_is_not_found_naming_a_few_of_its_partitions():
    err = refusal(check_task_filter, "r1", TASKS, None, "2023-01-01")
    assert err.code == NOT_FOUND and "'2023-01-01'" in err.message
    assert "2024-03-01, 2024-03-02, 2024-03-03, 2024-03-04, ..., 2024-03-10 (10 in all)" in err.message
    assert err.details["partitions_total"] == 10
    # Within one asset: a partition another asset has is still not there.
    err = refusal(check_task_filter, "r1", TASKS, "clean/orders", "2024-03-05")
    assert "of asset clean/orders" in err.message and "2024-03-01, 2024-03-02" in err.message


def test_a_partition_on_an_unpartitioned_run_says_to_leave_it_out():
    err = refusal(check_task_filter, "r1", [("a", None), ("b", None)], None, "x")
    assert err.code == NOT_FOUND and "no partitioned task" in err.message


def test_a_malformed_asset_filter_is_an_invalid_key():
    assert refusal(check_task_filter, "r1", TASKS, "bad key!", None).code == INVALID_KEY


# ── subset rerun outside the parent's plan ────────────────────────────────────


class Attrs:
    def __init__(self, group: str):
        self.group, self.tags, self.kinds, self.owners = group, {}, (), ()


PLAN = Plan(tasks=(PlanTask(task_id="raw/customers", asset="raw/customers"),
                   PlanTask(task_id="clean/customers", asset="clean/customers", deps=("raw/customers",))))
ATTRS = {"raw/customers": Attrs("ingest"), "clean/customers": Attrs("transform"), "raw/orders": Attrs("ingest"),
         "geo/stores": Attrs("geo")}
DEPS = {"raw/customers": (), "clean/customers": ("raw/customers",), "raw/orders": (), "geo/stores": ()}


def subset(*select: str) -> ArcodError:
    return refusal(resolve_subset, "r-parent", PLAN, SelectionRequest(select=select), ATTRS, DEPS)


def test_a_label_matching_only_assets_outside_the_plan_says_so_and_lists_what_the_rerun_can_take():
    err = subset("group:geo")
    assert err.code == EMPTY_SELECTION
    assert "matches no asset in the plan of run r-parent" in err.message
    assert "it matches geo/stores, outside the plan" in err.message
    assert "can only take assets the parent planned (clean/customers, raw/customers)" in err.message
    assert "check the names" not in err.message
    assert err.details["matches_outside_plan"] == ["geo/stores"]
    assert err.details["parent_assets"] == ["clean/customers", "raw/customers"]


def test_an_exact_key_outside_the_plan_is_worded_the_same_way():
    err = subset("raw/orders")
    assert err.code == UNKNOWN_ASSETS
    assert "not in the plan of run r-parent: raw/orders" in err.message
    assert "can only take assets the parent planned (clean/customers, raw/customers)" in err.message


def test_a_label_matching_nothing_anywhere_still_names_the_plan():
    err = subset("group:nothing")
    assert err.code == EMPTY_SELECTION and "outside the plan" not in err.message
    assert "can only take assets the parent planned" in err.message


def test_a_selection_inside_the_plan_resolves_over_the_parent_graph():
    res = resolve_subset("r-parent", PLAN, SelectionRequest(select=("group:ingest",), downstream=-1), ATTRS, DEPS)
    assert res.keys == ("clean/customers", "raw/customers")  # raw/orders is ingest too, but not planned


# ── hints on finished backfills, retry-failed ────────────────────────────────


def test_a_succeeded_backfill_never_points_at_retry_failed():
    for event in ("pause", "resume", "cancel"):
        err = refusal(decide_transition, "SUCCEEDED", 3, event, None, retryable=False)
        assert err.code == INVALID_TRANSITION
        assert "retry-failed" not in err.message and "every partition succeeded" in err.message
        # Even when the caller does not know: SUCCEEDED means nothing failed.
        assert "retry-failed" not in refusal(apply_backfill_event, "SUCCEEDED", event).message


def test_failed_or_canceled_backfills_point_at_retry_failed_only_with_something_to_retry():
    for state in (S.FAILED, S.CANCELED):
        assert "retry-failed" in refusal(decide_transition, state, 3, "resume", None, retryable=True).message
        assert "retry-failed" in finished_hint(state)  # unknown: FAILED/CANCELED usually have some
        msg = refusal(decide_transition, state, 3, "pause", None, retryable=False).message
        assert "retry-failed" not in msg and "nothing to retry" in msg


def test_retry_failed_refusals_say_what_to_do():
    err = refusal(check_retry_failed, "b-1", "SUCCEEDED", 0)
    assert err.code == INVALID_TRANSITION
    assert "every partition succeeded" in err.message and "nothing to retry" in err.message
    assert "pause" not in err.message and "wait for it to finish" not in err.message
    running = refusal(check_retry_failed, "b-1", "RUNNING", 0).message
    assert "wait for it to finish" in running and "cancel it first" in running and "pause" not in running
    assert "resume it" in refusal(check_retry_failed, "b-1", "PAUSED", 5).message
    assert "wait for the cancel" in refusal(check_retry_failed, "b-1", "CANCELING", 5).message
    empty = refusal(check_retry_failed, "b-1", "CANCELED", 0)
    assert empty.code == EMPTY_SELECTION and "nothing to retry" in empty.message
    check_retry_failed("b-1", "FAILED", 1)
    check_retry_failed("b-1", "CANCELED", 3)


def test_partitions_to_retry_counts_failures_and_what_was_never_planned():
    assert partitions_to_retry(total=20, planned=20, failed=0, canceled=0) == 0
    assert partitions_to_retry(total=20, planned=20, failed=2, canceled=1) == 3
    assert partitions_to_retry(total=20, planned=10, failed=0, canceled=5) == 15


def test_unknown_backfill_refusal():
    err = backfill_not_found("b-nope")
    assert err.code == NOT_FOUND and "b-nope" in err.message and err.details == {"what": "backfill", "id": "b-nope"}


# ── progress: finished is not succeeded ──────────────────────────────────────


def test_a_canceled_backfill_is_finished_but_not_succeeded():
    p = backfill_progress(20, {ChunkState.SUCCEEDED: 15, ChunkState.CANCELED: 5}, 10.0, running=False)
    assert (p.partitions_finished, p.fraction) == (20, 1.0)
    assert (p.partitions_succeeded, p.fraction_succeeded) == (15, 0.75)
    d = progress_dict(p)
    assert d["partitions_done"] == d["partitions_finished"] == 20 and d["fraction"] == d["fraction_finished"] == 1.0
    assert d["fraction_succeeded"] == 0.75


def test_a_failed_backfill_whose_partitions_all_failed_succeeded_nothing():
    p = backfill_progress(14, {ChunkState.FAILED: 14}, 5.0, running=False)
    assert (p.partitions_finished, p.partitions_succeeded, p.fraction_succeeded) == (14, 0, 0.0)


def test_skipped_by_reprocess_counts_as_succeeded():
    p = backfill_progress(10, {ChunkState.SUCCEEDED: 4, ChunkState.SKIPPED: 6}, 1.0, running=False)
    assert p.fraction_succeeded == 1.0


def test_progress_keeps_its_old_reading():
    p = progress(total=100, done=25, elapsed_s=5.0, running=True)
    assert (p.fraction, p.rate_per_s, p.eta_s, p.fraction_succeeded) == (0.25, 5.0, 15.0, 0.0)
    assert progress(0, 0, 1.0, False).fraction_succeeded == 1.0


# ── asset key syntax on lookup ───────────────────────────────────────────────


def test_looking_up_a_malformed_key_says_the_syntax_is_invalid():
    defs = build_definitions([("assets.toml", {"assets": {"sales/daily": {"command": ["true"]}}})])
    err = refusal(defs.asset, "bad key!")
    assert err.code == INVALID_KEY and "invalid asset key" in err.message and "letters, digits and `_`" in err.message
    err = refusal(defs.asset, "sales/dayly")
    assert err.code == UNKNOWN_ASSETS and "sales/daily" in err.message
