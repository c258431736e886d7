"""What every CLI command module shares: exit codes, argument types, JSON output."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
# stdout went away (`arcod ... | head -1`): the status a process killed by SIGPIPE shows in a
# shell (128 + 13), so `set -o pipefail` scripts see what they see for any other such tool.
EXIT_BROKEN_PIPE = 141


# ── bounds shared with the wire format ──────────────────────────────────────

def wire_bound(field_type: Any, name: str) -> int:
    """A bound (`ge`, `le`, `min_length`, `max_length`) of a protocol type such as
    `protocol.Ident`, read from its msgspec.Meta: the CLI checks the protocol's own numbers."""
    import typing

    import msgspec

    pending = [field_type]
    while pending:
        t = pending.pop()
        if isinstance(t, msgspec.Meta):
            value = getattr(t, name)
            if value is not None:
                return value
        else:
            pending.extend(typing.get_args(t))
    raise LookupError(f"{field_type!r} has no {name} bound")


def _protocol(name: str, bound: str) -> Callable[[], int]:
    """A bound of `arcod.control.protocol.<name>`, looked up when a value is parsed."""

    def get() -> int:
        from arcod.control import protocol

        return wire_bound(getattr(protocol, name), bound)

    return get


def _backfill_limit(name: str) -> Callable[[], int]:
    """A constant of arcod.core.backfill_chunks (the daemon's range for a backfill option),
    imported only when the flag is given: the module costs ~0.1 s to import."""

    def get() -> int:
        from arcod.core import backfill_chunks

        return getattr(backfill_chunks, name)

    return get


Bound = int | Callable[[], int] | None


def _value(bound: Bound) -> int | None:
    return bound() if callable(bound) else bound


# ── argument types ──────────────────────────────────────────────────────────

def whole_number(minimum: Bound = None, noun: str = "a whole number", maximum: Bound = None):
    """An argparse type: an int within [minimum, maximum] (either may be open). A bound may be
    a function, called only when a value is parsed."""

    def parse(text: str) -> int:
        lo, hi = _value(minimum), _value(maximum)
        if lo is not None and hi is not None:
            bound = f" between {lo} and {hi}"
        elif lo is not None:
            bound = f" >= {lo}"
        elif hi is not None:
            bound = f" <= {hi}"
        else:
            bound = ""
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {noun}{bound}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected {noun}{bound}, got {value}")
        return value

    return parse


page_offset = whole_number(0, "an offset (a whole number)", _protocol("Offset", "le"))
depth = whole_number(1, "a depth (a whole number)", _protocol("Depth", "le"))
limit = whole_number(_protocol("Limit", "ge"), "a whole number", _protocol("Limit", "le"))
chunk_size = whole_number(_backfill_limit("MIN_CHUNK_SIZE"), "a chunk size (a whole number)",
                          _backfill_limit("MAX_CHUNK_SIZE"))
max_concurrency = whole_number(_backfill_limit("MIN_MAX_CONCURRENCY"), "a whole number",
                               _backfill_limit("MAX_MAX_CONCURRENCY"))
# A backfill's state_version starts at 1 (creation) and only grows.
state_version = whole_number(1, "a state version (a whole number)")


