"""`arcod partitions list|add|remove`."""

from __future__ import annotations

import argparse
import os
import sys

from arcod.cli.common import EXIT_OK, limit, page_offset, print_json

STATES = ("MATERIALIZED", "FAILED", "IN_PROGRESS", "MISSING")
# Health bar marks and ANSI colours, by state (a bucket shows its worst partition).
MARKS = {"MATERIALIZED": "#", "FAILED": "F", "IN_PROGRESS": ">", "MISSING": "."}
COLOURS = {"MATERIALIZED": "32", "FAILED": "31", "IN_PROGRESS": "33", "MISSING": "2"}


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parts = sub.add_parser("partitions", help="partition status, dynamic partition keys").add_subparsers(
        dest="partitions_command", required=True, metavar="{list,add,remove}")
    pl = parts.add_parser("list", parents=[common], help="status of an asset's partitions")
    pl.add_argument("asset", metavar="ASSET")
    pl.add_argument("--state", type=str.upper, choices=STATES, metavar="STATE",
                    help="only partitions in this state: " + ", ".join(STATES))
    pl.add_argument("--limit", type=limit, metavar="N", help="partitions per page (default 20; 100 with --json)")
    pl.add_argument("--offset", type=page_offset, default=0, metavar="N", help="skip this many (of those matching), in definition order")
    for action, text in (("add", "add keys to a dynamic partitions definition (insertion order kept)"),
                         ("remove", "remove keys from a dynamic partitions definition")):
        pe = parts.add_parser(action, parents=[common], help=text)
        pe.add_argument("definition", metavar="DEF")
        pe.add_argument("keys", nargs="+", metavar="KEY")


def _when(at: str | None) -> str:
    return "-" if not at else at[:19].replace("T", " ")


def health_bar(states: list[str], colour: bool) -> str:
    if not colour:
        return "".join(MARKS[s] for s in states)
    return "".join(f"\033[{COLOURS[s]}m{MARKS[s]}\033[0m" for s in states)


def print_list(result: dict, colour: bool) -> None:
    from arcod.cli import render

    counts = result["counts"]
    total = result["partitions_total"]
    if result["definition"] is None:
        print(f"{result['asset']}  (not partitioned: one status)")
    else:
        as_of = f" as of {result['as_of']}" if result["as_of"] else ""
        # `daily (daily)` says nothing twice: the kind is shown only when the name is not it.
        kind = "" if result["definition"] == result["kind"] else f" ({result['kind']})"
        print(f"{result['asset']}  {result['definition']}{kind}, {total} partitions{as_of}")
    print("   ".join(f"{s.lower().replace('_', ' ')} {counts[s]}" for s in STATES)
          + (f"   (+{result['not_in_definition']} rows for keys no longer in the definition)"
             if result["not_in_definition"] else ""))
    if result["definition"] is not None and result["health"]:
        per = total / len(result["health"])
        legend = "  ".join(f"{MARKS[s]} {s.lower().replace('_', ' ')}" for s in STATES)
        print(f"[{health_bar(result['health'], colour)}]")
        print(f" {legend}" + (f"   (a mark = {per:.3g} partitions, worst shown)" if per > 1 else ""))
    entries = result["partitions"]
    if not entries:
        what = f"{result['state'].lower().replace('_', ' ')} partitions" if result["state"] else "partitions"
        print(f"no {what} to show" + (f" from offset {result['offset']}" if result["offset"] else ""))
        return
    print()
    render.table(
        ["PARTITION", "STATE", "LAST MATERIALIZED", "RUN", "LAST ATTEMPT", "AT", "RUN"],
        [[e["key"] if e["key"] is not None else "-", e["state"], _when(e["last_materialized_at"]),
          e["last_materialized_run"] or "-", e["last_attempt_state"] or "-", _when(e["last_attempt_at"]),
          e["last_attempt_run"] or "-"] for e in entries],
    )
    first = result["offset"] + 1
    tail = f"; next page: --offset {result['next_offset']}" if result["next_offset"] is not None else ""
    print(f"showing {first}-{result['offset'] + len(entries)} of {result['matching']}{tail}")


def cmd_partitions(args, client) -> int:
    from arcod.control import protocol as p

    if args.partitions_command == "list":
        limit = args.limit or (100 if args.json else 20)
        result = client.call(p.PartitionsList(asset=args.asset, state=args.state, limit=limit, offset=args.offset))
        if args.json:
            print_json(result)
        else:
            print_list(result, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
        return EXIT_OK
    result = client.call(p.PartitionsEdit(definition=args.definition, action=args.partitions_command, keys=args.keys))
    if args.json:
        print_json(result)
        return EXIT_OK
    verb = "added" if result["action"] == "add" else "removed"
    changed = result[verb]
    if changed:
        print(f"{verb} {len(changed)} key{'s' if len(changed) != 1 else ''} {'to' if verb == 'added' else 'from'} "
              f"{result['definition']}: {', '.join(changed)}")
    if result["unchanged"]:
        why = "already present" if verb == "added" else "not a key, nothing to remove"
        print(f"{why}: {', '.join(result['unchanged'])}")
    print(f"{result['definition']} has {result['keys_total']} key{'s' if result['keys_total'] != 1 else ''}")
    return EXIT_OK


COMMANDS = {"partitions": cmd_partitions}
