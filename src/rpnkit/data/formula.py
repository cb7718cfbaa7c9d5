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

Untrusted text is bounded before any work that grows with it: at most
:data:`MAX_LENGTH` characters, :data:`MAX_NODES` expression nodes, :data:`MAX_DEPTH`
levels of nesting, variables ``x0 .. x{k-1}`` with ``k`` at most :data:`MAX_VARIABLES`
(an index is compared with the number of variables as text, never used to size a list),
numeric literals of magnitude at most :data:`MAX_LITERAL` and literal exponents of
magnitude at most :data:`MAX_EXPONENT`. Every violation is a ConfigurationError.
"""

from __future__ import annotations

import ast
import math
import numbers
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import ConfigurationError, clip, did_you_mean, short

__all__ = ["FUNCTIONS", "CONSTANTS", "Formula", "parse_formula"]

#: longest formula text, in characters
MAX_LENGTH = 2000
#: deepest nesting of operators / calls
MAX_DEPTH = 60
#: most expression nodes (numbers, names, operators, calls) in one formula
MAX_NODES = 1000
#: most variables of a formula (x0 .. x{MAX_VARIABLES-1} when they are inferred)
MAX_VARIABLES = 10_000
#: largest magnitude of a numeric literal (float64 reaches about 1.8e308)
MAX_LITERAL = 1e300
#: largest magnitude of a literal exponent in ``a ** k``
MAX_EXPONENT = 1000


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
                f"formula {short(self.text)} takes {self.n_vars} variables, got an array of shape "
                f"{x.shape}"
            )
        cols = [x[:, i] for i in range(self.n_vars)]
        with np.errstate(all="ignore"):
            out = self._fn(cols)
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (x.shape[0],)).copy()

    def __repr__(self) -> str:
        return f"Formula({self.text!r}, variables={self.variables})"


def _fail(text: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"formula {short(text)} is not allowed: {why}")


def _names_text(names: Sequence[str], most: int = 8) -> str:
    """``x0, x1, x2`` or ``x0, x1, ..., x9999 (10000 variables)`` for long lists."""
    if not names:
        return "(none)"
    if len(names) <= most:
        return ", ".join(clip(n, 40) for n in names)
    head = ", ".join(clip(n, 40) for n in names[: most - 1])
    return f"{head}, ..., {clip(names[-1], 40)} ({len(names):,} variables)"


def _var_index(name: str) -> int | None:
    """``k`` for a name ``xk`` (ASCII digits, no leading zero); None otherwise.

    Indices past :data:`MAX_VARIABLES` are returned as ``MAX_VARIABLES`` without
    converting the digits, so a name like ``x99999999999`` costs nothing."""
    digits = name[1:]
    if len(name) < 2 or name[0] != "x" or not (digits.isascii() and digits.isdigit()):
        return None
    if len(digits) > 1 and digits[0] == "0":
        return None
    if len(digits) > len(str(MAX_VARIABLES)):
        return MAX_VARIABLES
    return min(int(digits), MAX_VARIABLES)


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
    if len(text) > MAX_LENGTH:
        raise ConfigurationError(
            f"formula {short(text)} is longer than {MAX_LENGTH:,} characters ({len(text):,})"
        )
    if not text.strip():
        raise ConfigurationError("formula is empty")
    if "\x00" in text:
        raise _fail(text, "it contains a NUL character")
    try:
        with warnings.catch_warnings():  # e.g. "invalid decimal literal": refuse, never print
            warnings.simplefilter("error", SyntaxWarning)
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigurationError(
            f"formula {short(text)} is not valid syntax: {clip(exc.msg, 120)}"
        ) from None
    except SyntaxWarning as exc:
        raise ConfigurationError(f"formula {short(text)} is not valid syntax: {clip(exc, 120)}") from None
    except (RecursionError, MemoryError, ValueError, OverflowError) as exc:
        raise _fail(text, f"it is too complex to parse ({clip(exc, 80)})") from None
    _check_size(tree, text)
    if variables is None:
        if n_vars is None:  # x0 .. x{k-1}: k = 1 + the largest index used
            indices = [_var_index(n.id) for n in ast.walk(tree) if isinstance(n, ast.Name)]
            n_vars = max((i for i in indices if i is not None), default=-1) + 1 or 1
        elif isinstance(n_vars, bool) or not isinstance(n_vars, numbers.Integral) or n_vars < 0:
            raise ConfigurationError(f"formula: n_vars must be a non-negative integer, got {short(n_vars)}")
        n_vars = int(n_vars)
        if n_vars > MAX_VARIABLES:
            used = [n.id for n in ast.walk(tree)
                    if isinstance(n, ast.Name) and (_var_index(n.id) or 0) >= MAX_VARIABLES]
            what = f"it uses {clip(used[0], 40)}" if used else f"{n_vars:,} variables were asked for"
            raise _fail(text, f"{what}, but variables are limited to x0 .. x{MAX_VARIABLES - 1} "
                              f"({MAX_VARIABLES:,} variables)")
        variables = [f"x{i}" for i in range(n_vars)]
    variables = list(variables)
    if len(variables) > MAX_VARIABLES:
        raise _fail(text, f"more than {MAX_VARIABLES:,} variables ({len(variables):,})")
    index = {v: i for i, v in enumerate(variables)}
    fn = _compile(tree.body, text, index, 0)
    return Formula(text, variables, fn)


def _check_size(tree: ast.AST, text: str) -> None:
    """Refuse trees with more than :data:`MAX_NODES` expression nodes (iteratively)."""
    count = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.expr):
            count += 1
            if count > MAX_NODES:
                raise _fail(text, f"more than {MAX_NODES:,} numbers, names and operators")


def _literal(node: ast.AST) -> float | int | None:
    """The value of a number literal, optionally signed (``-3``, ``+2.5``); else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(
        node.value, bool
    ):
        return sign * node.value
    return None


