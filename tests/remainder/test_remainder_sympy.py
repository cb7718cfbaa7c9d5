"""Remainder.sympy: every remainder gives its own closed form (n expressions)."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from torch import Tensor, nn

import rpnkit
from rpnkit.errors import NoClosedFormError
from rpnkit.models.classic import KANBaseRemainder
from rpnkit.remainder import Remainder
from rpnkit.symbolic import to_sympy

X = np.random.default_rng(1).uniform(-0.9, 0.9, size=(4, 3))
SYMS = sympy.symbols("x0 x1 x2")


def _bound(pi: Remainder, m: int = 3, n: int = 3) -> Remainder:
    pi.bind(m, n)
    return pi.double().eval()


def _agrees(pi: Remainder, tol: float = 0.0) -> list[sympy.Expr]:
    exprs = pi.sympy(list(SYMS), tol)
    with torch.no_grad():
        ref = pi(torch.tensor(X)).numpy()
    assert len(exprs) == ref.shape[1]
    fns = [sympy.lambdify(SYMS, e, ["math", "mpmath"]) for e in exprs]
    got = np.array([[float(f(*map(float, row))) for f in fns] for row in X])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)
    return exprs


@pytest.mark.parametrize(
    ("name", "kw", "n"),
    [
        ("zero", {}, 2),
        ("constant", {"c": -0.3}, 4),
        ("identity", {}, 3),
        ("identity", {"activation": "gelu"}, 3),
        ("linear", {}, 2),
        ("linear", {"activation": "elu", "bias": True}, 2),
    ],
)
def test_registered_remainders_match_forward(name, kw, n):
    torch.manual_seed(0)
    pi = _bound(rpnkit.build_remainder(name, **kw), 3, n)
    if getattr(pi, "bias", None) is not None:
        with torch.no_grad():
            pi.bias.normal_()
    _agrees(pi)


@pytest.mark.parametrize("bias", [False, True])
def test_kan_base_remainder_applies_activation_first(bias):
    torch.manual_seed(1)
    pi = _bound(KANBaseRemainder(activation="silu", bias=bias), 3, 2)
    if bias:
        with torch.no_grad():
            pi.bias.normal_()
    _agrees(pi)


def test_tol_drops_small_weights():
    pi = _bound(rpnkit.build_remainder("linear"), 3, 1)
    with torch.no_grad():
        pi.weight.copy_(torch.tensor([[2.0, 1e-9, -0.5]]))
    (e,) = pi.sympy(list(SYMS), tol=1e-6)
    assert SYMS[1] not in e.free_symbols
    (e,) = pi.sympy(list(SYMS))
    assert SYMS[1] in e.free_symbols


def test_activation_without_closed_form_is_named():
    pi = _bound(rpnkit.build_remainder("identity", activation=nn.LayerNorm(3)))
    with pytest.raises(NoClosedFormError, match=r"remainder 'identity' activation: module LayerNorm"):
        pi.sympy(list(SYMS))


class Doubling(Remainder):
    """User remainder π(x) = 2x with its own closed form."""

    needs_square = True

    def forward(self, x: Tensor) -> Tensor:
        return 2 * x

    def sympy(self, xs, tol=0.0):
        return [2 * x for x in xs]


class Opaque(Remainder):
    needs_square = True

    def forward(self, x: Tensor) -> Tensor:
        return torch.erfc(x)


def test_user_remainders_in_a_model():
    head = rpnkit.RPNHead(3, 3, remainder=Doubling()).double()
    exprs = to_sympy(head, tol=0.0)
    with torch.no_grad():
        w = head.reconciled_weights().sum(0).numpy()
    for i, e in enumerate(exprs):
        assert float(e.coeff(SYMS[i])) == pytest.approx(w[i, i] + 2)
    with pytest.raises(NoClosedFormError, match="Opaque"):
        Opaque().sympy(list(SYMS))
    with pytest.raises(NoClosedFormError, match=r"head: remainder .*\(Opaque\)"):
        to_sympy(rpnkit.RPNHead(3, 3, remainder=Opaque()))