RUN_STATES = ("QUEUED", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED", "CANCELED")


def _length_problem(text: str, field: str, noun: str) -> str | None:
    lo, hi = _value(_protocol(field, "min_length")), _value(_protocol(field, "max_length"))
    if lo <= len(text) <= hi:
        return None
    got = "an empty string" if not text else f"{len(text)} characters"
    return f"expected {noun} of {lo} to {hi} characters, got {got}"


def text(field: str, noun: str, strip: bool = False):
    """An argparse type: a string within the length bounds of `protocol.<field>`. With
    `strip`, surrounding whitespace is dropped first (partition keys never have any)."""

    def parse(value: str) -> str:
        if strip:
            value = value.strip()
        problem = _length_problem(value, field, noun)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return value

    return parse


selection = text("SelectExpr", "a selection expression")
run_id = text("Ident", "a run id")
backfill_id = text("Ident", "a backfill id")
asset_key = text("Ident", "an asset key")
# Surrounding whitespace is trimmed, as in `--partitions` lists and ranges (docs/decisions.md).
partition_key = text("Ident", "a partition key", strip=True)


def key_text(field: str, noun: str):
    """An argparse type for an idempotency key: printable, no surrounding space, and within
    the length bounds of `protocol.<field>`."""

    def parse(value: str) -> str:
        lo, hi = _value(_protocol(field, "min_length")), _value(_protocol(field, "max_length"))
        if not lo <= len(value) <= hi or not value.isprintable() or value != value.strip():
            shown = f"{len(value)} characters" if len(value) > 40 else repr(value)
            raise argparse.ArgumentTypeError(
                f"expected {noun} of {lo} to {hi} printable characters without surrounding space, got {shown}")
        return value

    return parse


run_key = key_text("RunKey", "a run key")
request_id = key_text("RequestId", "a request id")


def tag(text: str) -> tuple[str, str]:
    from arcod.core.tags import tag_problem

    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected a tag as KEY=VALUE, got {text!r}")
    problem = tag_problem(key, value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return key, value


class TagsAction(argparse.Action):
    """`--tag K=V`, repeatable, collected into a dict. A key given twice is a usage error:
    tags are part of a run's fingerprint, so a silently dropped value would change what the
    run (and its run key) means."""

    def __call__(self, parser, namespace, values, option_string=None):
        from arcod.core.tags import MAX_TAGS

        key, value = values
        tags = dict(getattr(namespace, self.dest) or {})
        if key in tags:
            raise argparse.ArgumentError(
                self, f"tag key {key!r} is given twice ({key}={tags[key]}, {key}={value}); give each key once")
        tags[key] = value
        if len(tags) > MAX_TAGS:
            raise argparse.ArgumentError(self, f"at most {MAX_TAGS} tags")
        setattr(namespace, self.dest, tags)


def add_tags(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--tag", dest="tags", action=TagsAction, type=tag, default=None, metavar="K=V", help=help)


# Words that are operators of the selection grammar and never a selection on their own: one of
# them as a separate argument means an unquoted expression was split by the shell.
OPERATOR_WORDS = ("and", "or", "not", "+")


def split_selection_problem(words: list[str], prefix: str) -> str | None:
    """The message for selection words that look like one expression split across arguments."""
    op = next((w for w in words if w in OPERATOR_WORDS), None)
    if op is None:
        return None
    return (f"the selection looks split across arguments (`{op}` is an operator, not a selection); "
            f"quote the whole expression: {prefix}{shlex.quote(' '.join(words))}")


class SelectWords(argparse.Action):
    """`arcod select EXPR...`: the words are OR-ed expressions, unless they look like one split."""

    def __call__(self, parser, namespace, values, option_string=None):
        problem = split_selection_problem(values, "arcod select ")
        if problem is not None:
            raise argparse.ArgumentError(self, problem)
        setattr(namespace, self.dest, values)


def extra_words_hint(argv: list[str], extras: list[str]) -> str:
    """For `unrecognized arguments`: when they continue a `--select` value and hold an
    operator, the expression was split by the shell; say how to quote it."""
    if not any(w in OPERATOR_WORDS for w in extras):
        return ""
    for i, word in enumerate(argv):
        if word != extras[0] or i == 0:
            continue
        if argv[i - 1].startswith("--select="):
            first = argv[i - 1].partition("=")[2]
        elif i >= 2 and argv[i - 2] == "--select":
            first = argv[i - 1]
        else:
            continue
        words = [first]
        for later in argv[i:]:
            if later.startswith("-"):
                break
            words.append(later)
        return "; " + split_selection_problem(words, "--select ")
    op = next(w for w in extras if w in OPERATOR_WORDS)
    return (f"; `{op}` is a selection operator: quote a whole selection expression as one argument, "
            "e.g. --select 'tag:tier=gold and not group:reports'")


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
    import typing

    from arcod.control.protocol import RunsPrune

    most = wire_bound(typing.get_type_hints(RunsPrune, include_extras=True)["older_than_s"], "le")
    if value * _UNITS[unit] > most:
        raise argparse.ArgumentTypeError(f"expected a duration of at most {most // 86400:.0f}d, got {text!r}")
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
