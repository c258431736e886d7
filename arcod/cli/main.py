"""The `arcod` command line.

argparse, not cyclopts: `arcod status` must answer in well under 200 ms end to end, and
cyclopts costs ~130 ms to import on the reference machine, before any work (see
docs/decisions.md). Every client command is a blocking request over the Unix socket, so no
event loop is needed outside `arcod serve`. Imports are deferred to the command that needs
them for the same reason.

Exit status (SPEC §7): 0 ok; 1 refused, or a waited-for run/backfill that did not succeed;
2 usage error; 3 daemon not reachable; 141 stdout was closed early (`arcod ... | head`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from arcod.cli import backfill_cli, partitions_cli, runs_cli
from arcod.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    SelectWords,
    add_closure,
    asset_key,
    extra_words_hint,
    fail,
    print_json,
    selection,
)


class UsageError(Exception):
    """A command line that cannot be turned into a request (exit status 2)."""


class ArgumentsError(Exception):
    """argparse refused the command line; `parser` is the (sub)parser that did."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is raised instead of printed, so `main` can answer it as
    one JSON document when `--json` was given (SPEC §7). Subparsers are of this class too."""

    def error(self, message: str):
        raise ArgumentsError(self, message)


def wants_json(argv: list[str]) -> bool:
    """`--json` anywhere among the options (not after a `--` that ends them)."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    return "--json" in words


def usage_error(argv: list[str], exc: ArgumentsError) -> int:
    if wants_json(argv):
        print_json({"error": {"code": "usage", "message": exc.message, "details": {
            "command": exc.parser.prog, "usage": " ".join(exc.parser.format_usage().split())}}})
    else:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
    return EXIT_USAGE


# ── socket discovery ────────────────────────────────────────────────────────

def socket_path(args: argparse.Namespace) -> Path:
    """--socket, else $ARCOD_SOCKET, else the config's state_dir (--config, $ARCOD_CONFIG,
    ./arcod.toml, ./config/arcod.toml). Reads only `state_dir` to stay fast."""
    if getattr(args, "socket", None):
        return Path(args.socket)
    env = os.environ.get("ARCOD_SOCKET")
    if env:
        return Path(env)
    config = args.config or os.environ.get("ARCOD_CONFIG")
    if not config:
        for candidate in ("arcod.toml", "config/arcod.toml"):
            if Path(candidate).is_file():
                config = candidate
                break
    if not config:
        raise UsageError(
            "cannot find the daemon's socket: pass --socket or --config, set ARCOD_SOCKET or "
            "ARCOD_CONFIG, or run from a directory with arcod.toml or config/arcod.toml"
        )
    import tomllib

    path = Path(config).resolve()
    try:
        with path.open("rb") as f:
            state_dir = tomllib.load(f).get("state_dir", ".arcod")
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read config {path}: {exc}") from None
    if not isinstance(state_dir, str):
        raise UsageError(f"{path}: state_dir must be a string")
    return (path.parent / state_dir).resolve() / "arcod.sock"


