"""What every CLI command module shares: exit codes, argument types, JSON output."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def depth(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a depth (a whole number >= 1), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a depth >= 1, got {value}")
    return value


RUN_STATES = ("QUEUED", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED", "CANCELED")


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or key != key.strip():
        raise argparse.ArgumentTypeError(f"expected a tag as KEY=VALUE, got {text!r}")
    return key, value


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


