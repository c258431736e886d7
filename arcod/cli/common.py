"""What every CLI command module shares: exit codes, argument types, JSON output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def whole_number(minimum: int | None = None, noun: str = "a whole number"):
    """An argparse type: an int, at least `minimum` when one is given. Without a minimum the
    daemon range-checks the value, so its message (which knows the limits) is the one shown."""

    def parse(text: str) -> int:
        bound = "" if minimum is None else f" >= {minimum}"
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}{bound}, got {text!r}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"expected {noun}{bound}, got {value}")
        return value

    return parse


whole = whole_number()
non_negative = whole_number(0)
positive = whole_number(1)
depth = whole_number(1, "a depth (a whole number)")


RUN_STATES = ("QUEUED", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED", "CANCELED")


def limit(text: str) -> int:
    value = positive(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"expected a limit between 1 and 10000, got {value}")
    return value


def tag(text: str) -> tuple[str, str]:
    from arcod.core.tags import tag_problem

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected a tag as KEY=VALUE, got {text!r}")
    problem = tag_problem(key, value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return key, value


MAX_RUN_KEY = 256


def run_key(text: str) -> str:
    if not text or len(text) > MAX_RUN_KEY or not text.isprintable() or text != text.strip():
        shown = f"{len(text)} characters" if len(text) > 40 else repr(text)
        raise argparse.ArgumentTypeError(
            f"expected a run key of 1 to {MAX_RUN_KEY} printable characters without surrounding space, got {shown}")
    return text


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """`30d`, `12h`, `90m`, `3600s`, `2w` (or a bare number of seconds) -> seconds."""
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw and raw[-1] in _UNITS else (raw, "s")
    try:
        value = float(number)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a duration like 30d, 12h, 90m or 3600s, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a duration >= 0, got {text!r}")
    return value * _UNITS[unit]


def add_closure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upstream", nargs="?", const=-1, type=depth, metavar="N",
                   help="also take upstream assets (all, or to depth N)")
    p.add_argument("--downstream", nargs="?", const=-1, type=depth, metavar="N",
                   help="also take downstream assets (all, or to depth N)")



def print_json(obj: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.format(msgspec.json.encode(obj), indent=2).decode() + "\n")


def fail(args: argparse.Namespace, code: str, message: str, details: dict | None = None) -> None:
    if getattr(args, "json", False):
        print_json({"error": {"code": code, "message": message, "details": details or {}}})
    else:
        print(f"arcod: {message}", file=sys.stderr)




FINISHED_STATES = ("SUCCEEDED", "FAILED", "CANCELED")


def follow_until_finished(args: argparse.Namespace, fetch, progress_line, print_human) -> int:
    """Poll `fetch()` until its `state` is final, with a live line on a terminal (stderr).

    Polling backs off from 50 ms to 0.5 s. At the end the final document is printed (JSON or
    human) and the exit status says whether it SUCCEEDED (SPEC §7: 1 otherwise).
    """
    import time

    tty = sys.stderr.isatty() and not args.json
    delay = 0.05
    while True:
        doc = fetch()
        if tty:
            sys.stderr.write("\r" + progress_line(doc) + "\033[K")
            sys.stderr.flush()
        if doc["state"] in FINISHED_STATES:
            break
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    if tty:
        sys.stderr.write("\n")
    if args.json:
        print_json(doc)
    else:
        print_human(doc)
    return EXIT_OK if doc["state"] == "SUCCEEDED" else EXIT_REFUSED
