"""The loss-expression language's exceptions (one base type, so callers catch one thing)."""


class LossExprError(ValueError):
    """Base of every error the expression language raises on bad input."""


class TreeError(LossExprError):
    """A tree (or its JSON) is malformed: unknown operator, wrong arity, bad coefficient, too big."""


class ParseError(LossExprError):
    """Infix text could not be parsed; names the 0-based position and the offending token."""

    def __init__(self, message: str, position: int, token: str) -> None:
        super().__init__(f"{message} at position {position} (token {token!r})")
        self.position = position
        self.token = token
