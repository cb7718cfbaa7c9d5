"""Kronecker-structured reconciliations (true ``torch.kron`` products).

With W = A ⊗ B (A p×q, B s×t, n = ps, D = qt), the product with one feature
vector k ∈ R^D is ``vec(A K Bᵀ)`` where K is k reshaped row-major to q×t and
vec is row-major. The ``apply`` methods use that identity and never form W.
"""

from __future__ import annotations

from math import isqrt
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import RECONCILIATIONS
from . import forms
from .base import Reconciliation, check_int, divisors
from .lowrank import _lowrank_frobenius_sq

__all__ = ["DuplicatedPadding", "HM", "LPHM", "DualLPHM"]

#: divisors are listed in full (an O(sqrt k) search) only up to this k; beyond it the hint
#: names the small divisors, so a refusal of a huge size stays instant
_FULL_DIVISOR_SEARCH = 10**10
_SMALL_DIVISORS = 1000


def _divisor_hint(symbol: str, what: str, k: int) -> str:
    """``"valid p for n=12: [1, 2, 3, 4, 6, 12]"``, bounded in time for any ``k``."""
    k = int(k)
    if k <= _FULL_DIVISOR_SEARCH:
        return f"valid {symbol} for {what}={k}: {divisors(k)}"
    top = min(_SMALL_DIVISORS, isqrt(k))
    small = [i for i in range(1, top + 1) if k % i == 0]
    return f"{symbol} must be a divisor of {what}={k}; its divisors up to {top:,}: {small}"


