"""The failpoint registry on its own: parsing, triggers, seeded randomness, name checks."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.failpoints import (
    FAILPOINTS_ENV,
    SEED_ENV,
    FailpointError,
    Failpoints,
    FailpointSpecError,
    Term,
    parse,
    parse_actions,
    point_names,
)

NAMES = point_names(["planner", "dispatcher", "executor", "history"])


def fired(fp: Failpoints, name: str, n: int) -> list[str]:
    """What the first `n` hits of `name` did: '-' passed, 'E' raised, 'D' returned a delay."""
    out = []
    for _ in range(n):
        try:
            pending = fp.hit(name)
        except FailpointError:
            out.append("E")
            continue
        if pending is not None:
            pending.close()  # a coroutine: not awaited here
            out.append("D")
        else:
            out.append("-")
    return out


def test_parse_terms_and_chains():
    assert parse_actions("crash") == (Term("crash"),)
    assert parse_actions("50%crash") == (Term("crash", pct=50.0),)
    assert parse_actions("3*off->crash") == (Term("off", count=3), Term("crash"))
    assert parse_actions("12.5%2*delay(150)->error") == (Term("delay", pct=12.5, count=2, delay_ms=150), Term("error"))
    entries = parse(" a.b=1*error ;\nactor.*.deliver = duplicate;; ")
    assert [(e.pattern, e.text) for e in entries] == [("a.b", "1*error"), ("actor.*.deliver", "duplicate")]


@pytest.mark.parametrize("spec, says", [
    ("a.b", "NAME=ACTIONS"),
    ("a b=crash", "NAME=ACTIONS"),
    ("a=explode", "unknown action 'explode'"),
    ("a=delay", "whole milliseconds"),
    ("a=delay(x)", "whole milliseconds"),
    ("a=crash(3)", "takes no argument"),
    ("a=0%crash", "above 0%"),
    ("a=150%crash", "at most 100%"),
    ("a=0*crash", "at least 1"),
    ("a=3*->crash", "cannot read"),
    ("a=", "cannot read"),
])
def test_bad_specs_say_what_is_wrong(spec, says):
    with pytest.raises(FailpointSpecError, match=says.replace("(", r"\(").replace("*", r"\*")):
        parse(spec)


def test_counts_chain_to_the_next_term():
    fp = Failpoints("p.x=3*off->2*error->delay(5)")
    assert fired(fp, "p.x", 8) == ["-", "-", "-", "E", "E", "D", "D", "D"]
    assert fp.active() == {"p.x": {"actions": "3*off->2*error->delay(5)", "hits": 8, "fired": 5}}


def test_one_shot_then_nothing():
    fp = Failpoints("p.x=2*off->1*error")
    assert fired(fp, "p.x", 5) == ["-", "-", "E", "-", "-"]


def test_unconfigured_points_pass_and_off_costs_one_attribute_test():
    fp = Failpoints("")
    assert not fp.armed and fp.hit("actor.planner.before_persist") is None
    assert fp.should_duplicate("actor.planner.deliver") is False
    assert fp.active() == {}
    fp = Failpoints("p.x=error")
    assert fp.hit("p.y") is None


def test_patterns_last_match_wins_and_each_point_counts_alone():
    fp = Failpoints("actor.*=1*error;actor.dispatcher.*=2*error")
    assert fired(fp, "actor.planner.before_persist", 2) == ["E", "-"]
    assert fired(fp, "actor.planner.after_emit", 2) == ["E", "-"]  # its own counter
    assert fired(fp, "actor.dispatcher.after_emit", 3) == ["E", "E", "-"]
    assert fp.active()["actor.*"] == {"actions": "1*error", "hits": 4, "fired": 2}


def test_duplicate_only_at_delivery_points():
    fp = Failpoints("*=duplicate")
    assert fp.should_duplicate("actor.history.deliver") is True
    assert fp.hit("actor.history.before_persist") is None  # does not apply there
    fp = Failpoints("*=error")
    assert fp.should_duplicate("actor.history.deliver") is False  # error does not apply to delivery
    with pytest.raises(FailpointError):
        fp.hit("control.before_answer")


def test_check_names_refuses_typos_and_misfits():
    Failpoints("actor.*.deliver=duplicate;executor.after_spawn=crash").check_names(NAMES)
    with pytest.raises(FailpointSpecError, match="applies to no failpoint.*actor.planner.before_persist"):
        Failpoints("actor.planer.before_persist=crash").check_names(NAMES)
    with pytest.raises(FailpointSpecError, match="duplicate goes with"):
        Failpoints("executor.before_start=duplicate").check_names(NAMES)
    assert len(NAMES) == len(set(NAMES)) == 4 * 5 + 5 + 2


def test_from_config_env_wins_and_seed_order():
    env = {FAILPOINTS_ENV: "p.x=error", SEED_ENV: "s1"}
    fp = Failpoints.from_config("p.x=off;p.y=error", "cfg", environ=env)
    assert fired(fp, "p.x", 1) == ["E"] and fired(fp, "p.y", 1) == ["E"]
    assert fp.seed == "s1"
    assert Failpoints.from_config("", "cfg", environ={}).seed == "cfg"
    assert Failpoints.from_config("", "", environ={}).seed == "arcod"
    assert not Failpoints.from_config("", "", environ={FAILPOINTS_ENV: " "}).armed


@settings(max_examples=40, deadline=None)
@given(seed=st.text(max_size=20), pct=st.integers(1, 99), n=st.integers(1, 200))
def test_same_seed_same_decisions(seed, pct, n):
    spec = f"p.x={pct}%error;q.*={pct}%delay(1)"
    a, b = Failpoints(spec, seed), Failpoints(spec, seed)
    # Interleaving hits of another point does not change a point's own sequence.
    fired(b, "q.z", 7)
    assert fired(a, "p.x", n) == fired(b, "p.x", n)
    assert fired(a, "q.y", n) == fired(b, "q.y", n)


def test_probability_is_roughly_right_and_seed_matters():
    one = fired(Failpoints("p.x=30%error", "one"), "p.x", 2000)
    two = fired(Failpoints("p.x=30%error", "two"), "p.x", 2000)
    assert 500 < one.count("E") < 700
    assert one != two


def test_decisions_do_not_depend_on_the_process():
    """String seeds hash with SHA-512, not the per-process salted hash()."""
    code = ("from arcod.failpoints import Failpoints; fp = Failpoints('p.x=50%error', 'campaign-7');\n"
            "out = []\nfor _ in range(64):\n"
            "    try: fp.hit('p.x'); out.append('-')\n"
            "    except Exception: out.append('E')\n"
            "print(''.join(out))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(salt)}).stdout.strip() for salt in (1, 2)}
    assert len(runs) == 1
    assert runs == {"".join(fired(Failpoints("p.x=50%error", "campaign-7"), "p.x", 64))}


def test_crash_is_a_sigkill_of_the_process():
    code = ("from arcod.failpoints import Failpoints\n"
            "fp = Failpoints('p.x=1*off->crash')\n"
            "fp.hit('p.x'); print('passed once', flush=True)\n"
            "try:\n    fp.hit('p.x')\nfinally:\n    print('cleanup ran')\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL
    assert p.stdout == "passed once\n"  # no finally, no flush: like kill -9
    assert '"failpoint": "p.x"' in p.stderr
