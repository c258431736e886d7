"""Input validation: every CLI flag, request field and config setting that can be wrong is
refused with a message that says what was expected (SPEC §7, §8).

CLI flags that cannot be turned into a request are usage errors (exit 2, before any request);
values only the daemon can judge (selections, partition keys and ranges, chunk sizes) are
refusals (exit 1) with a typed error code. Over the socket, a field of the wrong type or shape
is a `bad_request` naming the field and the expected type or bound.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from arcod.config import load_settings
from arcod.core.errors import ArcodError
from tests.e2e.harness import asset_toml, write_project
from tests.hardening.conftest import start_daemon, stop
from tests.hardening.wire import request

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    daemon = start_daemon(tmp_path_factory.mktemp("val") / "proj")
    yield daemon
    stop(daemon)


@pytest.mark.parametrize("argv, expected", [
    (["run", "--select", "a", "--run-key", "k" * 257], "1 to 256 printable characters"),
    (["run", "--select", "a", "--run-key", " padded "], "without surrounding space"),
    (["run", "--select", "a", "--run-key", ""], "1 to 256 printable characters"),
    (["rerun", "r-x", "--all", "--run-key", "k" * 300], "got 300 characters"),
    (["run", "--select", "a", "--tag", "novalue"], "KEY=VALUE"),
    (["run", "--select", "a", "--tag", "bad key=v"], "expected 1 to 64 letters, digits"),
    (["run", "--select", "a", "--tag", "k=" + "v" * 300], "at most 256 characters"),
    (["run", "--select", "a", "--upstream=0"], "depth"),
    (["run", "--select", "a", "--downstream=x"], "depth"),
    (["runs", "list", "--limit", "0"], "whole number between 1 and 10000"),
    (["runs", "list", "--limit", "20000"], "between 1 and 10000"),
    (["runs", "list", "--state", "bogus"], "invalid choice"),
    (["runs", "prune", "--older-than", "3x"], "duration like 30d, 12h"),
    (["runs", "prune", "--older-than=-1d"], "duration >= 0"),
    (["runs", "prune"], "--older-than"),
    (["backfill", "create", "--select", "a", "--partitions", "all", "--chunk-size", "ten"], "whole number"),
    (["backfill", "create", "--select", "a", "--partitions", "all", "--chunk-size", "0"], "between 1 and 100000"),
    (["backfill", "create", "--select", "a", "--partitions", "all", "--max-concurrency", "-1"], "between 1 and 1000"),
    (["backfill", "list", "--state", "nope"], "invalid choice"),
    (["backfill", "chunks", "bf-x", "--offset", "-1"], "whole number) between 0 and"),
    (["backfill", "chunks", "bf-x", "--offset", "99999999999999999999"], "between 0 and 1000000000000000000"),
    (["partitions", "list", "raw/orders", "--offset", "99999999999999999999"], "between 0 and 1000000000000000000"),
    (["backfill", "create", "--select", "a", "--partitions", "all", "--reprocess", "some"], "invalid choice"),
])
def test_bad_flags_are_usage_errors_that_say_what_was_expected(d, argv, expected):
    r = d.cli(*argv, json_output=False)
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    assert expected in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("argv, code, expected", [
    (["run", "--select", "raw/orders", "--partition", "2024-13-01"], "partition_error", "expected a daily key like '2024-01-01'"),
    (["run", "--select", "raw/orders", "--partition", "2023-12-31"], "partition_error", ""),
    (["run", "--select", "raw/orders", "--partition", "2024-01-01,2024-01-02"], "partition_error",
     "use --partitions '2024-01-01,2024-01-02'"),
    (["run", "--select", "raw/orders", "--partition", "2024-01-01..2024-01-02"], "partition_error",
     "is a list or a range"),
    (["run", "--select", "raw/orders", "--partitions", "2024-02-01..2024-01-01"], "partition_error", ""),
    (["run", "--select", "raw/orders", "--partitions", "2024-01-01..nope"], "partition_error", ""),
    (["run", "--select", "raw/orders"], "partition_error", "--partition"),
    (["run", "--select", "a", "--partition", "2024-01-01"], "partition_error", "none of the selected assets is partitioned"),
    (["run", "--select", "raw/orders", "--partition", "2024-01-01", "--partitions", "all"], "bad_request", "not both"),
    (["run", "--select", "a and ("], "parse_error", ""),
    (["run", "--select", "*a"], "parse_error", ""),
    (["run", "--select", "nope or zzz"], "unknown_assets", "nope"),
    (["run", "--select", "tag:nothing"], "empty_selection", ""),
    (["run", "--select", "raw/orders", "--select", "odd/plain", "--partitions", "all"], "mixed_partitions", "daily"),
    (["runs", "show", "r-does-not-exist"], "not_found", "arcod runs list"),
    (["rerun", "r-does-not-exist", "--from-failure"], "not_found", ""),
    (["backfill", "create", "--select", "a", "--partitions", "all"], None, ""),
    (["backfill", "show", "bf-nope"], "not_found", ""),
    (["partitions", "list", "nope"], None, ""),
])
def test_values_only_the_daemon_can_judge_are_typed_refusals(d, argv, code, expected):
    err = d.refused(*argv, code=code)
    assert err["message"] and expected.lower() in err["message"].lower(), err
    assert err["code"] != "internal"


@pytest.mark.parametrize("field, value", [("chunk_size", 0), ("max_concurrency", -1)])
def test_backfill_ranges_are_checked_by_the_daemon_too(d, field, value):
    """The CLI refuses these as usage errors; a client on the wire gets the daemon's refusal."""
    frame = {"cmd": "backfill.create", "select": ["raw/orders"], "partitions": "all", field: value}
    err = request(d.socket, frame)["error"]
    assert err["code"] == "bad_request" and "--" + field.replace("_", "-") in err["message"], err


