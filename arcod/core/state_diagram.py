"""Renders the transition tables as Mermaid diagrams and Markdown tables for `docs/`.

This file owns `docs/state-machines.md`: the document is generated from the very tables the
state machines apply (`python -m arcod.core.state_diagram > docs/state-machines.md`), and a
test compares the committed file with a fresh rendering, so the docs cannot drift from the
code.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from arcod.core import backfill_state, run_state, task_state

Transitions = Mapping[tuple[enum.Enum, enum.Enum], enum.Enum]


class Machine(msgspec.Struct, frozen=True, kw_only=True):
    """One state machine as the docs present it."""

    title: str
    about: str  # a paragraph of Markdown placed above the diagram
    transitions: Transitions
    initial: enum.Enum
    terminal: frozenset[enum.Enum]
    notes: tuple[str, ...] = ()  # Markdown bullet points placed below the table


def _name(value: enum.Enum) -> str:
    return str(value.value)


def _states_in_order(transitions: Transitions, initial: enum.Enum) -> list[enum.Enum]:
    """States in the order a reader meets them: the initial one, then as the table names them."""
    order: list[enum.Enum] = [initial]
    for (source, _event), target in transitions.items():
        for state in (source, target):
            if state not in order:
                order.append(state)
    return order


def render_mermaid(
    transitions: Transitions, *, initial: enum.Enum, terminal: Iterable[enum.Enum]
) -> str:
    """A fenced ```mermaid stateDiagram-v2 block; edges with the same ends share one arrow."""
    edges: dict[tuple[enum.Enum, enum.Enum], list[str]] = {}
    for (source, event), target in transitions.items():
        edges.setdefault((source, target), []).append(_name(event))
    terminal = frozenset(terminal)
    lines = ["```mermaid", "stateDiagram-v2", f"    [*] --> {_name(initial)}"]
    for (source, target), events in edges.items():
        lines.append(f"    {_name(source)} --> {_name(target)}: {' / '.join(events)}")
    for state in _states_in_order(transitions, initial):
        if state in terminal:
            lines.append(f"    {_name(state)} --> [*]")
    lines.append("```")
    return "\n".join(lines)


def render_table(transitions: Transitions) -> str:
    """The table itself, one row per (from, event) -> to, in the order the code declares them."""
    lines = ["| from | event | to |", "|---|---|---|"]
    for (source, event), target in transitions.items():
        lines.append(f"| {_name(source)} | `{_name(event)}` | {_name(target)} |")
    return "\n".join(lines)


def _backfill_noop_note() -> str:
    parts = [
        f"`{_name(event)}` in {' or '.join(_name(s) for s in sorted(states, key=_name))}"
        for event, states in backfill_state.ALREADY_THERE.items()
    ]
    return (
        "Already satisfied, answered with `changed: false` and the same version: "
        + "; ".join(parts)
        + "."
    )


MACHINES: Sequence[Machine] = (
    Machine(
        title="Runs",
        about=(
            "A run is QUEUED until the dispatcher gives it a slot. A QUEUED run is canceled at "
            "once (nothing of it is active); a RUNNING one passes through CANCELING while its "
            "active tasks are stopped. A CANCELING run always ends CANCELED. When every task is "
            "terminal a RUNNING run ends SUCCEEDED if all tasks succeeded, FAILED otherwise "
            "(`run_outcome`)."
        ),
        transitions=run_state.RUN_TRANSITIONS,
        initial=run_state.RUN_INITIAL_STATE,
        terminal=run_state.RUN_TERMINAL_STATES,
        notes=(
            "`cancel` of a CANCELING or CANCELED run succeeds with no change; "
            "of a SUCCEEDED or FAILED run it is refused with `invalid_transition`.",
        ),
    ),
    Machine(
        title="Tasks",
        about=(
            "One task per (asset, partition) of the plan. Retries happen inside RUNNING: an "
            "attempt that fails with retries left is `retry`, and the task stays RUNNING; "
            "each attempt is recorded separately. A PENDING task downstream of a failed one is "
            "SKIPPED, recording the failed task that caused it (`tasks_to_skip`)."
        ),
        transitions=task_state.TASK_TRANSITIONS,
        initial=task_state.TASK_INITIAL_STATE,
        terminal=task_state.TASK_TERMINAL_STATES,
    ),
    Machine(
        title="Backfills",
        about=(
            "`pause`, `resume` and `cancel` come from operators; the other events come from the "
            "backfill controller as chunk runs finish. `state_version` starts at 1 and grows by "
            "exactly 1 per applied transition. With `--expect-version N`, a backfill not at N "
            "refuses the request with `version_conflict` -- checked first, even when the "
            "request would be a no-op."
        ),
        transitions=backfill_state.BACKFILL_TRANSITIONS,
        initial=backfill_state.BACKFILL_INITIAL_STATE,
        terminal=backfill_state.BACKFILL_TERMINAL_STATES,
        notes=(
            _backfill_noop_note(),
            "Anything else is refused with `invalid_transition`.",
            "A PAUSED backfill never finishes on its own, even when its last active chunk runs "
            "end while it is paused: only RUNNING moves to SUCCEEDED or FAILED, so the outcome "
            "is reached after `resume`.",
        ),
    ),
)


def render_document(machines: Sequence[Machine] = MACHINES) -> str:
    """The whole of `docs/state-machines.md`, ending in a newline."""
    out = [
        "# State machines",
        "",
        "<!-- Generated by `python -m arcod.core.state_diagram > docs/state-machines.md`."
        " Do not edit by hand: tests/core/test_state_diagram.py fails when this file and the"
        " code disagree. -->",
        "",
        "Each diagram and table is rendered from the transition table the code applies. A "
        "(state, event) pair not listed is refused with `invalid_transition`.",
    ]
    for machine in machines:
        out += [
            "",
            f"## {machine.title}",
            "",
            machine.about,
            "",
            render_mermaid(machine.transitions, initial=machine.initial, terminal=machine.terminal),
            "",
            render_table(machine.transitions),
        ]
        if machine.notes:
            out.append("")
            out += [f"- {note}" for note in machine.notes]
    return "\n".join(out) + "\n"


def main() -> None:
    sys.stdout.write(render_document())


if __name__ == "__main__":
    main()
