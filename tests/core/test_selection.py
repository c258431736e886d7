"""Selection semantics (SPEC §4): roots plus explicit closure, never more; reasons for --explain."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import BAD_REQUEST, EMPTY_SELECTION, PARSE_ERROR, UNKNOWN_ASSETS, ArcodError
from arcod.core.graph import AssetGraph
from arcod.core.selection import (
    Reason,
    Resolution,
    SelectionRequest,
    describe_reason,
    format_selection,
    parse_selection,
    request_node,
    resolve_expression,
    resolve_request,
    resolve_selection,
    unknown_keys,
)
from arcod.core.selection_parser import Key, Or
from tests.core.test_graph import dags


@dataclass(frozen=True)
class Attrs:
    group: str = "default"
    tags: Mapping[str, str] = field(default_factory=dict)
    kinds: Sequence[str] = ()
    owners: Sequence[str] = ()


DEPS = {
    "raw/orders": [],
    "raw/customers": [],
    "raw/events": [],
    "stg/orders": ["raw/orders"],
    "stg/customers": ["raw/customers"],
    "sales/daily": ["stg/orders", "stg/customers"],
    "sales/report": ["sales/daily"],
    "ml/features": ["sales/daily", "raw/events"],
}
GRAPH = AssetGraph.from_deps(DEPS)
ATTRS = {
    "raw/orders": Attrs("ingest", {"tier": "bronze"}, ["python"], ["team:data"]),
    "raw/customers": Attrs("ingest", {"tier": "bronze", "pii": ""}),
    "raw/events": Attrs("ingest", {"pii": "yes"}, ["python"]),
    "stg/orders": Attrs("staging", {"tier": "silver"}, ["dbt"]),
    "stg/customers": Attrs("staging", {"tier": "silver"}, ["dbt"]),
    "sales/daily": Attrs("sales mart", {"tier": "gold"}, ["dbt"], ["team:data", "alice@example.com"]),
    "sales/report": Attrs("sales mart", {"tier": "gold"}),
    "ml/features": Attrs("ml", {}, ["python"], ["bob"]),
}
ALL = sorted(DEPS)


def resolve(text: str) -> Resolution:
    return resolve_expression(text, GRAPH, ATTRS)


def sel(text: str) -> list[str]:
    return list(resolve(text).keys)


def refusal(text: str) -> ArcodError:
    with pytest.raises(ArcodError) as info:
        resolve(text)
    return info.value


# -- no closure unless asked ----------------------------------------------------------


def test_a_key_selects_only_itself() -> None:
    assert sel("sales/daily") == ["sales/daily"]
    assert sel("key:sales/daily") == ["sales/daily"]
    assert resolve_selection(parse_selection("sales/daily"), GRAPH, ATTRS).keys == ("sales/daily",)
    assert sel("stg/orders or sales/report") == ["sales/report", "stg/orders"]


def test_labels_select_only_what_they_match() -> None:
    assert sel("group:staging") == ["stg/customers", "stg/orders"]
    assert sel('group:"sales mart"') == ["sales/daily", "sales/report"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+sales/daily", ["raw/customers", "raw/orders", "sales/daily", "stg/customers", "stg/orders"]),
        ("1+sales/daily", ["sales/daily", "stg/customers", "stg/orders"]),
        ("2+sales/daily", ["raw/customers", "raw/orders", "sales/daily", "stg/customers", "stg/orders"]),
        ("0+sales/daily", ["sales/daily"]),
        ("sales/daily+", ["ml/features", "sales/daily", "sales/report"]),
        ("sales/daily+0", ["sales/daily"]),
        ("raw/orders+2", ["raw/orders", "sales/daily", "stg/orders"]),
        ("raw/orders+", ["ml/features", "raw/orders", "sales/daily", "sales/report", "stg/orders"]),
        ("1+sales/daily+1", ["ml/features", "sales/daily", "sales/report", "stg/customers", "stg/orders"]),
        ("+ml/features", ["ml/features", "raw/customers", "raw/events", "raw/orders", "sales/daily",
                          "stg/customers", "stg/orders"]),
        ("+raw/orders", ["raw/orders"]),
        ("+group:staging", ["raw/customers", "raw/orders", "stg/customers", "stg/orders"]),
        ("(1+sales/report)+1", ["ml/features", "sales/daily", "sales/report"]),
    ],
)
def test_traversals(text: str, expected: list[str]) -> None:
    assert sel(text) == expected


def test_depth_counts_the_shortest_path() -> None:
    # a -> b -> c -> d, plus a -> d: within one step of d are c and a, not b.
    graph = AssetGraph.from_deps({"a": [], "b": ["a"], "c": ["b"], "d": ["c", "a"]})
    res = resolve_expression("1+d", graph, {})
    assert res.keys == ("a", "c", "d")
    assert res.reasons["a"] == Reason("upstream", of="d", depth=1)
    assert resolve_expression("a+1", graph, {}).keys == ("a", "b", "d")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("roots(+sales/daily)", ["raw/customers", "raw/orders"]),
        ("sinks(+sales/daily)", ["sales/daily"]),
        ("roots(*)", ["raw/customers", "raw/events", "raw/orders"]),
        ("sinks(*)", ["ml/features", "sales/report"]),
        # Ancestry runs through assets outside the set: stg/orders is not in it.
        ("roots(raw/orders or sales/daily)", ["raw/orders"]),
        ("sinks(raw/orders or sales/daily)", ["sales/daily"]),
        ("roots(raw/orders or raw/events)", ["raw/events", "raw/orders"]),
        ("roots(sales/daily+)", ["sales/daily"]),
        ("sinks(group:ingest)", ["raw/customers", "raw/events", "raw/orders"]),
        ("roots(sales/daily)+1", ["ml/features", "sales/daily", "sales/report"]),
    ],
)
def test_roots_and_sinks(text: str, expected: list[str]) -> None:
    assert sel(text) == expected


def test_roots_on_a_cyclic_graph_look_at_other_members_only() -> None:
    # The loader refuses cycles; resolution still gives a sensible, terminating answer.
    graph = AssetGraph.from_deps({"a": ["b"], "b": ["a"], "c": ["b"], "x": []})
    assert resolve_expression("roots(a or x)", graph, {}).keys == ("a", "x")
    assert resolve_expression("sinks(a or x)", graph, {}).keys == ("a", "x")
    with pytest.raises(ArcodError) as info:
        resolve_expression("roots(a or b)", graph, {})
    assert info.value.code == EMPTY_SELECTION


# -- operators and precedence ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # `and` binds tighter than `or`: raw/orders or (stg/orders and group:staging).
        ("raw/orders or stg/orders and group:staging", ["raw/orders", "stg/orders"]),
        ("(raw/orders or stg/orders) and group:staging", ["stg/orders"]),
        # `not` binds tighter than `and`: (not group:ingest) and tag:tier.
        ("not group:ingest and tag:tier", ["sales/daily", "sales/report", "stg/customers", "stg/orders"]),
        ("not (group:ingest and tag:tier)", ["ml/features", "raw/events", "sales/daily", "sales/report",
                                             "stg/customers", "stg/orders"]),
        # Traversal binds tighter than `not`: not (raw/orders+).
        ("not raw/orders+", ["raw/customers", "raw/events", "stg/customers"]),
        ("not not group:ml", ["ml/features"]),
        ("+stg/orders and group:ingest", ["raw/orders"]),
        ("*", ALL),
        ("* and not group:ingest and not group:staging", ["ml/features", "sales/daily", "sales/report"]),
    ],
)
def test_operators(text: str, expected: list[str]) -> None:
    assert sel(text) == expected


# -- primitives ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('key:"raw/*"', ["raw/customers", "raw/events", "raw/orders"]),
        ("key:raw/*", ["raw/customers", "raw/events", "raw/orders"]),
        # `*` also matches `/`.
        ('key:"r*s"', ["raw/customers", "raw/events", "raw/orders"]),
        ('key:"sales*"', ["sales/daily", "sales/report"]),
        ('key:"*/*s"', ["ml/features", "raw/customers", "raw/events", "raw/orders", "stg/customers",
                        "stg/orders"]),
        ('key:"*"', ALL),
        ('key:"*a*y"', ["sales/daily"]),
        ('key:"nothing*" or sales/daily', ["sales/daily"]),
        ("tag:tier", ["raw/customers", "raw/orders", "sales/daily", "sales/report", "stg/customers",
                      "stg/orders"]),
        # Any value, the empty one included (Dagster would match only the empty value here).
        ("tag:pii", ["raw/customers", "raw/events"]),
        ('tag:pii=""', ["raw/customers"]),
        ("tag:tier=gold", ["sales/daily", "sales/report"]),
        ('tag:"tier"="silver"', ["stg/customers", "stg/orders"]),
        ("kind:dbt", ["sales/daily", "stg/customers", "stg/orders"]),
        ("kind:python", ["ml/features", "raw/events", "raw/orders"]),
        ("owner:team:data", ["raw/orders", "sales/daily"]),
        ('owner:"alice@example.com"', ["sales/daily"]),
        ("owner:alice@example.com", ["sales/daily"]),
        ("group:ml", ["ml/features"]),
    ],
)
def test_primitives(text: str, expected: list[str]) -> None:
    assert sel(text) == expected


def test_a_literal_star_in_a_label_is_not_a_wildcard() -> None:
    attrs = {"a": Attrs("g*"), "b": Attrs("gx")}
    graph = AssetGraph.from_deps({"a": [], "b": []})
    assert resolve_expression('group:"g*"', graph, attrs).keys == ("a",)


def test_assets_without_attributes_match_no_label() -> None:
    graph = AssetGraph.from_deps({"a": [], "b": []})
    assert resolve_expression("group:default or b", graph, {"a": Attrs()}).keys == ("a", "b")


# -- refusals -----------------------------------------------------------------------


def test_every_unknown_exact_key_is_listed_sorted_with_suggestions() -> None:
    err = refusal('sales/daly or not (nope/x and +ghost) or key:"zz*" or roots(Sales/daily) or ghost')
    assert err.code == UNKNOWN_ASSETS
    assert err.details == {"keys": ["Sales/daily", "ghost", "nope/x", "sales/daly"]}
    assert "sales/daly (did you mean sales/daily" in err.message
    assert "arcod assets list" in err.message


def test_unknown_keys_are_found_before_evaluation() -> None:
    assert unknown_keys(parse_selection("a or key:\"b*\" or +c"), GRAPH) == ["a", "c"]
    assert unknown_keys(parse_selection("sales/daily"), GRAPH) == []


@pytest.mark.parametrize("text", ['key:"nothing*"', "group:nope", "not *", "tag:tier=platinum",
                                  "group:ingest and group:ml", "roots(+sales/daily) and sales/daily"])
def test_an_empty_result_is_refused(text: str) -> None:
    err = refusal(text)
    assert err.code == EMPTY_SELECTION
    assert err.details == {"expression": format_selection(parse_selection(text))}
    assert "matches no assets" in err.message


def test_parse_errors_come_before_anything_else() -> None:
    err = refusal("ghost,sales/daily")
    assert err.code == PARSE_ERROR
    assert err.details["column"] == 6


# -- reasons ------------------------------------------------------------------------


def test_reasons_for_a_closure() -> None:
    res = resolve("+sales/daily")
    assert res.reasons == {
        "sales/daily": Reason("root", matched="sales/daily"),
        "stg/orders": Reason("upstream", of="sales/daily", depth=1),
        "stg/customers": Reason("upstream", of="sales/daily", depth=1),
        "raw/orders": Reason("upstream", of="sales/daily", depth=2),
        "raw/customers": Reason("upstream", of="sales/daily", depth=2),
    }
    assert describe_reason(res.reasons["sales/daily"]) == "root (sales/daily)"
    assert describe_reason(res.reasons["raw/orders"]) == "upstream of sales/daily at depth 2"
    assert describe_reason(resolve("raw/orders+").reasons["sales/report"]) == (
        "downstream of raw/orders at depth 3"
    )


def test_root_reasons_name_the_canonical_primitive() -> None:
    assert resolve("group:ingest").reasons["raw/orders"] == Reason("root", matched="group:ingest")
    assert resolve("key:raw/*").reasons["raw/orders"].matched == 'key:"raw/*"'
    assert resolve('group:"sales mart"').reasons["sales/daily"].matched == 'group:"sales mart"'
    assert resolve("*").reasons["ml/features"].matched == "*"
    assert resolve("not group:ingest").reasons["ml/features"] == Reason("root", matched="not group:ingest")
    assert describe_reason(Reason("root")) == "root"


def test_closure_reasons_name_the_nearest_operand_member() -> None:
    # sales/daily is one step upstream of both; the smaller key wins the tie.
    res = resolve("+(ml/features or sales/report)")
    assert res.reasons["sales/daily"] == Reason("upstream", of="ml/features", depth=1)
    # raw/events is one step from ml/features, and four from nothing else.
    assert res.reasons["raw/events"] == Reason("upstream", of="ml/features", depth=1)


def test_or_prefers_root_then_depth_then_of() -> None:
    assert resolve("raw/orders or +stg/orders").reasons["raw/orders"] == Reason("root", matched="raw/orders")
    assert resolve("+stg/orders or raw/orders").reasons["raw/orders"] == Reason("root", matched="raw/orders")
    assert resolve("2+sales/daily or 1+stg/orders").reasons["raw/orders"] == Reason(
        "upstream", of="stg/orders", depth=1
    )
    assert resolve("1+sales/report or 1+ml/features").reasons["sales/daily"] == Reason(
        "upstream", of="ml/features", depth=1
    )
    assert resolve("tag:tier=gold or group:\"sales mart\"").reasons["sales/daily"].matched == (
        'group:"sales mart"'
    )


def test_and_not_roots_keep_the_left_operand_reasons() -> None:
    assert resolve("group:ingest and tag:tier").reasons["raw/orders"].matched == "group:ingest"
    assert resolve("tag:tier and group:ingest").reasons["raw/orders"].matched == "tag:tier"
    assert resolve("+sales/daily and not group:staging").reasons["raw/orders"] == Reason(
        "upstream", of="sales/daily", depth=2
    )
    assert resolve("roots(+sales/daily)").reasons["raw/orders"] == Reason("upstream", of="sales/daily", depth=2)


# -- the structured request ----------------------------------------------------------


def request(*select: str, upstream: int | None = None, downstream: int | None = None) -> Resolution:
    return resolve_request(SelectionRequest(select=select, upstream=upstream, downstream=downstream), GRAPH, ATTRS)


def test_request_items_are_or_ed_without_closure_by_default() -> None:
    assert request("stg/orders", "group:ml").keys == ("ml/features", "stg/orders")


def test_request_closure_applies_to_the_union() -> None:
    assert request("stg/orders", "stg/customers", upstream=1).keys == (
        "raw/customers", "raw/orders", "stg/customers", "stg/orders",
    )
    assert request("sales/daily", downstream=-1).keys == ("ml/features", "sales/daily", "sales/report")
    assert request("sales/report", upstream=2, downstream=0).keys == (
        "sales/daily", "sales/report", "stg/customers", "stg/orders",
    )
    assert request("sales/daily", upstream=0).keys == ("sales/daily",)


def test_request_node_is_the_canonical_spelling() -> None:
    node = request_node(SelectionRequest(select=("a", "b", "c or d"), downstream=-1))
    assert format_selection(node) == "(a or b or (c or d))+"
    assert node.operand == Or(Or(Key("a"), Key("b")), Or(Key("c"), Key("d")))
    assert request_node(SelectionRequest(select=("a",))) == Key("a")


def test_request_lists_unknown_keys_across_items() -> None:
    with pytest.raises(ArcodError) as info:
        request("nope", "sales/daily or ghost", "key:\"x*\"")
    assert info.value.code == UNKNOWN_ASSETS
    assert info.value.details == {"keys": ["ghost", "nope"]}


def test_request_parse_errors_say_which_item() -> None:
    with pytest.raises(ArcodError) as info:
        request("sales/daily", "a,b")
    assert info.value.code == PARSE_ERROR
    assert info.value.details == {"column": 2, "expression": "a,b", "index": 1}


@pytest.mark.parametrize(
    "req",
    [
        SelectionRequest(select=()),
        SelectionRequest(select=("a",), upstream=-2),
        SelectionRequest(select=("a",), downstream=-5),
        SelectionRequest(select=("a",), upstream=True),
    ],
)
def test_bad_requests(req: SelectionRequest) -> None:
    with pytest.raises(ArcodError) as info:
        resolve_request(req, GRAPH, ATTRS)
    assert info.value.code == BAD_REQUEST


def test_request_empty_result_is_refused() -> None:
    with pytest.raises(ArcodError) as info:
        request("group:nope", "tag:nope", upstream=-1)
    assert info.value.code == EMPTY_SELECTION


# -- properties over random graphs ---------------------------------------------------


def _expr(keys: Sequence[str]) -> str:
    return format_selection(reduce(Or, [Key(k) for k in sorted(keys)]))


def _keys(text: str, graph: AssetGraph) -> set[str]:
    try:
        return set(resolve_expression(text, graph, {}).keys)
    except ArcodError as err:
        assert err.code == EMPTY_SELECTION
        return set()


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_closure_properties(deps: dict[str, list[str]], data: st.DataObject) -> None:
    graph = AssetGraph.from_deps(deps)
    s = set(data.draw(st.lists(st.sampled_from(sorted(deps)), min_size=1, unique=True)))
    x = f"({_expr(s)})"
    up = [_keys(f"{n}+{x}", graph) for n in (0, 1, 2)] + [_keys(f"+{x}", graph)]
    down = [_keys(f"{x}+{n}", graph) for n in (0, 1, 2)] + [_keys(f"{x}+", graph)]
    assert up[0] == down[0] == s
    for chain in (up, down):
        assert all(smaller <= larger for smaller, larger in zip(chain, chain[1:]))
    assert up[-1] == s | set(graph.upstream(s))
    assert down[-1] == s | set(graph.downstream(s))
    assert _keys(f"+{x}+", graph) == up[-1] | down[-1]

    roots, sinks = _keys(f"roots{x}", graph), _keys(f"sinks{x}", graph)
    assert roots and roots <= s and sinks and sinks <= s
    for member in s:
        # Every member descends from a root of the set (or is one), and feeds a sink.
        assert member in roots or roots & set(graph.upstream([member]))
        assert member in sinks or sinks & set(graph.downstream([member]))
    for r in roots:
        assert not (set(graph.upstream([r])) & s)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_boolean_operators_are_set_operations(deps: dict[str, list[str]], data: st.DataObject) -> None:
    graph = AssetGraph.from_deps(deps)
    pick = st.lists(st.sampled_from(sorted(deps)), min_size=1, unique=True)
    s, t = set(data.draw(pick)), set(data.draw(pick))
    x, y = _expr(s), _expr(t)
    assert _keys(f"({x}) or ({y})", graph) == s | t
    assert _keys(f"({x}) and ({y})", graph) == s & t
    assert _keys(f"({x}) and not ({y})", graph) == s - t
    assert _keys(f"not ({x})", graph) == set(deps) - s
    assert _keys("*", graph) == set(deps)


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_every_member_has_a_consistent_reason(deps: dict[str, list[str]], data: st.DataObject) -> None:
    graph = AssetGraph.from_deps(deps)
    s = set(data.draw(st.lists(st.sampled_from(sorted(deps)), min_size=1, unique=True)))
    up, down = data.draw(st.none() | st.integers(-1, 3)), data.draw(st.none() | st.integers(-1, 3))
    res = resolve_request(SelectionRequest(select=tuple(sorted(s)), upstream=up, downstream=down), graph, {})
    assert list(res.keys) == sorted(res.reasons)
    for key, reason in res.reasons.items():
        if key in s:
            assert reason == Reason("root", matched=key)
            continue
        assert reason.of in s
        walk = graph.upstream if reason.kind == "upstream" else graph.downstream
        distances = walk(s)
        assert distances[key] == reason.depth
        nearest = min(r for r in s if walk([r]).get(key) == reason.depth)
        assert reason.of == nearest
