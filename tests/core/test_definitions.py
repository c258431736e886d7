"""Definitions validation: every error names the file and the asset, and says what to do."""

from __future__ import annotations

import pytest

from arcod.core import errors
from arcod.core.definitions import build_definitions
from arcod.core.errors import ArcodError

DAILY = {"kind": "daily", "start": "2024-01-01", "end": "2024-02-01"}


def asset(**kw):
    return {"command": ["true"], **kw}


def load(*files):
    return build_definitions([(name, table) for name, table in files])


def refused(*files) -> ArcodError:
    with pytest.raises(ArcodError) as info:
        load(*files)
    assert info.value.code == errors.DEFINITIONS_ERROR
    return info.value


def test_a_valid_project_loads_with_graph_and_code_version():
    defs = load(("a.toml", {"partitions": {"daily": DAILY},
                            "assets": {"raw/x": asset(partitions="daily", group="ingest", tags={"tier": "b"}),
                                       "y": asset(deps=["raw/x"])}}))
    assert sorted(defs.assets) == ["raw/x", "y"]
    assert defs.graph.parents("y") == ("raw/x",)
    assert defs.assets["raw/x"].group == "ingest" and defs.assets["y"].group == "default"
    assert len(defs.code_version) == 16


def test_dependency_tables_with_mappings_are_accepted():
    defs = load(("a.toml", {"assets": {"a": asset(), "b": asset(deps=[{"asset": "a", "mapping": {"kind": "all"}}])}}))
    assert defs.assets["b"].dep_keys == ("a",)


def test_code_version_follows_meaning_not_key_order():
    one = load(("a.toml", {"assets": {"a": asset(group="g", tags={"x": "1", "y": "2"})}}))
    same = load(("a.toml", {"assets": {"a": {"tags": {"y": "2", "x": "1"}, "group": "g", "command": ["true"]}}}))
    other = load(("a.toml", {"assets": {"a": asset(group="h", tags={"x": "1", "y": "2"})}}))
    assert one.code_version == same.code_version != other.code_version


@pytest.mark.parametrize("key", ["", "a//b", "/a", "a/", "a b", "a-b", "sales.daily", "é"])
def test_bad_asset_keys_name_file_and_key(key):
    err = refused(("defs/x.toml", {"assets": {key: asset()}}))
    assert err.details["file"] == "defs/x.toml" and err.details["asset"] == key
    assert "defs/x.toml" in err.message


def test_unknown_dependency_suggests_the_near_name():
    err = refused(("x.toml", {"assets": {"sales/daily": asset(), "report": asset(deps=["sales/dayly"])}}))
    assert err.details["asset"] == "report" and "sales/dayly" in err.message and "sales/daily" in err.message


def test_cycle_reports_its_path():
    err = refused(("x.toml", {"assets": {"a": asset(deps=["c"]), "b": asset(deps=["a"]), "c": asset(deps=["b"]),
                                         "d": asset(deps=["a"])}}))
    cycle = err.details["cycle"]
    assert cycle[0] == cycle[-1] and set(cycle) == {"a", "b", "c"}
    assert " -> ".join(cycle) in err.message


def test_unknown_partitions_definition_lists_the_known_ones():
    err = refused(("x.toml", {"partitions": {"daily": DAILY}, "assets": {"a": asset(partitions="hourly")}}))
    assert err.details["asset"] == "a" and "hourly" in err.message and "daily" in err.message


def test_unknown_field_suggests_the_nearest_name():
    err = refused(("x.toml", {"assets": {"a": {"comand": ["true"]}}}))
    assert "comand" in err.message and "command" in err.message and err.details["asset"] == "a"


def test_wrong_type_names_the_field():
    err = refused(("x.toml", {"assets": {"a": asset(timeout_s="soon")}}))
    assert "timeout_s" in err.message


@pytest.mark.parametrize("spec, words", [
    ({}, "exactly one of"),
    ({"command": ["true"], "python": "m:f"}, "exactly one of"),
    ({"command": []}, "empty"),
    ({"python": "module_without_function"}, "module:function"),
    ({"command": ["true"], "timeout_s": 0}, "timeout_s"),
    ({"command": ["true"], "retries": {"max": -1}}, "retries"),
])
def test_asset_shape_errors(spec, words):
    err = refused(("x.toml", {"assets": {"a": spec}}))
    assert words in err.message


def test_duplicates_across_files_name_both_files():
    err = refused(("one.toml", {"assets": {"a": asset()}}), ("two.toml", {"assets": {"a": asset()}}))
    assert err.details["file"] == "two.toml" and "one.toml" in err.message
    err = refused(("one.toml", {"partitions": {"d": DAILY}}), ("two.toml", {"partitions": {"d": DAILY}}))
    assert "one.toml" in err.message and err.details["partitions"] == "d"


def test_bad_partitions_definition_names_the_file():
    err = refused(("p.toml", {"partitions": {"d": {"kind": "dayly", "start": "2024-01-01"}}}))
    assert err.details["file"] == "p.toml" and err.details["partitions"] == "d"


def test_unknown_section_suggests_assets():
    err = refused(("x.toml", {"asset": {"a": asset()}}))
    assert "[asset]" in err.message and "assets" in err.message


def test_self_and_repeated_dependencies():
    assert "itself" in refused(("x.toml", {"assets": {"a": asset(deps=["a"])}})).message
    assert "twice" in refused(("x.toml", {"assets": {"a": asset(), "b": asset(deps=["a", "a"])}})).message


def test_multi_dimensions_may_name_definitions_from_any_file():
    defs = load(
        ("multi.toml", {"partitions": {"by_day_region": {"kind": "multi", "dimensions": {"date": "daily", "region": "region"}}},
                        "assets": {"m": asset(partitions="by_day_region")}}),
        ("base.toml", {"partitions": {"daily": DAILY, "region": {"kind": "static", "keys": ["eu", "us"]}}}),
    )
    multi = defs.partitions["by_day_region"]
    assert multi.size() == 31 * 2
    assert multi.key(0) == "2024-01-01|eu"


def test_dynamic_keys_are_bound_from_storage():
    defs = build_definitions(
        [("x.toml", {"partitions": {"customers": {"kind": "dynamic"}}, "assets": {"a": asset(partitions="customers")}})],
        dynamic_keys={"customers": ["acme", "globex"]},
    )
    assert defs.partitions["customers"].size() == 2
    assert defs.partitions["customers"].index("globex") == 1
