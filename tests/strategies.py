"""Hypothesis strategies for loss-expression trees, shared by every test that needs random trees."""

from __future__ import annotations

from hypothesis import strategies as st

from worker.lossexpr.tree import MAX_CONST, Node, X, Y, bin_, const, un

#: Coefficients of any finite size (for round-trips) and of a tame size (for numerics).
any_coefs = st.floats(allow_nan=False, allow_infinity=False)
tame_coefs = st.floats(min_value=-4.0, max_value=4.0, allow_nan=False).filter(lambda c: abs(c) > 1e-3)

ints = st.one_of(
    st.integers(-3, 5),
    st.integers(-MAX_CONST, MAX_CONST),
)


def _with_coef(node_st: st.SearchStrategy[Node], coefs: st.SearchStrategy[float] | None) -> st.SearchStrategy[Node]:
    if coefs is None:
        return node_st
    return st.tuples(node_st, st.one_of(st.just(1.0), coefs)).map(
        lambda nc: Node(nc[0].op, nc[0].children, nc[0].value, nc[1])
    )


def trees(
    max_leaves: int = 12,
    coefs: st.SearchStrategy[float] | None = None,
    consts: st.SearchStrategy[int] = ints,
) -> st.SearchStrategy[Node]:
    """Random trees over every operator; leaves x and y are as likely as constants.

    `coefs`: when given, each node carries 1.0 or a value drawn from it.
    """
    leaf = st.one_of(st.just(X), st.just(Y), consts.map(const))
    leaf = _with_coef(leaf, coefs)

    def extend(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
        unary = st.tuples(st.sampled_from(("log", "square", "sqrt")), children).map(lambda t: un(*t))
        binary = st.tuples(st.sampled_from(("+", "-", "*", "/")), children, children).map(lambda t: bin_(*t))
        return _with_coef(st.one_of(binary, binary, unary), coefs)

    return st.recursive(leaf, extend, max_leaves=max_leaves)


#: Small trees over a tiny alphabet: different trees often compute the same function.
small_trees = trees(max_leaves=5, consts=st.integers(-2, 2))


# -- rewrites: sound and unsound ones, to produce pairs that may (or must not) share a key -----
def _rewrites(n: Node) -> list[Node]:
    """Candidate rewrites of one subtree; several are identities only over positive reals."""
    one, zero, minus1 = const(1), const(0), const(-1)
    out = [
        bin_("+", n, zero), bin_("*", one, n), bin_("*", minus1, bin_("*", minus1, n)),
        bin_("+", bin_("-", n, n), n), bin_("*", bin_("/", n, n), n), un("sqrt", un("square", n)),
        un("square", un("sqrt", n)), bin_("-", n, bin_("-", Y, Y)), bin_("/", bin_("*", n, Y), Y),
    ]
    if n.op in ("+", "*"):
        out.append(bin_(n.op, n.children[1], n.children[0], n.coef))
    if n.op == "log" and n.children[0].op == "*":
        a, b = n.children[0].children
        out.append(bin_("+", un("log", a), un("log", b)))
    if n.op == "square":
        out.append(bin_("*", n.children[0], n.children[0], n.coef))
    return out


@st.composite
def rewritten(draw: st.DrawFn, tree_st: st.SearchStrategy[Node] = small_trees) -> tuple[Node, Node]:
    """(tree, tree with one subtree rewritten); rewrites may change the function at some points."""
    tree = draw(tree_st)
    paths = tree.paths()
    path = draw(st.sampled_from(paths))
    candidates = _rewrites(tree.at(path))
    return tree, tree.replace_at(path, draw(st.sampled_from(candidates)))


# -- strings for the parser fuzz test ------------------------------------------------------------
_NEAR = "xy()+-*/.0123456789eE logsqrtuae_,"


_MUT_TREES = trees(max_leaves=6, coefs=any_coefs)
_MUT_CHARS = st.one_of(st.sampled_from(_NEAR), st.characters())
_MUT_KINDS = st.sampled_from(("del", "ins", "rep"))


@st.composite
def mutated_infix(draw: st.DrawFn) -> str:
    """A valid expression's text with a few characters deleted, inserted or replaced."""
    from worker.lossexpr.infix import to_infix

    text = to_infix(draw(_MUT_TREES))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        kind = draw(_MUT_KINDS)
        ch = draw(_MUT_CHARS)
        if kind == "del":
            text = text[:i] + text[i + 1:]
        elif kind == "ins":
            text = text[:i] + ch + text[i:]
        else:
            text = text[:i] + ch + text[i + 1:]
    return text


def _nested(n: int, open_: str, inner: str, close: str) -> str:
    return open_ * n + inner + close * n


garbage_strings = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=_NEAR, max_size=60),
    mutated_infix(),
    st.builds(_nested, st.integers(0, 150), st.sampled_from(("(", "log(", "-", "sqrt(", "- (", "2.0 * ")),
              st.sampled_from(("x", "y", "", "1", "x +")), st.sampled_from((")", "", "))"))),
    st.builds(lambda d, s: s.format(d), st.text(alphabet="0123456789", min_size=1, max_size=400),
              st.sampled_from(("{}", "x * {}", "{}.0 * x", "1e{} * y", "-{}", "{0}e-{0}"))),
    st.sampled_from((
        "__import__('os').system('touch /tmp/glo_pwned')", "exec('1')", "eval('x')", "lambda: 0",
        "x if y else 1", "x ** 2", "x; y", "open('f')", "[x]", "{x}", "x.real", "x @ y", "1_000",
        "0x10", "1j", "nan * x", "inf * y", "１ + x", "x\u00a0+ y", "log(y) − x / y", "\x00",
    )),
)
