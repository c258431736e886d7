"""AssetGraph: construction, walks with shortest distances, ordering and cycle reports."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.asset_keys import ASSET_KEY_RE, is_asset_key, validate_asset_key
from arcod.core.errors import INVALID_KEY, ArcodError
from arcod.core.graph import AssetGraph

INF = float("inf")


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 10) -> dict[str, list[str]]:
    """A random DAG as `key -> parents`; parents always have a smaller index."""
    n = draw(st.integers(1, max_nodes))
    names = [f"n{i:02d}" for i in range(n)]
    # Shuffle which name gets which position so sorted order and topological order differ.
    names = draw(st.permutations(names))
    masks = draw(st.lists(st.integers(0, 2**max_nodes - 1), min_size=n, max_size=n))
    return {names[i]: [names[j] for j in range(i) if masks[i] >> j & 1] for i in range(n)}


@st.composite
def digraphs(draw: st.DrawFn, max_nodes: int = 8) -> dict[str, list[str]]:
    """Any directed graph, cycles and self-loops included."""
    n = draw(st.integers(1, max_nodes))
    names = [f"n{i}" for i in range(n)]
    return {k: draw(st.lists(st.sampled_from(names), unique=True, max_size=3)) for k in names}


def shortest_paths(deps: dict[str, list[str]]) -> dict[tuple[str, str], float]:
    """Floyd–Warshall over parent->child edges; paths of at least one edge (dist[x,x] is a cycle)."""
    keys = list(deps)
    dist = {(a, b): INF for a in keys for b in keys}
    for child, parents in deps.items():
        for p in parents:
            dist[p, child] = 1
    for m in keys:
        for a in keys:
            for b in keys:
                if dist[a, m] + dist[m, b] < dist[a, b]:
                    dist[a, b] = dist[a, m] + dist[m, b]
    return dist


DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["d"], "lonely": []}


def test_from_deps_sorts_and_derives_children() -> None:
    g = AssetGraph.from_deps({"z": ["b", "a", "a"], "a": [], "b": ["a"]})
    assert g.keys == ("a", "b", "z")
    assert g.parents("z") == ("a", "b")
    assert g.children("a") == ("b", "z")
    assert g.children("z") == ()
    assert "a" in g and "q" not in g and len(g) == 3
    assert list(g) == ["a", "b", "z"]


def test_from_deps_refuses_unknown_parents_naming_them() -> None:
    with pytest.raises(ValueError, match="nope, zed"):
        AssetGraph.from_deps({"a": ["zed", "nope"], "b": ["a"]})


def test_from_deps_accepts_cycles_so_the_loader_can_report_them() -> None:
    g = AssetGraph.from_deps({"a": ["c"], "b": ["a"], "c": ["b"]})
    assert g.find_cycle() == ["a", "b", "c", "a"]


def test_graph_is_immutable_and_comparable() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    with pytest.raises(AttributeError):
        g.foo = 1  # type: ignore[attr-defined]
    assert g == AssetGraph.from_deps(dict(reversed(list(DIAMOND.items()))))
    assert hash(g) == hash(AssetGraph.from_deps(DIAMOND))
    assert g != AssetGraph.from_deps({"a": []})
    assert AssetGraph.from_deps(g.deps()) == g


def test_upstream_and_downstream_with_depth() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    assert g.upstream(["e"]) == {"d": 1, "b": 2, "c": 2, "a": 3}
    assert g.upstream(["e"], depth=2) == {"d": 1, "b": 2, "c": 2}
    assert g.upstream(["e"], depth=0) == {}
    assert g.downstream(["a"], depth=1) == {"b": 1, "c": 1}
    assert g.downstream(["a"]) == {"b": 1, "c": 1, "d": 2, "e": 3}
    assert g.upstream(["lonely"]) == {} == g.downstream(["lonely"])


def test_walks_use_the_shortest_distance() -> None:
    # a -> b -> c -> d and a shortcut a -> d: a is at distance 1 from d, not 3.
    g = AssetGraph.from_deps({"a": [], "b": ["a"], "c": ["b"], "d": ["c", "a"]})
    assert g.upstream(["d"]) == {"a": 1, "c": 1, "b": 2}
    assert g.upstream(["d"], depth=1) == {"a": 1, "c": 1}


def test_roots_are_included_only_when_reached_from_another_root() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    assert g.upstream(["e", "b"]) == {"d": 1, "a": 1, "c": 2, "b": 2}
    assert "lonely" not in g.upstream(["lonely", "e"])


def test_closure_reports_the_nearest_root_smallest_key_first() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    assert g.closure(["b", "c"], "downstream") == {"d": (1, "b"), "e": (2, "b")}
    assert g.closure(["e", "b"], "upstream")["a"] == (1, "b")


def test_walks_refuse_bad_arguments() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    with pytest.raises(KeyError):
        g.upstream(["nope"])
    with pytest.raises(ValueError):
        g.upstream(["a"], depth=-1)
    with pytest.raises(ValueError):
        g.closure(["a"], "sideways")  # type: ignore[arg-type]


def test_walks_terminate_on_cycles() -> None:
    g = AssetGraph.from_deps({"a": ["b"], "b": ["a"]})
    assert g.upstream(["a"]) == {"b": 1, "a": 2}


def test_topological_order_breaks_ties_by_key() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    assert g.topological_order() == ["a", "b", "c", "d", "e", "lonely"]
    assert g.topological_order(["e", "c", "a"]) == ["a", "c", "e"]
    with pytest.raises(ValueError, match="nope"):
        g.topological_order(["nope"])


def test_topological_order_refuses_cycles_naming_the_path() -> None:
    g = AssetGraph.from_deps({"x": [], "a": ["b", "x"], "b": ["a"]})
    with pytest.raises(ValueError, match="a -> b -> a"):
        g.topological_order()
    assert g.topological_order(["x", "a"]) == ["x", "a"]


def test_subgraph_is_induced() -> None:
    g = AssetGraph.from_deps(DIAMOND)
    sub = g.subgraph(["a", "d", "e"])
    assert sub.keys == ("a", "d", "e")
    assert sub.parents("d") == ()  # the path through b and c is cut, not shortcut
    assert sub.parents("e") == ("d",)
    with pytest.raises(ValueError, match="zz"):
        g.subgraph(["a", "zz"])


def test_find_cycle_is_deterministic_and_starts_at_the_smallest_key() -> None:
    assert AssetGraph.from_deps(DIAMOND).find_cycle() is None
    assert AssetGraph.from_deps({"a": ["a"]}).find_cycle() == ["a", "a"]
    g = AssetGraph.from_deps({"q": ["z"], "z": ["m"], "m": ["q"], "start": []})
    assert g.find_cycle() == ["m", "z", "q", "m"]  # m feeds z feeds q feeds m


@pytest.mark.parametrize("key", ["a", "sales/daily", "A_1/b2/C_3", "0", "x/y/z/w"])
def test_valid_asset_keys(key: str) -> None:
    validate_asset_key(key)
    assert ASSET_KEY_RE.match(key) and is_asset_key(key)


@pytest.mark.parametrize(
    "key", ["", "/a", "a/", "a//b", "a-b", "a b", "a.b", "a*", "é", "a\n", "a[1]", "a/b/", None, 3]
)
def test_invalid_asset_keys(key: object) -> None:
    assert not is_asset_key(key)
    with pytest.raises(ArcodError) as info:
        validate_asset_key(key)
    assert info.value.code == INVALID_KEY
    assert "segments" in info.value.message


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_walks_match_floyd_warshall(deps: dict[str, list[str]], data: st.DataObject) -> None:
    g = AssetGraph.from_deps(deps)
    roots = data.draw(st.lists(st.sampled_from(sorted(deps)), min_size=1, unique=True))
    depth = data.draw(st.none() | st.integers(0, 4))
    dist = shortest_paths(deps)
    limit = INF if depth is None else depth
    for walk, distance in ((g.upstream, lambda x, r: dist[x, r]), (g.downstream, lambda x, r: dist[r, x])):
        expected = {}
        for x in deps:
            d = min(distance(x, r) for r in roots)
            if d != INF and d <= limit:
                expected[x] = int(d)
        assert walk(roots, depth) == expected


@settings(max_examples=100, deadline=None)
@given(dags(), st.data())
def test_topological_order_respects_edges(deps: dict[str, list[str]], data: st.DataObject) -> None:
    g = AssetGraph.from_deps(deps)
    subset = data.draw(st.none() | st.sets(st.sampled_from(sorted(deps))))
    order = g.topological_order(subset)
    nodes = set(deps) if subset is None else subset
    assert sorted(order) == sorted(nodes)
    position = {k: i for i, k in enumerate(order)}
    for child in nodes:
        for parent in g.parents(child):
            if parent in nodes:
                assert position[parent] < position[child]
    assert g.topological_order(subset) == order


@settings(max_examples=100, deadline=None)
@given(digraphs())
def test_find_cycle_returns_a_real_cycle_exactly_when_there_is_one(deps: dict[str, list[str]]) -> None:
    g = AssetGraph.from_deps(deps)
    cycle = g.find_cycle()
    try:
        g.topological_order()
        acyclic = True
    except ValueError:
        acyclic = False
    assert (cycle is None) == acyclic
    if cycle is not None:
        assert cycle[0] == cycle[-1] == min(cycle)
        assert len(set(cycle[:-1])) == len(cycle) - 1
        for parent, child in zip(cycle, cycle[1:]):
            assert parent in g.parents(child)
