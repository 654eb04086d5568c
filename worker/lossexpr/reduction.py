"""How a loss tree's f is reduced over the n classes (no dependencies: the spec and `glo status` read it too).

"mean" is the paper's formula L = -(1/n) Σ f; "sum" is L = -Σ f, under which `x * log(y)` is exactly Keras'
categorical cross-entropy.
"""

CLASS_REDUCTIONS = ("mean", "sum")
