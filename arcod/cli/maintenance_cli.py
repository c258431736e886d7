"""`arcod runs prune --older-than 30d [--dry-run]`: retention by hand."""

from __future__ import annotations

import argparse

from arcod.cli.common import EXIT_OK, duration, print_json


def add_prune_parser(runs: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    pr = runs.add_parser(
        "prune", parents=[common],
        help="remove finished runs older than a duration, with their tasks, attempts and logs",
        description="Remove finished runs older than --older-than (by finish time), with their tasks, "
                    "attempts and log files. Never removes a run that is not finished, a parent of a "
                    "run that is kept, or a run of a backfill family that is not finished and old enough.")
    pr.add_argument("--older-than", required=True, type=duration, metavar="AGE",
                    help="a duration: 30d, 12h, 90m, 3600s or 2w")
    pr.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def cmd_prune(args, client) -> int:
    from arcod.cli import render
    from arcod.control import protocol as p

    result = client.call(p.RunsPrune(older_than_s=args.older_than, dry_run=args.dry_run))
    if args.json:
        print_json(result)
        return EXIT_OK
    verb = "would remove" if result["dry_run"] else "removed"
    print(f"{verb} what finished before {result['cutoff']}:")
    render.fields([
        ("runs", result["runs"]),
        ("tasks", result["tasks"]),
        ("attempts", result["attempts"]),
        ("backfills", result["backfills"]),
        ("log directories", f"{result['log_dirs']} ({_size(result['log_bytes'])})"),
        ("event records", result["events"]),
        ("kept", f"{result['kept_lineage']} for lineage, {result['kept_backfill']} for backfills, "
                 f"{result['kept_busy']} still in use"),
    ])
    return EXIT_OK
