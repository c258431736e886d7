"""The command line as an operator meets it: usage errors (with and without `--json`), flag
bounds taken from the protocol, repeated flags, selections split by the shell, a closed stdout,
and the human renderings of backfills, partitions and lineage trees.

Argument checks run `python -m arcod` with a socket nobody listens on: a command line that got
past the CLI would end with exit 3 (daemon unreachable), so exit 2 proves the CLI refused it
before any request. Everything else talks to a real daemon.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import typing

import msgspec.inspect
import pytest

from arcod.control import protocol
from arcod.core import backfill_chunks
from tests.e2e.harness import DAILY_AND_REGION, ROOT, Daemon, Result, asset_toml, write_project

pytestmark = pytest.mark.e2e

NOWHERE = "/nonexistent/arcod-test.sock"


def arcod(*args: str) -> Result:
    """The CLI with no daemon behind its socket (`--socket` goes last, after any positionals)."""
    p = subprocess.run([sys.executable, "-m", "arcod", *args, "--socket", NOWHERE],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    return Result(p.returncode, p.stdout, p.stderr)


def usage_json(r: Result) -> dict:
    """The one JSON document a usage error with --json prints; nothing else on stdout."""
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    doc = json.loads(r.stdout)  # one document, or this raises
    assert set(doc) == {"error"} and doc["error"]["code"] == "usage", doc
    assert doc["error"]["message"] and doc["error"]["details"]["usage"].startswith("usage: arcod"), doc
    return doc["error"]


# ── 1. usage errors and --json ──────────────────────────────────────────────

@pytest.mark.parametrize("argv, expected", [
    (["run", "--json"], "the following arguments are required: --select"),
    (["select", "raw/orders", "--downstream=abc", "--json"], "argument --downstream"),
    (["runs", "list", "--state", "bogus", "--json"], "invalid choice: 'BOGUS'"),
    (["runs", "list", "--json", "--bogus"], "unrecognized arguments: --bogus"),
    (["--json"], "argument COMMAND"),  # `--socket` (added by arcod()) is no command
    (["backfill", "create", "--json", "--select", "p"], "--partitions"),
])
def test_usage_errors_with_json_are_one_document_on_stdout(argv, expected):
    r = arcod(*argv)
    err = usage_json(r)
    assert expected in err["message"], err
    assert r.stderr == ""


@pytest.mark.parametrize("argv, command", [
    (["run"], "arcod run"),
    (["runs", "list", "--state", "bogus"], "arcod runs list"),
])
def test_usage_errors_without_json_keep_argparse_text_on_stderr(argv, command):
    r = arcod(*argv)
    assert r.code == 2 and r.stdout == ""
    assert r.stderr.startswith(f"usage: {command}") and f"{command}: error: " in r.stderr, r.stderr


# ── 2. bounds: the flag, its range, exit 2 ──────────────────────────────────

def _info(t):
    """msgspec's own reading of a protocol type (the non-None member of an optional)."""
    info = msgspec.inspect.type_info(t)
    return info.types[0] if isinstance(info, msgspec.inspect.UnionType) else info


def _le(t) -> int:
    return _info(t).le


def _max_len(t) -> int:
    return _info(t).max_length