@pytest.mark.parametrize("frame, where, expected", [
    ({"cmd": "run", "select": ["a"], "run_key": "k" * 257}, "$.run_key", "length <= 256"),
    ({"cmd": "run", "select": ["a"], "run_key": ""}, "$.run_key", "length >= 1"),
    ({"cmd": "run", "select": ["a"], "tags": {"bad key": "v"}}, "$.tags", "matching regex"),
    ({"cmd": "run", "select": ["a"], "tags": {"k": "line\nbreak"}}, "$.tags", "matching regex"),
    ({"cmd": "run", "select": ["a"], "tags": {f"k{i}": "v" for i in range(65)}}, "$.tags", "length <= 64"),
    ({"cmd": "run", "select": "a"}, "$.select", "Expected `array`"),
    ({"cmd": "run", "select": [""]}, "$.select[0]", "length >= 1"),
    ({"cmd": "select", "select": ["a"], "upstream": -2}, "$.upstream", ">= -1"),
    ({"cmd": "runs.list", "limit": 0}, "$.limit", ">= 1"),
    ({"cmd": "runs.list", "limit": 2**70}, "$.limit", "<= 10000"),
    ({"cmd": "runs.list", "state": "RUNING"}, "$.state", "expected one of QUEUED, RUNNING"),
    ({"cmd": "rerun", "run_id": "r", "kind": "some"}, "$.kind", "expected one of from_failure, subset, all"),
    ({"cmd": "logs", "run_id": "r", "offsets": {"a": -1}}, "$.offsets", ">= 0"),
    ({"cmd": "logs", "run_id": "r", "offsets": {"a": 2**63}}, "$.offsets", "<= 1000000000000000000"),
    ({"cmd": "backfill.chunks", "backfill_id": "b", "offset": 2**64}, "$.offset", "<= 1000000000000000000"),
    ({"cmd": "partitions.list", "asset": "a", "offset": 2**64}, "$.offset", "<= 1000000000000000000"),
    ({"cmd": "runs.prune", "older_than_s": -1}, "$.older_than_s", ">= 0"),
    ({"cmd": "runs.prune"}, "older_than_s", "missing required field"),
    ({"cmd": "status", "verbose": True}, "verbose", "unknown field"),
])
def test_request_fields_are_checked_at_the_door(d, frame, where, expected):
    err = request(d.socket, frame)["error"]
    assert err["code"] == "bad_request", err
    assert where in err["message"] and expected in err["message"], err["message"]


