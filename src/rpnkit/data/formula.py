"""A safe formula parser for function-approximation datasets.

Formulas such as ``"exp(sin(3*x0)) * x1 + x1**2"`` are parsed with :func:`ast.parse`
and the resulting tree is checked against an allow-list: numbers, the declared
variables, the constants ``pi`` and ``e``, the operators ``+ - * / **`` (binary and
unary) and calls of the named math functions in :data:`FUNCTIONS` with positional
arguments. Everything else (attribute access, subscripts, lambdas, comprehensions,
keyword arguments, strings, calls of unknown names ...) is rejected with a
:class:`~rpnkit.errors.ConfigurationError`. The checked tree is compiled into a
closure over NumPy float64 arrays; the text is never passed to ``eval``, ``exec``
or ``sympify``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigurationError, did_you_mean

__all__ = ["FUNCTIONS", "CONSTANTS", "Formula", "parse_formula"]

MAX_LENGTH = 2000
MAX_DEPTH = 60


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": np.arctan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "arcsinh": np.arcsinh,
    "arccosh": np.arccosh,
    "arctanh": np.arctanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "exp": np.exp,
    "log": np.log,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "sign": np.sign,
    "sigmoid": _sigmoid,
}
BINARY_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "atan2": np.arctan2,
    "arctan2": np.arctan2,
    "min": np.minimum,
    "max": np.maximum,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e}

_BINOPS = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
    ast.Div: np.divide,
    ast.Pow: np.power,
}
_OP_TEXT = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}

Node = Callable[[Sequence[np.ndarray]], np.ndarray]


class Formula:
    """A parsed, checked formula; call it with an (N, k) array to get (N,) values."""

    def __init__(self, text: str, variables: Sequence[str], fn: Node) -> None:
        self.text = text
        self.variables = list(variables)
        self._fn = fn

    @property
    def n_vars(self) -> int:
        return len(self.variables)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_vars:
            raise ConfigurationError(
                f"formula {self.text!r} takes {self.n_vars} variables, got an array of shape "
                f"{x.shape}"
            )
        cols = [x[:, i] for i in range(self.n_vars)]
        with np.errstate(all="ignore"):
            out = self._fn(cols)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (x.shape[0],)).copy()

    def __repr__(self) -> str:
        return f"Formula({self.text!r}, variables={self.variables})"


def _fail(text: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"formula {text!r} is not allowed: {why}")


def parse_formula(text: str, variables: Sequence[str] | None = None, n_vars: int | None = None) -> Formula:
    """Parse ``text`` safely.

    Args:
        text: the formula, Python/sympy syntax (``**`` for powers).
        variables: allowed variable names, in column order. Default ``x0 .. x{k-1}``
            with ``k = n_vars``; when ``n_vars`` is also omitted the variables
            ``x0, x1, ...`` used in the text define k (they must be contiguous from x0).
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"formula must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ConfigurationError("formula is empty")
    if len(text) > MAX_LENGTH:
        raise ConfigurationError(f"formula is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigurationError(f"formula {text!r} is not valid syntax: {exc.msg}") from None
    if variables is None:
        if n_vars is None:
            used = sorted(
                {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and _is_xvar(n.id)},
                key=lambda s: int(s[1:]),
            )
            n_vars = int(used[-1][1:]) + 1 if used else 1
        variables = [f"x{i}" for i in range(n_vars)]
    variables = list(variables)
    index = {v: i for i, v in enumerate(variables)}
    fn = _compile(tree.body, text, index, 0)
    return Formula(text, variables, fn)


def _is_xvar(name: str) -> bool:
    return len(name) > 1 and name[0] == "x" and name[1:].isdigit()


def _compile(node: ast.AST, text: str, index: dict[str, int], depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise _fail(text, f"nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(text, f"only numbers are allowed as literals, found {v!r}")
        c = np.float64(v)
        return lambda cols: c
    if isinstance(node, ast.Name):
        if node.id in index:
            i = index[node.id]
            return lambda cols: cols[i]
        if node.id in CONSTANTS:
            c = np.float64(CONSTANTS[node.id])
            return lambda cols: c
        known = [*index, *CONSTANTS]
        raise _fail(
            text,
            f"unknown name {node.id!r}{did_you_mean(node.id, known)}; variables are "
            f"{', '.join(index) or '(none)'}, constants are pi and e",
        )
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise _fail(text, f"operator {type(node.op).__name__} is not one of + - * / **")
        a = _compile(node.left, text, index, d)
        b = _compile(node.right, text, index, d)
        return lambda cols: op(a(cols), b(cols))
    if isinstance(node, ast.UnaryOp):
        operand = _compile(node.operand, text, index, d)
        if isinstance(node.op, ast.USub):
            return lambda cols: np.negative(operand(cols))
        if isinstance(node.op, ast.UAdd):
            return operand
        raise _fail(text, f"unary operator {type(node.op).__name__} is not allowed")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _fail(text, "only calls of named math functions are allowed (no attributes)")
        name = node.func.id
        if node.keywords:
            raise _fail(text, f"keyword arguments are not allowed in {name}(...)")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _fail(text, f"starred arguments are not allowed in {name}(...)")
        if name in FUNCTIONS:
            if len(node.args) != 1:
                raise _fail(text, f"{name}() takes exactly one argument, got {len(node.args)}")
            f = FUNCTIONS[name]
            arg = _compile(node.args[0], text, index, d)
            return lambda cols: f(arg(cols))
        if name in BINARY_FUNCTIONS:
            if len(node.args) != 2:
                raise _fail(text, f"{name}() takes exactly two arguments, got {len(node.args)}")
            g = BINARY_FUNCTIONS[name]
            a = _compile(node.args[0], text, index, d)
            b = _compile(node.args[1], text, index, d)
            return lambda cols: g(a(cols), b(cols))
        names = [*FUNCTIONS, *BINARY_FUNCTIONS]
        raise _fail(
            text,
            f"unknown function {name!r}{did_you_mean(name, names)}; allowed: {', '.join(sorted(names))}",
        )
    if isinstance(node, ast.Attribute):
        raise _fail(text, "attribute access ('.') is not allowed")
    if isinstance(node, ast.Lambda):
        raise _fail(text, "lambda expressions are not allowed")
    if isinstance(node, ast.Subscript):
        raise _fail(text, "subscripts ('[...]') are not allowed")
    raise _fail(text, f"{type(node).__name__} expressions are not allowed")