BOUNDS = [
    (["select", "raw/orders", "--downstream=99999999999999999999"], "--downstream",
     f"between 1 and {_le(protocol.Depth)}"),
    (["select", "raw/orders", "--upstream=0"], "--upstream", "between 1 and"),
    (["select", ""], "EXPR", f"1 to {_max_len(protocol.SelectExpr)} characters, got an empty string"),
    (["run", "--select", ""], "--select", "got an empty string"),
    (["assets", "list", "--select", ""], "--select", "got an empty string"),
    (["runs", "show", "x" * 1500], "RUN", f"1 to {_max_len(protocol.Ident)} characters, got 1500 characters"),
    (["backfill", "show", "b" * 1100], "ID", f"1 to {_max_len(protocol.Ident)} characters"),
    (["runs", "list", "--limit", "0"], "--limit", f"between 1 and {_le(protocol.Limit)}"),
    (["backfill", "chunks", "b-x", "--limit", str(_le(protocol.Limit) + 1)], "--limit", "between 1 and"),
    (["backfill", "create", "--select", "p", "--partitions", "all", "--chunk-size", "0"], "--chunk-size",
     f"between {backfill_chunks.MIN_CHUNK_SIZE} and {backfill_chunks.MAX_CHUNK_SIZE}, got 0"),
    (["backfill", "create", "--select", "p", "--partitions", "all", "--max-concurrency", "0"], "--max-concurrency",
     f"between {backfill_chunks.MIN_MAX_CONCURRENCY} and {backfill_chunks.MAX_MAX_CONCURRENCY}, got 0"),
    (["backfill", "create", "--select", "p", "--partitions", "all", "--max-concurrency", "1001"],
     "--max-concurrency", "got 1001"),
    (["backfill", "pause", "b-x", "--expect-version", "0"], "--expect-version", "state version (a whole number) >= 1"),
    (["backfill", "cancel", "b-x", "--expect-version", "-1"], "--expect-version", ">= 1, got -1"),
    (["run", "--select", "a", "--run-key", "k" * 257], "--run-key",
     f"1 to {_max_len(protocol.RunKey)} printable characters"),
    (["backfill", "create", "--select", "p", "--partitions", "all", "--request-id", "r" * 300], "--request-id",
     f"1 to {_max_len(protocol.RequestId)} printable characters"),
    (["run", "--select", "a", "--partition", "   "], "--partition", "got an empty string"),
    (["runs", "prune", "--older-than", "99999d"], "--older-than", "at most"),
]


@pytest.mark.parametrize("argv, flag, expected", BOUNDS)
def test_out_of_range_values_are_usage_errors_naming_the_flag_and_range(argv, flag, expected):
    r = arcod(*argv)
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    assert f"argument {flag}: " in r.stderr and expected in r.stderr, r.stderr
    assert "Expected `" not in r.stderr and r.stdout == ""  # never the wire format's wording


