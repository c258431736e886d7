"""Per-attempt paths stay inside the logs directory and within filename limits."""

from __future__ import annotations

from pathlib import PurePath

from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.paths import MAX_COMPONENT, attempt_log_path, safe_component

LOGS = PurePath("/state/logs")


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.text(min_size=0, max_size=400), st.integers(1, 10**6))
def test_any_ids_stay_inside_logs_dir_and_under_the_name_limit(run_id, task_id, attempt):
    path = attempt_log_path(LOGS, run_id, task_id, attempt)
    assert LOGS in path.parents and len(path.relative_to(LOGS).parts) == 3
    assert all(len(part.encode()) <= MAX_COMPONENT for part in path.parts[-3:])


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.text(max_size=300))
def test_distinct_ids_get_distinct_names(a, b):
    if a != b:
        assert safe_component(a) != safe_component(b)


def test_traversal_attempts_are_neutralised():
    for evil in ("..", ".", "../../etc/passwd", "/abs", "a/../../b"):
        assert "/" not in safe_component(evil) and safe_component(evil) not in (".", "..")