def build_parser() -> argparse.ArgumentParser:
    common = ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    common.add_argument("--socket", help="control socket path (default: from the config)")
    common.add_argument("--config", help="arcod.toml path (default: $ARCOD_CONFIG, ./arcod.toml, ./config/arcod.toml)")

    parser = ArgumentParser(prog="arcod", description="arcod: selections, reruns and backfills over an asset graph.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="arcod.toml path")
    serve.add_argument("--backend", choices=("asyncio", "trio"), default=os.environ.get("ARCOD_BACKEND", "asyncio"))

    sub.add_parser("status", parents=[common], help="daemon status")
    sub.add_parser("reload", parents=[common], help="reload the definition files")

    assets = sub.add_parser("assets", help="list or show assets").add_subparsers(dest="assets_command", required=True, metavar="{list,show}")
    al = assets.add_parser("list", parents=[common], help="list assets")
    al.add_argument("--select", action="append", type=selection, metavar="EXPR",
                    help="only the assets of this selection (repeat to OR several)")
    ash = assets.add_parser("show", parents=[common], help="show one asset")
    ash.add_argument("key", type=asset_key, metavar="KEY")

    sel = sub.add_parser("select", parents=[common], help="resolve a selection without running it")
    sel.add_argument("expr", nargs="+", type=selection, action=SelectWords, metavar="EXPR",
                     help="selection expression(s), OR-ed; quote an expression with spaces")
    sel.add_argument("--explain", action="store_true", help="say why each asset is in")
    add_closure(sel)

    runs_cli.add_parsers(sub, common)
    partitions_cli.add_parsers(sub, common)
    backfill_cli.add_parsers(sub, common)
    return parser


# ── output ──────────────────────────────────────────────────────────────────

# ── commands ────────────────────────────────────────────────────────────────

def cmd_serve(args: argparse.Namespace) -> int:
    from arcod.serve import serve

    return serve(args.config, args.backend)


def cmd_status(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    result = client.call(p.Status())
    if args.json:
        print_json(result)
        return EXIT_OK
    render.fields([
        ("daemon", f"arcod {result['version']} pid {result['pid']}, up {result['uptime_s']:.0f}s"),
        ("config", result["config"]),
        ("socket", result["socket"]),
        ("code version", result["code_version"]),
        ("assets", result["assets"]),
        *[(f"runs {k.lower()}", v) for k, v in sorted(result.get("runs", {}).items())],
    ])
    return EXIT_OK


def cmd_reload(args, client) -> int:
    from arcod.control import protocol as p

    result = client.call(p.Reload())
    if args.json:
        print_json(result)
    elif result["changed"]:
        print(f"reloaded: code version {result['previous_code_version']} -> {result['code_version']}, {result['assets']} assets")
    else:
        print(f"reloaded: no change (code version {result['code_version']}, {result['assets']} assets)")
    return EXIT_OK


def cmd_assets(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    if args.assets_command == "list":
        result = list_assets(client, args.select)
        if args.json:
            print_json(result)
            return EXIT_OK
        render.table(
            ["KEY", "GROUP", "PARTITIONS", "DEPS"],
            [[a["key"], a["group"], a["partitions"] or "-", ", ".join(a["deps"]) or "-"] for a in result["assets"]],
        )
        return EXIT_OK
    result = client.call(p.AssetsShow(key=args.key))
    if args.json:
        print_json(result)
        return EXIT_OK
    command = result["command"]
    render.fields([
        ("key", result["key"]),
        ("group", result["group"]),
        ("partitions", result["partitions"] or "-"),
        ("deps", ", ".join(result["deps"]) or "-"),
        ("children", ", ".join(result["children"]) or "-"),
        ("runs", " ".join(command) if isinstance(command, list) else command or f"python {result['python']}"),
        ("tags", ", ".join(f"{k}={v}" for k, v in sorted(result["tags"].items())) or "-"),
        ("kinds", ", ".join(result["kinds"]) or "-"),
        ("owners", ", ".join(result["owners"]) or "-"),
        ("retries", f"max {result['retries']['max']}, delay {result['retries']['delay_s']}s, backoff x{result['retries']['backoff']}"),
        ("timeout", f"{result['timeout_s']}s" if result["timeout_s"] else "-"),
        ("defined in", result["source_file"]),
    ])
    return EXIT_OK


def list_assets(client, select: list[str] | None) -> dict:
    """`assets list [--select EXPR ...]`: repeated `--select` values are OR-ed, as for `run`
    (SPEC §4). The wire's AssetsList takes one expression, so several are resolved by the
    daemon's own `select` (which ORs a list, each item parsed on its own, so an error names
    its item) and the listing is cut to those keys."""
    from arcod.control import protocol as p

    if not select or len(select) == 1:
        return client.call(p.AssetsList(select=select[0] if select else None))
    keys = set(client.call(p.Select(select=select))["keys"])
    listing = client.call(p.AssetsList())
    return {**listing, "assets": [a for a in listing["assets"] if a["key"] in keys]}


def cmd_select(args, client) -> int:
    from arcod.control import protocol as p
    from arcod.cli import render

    result = client.call(p.Select(select=args.expr, upstream=args.upstream, downstream=args.downstream))
    if args.json:
        print_json(result)
        return EXIT_OK
    if args.explain:
        render.table(["ASSET", "WHY"], [[e["key"], e["text"]] for e in result["explain"]])
    else:
        for key in result["keys"]:
            print(key)
    return EXIT_OK


COMMANDS = {
    **runs_cli.COMMANDS,
    **partitions_cli.COMMANDS,
    **backfill_cli.COMMANDS,
    "status": cmd_status,
    "reload": cmd_reload,
    "assets": cmd_assets,
    "select": cmd_select,
}


def main(argv: list[str] | None = None) -> int:
    """Run one command. Output cut short by a closed stdout (`arcod ... | head -1`) ends the
    command quietly with EXIT_BROKEN_PIPE, as the Python docs recommend for SIGPIPE: the rest
    of the output goes to /dev/null so the interpreter's final flush cannot complain either."""
    try:
        try:
            code = _main(sys.argv[1:] if argv is None else list(argv))
        except SystemExit as exc:  # --help
            code = exc.code
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}{extra_words_hint(argv, extras)}")
    except ArgumentsError as exc:
        return usage_error(argv, exc)
    if args.command == "serve":
        return cmd_serve(args)
    from arcod.control.client import Client, DaemonUnreachable, RequestRefused

    try:
        path = socket_path(args)
        with Client(path) as client:
            return COMMANDS[args.command](args, client)
    except UsageError as exc:
        fail(args, "usage", str(exc))
        return EXIT_USAGE
    except DaemonUnreachable as exc:
        fail(args, "daemon_unreachable", str(exc))
        return EXIT_UNREACHABLE
    except RequestRefused as exc:
        err = exc.error
        if args.json:
            print_json({"error": {"code": err.code, "message": err.message, "details": err.details}})
        else:
            print(f"arcod: {err.message}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
