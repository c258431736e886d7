"""Human output: short, aligned tables and one-line progress. `--json` bypasses all of this."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: TextIO | None = None) -> None:
    """Print rows under headers, columns aligned, no borders."""
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))
    fmt = "  ".join("{:<%d}" % w for w in widths)
    print(fmt.format(*headers).rstrip(), file=out)
    for row in cells:
        print(fmt.format(*row).rstrip(), file=out)


def fields(pairs: Sequence[tuple[str, Any]], out: TextIO | None = None) -> None:
    """Print `name: value` lines with the values aligned."""
    out = out or sys.stdout
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        print(f"{key + ':':<{width + 1}} {'' if value is None else value}", file=out)


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 chunk`, `4 chunks`, `10,000 partitions`."""
    return f"{n:,} {word if n == 1 else words or word + 's'}"


def bar(done: int, total: int, width: int = 30) -> str:
    filled = 0 if total <= 0 else int(width * min(done, total) / total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"
