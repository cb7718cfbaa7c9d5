"""Expansion.sympy: every expansion gives its own closed form; user expansions plug in."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys

import numpy as np
import pytest
import sympy
import torch
from torch import Tensor, nn

import rpnkit
from rpnkit import symbolic
from rpnkit.errors import ConfigurationError, NoClosedFormError
from rpnkit.expansion import Expansion
from rpnkit.symbolic import to_sympy

NAMES = rpnkit.list_components()["expansion"]
NO_CLOSED_FORM = {"bspline"}

#: keyword arguments for the per-component checks (small D, non-default hyperparameters)
BUILD = {
    "linear": {"c": -0.7},
    "reciprocal": {"eps": 0.3},
    "taylor": {"d": 3},
    "fourier": {"P": 3.0, "N": 2},
    "gaussian_rbf": {"K": 3, "eps": 1.3},
    "inverse_quadratic_rbf": {"K": 3, "range": (-2.0, 0.5)},
    "chebyshev": {"d": 3},
    "jacobi": {"d": 3, "alpha": 0.5, "beta": 1.5},
    "legendre": {"d": 3},
    "hermite": {"d": 3},
    "laguerre": {"d": 3},
    "naive_normal": {"loc": 0.2, "scale": 1.5},
    "naive_laplace": {"loc": -0.1, "scale": 0.5},
    "naive_cauchy": {"loc": 0.3, "scale": 2.0},
    "naive_gamma": {"concentration": 2.0, "rate": 1.5},
    "naive_exponential": {"rate": 2.0},
    "naive_chi2": {"df": 3.0},
    "combinatorial": {"d": 3},
    "combinatorial_normal": {"d": 2},
    "nested": {"expansions": ["chebyshev", {"name": "taylor", "d": 2}]},
    "extended": {"expansions": [{"name": "taylor", "d": 2, "symmetric": True}, "fourier"]},
}

X = np.random.default_rng(0).uniform(-0.9, 0.9, size=(4, 3))
SYMS = sympy.symbols("x0 x1 x2")


def _values(exprs, x: np.ndarray) -> np.ndarray:
    fns = [sympy.lambdify(SYMS, e, ["math", "mpmath"]) for e in exprs]
    return np.array([[float(f(*map(float, row))) for f in fns] for row in x])


def _agrees(kappa: Expansion, x: np.ndarray = X) -> None:
    exprs = kappa.sympy(list(SYMS))
    assert len(exprs) == kappa.calculate_D(x.shape[1])
    with torch.no_grad():
        ref = kappa(torch.tensor(x)).numpy()
    np.testing.assert_allclose(_values(exprs, x), ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", sorted(set(NAMES) - NO_CLOSED_FORM))
def test_every_closed_form_matches_forward(name):
    _agrees(rpnkit.build_expansion(name, **BUILD.get(name, {})))


@pytest.mark.parametrize("symmetric", [False, True])
def test_taylor_column_order(symmetric):
    _agrees(rpnkit.build_expansion("taylor", d=3, symmetric=symmetric))


def test_pre_and_post_processing_are_applied_by_the_base():
    kappa = rpnkit.build_expansion("chebyshev", d=2, preprocess="tanh", postprocess=["silu", "relu"])
    _agrees(kappa)
    kappa = rpnkit.build_expansion(
        "nested", expansions=[{"name": "identity", "preprocess": "sigmoid"}, "legendre"],
        postprocess="softplus",
    )
    _agrees(kappa)


def test_bspline_has_no_closed_form():
    with pytest.raises(NoClosedFormError, match=r"'bspline' \(BSpline\)"):
        rpnkit.build_expansion("bspline").sympy(list(SYMS))
    kappa = rpnkit.build_expansion("extended", expansions=["identity", "bspline"])
    with pytest.raises(NoClosedFormError, match="bspline"):
        kappa.sympy(list(SYMS))


def test_processing_module_without_closed_form_is_named():
    kappa = rpnkit.build_expansion("identity", postprocess=nn.LayerNorm(3))
    with pytest.raises(NoClosedFormError, match=r"'identity' postprocess: module LayerNorm"):
        kappa.sympy(list(SYMS))


class Cube(Expansion):
    """User expansion with its own public sympy method: κ(x) = [x³ | x]."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return 2 * m

    def expand(self, x: Tensor) -> Tensor:
        return torch.cat([x**3, x], dim=1)

    def sympy(self, xs):
        return [x**3 for x in xs] + list(xs)


class Sine(Expansion):
    """User expansion giving only the core closed form (_sympy); pre/post come from the base."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return m

    def expand(self, x: Tensor) -> Tensor:
        return torch.sin(x)

    def _sympy(self, xs):
        return [sympy.sin(x) for x in xs]


class Opaque(Expansion):
    """User expansion without a closed form."""

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return m

    def expand(self, x: Tensor) -> Tensor:
        return torch.erfc(x)


def _head_check(kappa: Expansion) -> list[sympy.Expr]:
    torch.manual_seed(0)
    head = rpnkit.RPNHead(3, 2, expansion=kappa, bias=True).double().eval()
    with torch.no_grad():
        head.bias.normal_()
    exprs = to_sympy(head, tol=0.0)
    with torch.no_grad():
        ref = head(torch.tensor(X)).numpy()
    np.testing.assert_allclose(_values(exprs, X), ref, rtol=1e-9, atol=1e-12)
    return exprs


def test_user_expansion_with_its_own_sympy_exports():
    (e0, _) = _head_check(Cube())
    assert sympy.Poly(e0, *SYMS).total_degree() == 3
    _head_check(Sine(preprocess="tanh", postprocess="sigmoid"))
    _agrees(rpnkit.build_expansion("extended", expansions=[Cube(), Sine()]))


def test_user_expansion_without_sympy_raises_naming_it():
    with pytest.raises(NoClosedFormError, match=r"Opaque"):
        Opaque().sympy(list(SYMS))
    model = rpnkit.RPN.from_dims([3, 2], expansion=Opaque())
    with pytest.raises(NoClosedFormError, match=r"layer 0, head 0: expansion .*\(Opaque\)"):
        to_sympy(model)
    nested = rpnkit.build_expansion("nested", expansions=["identity", Opaque()])
    with pytest.raises(NoClosedFormError, match="Opaque"):
        to_sympy(rpnkit.RPNHead(3, 1, expansion=nested))


def test_wrong_number_of_expressions_is_reported():
    class Short(Cube):
        def sympy(self, xs):
            return list(xs)

    with pytest.raises(ConfigurationError, match=r"Short.sympy gave 3 expressions, expected D=6"):
        to_sympy(rpnkit.RPNHead(3, 1, expansion=Short()))


def test_error_type_lives_in_errors_and_is_re_exported():
    assert symbolic.NoClosedFormError is NoClosedFormError
    assert issubclass(NoClosedFormError, ConfigurationError)


def test_symbolic_imports_no_concrete_components():
    tree = ast.parse(inspect.getsource(symbolic))
    imported = {
        (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    } | {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not any(
        part in mod for mod in imported for part in ("expansion", "remainder", "models")
    ), imported


def test_import_rpnkit_does_not_import_sympy():
    code = "import sys, rpnkit; assert 'sympy' not in sys.modules, 'sympy imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