class _Kron(Reconciliation):
    """Shared p/q handling: A is p×q, the second factor s×t with s = n/p, t = D/q."""

    def __init__(self, p: int = 2, q: int | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        self.p = check_int("p", p, owner)
        self.q = self.p if q is None else check_int("q", q, owner)

    def hparams(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q}

    def check_sizes(self, n, D):  # noqa: N803
        super().check_sizes(n, D)
        owner = type(self).__name__
        if n % self.p:
            raise ConfigurationError(
                f"{owner}: p={self.p} must divide n={n}; {_divisor_hint('p', 'n', n)}"
            )
        if D % self.q:
            raise ConfigurationError(
                f"{owner}: q={self.q} must divide D={D}; {_divisor_hint('q', 'D', D)}"
            )

    def st(self, n, D):  # noqa: N803
        self.check_sizes(n, D)
        return n // self.p, D // self.q

    def _flat(self) -> bool:
        """Whether w is [vec F_0, vec F_1, ...] (the factors cut by the base ``factors``): a
        subclass that computes its factors otherwise does not declare a flat form."""
        return (type(self).factors is Reconciliation.factors
                and type(self).form_factors is Reconciliation.form_factors)

    def blocks(self, kx: Tensor, D: int) -> Tensor:  # noqa: N803
        return kx.reshape(kx.shape[0], self.q, D // self.q)


@RECONCILIATIONS.register("duplicated_padding")
class DuplicatedPadding(_Kron):
    """W = 1_{p×q} ⊗ B, B = reshape(w, s×t), s = n/p, t = D/q (l = st)."""

    def calculate_l(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        return s * t

    def factor_shapes(self, n, D):  # noqa: N803
        return [self.st(n, D)]

    def form(self):
        return forms.Kronecker(self.p, self.q, a=(), b=(0,), flat=self._flat())

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        s, t = self.st(n, D)
        ones = torch.ones(self.p, self.q, dtype=w.dtype, device=w.device)
        return torch.kron(ones, w.reshape(s, t))

    def apply(self, kx, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        s, t = self.st(n, D)
        y = self.blocks(kx, D).sum(dim=1) @ w.reshape(s, t).transpose(0, 1)  # (B, s)
        return y.repeat(1, self.p)

    def describe_apply(self, n, D):  # noqa: N803
        return "duplicated_padding: sum the q blocks of κ(x), one s×t GEMM, tile p times"


@RECONCILIATIONS.register("hm")
class HM(_Kron):
    """Hypercomplex (Kronecker) W = A ⊗ B, A p×q, B s×t; w = [vec A, vec B] (l = pq + st)."""

    homogeneity = 2

    def calculate_l(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        return self.p * self.q + s * t

    def factor_shapes(self, n, D):  # noqa: N803
        return [(self.p, self.q), self.st(n, D)]

    def form(self):
        return forms.Kronecker(self.p, self.q, a=(0,), b=(1,), flat=self._flat())

    def reconcile(self, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        return torch.kron(a, b)

    def apply(self, kx, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        s, t = b.shape
        k = self.blocks(kx, D)  # (B, q, t)
        if self.p * self.q * t + self.p * t * s <= self.q * t * s + self.p * self.q * s:
            y = torch.matmul(a, k) @ b.transpose(0, 1)
        else:
            y = torch.matmul(a, k @ b.transpose(0, 1))
        return y.reshape(kx.shape[0], n)

    def describe_apply(self, n, D):  # noqa: N803
        return "hm: vec(A K Bᵀ) with K = κ(x) reshaped q×t; never forms A ⊗ B"

    def frobenius_sq(self, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)  # ‖A ⊗ B‖² = ‖A‖² ‖B‖²
        return a.pow(2).sum() * b.pow(2).sum()


@RECONCILIATIONS.register("lphm")
class LPHM(_Kron):
    """W = A ⊗ (S Tᵀ), A p×q, S s×r, T t×r; w = [vec A, vec S, vec T] (l = pq + r(s+t))."""

    homogeneity = 3

    def __init__(self, p: int = 2, q: int | None = None, r: int = 2) -> None:
        super().__init__(p, q)
        self.r = check_int("r", r, "LPHM")

    def hparams(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q, "r": self.r}

    def calculate_l(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        return self.p * self.q + self.r * (s + t)

    def factor_shapes(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        return [(self.p, self.q), (s, self.r), (t, self.r)]

    def form(self):
        return forms.Kronecker(self.p, self.q, a=(0,), b=(1, 2), flat=self._flat())

    def reconcile(self, w, n, D):  # noqa: N803
        a, sm, tm = self.factors(w, n, D)
        return torch.kron(a, sm @ tm.transpose(0, 1))

    def apply(self, kx, w, n, D):  # noqa: N803
        a, sm, tm = self.factors(w, n, D)
        z = self.blocks(kx, D) @ tm  # (B, q, r)
        z = torch.matmul(a, z)  # (B, p, r)
        return (z @ sm.transpose(0, 1)).reshape(kx.shape[0], n)

    def describe_apply(self, n, D):  # noqa: N803
        return f"lphm: vec(A K T Sᵀ), rank {self.r}; never forms the n×D matrix"

    def frobenius_sq(self, w, n, D):  # noqa: N803
        a, sm, tm = self.factors(w, n, D)
        return a.pow(2).sum() * _lowrank_frobenius_sq(sm, tm)


@RECONCILIATIONS.register("dual_lphm")
class DualLPHM(_Kron):
    """W = (P Qᵀ) ⊗ (S Tᵀ); P p×r, Q q×r, S s×r, T t×r; w = [vec P, vec Q, vec S, vec T].

    l = r(p + q + s + t).
    """

    homogeneity = 4

    def __init__(self, p: int = 2, q: int | None = None, r: int = 2) -> None:
        super().__init__(p, q)
        self.r = check_int("r", r, "DualLPHM")

    def hparams(self) -> dict[str, Any]:
        return {"p": self.p, "q": self.q, "r": self.r}

    def calculate_l(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        return self.r * (self.p + self.q + s + t)

    def factor_shapes(self, n, D):  # noqa: N803
        s, t = self.st(n, D)
        r = self.r
        return [(self.p, r), (self.q, r), (s, r), (t, r)]

    def form(self):
        return forms.Kronecker(self.p, self.q, a=(0, 1), b=(2, 3), flat=self._flat())

    def reconcile(self, w, n, D):  # noqa: N803
        pm, qm, sm, tm = self.factors(w, n, D)
        return torch.kron(pm @ qm.transpose(0, 1), sm @ tm.transpose(0, 1))

    def apply(self, kx, w, n, D):  # noqa: N803
        pm, qm, sm, tm = self.factors(w, n, D)
        z = self.blocks(kx, D) @ tm  # (B, q, r)
        z = torch.matmul(qm.transpose(0, 1), z)  # (B, r, r)
        z = torch.matmul(pm, z)  # (B, p, r)
        return (z @ sm.transpose(0, 1)).reshape(kx.shape[0], n)

    def describe_apply(self, n, D):  # noqa: N803
        return f"dual_lphm: vec(P Qᵀ K T Sᵀ), rank {self.r}; never forms the n×D matrix"

    def frobenius_sq(self, w, n, D):  # noqa: N803
        pm, qm, sm, tm = self.factors(w, n, D)
        return _lowrank_frobenius_sq(pm, qm) * _lowrank_frobenius_sq(sm, tm)


