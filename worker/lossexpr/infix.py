"""Readable infix text for trees, and a hand-written recursive-descent parser for it.

Syntax (the printer emits exactly this; the parser also accepts a little more, e.g. `-x`):

    expr   := term (("+" | "-") term)*
    term   := factor (("*" | "/") factor)*
    factor := REAL "*" factor        -- a coefficient: REAL has a '.' or an exponent
            | "-" factor             -- "-" NUMBER is a negative number, "-e" is -1 * e
            | ("log" | "square" | "sqrt") "(" expr ")"
            | "(" expr ")" | "x" | "y" | INTEGER

Integers are constant leaves; reals only ever appear as coefficients, which bind tighter than
any binary operator: `2.5 * x * y` is (2.5·x)·y.  Nothing here is evaluated as Python.
"""

from __future__ import annotations

import re

from worker.lossexpr.errors import LossExprError, ParseError
from worker.lossexpr.tree import MAX_DEPTH, UNARY_OPS, Node

#: Inputs longer than this are rejected before tokenizing.
MAX_TEXT = 20_000

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM = 3


def _fmt_coef(c: float) -> str:
    # repr() is the shortest text that reads back as the same float, and always has '.' or 'e'.
    return repr(float(c))


def to_infix(tree: Node) -> str:
    """Render `tree` as infix text that `parse` turns back into the identical tree."""
    return _render(tree)


def _prec(node: Node) -> int:
    if node.coef != 1.0:
        return 2
    return _PREC.get(node.op, _ATOM)


def _negative_head(node: Node) -> bool:
    return node.coef < 0 or (node.coef == 1.0 and node.op == "const" and node.value < 0)


def _render(node: Node) -> str:
    if node.coef != 1.0:
        body = _render_bare(node)
        if _PREC.get(node.op, _ATOM) < _ATOM:
            body = f"({body})"
        return f"{_fmt_coef(node.coef)} * {body}"
    return _render_bare(node)


def _render_bare(node: Node) -> str:
    op = node.op
    if op == "x" or op == "y":
        return op
    if op == "const":
        return str(node.value)
    if op in UNARY_OPS:
        return f"{op}({_render(node.children[0])})"
    left, right = node.children
    p = _PREC[op]
    ltxt = _render(left)
    if _prec(left) < p:
        ltxt = f"({ltxt})"
    rtxt = _render(right)
    if _prec(right) <= p or _negative_head(right):
        rtxt = f"({rtxt})"
    return f"{ltxt} {op} {rtxt}"


# -- tokenizer ---------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<real>(?:\d+\.\d*|\.\d+)(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)
  | (?P<int>\d+)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
  | (?P<op>[-+*/()])
    """,
    re.VERBOSE | re.ASCII,  # ASCII: "٣" or a non-breaking space is an error, not a digit/space
)


class _Tok:
    __slots__ = ("kind", "text", "pos")

    def __init__(self, kind: str, text: str, pos: int) -> None:
        self.kind, self.text, self.pos = kind, text, pos


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ParseError("unexpected character", pos, text[pos])
        kind = m.lastgroup or ""
        if kind != "ws":
            toks.append(_Tok(kind, m.group(), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> _Tok:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def expect(self, text: str) -> _Tok:
        if self.tok.text != text or self.tok.kind not in ("op",):
            what = "end of input" if self.tok.kind == "end" else "unexpected token"
            raise ParseError(f"expected {text!r} but found {what}", self.tok.pos, self.tok.text)
        return self.take()

    def node(self, tok: _Tok, *args, **kwargs) -> Node:
        try:
            return Node(*args, **kwargs)
        except LossExprError as exc:
            raise ParseError(str(exc), tok.pos, tok.text) from None

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise ParseError("empty expression", 0, "")
        tree = self.expr()
        if self.tok.kind != "end":
            raise ParseError("unexpected token after a complete expression", self.tok.pos, self.tok.text)
        return tree

    def expr(self) -> Node:
        left = self.term()
        while self.tok.kind == "op" and self.tok.text in "+-":
            op = self.take()
            left = self.node(op, op.text, (left, self.term()))
        return left

    def term(self) -> Node:
        left = self.factor()
        while self.tok.kind == "op" and self.tok.text in "*/":
            op = self.take()
            left = self.node(op, op.text, (left, self.factor()))
        return left

    def nest(self, tok: _Tok) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"expression nests deeper than {MAX_DEPTH} levels", tok.pos, tok.text)

    def factor(self) -> Node:
        tok = self.tok
        self.nest(tok)
        try:
            return self._factor(tok)
        finally:
            self.depth -= 1

    def _coefficient(self, tok: _Tok, value: float) -> Node:
        # REAL "*" factor: the real multiplies the following factor's node.
        if not (self.tok.kind == "op" and self.tok.text == "*"):
            raise ParseError(
                "a real number is a coefficient and must be followed by '*' (integers are constants)",
                tok.pos, tok.text,
            )
        self.take()
        target = self.factor()
        if target.coef != 1.0:
            raise ParseError("a node carries one coefficient; parenthesize to multiply", tok.pos, tok.text)
        return self.node(tok, target.op, target.children, target.value, value)

    @staticmethod
    def _int(tok: _Tok) -> int:
        if len(tok.text) > 10:
            raise ParseError("integer constant too large", tok.pos, tok.text[:20])
        return int(tok.text)

    def _factor(self, tok: _Tok) -> Node:
        if tok.kind == "real":
            self.take()
            value = float(tok.text)
            if value != value or value in (float("inf"), float("-inf")):
                raise ParseError("coefficient is not a finite number", tok.pos, tok.text)
            return self._coefficient(tok, value)
        if tok.kind == "int":
            self.take()
            return self.node(tok, "const", (), self._int(tok))
        if tok.kind == "op" and tok.text == "-":
            self.take()
            nxt = self.tok
            if nxt.kind == "int":
                self.take()
                return self.node(nxt, "const", (), -self._int(nxt))
            if nxt.kind == "real":
                self.take()
                return self._coefficient(nxt, -float(nxt.text))
            operand = self.factor()
            return self.node(tok, "*", (self.node(tok, "const", (), -1), operand))
        if tok.kind == "op" and tok.text == "(":
            self.take()
            inner = self.expr()
            self.expect(")")
            return inner
        if tok.kind == "name":
            self.take()
            if tok.text in ("x", "y"):
                return self.node(tok, tok.text)
            if tok.text in UNARY_OPS:
                self.expect("(")
                arg = self.expr()
                self.expect(")")
                return self.node(tok, tok.text, (arg,))
            raise ParseError("unknown name (use x, y, log, square, sqrt)", tok.pos, tok.text)
        if tok.kind == "end":
            raise ParseError("unexpected end of input", tok.pos, tok.text)
        raise ParseError("unexpected token", tok.pos, tok.text)


def parse(text: str) -> Node:
    """Parse infix text into a tree; raises `ParseError` (and only that) on bad input."""
    if not isinstance(text, str):
        raise ParseError("expression must be a string", 0, repr(type(text).__name__))
    if len(text) > MAX_TEXT:
        raise ParseError(f"expression longer than {MAX_TEXT} characters", MAX_TEXT, text[MAX_TEXT:MAX_TEXT + 10])
    try:
        return _Parser(text).parse()
    except ParseError:
        raise
    except (LossExprError, ValueError, OverflowError) as exc:  # e.g. int() of a huge literal
        raise ParseError(str(exc), 0, text[:20]) from None
