"""The `python = "module:function"` worker, run for real through run_attempt."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import anyio
import pytest

from arcod.executor import run_attempt
from arcod.executor.worker import CannotLoad, TaskContext, call_arguments

JOBS = '''
import json, os, sys, time

def with_context(context):
    with open("context.json", "w") as f:
        json.dump({
            "run_id": context.run_id, "asset": context.asset, "attempt": context.attempt,
            "partition_key": context.partition_key, "partition_start": context.partition_start,
            "partition_end": context.partition_end,
        }, f)

def no_args():
    open("ran", "w").write(os.environ["ARCOD_ASSET"])

def boom():
    raise RuntimeError("the warehouse is on fire")

def exits_four():
    sys.exit(4)

async def coroutine():
    open("ran", "w").write("async")

def too_many(a, b):
    pass

class Builder:
    @staticmethod
    def build():
        open("ran", "w").write("nested")

def sleeps_then_cleans_up():
    open("started", "w").close()
    try:
        time.sleep(30)
    finally:
        open("cleaned", "w").close()

NOT_CALLABLE = 3
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "__init__.py").write_text("")
    (tmp_path / "jobs" / "tasks.py").write_text(textwrap.dedent(JOBS))
    (tmp_path / "jobs" / "broken.py").write_text("import not_installed_anywhere_arcod\n")
    return tmp_path


@pytest.mark.anyio
async def test_function_taking_context_gets_it(make_spec, project) -> None:
    spec = make_spec(
        python="jobs.tasks:with_context",
        partition="2024-01-05",
        partition_start="2024-01-05T00:00:00+00:00",
        partition_end="2024-01-06T00:00:00+00:00",
        attempt=2,
    )
    outcome = await run_attempt(spec)
    assert (outcome.status, outcome.exit_code) == ("succeeded", 0)
    assert json.loads((project / "context.json").read_text()) == {
        "run_id": "run-1",
        "asset": "sales/daily",
        "attempt": 2,
        "partition_key": "2024-01-05",
        "partition_start": "2024-01-05T00:00:00+00:00",
        "partition_end": "2024-01-06T00:00:00+00:00",
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "wrote"),
    [
        ("jobs.tasks:no_args", "sales/daily"),
        ("jobs.tasks:coroutine", "async"),
        ("jobs.tasks:Builder.build", "nested"),
    ],
)
async def test_callables_without_arguments_run(make_spec, project, target, wrote) -> None:
    outcome = await run_attempt(make_spec(python=target))
    assert outcome.status == "succeeded", Path(make_spec(python=target).log_path).read_text()
    assert (project / "ran").read_text() == wrote


@pytest.mark.anyio
async def test_exception_fails_with_status_1_and_traceback(make_spec, project) -> None:
    spec = make_spec(python="jobs.tasks:boom")
    outcome = await run_attempt(spec)
    assert (outcome.status, outcome.exit_code) == ("failed", 1)
    log = Path(spec.log_path).read_text()
    assert "Traceback" in log and "RuntimeError: the warehouse is on fire" in log


@pytest.mark.anyio
async def test_sys_exit_status_is_kept(make_spec, project) -> None:
    outcome = await run_attempt(make_spec(python="jobs.tasks:exits_four"))
    assert (outcome.status, outcome.exit_code) == ("failed", 4)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("jobs.nowhere:build", "cannot import module 'jobs.nowhere': no module named"),
        ("jobs.broken:build", "it imports 'not_installed_anywhere_arcod', which is not installed"),
        ("jobs.tasks:missing", "module 'jobs.tasks' has no attribute 'missing'"),
        ("jobs.tasks:NOT_CALLABLE", "is a int, not a callable"),
        ("jobs.tasks:too_many", "must take no arguments or exactly one"),
        ("jobs.tasks", "write it as 'module:function'"),
    ],
)
async def test_unloadable_target_exits_2_with_a_clear_message(
    make_spec, project, target, message
) -> None:
    spec = make_spec(python=target)
    outcome = await run_attempt(spec)
    assert (outcome.status, outcome.exit_code, outcome.reason) == ("failed", 2, "exit status 2")
    assert message in Path(spec.log_path).read_text()


@pytest.mark.anyio
async def test_sigterm_lets_the_task_clean_up(make_spec, project) -> None:
    spec = make_spec(python="jobs.tasks:sleeps_then_cleans_up")
    cancel = anyio.Event()
    outcomes = []

    async def run() -> None:
        outcomes.append(await run_attempt(spec, cancel_event=cancel, term_grace_s=5.0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(5):
            while not (project / "started").exists():
                await anyio.sleep(0.01)
        cancel.set()
    assert (outcomes[0].status, outcomes[0].exit_code) == ("canceled", 143)
    assert (project / "cleaned").exists()


def test_call_arguments_prefers_no_arguments() -> None:
    context = TaskContext(run_id="r", asset="a", attempt=1)

    def bare() -> None: ...
    def optional(context=None) -> None: ...  # noqa: ANN001
    def required(context) -> None: ...  # noqa: ANN001
    def keyword_only(*, context) -> None: ...  # noqa: ANN001

    assert call_arguments(bare, context) == ()
    assert call_arguments(optional, context) == ()
    assert call_arguments(required, context) == (context,)
    with pytest.raises(CannotLoad, match="exactly one"):
        call_arguments(keyword_only, context)


def test_context_from_environment() -> None:
    env = {"ARCOD_RUN_ID": "r", "ARCOD_ASSET": "a/b", "ARCOD_ATTEMPT": "3"}
    assert TaskContext.from_env(env) == TaskContext(run_id="r", asset="a/b", attempt=3)
