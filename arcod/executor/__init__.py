"""The executor: runs one task attempt as a subprocess and reports how it ended.

`process` owns spawning, timeouts, cancellation and containment of an attempt's process
group; `worker` is the child-side runner for ``python = "module:function"`` assets.

The names below are loaded on first use (PEP 562) rather than at import: the worker is started
as ``python -m arcod.executor.worker``, which imports this package first, and a task's start-up
should not pay for anyio and msgspec it never uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arcod.executor.process import (
        AttemptOutcome,
        AttemptSpec,
        kill_process_group,
        run_attempt,
    )

__all__ = ["AttemptOutcome", "AttemptSpec", "kill_process_group", "run_attempt"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from arcod.executor import process

        return getattr(process, name)
    raise AttributeError(f"module 'arcod.executor' has no attribute {name!r}")
