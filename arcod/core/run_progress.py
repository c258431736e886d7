"""The task states of one run, kept with the answers the dispatcher needs after every change.

`ready_tasks`, `run_outcome` and `tasks_to_skip` (in `task_state` and `run_state`) answer
from a whole `states` mapping: O(tasks) each. The dispatcher asks them after every message
of a run, so a run of 10,000 tasks cost O(tasks²) to drive — 45 ms of overhead per task at
2,500 tasks against 20 ms at 500. `RunProgress` gives the same answers with the work done
where states change: counts per state, the number of unmet dependencies of every task, the
ready tasks in plan order (a heap), and the downstream index that skips walk. A change costs
O(its downstream tasks · log tasks); a question costs O(the answer · log tasks).

Those functions stay the definition: the tests check `RunProgress` against them on random
plans and random histories. This file is pure (no I/O); the dispatcher keeps one instance per
active run and checks it against the run's `tasks_version` before trusting it.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Container, Mapping

from arcod.core.plan import Plan, PlanTask
from arcod.core.run_state import RunState, outcome_of_counts
from arcod.core.task_state import TaskState, descendants, downstream_index


class RunProgress:
    """One run's task states plus what follows from them, updated one change at a time.

    `version` is the caller's: the number of the stored state this object mirrors.
    """

    def __init__(self, plan: Plan, states: Mapping[str, TaskState | str], version: int = 0) -> None:
        self.plan = plan
        self.version = version
        self._position = {task.task_id: i for i, task in enumerate(plan.tasks)}
        self._tasks = {task.task_id: task for task in plan.tasks}
        self._deps = {task.task_id: task.deps for task in plan.tasks}
        self._downstream = downstream_index(plan)
        self._states = {task.task_id: TaskState(states.get(task.task_id, TaskState.PENDING)) for task in plan.tasks}
        self.counts: Counter[TaskState] = Counter(self._states.values())
        self._unmet = {tid: sum(1 for d in deps if self._states[d] != TaskState.SUCCEEDED)
                       for tid, deps in self._deps.items()}
        self._ready: set[str] = {tid for tid, n in self._unmet.items()
                                 if n == 0 and self._states[tid] == TaskState.PENDING}
        self._heap = [(self._position[tid], tid) for tid in self._ready]
        heapq.heapify(self._heap)

    def task(self, task_id: str) -> PlanTask:
        return self._tasks[task_id]

    def state(self, task_id: str) -> TaskState:
        return self._states[task_id]

    def states(self) -> dict[str, TaskState]:
        """A copy of every task's state (O(tasks): for tests and rare paths)."""
        return dict(self._states)

    def set(self, task_id: str, state: TaskState | str) -> None:
        """Record that `task_id` is now in `state` (the caller applied the transition)."""
        new = TaskState(state)
        old = self._states[task_id]
        if new == old:
            return
        self._states[task_id] = new
        self.counts[old] -= 1
        self.counts[new] += 1
        if old == TaskState.SUCCEEDED or new == TaskState.SUCCEEDED:
            step = -1 if new == TaskState.SUCCEEDED else 1
            for child in self._downstream.get(task_id, ()):
                self._unmet[child] += step
                self._recheck(child)
        self._recheck(task_id)

    def _recheck(self, task_id: str) -> None:
        if self._unmet[task_id] == 0 and self._states[task_id] == TaskState.PENDING:
            if task_id not in self._ready:
                self._ready.add(task_id)
                heapq.heappush(self._heap, (self._position[task_id], task_id))
        else:
            self._ready.discard(task_id)  # its heap entry is dropped when it surfaces

    def ready(self, n: int, exclude: Container[str] = ()) -> list[str]:
        """The first `n` ready tasks (PENDING, every dependency SUCCEEDED) in plan order,
        leaving out those in `exclude` (tasks the caller already found it cannot start)."""
        taken: list[tuple[int, str]] = []
        found: list[str] = []
        while self._heap and len(found) < n:
            entry = heapq.heappop(self._heap)
            if entry[1] not in self._ready or (taken and taken[-1] == entry):
                continue  # stale (no longer ready) or a duplicate entry
            taken.append(entry)
            if entry[1] not in exclude:
                found.append(entry[1])
        for entry in taken:
            heapq.heappush(self._heap, entry)
        return found

    def outcome(self, *, canceling: bool = False) -> RunState | None:
        """`run_state.run_outcome` of the current states (the same rule, from the counts)."""
        return outcome_of_counts(self.counts, canceling=canceling)

    def to_skip(self, failed_task_id: str) -> dict[str, str]:
        """`task_state.tasks_to_skip`: every PENDING task transitively downstream of the
        failed one, mapped to it, in plan order."""
        if failed_task_id not in self._states:
            raise ValueError(f"task {failed_task_id!r} is not in the plan")
        seen = descendants(self._downstream, failed_task_id)
        doomed = sorted((tid for tid in seen if self._states[tid] == TaskState.PENDING), key=self._position.__getitem__)
        return {tid: failed_task_id for tid in doomed}
