"""The loss-expression language: trees, JSON, infix, parser errors, limits, pruning, named losses."""

from __future__ import annotations

import builtins
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.strategies import any_coefs, garbage_strings, trees
from worker.lossexpr import (
    LossExprError,
    ParseError,
    TreeError,
    X,
    Y,
    bin_,
    const,
    named_loss,
    parse,
    resolve,
    to_infix,
    un,
)
from worker.lossexpr.coefficients import apply_pruned, kept_slots, pruned_coefficients
from worker.lossexpr.infix import MAX_TEXT
from worker.lossexpr.named import BAIKAL_CMA_COEFFICIENTS
from worker.lossexpr.numeric import binary_loss, binary_minimum, evaluate
from worker.lossexpr.tree import MAX_CONST, MAX_DEPTH, MAX_NODES, Node

BIG = settings(max_examples=10_000, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- trees --------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: Node("pow", (X, Y)),
    lambda: Node("+", (X,)),
    lambda: Node("log", ()),
    lambda: Node("const", (), 1.5),
    lambda: Node("const", (), True),
    lambda: Node("const", (), MAX_CONST + 1),
    lambda: Node("x", (), 3),
    lambda: Node("x", coef=float("nan")),
    lambda: Node("x", coef=float("inf")),
    lambda: Node("x", coef=True),
    lambda: Node("log", ("x",)),
])
def test_malformed_trees_raise_tree_error(make) -> None:
    with pytest.raises(TreeError):
        make()


def test_size_and_depth_limits() -> None:
    t = X
    for _ in range(MAX_DEPTH - 1):
        t = un("log", t)
    assert t.depth() == MAX_DEPTH
    with pytest.raises(TreeError, match="deeper"):
        un("log", t)
    wide = X
    with pytest.raises(TreeError, match="nodes"):
        while True:  # balanced growth stays shallow, so the node limit is what trips
            wide = bin_("+", wide, wide)
    assert wide.size() <= MAX_NODES


def test_shape_helpers() -> None:
    t = parse("log(y) - x / y")
    assert (t.size(), t.depth(), t.is_valid()) == (6, 3, True)
    assert [n.op for n in t.preorder()] == ["-", "log", "y", "/", "x", "y"]
    assert t.at((1, 0)) == X
    assert t.replace_at((1, 0), const(2)) == parse("log(y) - 2 / y")
    assert not parse("x * x").is_valid() and not parse("log(y)").is_valid()


def test_trees_are_hashable_values() -> None:
    assert parse("x * log(y)") == parse("x*log(y)") and hash(parse("x * log(y)")) == hash(parse("x*log(y)"))
    assert len({parse("x + y"), parse("x + y"), parse("y + x")}) == 2


# -- JSON -----------------------------------------------------------------------------------------
def test_json_shape() -> None:
    t = parse("2.5 * log(y) - -3")
    assert t.to_json() == {"op": "-", "args": [{"op": "log", "args": [{"op": "y"}], "coef": 2.5},
                                               {"op": "const", "value": -3}]}


@pytest.mark.parametrize("data", [
    [], "x", {"op": "x", "extra": 1}, {"op": "exp", "args": [{"op": "x"}]}, {"op": "log", "args": {"op": "x"}},
    {"op": "+", "args": [{"op": "x"}]}, {"op": "const"}, {"op": "const", "value": "1"},
    {"op": "x", "coef": "2"}, {"op": "x", "coef": None},
])
def test_bad_json_raises_tree_error(data) -> None:
    with pytest.raises(TreeError):
        Node.from_json(data)


def test_deep_json_is_rejected_without_recursion_error() -> None:
    d: dict = {"op": "x"}
    for _ in range(5000):
        d = {"op": "log", "args": [d]}
    with pytest.raises(TreeError):
        Node.from_json(d)


# -- infix ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "log(y) - x / y", "x * log(y)", "x - (y - x)", "(x + y) * x", "x / (y * x)", "x - (-3)", "-3 * x",
    "2.5 * x * y", "2.5 * (x + y)", "-1.5 * sqrt(y)", "square(x - y) / 4", "x * (2.0 * y)",
])
def test_printer_is_canonical_and_round_trips(text: str) -> None:
    assert to_infix(parse(text)) == text
    assert parse(to_infix(parse(text))) == parse(text)


def test_parser_extras() -> None:
    assert parse("-x") == bin_("*", const(-1), X)
    assert parse("  x*log( y )") == parse("x * log(y)")
    assert parse("1e3 * x").coef == 1000.0
    assert parse("x - y - x") == bin_("-", bin_("-", X, Y), X)