CONFIGS = [
    ('max_concurrent_runs = "4"\n', "Expected `int`, got `str` - at `$.max_concurrent_runs`"),
    ("max_concurrent_runs = 0\n", "at least 1"),
    ("max_concurent_runs = 4\n", "did you mean `max_concurrent_runs`?"),
    ("retention_dayz = 30\n", "did you mean `retention_days`?"),
    ("zzz_qqq = 1\n", "the known settings are state_dir, definitions"),
    ("retention_days = -1\n", "Expected `int` >= 0 - at `$.retention_days`"),
    ('retention_days = "30d"\n', "Expected `int`, got `str`"),
    ('log_level = "verbose"\n', "expected one of debug, info, warning, error"),
    ("term_grace_s = -1\n", ">= 0"),
    ("max_connections = 0\n", "Expected `int` >= 1 - at `$.max_connections`"),
    ("client_idle_timeout_s = 0\n", "> 0"),
    ("max_log_bytes = -5\n", ">= 0"),
    ("definitions = []\n", "`definitions` is empty"),
    ('definitions = "assets.toml"\n', "Expected `array`, got `str`"),
]


@pytest.mark.parametrize("line, expected", CONFIGS)
def test_config_with_wrong_types_or_unknown_fields(tmp_path, line, expected):
    project = write_project(tmp_path / "p", asset_toml("a"))
    text = (project / "arcod.toml").read_text()
    key = line.split("=")[0].strip()
    lines = [x for x in text.splitlines() if x.split("=")[0].strip() != key]
    (project / "arcod.toml").write_text("\n".join(lines) + "\n" + line)
    with pytest.raises(ArcodError) as info:
        load_settings(project / "arcod.toml")
    assert info.value.code == "definitions_error"
    assert expected in info.value.message, info.value.message
    assert str(project / "arcod.toml") in info.value.message


def test_config_errors_stop_the_daemon_before_it_starts(tmp_path):
    project = write_project(tmp_path / "p", asset_toml("a"), settings="max_concurent_runs = 2\n")
    p = subprocess.run([sys.executable, "-m", "arcod", "serve", "--config", str(project / "arcod.toml")],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 1
    assert "unknown field `max_concurent_runs`" in p.stderr and "did you mean `max_concurrent_runs`?" in p.stderr
    assert not (project / ".arcod" / "arcod.db").exists()


@pytest.mark.parametrize("body, expected", [
    ('[assets.a]\ncomand = ["true"]\n', "did you mean `command`?"),
    ('[assets.a]\ncommand = ["true"]\nretries = { max = 2, dealy_s = 1 }\n', "did you mean `delay_s`?"),
    ('[assets.a]\ncommand = ["true"]\nretries = { max = "2" }\n', "Expected `int`, got `str` - at `$.retries.max`"),
    ('[assets.a]\ncommand = ["true"]\ntags = { "bad key" = "x" }\n', "tag key 'bad key' is not valid"),
    ('[assets.a]\ncommand = ["true"]\ntimeout_s = -1\n', "positive number of seconds"),
    ('[asests.a]\ncommand = ["true"]\n', "did you mean [assets]?"),
    ('[partitions.p]\nkind = "daly"\nstart = "2024-01-01"\n', "did you mean 'daily'?"),
])
def test_definition_files_with_wrong_types_or_unknown_fields(tmp_path, body, expected):
    from arcod.config import load_definitions

    project = write_project(tmp_path / "p", "")
    (project / "assets.toml").write_text(body)
    with pytest.raises(ArcodError) as info:
        load_definitions(load_settings(project / "arcod.toml"))
    assert expected in info.value.message and "assets.toml" in info.value.message, info.value.message
