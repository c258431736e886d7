"""Partition arithmetic at 100,000 and 1,000,000 partitions: the cost must not grow with size.

Run: .venv/bin/python bench/bench_partitions.py
Prints microseconds per operation (time.perf_counter_ns over many iterations) for `size`,
`index`, `key`, `selector_count` and a 100-key `selector_slice` from the middle, on hourly and
static definitions of both sizes.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arcod.core.partitions import (  # noqa: E402
    AllSelector,
    parse_definition,
    parse_selector,
    selector_count,
    selector_slice,
)

START = datetime(2000, 1, 1)
AS_OF = datetime(2200, 1, 1, tzinfo=timezone.utc)


def hourly(n: int, zone: str):
    end = START + timedelta(hours=n)
    return parse_definition(
        f"hourly_{n}", {"kind": "hourly", "start": START, "end": end, "timezone": zone}
    )


def static(n: int):
    return parse_definition(f"static_{n}", {"kind": "static", "keys": [f"k{i:07d}" for i in range(n)]})


def per_op_us(fn: Callable[[int], object], iterations: int, repeats: int = 5) -> float:
    """Best of `repeats` timed loops: the machine is shared, the minimum is the signal."""
    fn(0)  # warm caches (cached_property, zoneinfo)
    best = None
    for _ in range(repeats):
        begin = time.perf_counter_ns()
        for i in range(iterations):
            fn(i)
        elapsed = time.perf_counter_ns() - begin
        best = elapsed if best is None else min(best, elapsed)
    return best / iterations / 1000


def bench(label: str, defn, n: int) -> list[tuple[str, str, float]]:
    rnd = random.Random(42)
    positions = [rnd.randrange(n) for _ in range(1024)]
    keys = [defn.key(p) for p in positions]
    mask = len(positions) - 1
    everything = AllSelector()
    ranged = parse_selector(f"{defn.key(1)}..{defn.key(n - 2)}", defn)
    mid = n // 2
    rows = [
        ("size", per_op_us(lambda i: defn.size(AS_OF), 5_000)),
        ("index", per_op_us(lambda i: defn.index(keys[i & mask], AS_OF), 5_000)),
        ("key", per_op_us(lambda i: defn.key(positions[i & mask], AS_OF), 5_000)),
        ("selector_count(all)", per_op_us(lambda i: selector_count(everything, defn, AS_OF), 5_000)),
        ("selector_count(range)", per_op_us(lambda i: selector_count(ranged, defn, AS_OF), 2_000)),
        ("selector_slice(mid, 100)", per_op_us(lambda i: selector_slice(ranged, defn, mid, 100, AS_OF), 200)),
    ]
    return [(label, op, us) for op, us in rows]


def main() -> None:
    results: list[tuple[str, str, float]] = []
    for n in (100_000, 1_000_000):
        results += bench(f"hourly UTC n={n:,}", hourly(n, "UTC"), n)
        results += bench(f"hourly America/New_York n={n:,}", hourly(n, "America/New_York"), n)
        results += bench(f"static n={n:,}", static(n), n)
    width = max(len(label) for label, _, _ in results)
    print(f"{'definition':<{width}}  {'operation':<26}{'us/op':>10}")
    print(f"{'-' * width}  {'-' * 26}{'-' * 10}")
    for label, op, us in results:
        print(f"{label:<{width}}  {op:<26}{us:>10.2f}")


if __name__ == "__main__":
    main()
