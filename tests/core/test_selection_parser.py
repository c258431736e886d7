"""The selection grammar: one tree per expression, canonical printing, pointed parse errors."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arcod.core.errors import PARSE_ERROR, ArcodError
from arcod.core.selection_parser import (
    UNLIMITED,
    AllAssets,
    And,
    Attribute,
    Key,
    Node,
    Not,
    Or,
    Roots,
    Sinks,
    Tag,
    Traverse,
    format_selection,
    parse_selection,
)

a, b, c = Key("a"), Key("b"), Key("c")


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("sales/daily", Key("sales/daily")),
        ("key:sales/daily", Key("sales/daily")),
        ('key:"sales/daily"', Key("sales/daily")),
        ('key:"raw/*"', Key("raw/*")),
        ("key:raw/*", Key("raw/*")),
        ("key:*", Key("*")),
        ("*", AllAssets()),
        ("tag:tier", Tag("tier")),
        ("tag:tier=gold", Tag("tier", "gold")),
        ('tag:"my tier"="gold star"', Tag("my tier", "gold star")),
        ('tag:tier=""', Tag("tier", "")),
        ("group:ingest", Attribute("group", "ingest")),
        ("kind:dbt", Attribute("kind", "dbt")),
        ("owner:team:data", Attribute("owner", "team:data")),
        ("owner:alice@example.com", Attribute("owner", "alice@example.com")),
        ('owner:"a \\"quoted\\" \\\\ name"', Attribute("owner", 'a "quoted" \\ name')),
        ('group:"a*"', Attribute("group", "a*")),
        ("+a", Traverse(a, UNLIMITED, None)),
        ("a+", Traverse(a, None, UNLIMITED)),
        ("+a+", Traverse(a, UNLIMITED, UNLIMITED)),
        ("2+a", Traverse(a, 2, None)),
        ("a+3", Traverse(a, None, 3)),
        ("2+a+3", Traverse(a, 2, 3)),
        ("10+a+0", Traverse(a, 10, 0)),
        ("2 + a + 3", Traverse(a, 2, 3)),
        ("+ a", Traverse(a, UNLIMITED, None)),
        ("+(a or b)", Traverse(Or(a, b), UNLIMITED, None)),
        ("(+a)+", Traverse(Traverse(a, UNLIMITED, None), None, UNLIMITED)),
        ("+group:ingest+1", Traverse(Attribute("group", "ingest"), UNLIMITED, 1)),
        ('+key:"raw/*"', Traverse(Key("raw/*"), UNLIMITED, None)),
        ("1+2", Traverse(Key("2"), 1, None)),  # a number before `+` is always a depth
        ("key:2+", Traverse(Key("2"), None, UNLIMITED)),
        ("2", Key("2")),
        ("2/x+", Traverse(Key("2/x"), None, UNLIMITED)),
        ("+*", Traverse(AllAssets(), UNLIMITED, None)),
        ("a or b", Or(a, b)),
        ("a and b", And(a, b)),
        ("not a", Not(a)),
        ("not not a", Not(Not(a))),
        ("not(a)", Not(a)),
        ("a or b or c", Or(Or(a, b), c)),
        ("a and b and c", And(And(a, b), c)),
        ("a or b and c", Or(a, And(b, c))),
        ("a and b or c", Or(And(a, b), c)),
        ("not a and b", And(Not(a), b)),
        ("not a or b", Or(Not(a), b)),
        ("a and not b", And(a, Not(b))),
        ("not a+", Not(Traverse(a, None, UNLIMITED))),
        ("not +a", Not(Traverse(a, UNLIMITED, None))),
        ("+a and b+", And(Traverse(a, UNLIMITED, None), Traverse(b, None, UNLIMITED))),
        ("(a or b) and c", And(Or(a, b), c)),
        ("a or (b or c)", Or(a, Or(b, c))),
        ("roots(a or b)", Roots(Or(a, b))),
        ("sinks( * )", Sinks(AllAssets())),
        ("roots (a)", Roots(a)),
        ("roots", Key("roots")),
        ("roots or sinks", Or(Key("roots"), Key("sinks"))),
        ("roots+", Traverse(Key("roots"), None, UNLIMITED)),
        ("+roots(a)+", Traverse(Roots(a), UNLIMITED, UNLIMITED)),
        ("key:and or key:not", Or(Key("and"), Key("not"))),
        ("orders or notes", Or(Key("orders"), Key("notes"))),
        ("not/x", Key("not/x")),
        ("  a\tor\nb  ", Or(a, b)),
    ],
)
def test_parses_to_exactly_one_tree(text: str, tree: Node) -> None:
    assert parse_selection(text) == tree


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("key:sales/daily", "sales/daily"),
        ("key:raw/*", 'key:"raw/*"'),
        ("  a   or(b)", "a or b"),
        ("(a or b) or c", "a or b or c"),
        ("a or (b or c)", "a or (b or c)"),
        ("(a and b) or (c and d)", "a and b or c and d"),
        ("(not a) and b", "not a and b"),
        ("not (a and b)", "not (a and b)"),
        ("+(a)", "+a"),
        ("(+a)+", "(+a)+"),
        ("+(not a)", "+(not a)"),
        ('group:"ingest"', "group:ingest"),
        ('group:"in gest"', 'group:"in gest"'),
        ("key:and", "key:and"),
        ("key:2", "key:2"),
        ("key:roots", "key:roots"),
        ('tag:"x"="y"', "tag:x=y"),
        ("roots((a))", "roots(a)"),
        ("02+a", "2+a"),
    ],
)
def test_formats_canonically(text: str, canonical: str) -> None:
    assert format_selection(parse_selection(text)) == canonical
    assert parse_selection(canonical) == parse_selection(text)


# (expression, 1-based column, a fragment of the message)
BAD = [
    ("", 1, "empty"),
    ("   ", 1, "empty"),
    ("*a", 1, "use `+X`"),
    ("*sales/daily", 1, "`*X` is legacy"),
    ("*(a)", 1, "`*X` is legacy"),
    ("**", 1, "legacy"),
    ("a*", 2, "use `X+`"),
    ("sales/daily*", 12, "`X*` is legacy"),
    ("(a)*", 4, "`X*` is legacy"),
    ("a and b*", 8, "`X*` is legacy"),
    ("++a", 1, "use `2+X`"),
    ("+++a", 1, "use `3+X`"),
    ("+ +a", 1, "use `2+X`"),
    ("2++a", 2, "legacy"),
    ("a++", 2, "use `X+2`"),
    ("a+++", 2, "use `X+3`"),
    ("a,b", 2, "combine selections with `or`"),
    ("a, b", 2, "commas are legacy"),
    ("a or b,c", 7, "commas"),
    (",a", 1, "commas"),
    ("2+", 3, "key:2+"),
    ("a b", 3, "combine selections"),
    ("a + b", 5, "`+` is a traversal, not a union"),
    ("a AND b", 3, "operators are lowercase"),
    ("a Or b", 3, "write `or`"),
    ("NOT a", 1, "lowercase"),
    ("foo:bar", 1, "unknown prefix `foo:`"),
    ("grop:x", 1, "did you mean `group:`"),
    ("a and foo:bar", 7, "unknown prefix"),
    ("key:", 5, "expected a value after `key:`"),
    ("group: x", 7, "expected a value after `group:`"),
    ("tag:x=", 7, "expected a value after `tag:x=`"),
    ("(a", 1, "never closed"),
    ("((a)", 1, "never closed"),
    ("roots(a", 6, "never closed"),
    ("a)", 2, "unmatched `)`"),
    ("()", 2, "expected an asset selection"),
    ("(a b)", 4, "expected `and`, `or` or `)`"),
    ("group:x*", 8, "only `key:` takes `*`"),
    ("tag:t=g*", 8, "only `key:` takes `*`"),
    ('key:"a', 5, "unterminated"),
    ('group:"a\\q"', 9, "unknown escape"),
    ("sales-daily", 1, "not a valid asset key"),
    ("a.b", 1, "not a valid asset key"),
    ("key:a-b", 5, "not a valid asset key pattern"),
    ("key:a//b", 5, "not a valid asset key pattern"),
    ('key:"/a"', 5, "not a valid asset key pattern"),
    ("raw/*", 1, "need the `key:` prefix"),
    ("r*/x", 1, 'key:"r*/x"'),
    ("+not a", 2, "+(not X)"),
    ("a and", 6, "unexpected end"),
    ("a or or b", 6, "found the operator `or`"),
    ("and", 1, "found the operator `and`"),
    ("not", 4, "unexpected end"),
    ('"x"', 1, "needs a prefix"),
    ("a $ b", 3, "double-quoted"),
    ("group:in$gest", 9, "double-quoted"),
    ("group:ingest=x", 13, "unexpected `=`"),
    ("a\n or ,", 7, "commas"),
    ("sinks(a) b", 10, "combine selections"),
]


@pytest.mark.parametrize(("text", "column", "fragment"), BAD)
def test_parse_errors_point_at_the_column(text: str, column: int, fragment: str) -> None:
    with pytest.raises(ArcodError) as info:
        parse_selection(text)
    err = info.value
    assert err.code == PARSE_ERROR
    assert err.details == {"column": column, "expression": text}
    assert fragment in err.message
    # The message shows the expression with a caret under the column.
    lines = err.message.split("\n")
    assert lines[-1] == "  " + " " * (column - 1) + "^"
    assert lines[-2] == "  " + text.replace("\n", " ").replace("\t", " ")


def test_caret_stays_aligned_when_the_expression_has_tabs_and_newlines() -> None:
    with pytest.raises(ArcodError) as info:
        parse_selection("a\tor\n,")
    *_, shown, caret = info.value.message.split("\n")
    assert shown == "  a or ,"
    assert caret.index("^") == shown.index(",")


def test_nodes_validate_themselves() -> None:
    with pytest.raises(ValueError):
        Key("a-b")
    with pytest.raises(ValueError):
        Traverse(a)
    with pytest.raises(ValueError):
        Traverse(a, -2, None)
    with pytest.raises(ValueError):
        Attribute("colour", "red")


def test_trees_travel_as_tagged_json() -> None:
    tree = parse_selection('roots(+group:ingest and not tag:"a b"=c) or key:"raw/*"+2')
    data = msgspec.json.encode(tree)
    assert msgspec.json.decode(data, type=Node) == tree


# -- round trip -----------------------------------------------------------------------

segment = st.from_regex(r"[A-Za-z0-9_]{1,4}", fullmatch=True)
plain_keys = st.lists(segment, min_size=1, max_size=3).map("/".join) | st.sampled_from(
    ["and", "or", "not", "roots", "sinks", "key", "tag", "2", "10", "0/1"]
)
pattern_segment = st.from_regex(r"[A-Za-z0-9_*]{1,4}", fullmatch=True)
key_patterns = st.lists(pattern_segment, min_size=1, max_size=3).map("/".join)
values = st.text(max_size=6) | st.sampled_from(["ingest", "team:data", "a=b", "x y", '"', "\\", "*", "é"])
depths = st.none() | st.just(UNLIMITED) | st.integers(0, 12)

primitives = st.one_of(
    plain_keys.map(Key),
    key_patterns.map(Key),
    st.builds(Tag, values, st.none() | values),
    st.builds(Attribute, st.sampled_from(["group", "kind", "owner"]), values),
    st.just(AllAssets()),
)


@st.composite
def trees(draw: st.DrawFn, depth: int = 4) -> Node:
    """A random tree of every node type, at most `depth` levels deep."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(primitives)
    kind = draw(st.sampled_from(["traverse", "not", "and", "or", "roots", "sinks"]))
    if kind in ("and", "or"):
        left, right = draw(trees(depth - 1)), draw(trees(depth - 1))
        return And(left, right) if kind == "and" else Or(left, right)
    operand = draw(trees(depth - 1))
    if kind == "traverse":
        up = draw(depths)
        down = draw(depths.filter(lambda d: d is not None) if up is None else depths)
        return Traverse(operand, up, down)
    return {"not": Not, "roots": Roots, "sinks": Sinks}[kind](operand)


@settings(max_examples=150, deadline=None)
@given(trees())
def test_format_then_parse_is_the_identity(tree: Node) -> None:
    text = format_selection(tree)
    assert parse_selection(text) == tree
    assert format_selection(parse_selection(text)) == text


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="ab+*(), 12:\"=nortk", max_size=12))
def test_any_text_parses_or_fails_with_a_column_inside_it(text: str) -> None:
    try:
        tree = parse_selection(text)
    except ArcodError as err:
        assert err.code == PARSE_ERROR
        assert 1 <= err.details["column"] <= len(text) + 1
    else:
        assert parse_selection(format_selection(tree)) == tree