def _literal_text(node: ast.AST, text: str) -> str:
    segment = ast.get_source_segment(text.strip(), node) or ""
    return clip(segment, 40) if segment else short(getattr(node, "value", None), 40)


def _compile(node: ast.AST, text: str, index: dict[str, int], depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise _fail(text, f"nested deeper than {MAX_DEPTH} levels")
    d = depth + 1
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _fail(text, f"only numbers are allowed as literals, found {short(v, 40)}")
        if not abs(v) <= MAX_LITERAL:  # exact for ints (no float conversion); False for inf/nan
            raise _fail(text, f"the number {_literal_text(node, text)} is out of range "
                              f"(numbers must be finite and at most {MAX_LITERAL:g} in magnitude)")
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
        k = _var_index(node.id)
        if k is not None and index and all(_var_index(v) is not None for v in index):
            raise _fail(text, f"variable {short(node.id, 40)} is out of range: the formula has "
                              f"{len(index):,} variable{'s' if len(index) != 1 else ''} "
                              f"({_names_text(list(index))})")
        suggestion = did_you_mean(node.id, known) if len(known) <= 1000 else ""
        raise _fail(
            text,
            f"unknown name {short(node.id, 40)}{suggestion}; variables are "
            f"{_names_text(list(index))}, constants are pi and e",
        )
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise _fail(text, f"operator {type(node.op).__name__} is not one of + - * / **")
        if isinstance(node.op, ast.Pow):
            k = _literal(node.right)
            if k is not None and abs(k) > MAX_EXPONENT:
                raise _fail(text, f"the exponent {_literal_text(node.right, text)} is too large "
                                  f"(at most {MAX_EXPONENT:,} in magnitude)")
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
        shown = clip(name, 40)
        if node.keywords:
            raise _fail(text, f"keyword arguments are not allowed in {shown}(...)")
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise _fail(text, f"starred arguments are not allowed in {shown}(...)")
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
            f"unknown function {short(name, 40)}{did_you_mean(name, names)}; "
            f"allowed: {', '.join(sorted(names))}",
        )
    if isinstance(node, ast.Attribute):
        raise _fail(text, "attribute access ('.') is not allowed")
    if isinstance(node, ast.Lambda):
        raise _fail(text, "lambda expressions are not allowed")
    if isinstance(node, ast.Subscript):
        raise _fail(text, "subscripts ('[...]') are not allowed")
    raise _fail(text, f"{type(node).__name__} expressions are not allowed")
