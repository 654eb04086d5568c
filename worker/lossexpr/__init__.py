"""The loss-expression language, shared by the orchestrator and the worker.

Pure Python + numpy: importing it pulls in neither TensorFlow nor the orchestrator's
dependencies.  (sympy is imported lazily, only by `canonical`.)
"""

from worker.lossexpr.errors import LossExprError, ParseError, TreeError
from worker.lossexpr.infix import parse, to_infix
from worker.lossexpr.named import NAMES, named_loss, resolve
from worker.lossexpr.tree import ARITY, BINARY_OPS, LEAF_OPS, UNARY_OPS, Node, X, Y, bin_, const, un

__all__ = [
    "ARITY", "BINARY_OPS", "LEAF_OPS", "UNARY_OPS", "LossExprError", "NAMES", "Node", "ParseError",
    "TreeError", "X", "Y", "bin_", "const", "named_loss", "parse", "resolve", "to_infix", "un",
]