@pytest.mark.parametrize("text,pos,token", [
    ("x + ", 4, ""), ("x $ y", 2, "$"), ("foo(x)", 0, "foo"), ("2.5", 0, "2.5"), ("(x", 2, ""),
    ("x y", 2, "y"), ("", 0, ""), ("log x", 4, "x"), ("x ** y", 3, "*"), ("2.0 * 3.0 * x", 0, "2.0"),
    ("x + 12345678901", 4, "12345678901"), ("1e999 * x", 0, "1e999"), ("x + ٣", 4, "٣"),
])
def test_parse_errors_name_position_and_token(text: str, pos: int, token: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(text)
    assert (info.value.position, info.value.token) == (pos, token)
    assert f"position {pos}" in str(info.value) and "\n" not in str(info.value)


def test_parser_limits() -> None:
    with pytest.raises(ParseError, match="longer"):
        parse("x+" * MAX_TEXT + "x")
    with pytest.raises(ParseError, match="deeper"):
        parse("(" * (MAX_DEPTH + 5) + "x" + ")" * (MAX_DEPTH + 5))
    with pytest.raises(ParseError, match="deeper"):  # a left-leaning chain: the depth limit trips first
        parse("+".join(["x"] * (MAX_NODES + 1)))
    block = "(" + "+".join(["x"] * 30) + ")"  # 59 nodes, depth 30; 40 of them: 2399 nodes, depth 70
    with pytest.raises(ParseError, match="nodes"):
        parse("*".join([block] * 40))
    with pytest.raises(ParseError):
        parse(None)  # type: ignore[arg-type]


@BIG
@given(trees(max_leaves=16, coefs=any_coefs))
def test_random_trees_round_trip_through_json_and_infix(tree: Node) -> None:
    assert Node.from_json(json.loads(json.dumps(tree.to_json()))) == tree
    assert parse(to_infix(tree)) == tree


@BIG
@given(garbage_strings)
def test_parser_raises_only_parse_error_and_never_evaluates(text: str) -> None:
    def forbidden(*_a, **_k):  # pragma: no cover - reaching this is the failure
        raise AssertionError("the parser evaluated input as Python")

    saved = builtins.eval, builtins.exec
    builtins.eval, builtins.exec = forbidden, forbidden
    try:
        tree = parse(text)
    except ParseError as exc:
        assert isinstance(exc.position, int) and 0 <= exc.position <= len(text)
        return
    finally:
        builtins.eval, builtins.exec = saved
    assert isinstance(tree, Node)


# -- coefficient pruning ------------------------------------------------------------------------
def test_pruning_paper_example() -> None:
    # 3·(5x + 2y) = 15x + 6y: the outer 3 is absorbed, only x's and y's coefficients are kept.
    t = parse("3.0 * (5.0 * x + 2.0 * y)")
    assert kept_slots(t) == [1, 2]
    assert pruned_coefficients(t) == [5.0, 2.0]
    flat = apply_pruned(t, [15.0, 6.0])
    assert flat == parse("15.0 * x + 6.0 * y")
    ys = np.linspace(0.01, 0.99, 50)
    for xv in (0.0, 1.0):
        np.testing.assert_allclose(evaluate(flat, xv, ys), evaluate(t, xv, ys), rtol=1e-12)


@pytest.mark.parametrize("text,kept,absorbed_into", [
    ("2.0 * (3.0 * x * (5.0 * y))", [1], [30.0]),                    # c·(aA·bB) = (cab·A)·B
    ("2.0 * (3.0 * x / (4.0 * y))", [1], [1.5]),                     # c·(aA/bB) = ((ca/b)·A)/B
    ("2.0 * square(3.0 * y)", [0], [18.0]),                          # s·(cA)² = (s·c²)·A²
    ("2.0 * log(3.0 * y)", [0, 1], None),                            # log and its operand are kept
    ("-2.0 * sqrt(3.0 * y)", [0, 1], None),                          # sign matters under sqrt
])
def test_pruning_rules(text: str, kept: list[int], absorbed_into: list[float] | None) -> None:
    t = parse(text)
    assert kept_slots(t) == kept
    if absorbed_into is not None:
        ys = np.linspace(0.01, 0.99, 50)
        np.testing.assert_allclose(evaluate(apply_pruned(t, absorbed_into), 1.0, ys), evaluate(t, 1.0, ys),
                                   rtol=1e-12)
    with pytest.raises(TreeError):
        apply_pruned(t, [1.0] * (len(kept) + 1))


# -- named losses and the binary minimum --------------------------------------------------------
def test_named_losses() -> None:
    assert named_loss("ce") == parse("x * log(y)")
    assert named_loss("baikal") == parse("log(y) - x / y")
    assert tuple(named_loss("baikal_cma").coefficients()) == BAIKAL_CMA_COEFFICIENTS
    assert resolve(" baikal ") == named_loss("baikal") and resolve("x*y") == parse("x * y")
    with pytest.raises(LossExprError, match="unknown loss name"):
        named_loss("mse")


def test_binary_minimum_of_the_paper_losses() -> None:
    assert binary_minimum(named_loss("baikal")) == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert binary_minimum(named_loss("baikal_cma")) == pytest.approx(0.772, abs=0.005)
    assert binary_minimum(named_loss("ce")) is None          # decreasing all the way to y0 = 1
    assert binary_minimum(parse("x * y")) is None
    assert binary_minimum(parse("x * log(0 * y)")) is None   # no finite value anywhere
    assert float(binary_loss(named_loss("ce"), 0.25)) == pytest.approx(-0.5 * math.log(0.25))
