"""The process that runs a `python = "module:function"` asset: `python -m arcod.executor.worker`.

It runs in its own process (started by `arcod.executor.process`) so that a task's imports,
globals, crashes and memory never touch the daemon, and so it can be timed out and killed like
any command. Its contract is the same as a command's: exit status 0 is success.

- The project directory (the process's cwd) is put first on ``sys.path``, so ``jobs.sales``
  resolves to ``jobs/sales.py`` beside the definitions.
- ``function`` may be a dotted path inside the module (``"jobs.sales:Builder.build"``).
- The callable gets a `TaskContext` if it needs an argument, and nothing if it can be called
  without one: ``def build(): ...`` and ``def build(context): ...`` both work, and
  ``def build(context=None)`` is called with no argument (read the environment, or make the
  parameter required). A coroutine function is run with ``asyncio.run``.
- Exit statuses: 0 when the callable returns; 1 with the traceback on stderr when it raises;
  2 with a one-line explanation when the callable cannot be loaded (bad spec, import error,
  missing attribute, not callable, wrong signature). ``sys.exit(n)`` inside the task exits n.
- SIGTERM (how arcod stops a task on timeout or cancel) is raised in the task as SystemExit
  (status 143), so ``finally`` blocks and context managers get to clean up before the grace
  period ends and SIGKILL follows.

This module imports only the standard library so that starting a task costs as little as
possible beyond importing the task itself.
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import sys
import traceback
from dataclasses import dataclass
from types import FrameType
from typing import Any

EXIT_OK = 0
EXIT_TASK_FAILED = 1
EXIT_CANNOT_LOAD = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """What the task is materialising, read from the ARCOD_* environment variables."""

    run_id: str
    asset: str
    attempt: int
    partition_key: str | None = None
    partition_start: str | None = None  # ISO timestamp, time-window partitions only
    partition_end: str | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | os._Environ[str]) -> TaskContext:
        return cls(
            run_id=env.get("ARCOD_RUN_ID", ""),
            asset=env.get("ARCOD_ASSET", ""),
            attempt=int(env.get("ARCOD_ATTEMPT", "1") or "1"),
            partition_key=env.get("ARCOD_PARTITION_KEY"),
            partition_start=env.get("ARCOD_PARTITION_START"),
            partition_end=env.get("ARCOD_PARTITION_END"),
        )


class CannotLoad(Exception):
    """The task's callable could not be found or called; the message says why and what to do."""


def load_callable(target: str) -> Any:
    """Resolve ``"module:attr.path"`` to an object, with cwd first on the import path."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise CannotLoad(
            f"bad python target {target!r}: write it as 'module:function', "
            "e.g. 'jobs.sales:build'"
        )
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name or module_name.startswith(f"{exc.name}."):
            raise CannotLoad(
                f"cannot import module {module_name!r}: no module named {exc.name!r} "
                f"under {cwd} or on the Python path; check the asset's `python` setting"
            ) from exc
        raise CannotLoad(
            f"cannot import module {module_name!r}: it imports {exc.name!r}, which is not "
            f"installed\n{traceback.format_exc()}"
        ) from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise CannotLoad(
            f"cannot import module {module_name!r}: importing it raised "
            f"{type(exc).__name__}\n{traceback.format_exc()}"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise CannotLoad(
                f"module {module_name!r} has no attribute {attr_path!r} "
                f"(looked for {part!r}); check the asset's `python` setting"
            ) from None
    if not callable(obj):
        raise CannotLoad(f"{target!r} is a {type(obj).__name__}, not a callable")
    return obj


def call_arguments(fn: Any, context: TaskContext) -> tuple[Any, ...]:
    """No arguments if `fn` can be called without any; else the context, if it takes one."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return ()  # no introspectable signature (some builtins): call it bare
    try:
        signature.bind()
        return ()
    except TypeError:
        pass
    try:
        signature.bind(context)
    except TypeError:
        raise CannotLoad(
            f"cannot call {fn!r}: it must take no arguments or exactly one (the task "
            f"context), but its signature is {signature}"
        ) from None
    return (context,)


def run(target: str) -> int:
    """Load and call the task; return the process exit status."""
    try:
        fn = load_callable(target)
        args = call_arguments(fn, TaskContext.from_env(os.environ))
    except CannotLoad as exc:
        print(f"arcod worker: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LOAD
    try:
        result = fn(*args)
        if inspect.iscoroutine(result):
            import asyncio  # only coroutine tasks pay for it

            asyncio.run(result)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        print(f"arcod worker: task {target!r} raised; see the traceback above", file=sys.stderr)
        return EXIT_TASK_FAILED
    return EXIT_OK


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(EXIT_TERMINATED)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m arcod.executor.worker module:function", file=sys.stderr)
        return EXIT_CANNOT_LOAD
    # The log is a file, so Python would block-buffer; line buffering keeps `tail -f` useful
    # and keeps most output if the task is SIGKILLed.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    return run(args[0])


if __name__ == "__main__":
    raise SystemExit(main())