def test_duration_bound_is_the_protocols():
    hints = typing.get_type_hints(protocol.RunsPrune, include_extras=True)
    days = int(_le(hints["older_than_s"]) // 86400)
    assert f"at most {days}d" in arcod("runs", "prune", "--older-than", f"{days + 1}d").stderr
    assert arcod("runs", "prune", "--older-than", f"{days}d").code == 3  # in range: it goes to the daemon


def test_bound_errors_with_json_name_the_flag_too():
    err = usage_json(arcod("select", "raw/orders", "--downstream=99999999999999999999", "--json"))
    assert err["message"].startswith("argument --downstream: ") and "1000000" in err["message"]


# ── 4. repeated tag keys ────────────────────────────────────────────────────

@pytest.mark.parametrize("tags", [["k=v", "k=w"], ["k=v", "other=x", "k=v"]])
def test_a_tag_key_given_twice_is_a_usage_error_naming_it(tags):
    argv = ["run", "--select", "a"] + [w for t in tags for w in ("--tag", t)]
    r = arcod(*argv)
    assert r.code == 2 and "argument --tag: tag key 'k' is given twice" in r.stderr, r.stderr


# ── 6. a selection split by the shell ───────────────────────────────────────

def test_an_unquoted_select_expression_says_to_quote_it():
    r = arcod("select", "tag:tier=gold", "and", "not", "group:reports")
    assert r.code == 2, r
    assert "looks split across arguments" in r.stderr
    assert "arcod select 'tag:tier=gold and not group:reports'" in r.stderr


@pytest.mark.parametrize("select", [["--select", "tag:tier=gold"], ["--select=tag:tier=gold"]])
def test_an_unquoted_select_flag_says_to_quote_it(select):
    r = arcod("run", *select, "and", "not", "group:reports", "--wait")
    assert r.code == 2, r
    assert "--select 'tag:tier=gold and not group:reports'" in r.stderr, r.stderr
    err = usage_json(arcod("run", *select, "or", "b", "--json"))
    assert "--select 'tag:tier=gold or b'" in err["message"]


# ── with a daemon ───────────────────────────────────────────────────────────

PARTITIONS = DAILY_AND_REGION
ASSETS = (asset_toml("a") + asset_toml("b", deps=["a"]) + asset_toml("c", deps=["b"])
          + asset_toml("p", partitions="daily") + asset_toml("r", partitions="region"))


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = Daemon(write_project(tmp_path_factory.mktemp("cli") / "proj", ASSETS, partitions=PARTITIONS))
    daemon.start()
    yield daemon
    daemon.stop()


def keys(d: Daemon, *args: str) -> list[str]:
    return [a["key"] for a in d.ok("assets", "list", *args)["assets"]]


# 3. assets list ORs repeated --select, like run and select.
def test_assets_list_ors_repeated_selects(d: Daemon):
    assert keys(d, "--select", "a", "--select", "c") == ["a", "c"]
    assert keys(d, "--select", "a", "--select", "b+") == ["a", "b", "c"]
    assert keys(d, "--select", "a") == ["a"]
    assert keys(d, "--select", "a", "--select", "a") == ["a"]
    assert d.ok("select", "a", "c")["keys"] == ["a", "c"]  # the words of `select` OR too
    err = d.refused("assets", "list", "--select", "a", "--select", "nope", code="unknown_assets")
    assert "nope" in err["message"]
    human = d.cli("assets", "list", "--select", "a", "--select", "c", json_output=False)
    assert [line.split()[0] for line in human.stdout.splitlines()] == ["KEY", "a", "c"]


def test_distinct_tag_keys_all_reach_the_run(d: Daemon):
    run = d.ok("run", "--select", "a", "--tag", "k=v", "--tag", "team=data")
    assert run["tags"] == {"k": "v", "team": "data"}
    d.wait_run(run["run_id"])


# 7. --partition trims surrounding whitespace like --partitions does.
def test_partition_and_partitions_both_trim_surrounding_whitespace(d: Daemon):
    one = d.ok("run", "--select", "p", "--partition", " 2024-01-03 ")
    assert [t["partition"] for t in one["tasks"]] == ["2024-01-03"]
    listed = d.ok("run", "--select", "p", "--partitions", " 2024-01-04 , 2024-01-05")
    assert [t["partition"] for t in listed["tasks"]] == ["2024-01-04", "2024-01-05"]
    d.wait_run(one["run_id"])
    d.wait_run(listed["run_id"])
    logs = d.ok("logs", one["run_id"], "--partition", "2024-01-03 ")
    assert [a["partition"] for a in logs["attempts"]] == ["2024-01-03"]
    # Same request, same fingerprint: the trimmed key is the key.
    again = d.ok("run", "--select", "p", "--partition", "2024-01-03")
    assert again["fingerprint"] == one["fingerprint"]
    d.wait_run(again["run_id"])


# 5. a closed stdout: quiet, exit 141, no traceback.
def closed_stdout(d: Daemon, *args: str) -> tuple[int, str]:
    """Run the CLI with the reading end of its stdout already closed, as after `| head -1`
    has exited: its first write fails with EPIPE."""
    p = subprocess.Popen([sys.executable, "-m", "arcod", *args, "--socket", str(d.socket)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=d.project)
    p.stdout.close()
    err = p.stderr.read().decode()
    p.stderr.close()
    return p.wait(timeout=60), err


def test_a_closed_stdout_ends_quietly_with_141(d: Daemon):
    run = d.ok("run", "--select", "a")
    d.wait_run(run["run_id"])
    bf = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-02", "--chunk-size", "1")
    for argv in (["runs", "show", run["run_id"]], ["runs", "show", run["run_id"], "--json"],
                 ["backfill", "chunks", bf["backfill_id"]], ["partitions", "list", "p", "--limit", "10"]):
        code, err = closed_stdout(d, *argv)
        assert (code, err) == (141, ""), (argv, code, err)
    wait_backfill(d, bf["backfill_id"])


def wait_backfill(d: Daemon, backfill_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (bf := d.ok("backfill", "show", backfill_id))["state"] not in ("SUCCEEDED", "FAILED", "CANCELED"):
        assert time.monotonic() < deadline, bf
        time.sleep(0.05)
    return bf


# 6. wording of the human renderings.
def test_backfill_chunk_wording_and_plurals(d: Daemon):
    bf = d.ok("backfill", "create", "--select", "p", "--partitions", "2024-01-01..2024-01-07", "--chunk-size", "3",
              "--max-concurrency", "1")
    show = d.cli("backfill", "show", bf["backfill_id"], json_output=False).stdout
    chunks = next(line for line in show.splitlines() if line.startswith("chunks:"))
    assert chunks.split(":", 1)[1].strip() == "3 (3 partitions each, the last 1), at most 1 at once", chunks
    wait_backfill(d, bf["backfill_id"])

    one = d.cli("backfill", "create", "--select", "p", "--partitions", "2024-01-08..2024-01-09", "--dry-run",
                json_output=False).stdout.splitlines()[0]
    assert "2 partitions of 'daily' (2024-01-08..2024-01-09) x 1 asset in 1 chunk (2 partitions)," in one, one
    many = d.cli("backfill", "create", "--select", "p", "--partitions", "all", "--chunk-size", "5", "--dry-run",
                 json_output=False).stdout.splitlines()[0]
    assert "10 partitions of 'daily' (all) x 1 asset in 2 chunks (5 partitions each), at most 4" in many, many
    human = d.cli("backfill", "create", "--select", "p", "--partitions", "2024-01-10", json_output=False).stdout
    assert "1 partition in 1 chunk (1 partition), at most 4 at once" in human, human
    wait_backfill(d, human.split()[2].rstrip(":"))


def test_partitions_list_header_names_the_kind_once(d: Daemon):
    daily = d.cli("partitions", "list", "p", "--limit", "1", json_output=False).stdout.splitlines()[0]
    assert daily == "p  daily, 10 partitions", daily
    static = d.cli("partitions", "list", "r", "--limit", "1", json_output=False).stdout.splitlines()[0]
    assert static == "r  region (static), 2 partitions", static


def test_runs_tree_columns_line_up_whatever_the_depth(d: Daemon):
    (d.project / "fail" / "b").touch()
    try:
        root = d.cli("run", "--select", "a+", "--wait").json
        first = d.cli("rerun", root["run_id"], "--from-failure", "--wait").json
    finally:
        (d.project / "fail" / "b").unlink()
    second = d.cli("rerun", first["run_id"], "--from-failure", "--wait").json
    assert (root["state"], first["state"], second["state"]) == ("FAILED", "FAILED", "SUCCEEDED")
    lines = d.cli("runs", "tree", second["run_id"], json_output=False).stdout.splitlines()
    header, rows = lines[0], lines[1:]
    assert header.split() == ["RUN", "STATE", "KIND", "OK", "TASKS"], header
    assert [r.split()[-1] for r in rows].count("<") == 1 and rows[-1].endswith("<")
    for column, values in (("STATE", ["FAILED", "FAILED", "SUCCEEDED"]),
                           ("KIND", ["root", "from_failure", "from_failure"])):
        at = header.index(column)
        assert [row[at:].split()[0] for row in rows] == values, lines
        assert all(row[at - 2:at] == "  " for row in rows), lines  # two spaces before every column
    assert "└─ " in rows[1] and "└─ " in rows[2] and rows[2].index("└─") > rows[1].index("└─")
