"""The generated docs: diagrams carry every edge, and the committed file matches the code."""

from __future__ import annotations

import enum
import pathlib

from arcod.core import state_diagram
from arcod.core.state_diagram import MACHINES, render_document, render_mermaid, render_table

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs" / "state-machines.md"


class Light(enum.StrEnum):
    OFF = "OFF"
    ON = "ON"
    BROKEN = "BROKEN"


class Push(enum.StrEnum):
    PRESS = "press"
    TAP = "tap"
    SMASH = "smash"


TOY = {
    (Light.OFF, Push.PRESS): Light.ON,
    (Light.OFF, Push.TAP): Light.ON,
    (Light.ON, Push.PRESS): Light.OFF,
    (Light.ON, Push.SMASH): Light.BROKEN,
}


def test_render_mermaid_of_a_toy_table():
    assert render_mermaid(TOY, initial=Light.OFF, terminal={Light.BROKEN}) == "\n".join(
        [
            "```mermaid",
            "stateDiagram-v2",
            "    [*] --> OFF",
            "    OFF --> ON: press / tap",
            "    ON --> OFF: press",
            "    ON --> BROKEN: smash",
            "    BROKEN --> [*]",
            "```",
        ]
    )


def test_render_table_of_a_toy_table():
    assert render_table(TOY).splitlines() == [
        "| from | event | to |",
        "|---|---|---|",
        "| OFF | `press` | ON |",
        "| OFF | `tap` | ON |",
        "| ON | `press` | OFF |",
        "| ON | `smash` | BROKEN |",
    ]


def test_every_edge_and_every_end_is_drawn():
    assert [m.title for m in MACHINES] == ["Runs", "Tasks", "Backfills"]
    for machine in MACHINES:
        diagram = render_mermaid(
            machine.transitions, initial=machine.initial, terminal=machine.terminal
        )
        lines = diagram.splitlines()
        arrows = {}
        for line in lines[3:-1]:
            head, _, label = line.strip().partition(": ")
            arrows[head] = label.split(" / ") if label else []
        for (source, event), target in machine.transitions.items():
            assert str(event) in arrows[f"{source} --> {target}"]
        ends = {head.split(" --> ")[0] for head in arrows if head.endswith("[*]")}
        assert ends == {str(s) for s in machine.terminal}
        assert lines[2] == f"    [*] --> {machine.initial}"
        table = render_table(machine.transitions)
        assert len(table.splitlines()) == 2 + len(machine.transitions)


def test_committed_docs_match_the_code():
    assert DOCS.read_text(encoding="utf-8") == render_document(), (
        "docs/state-machines.md is stale; regenerate it with "
        "`python -m arcod.core.state_diagram > docs/state-machines.md`"
    )


def test_main_prints_the_document(capsys):
    state_diagram.main()
    assert capsys.readouterr().out == render_document()
