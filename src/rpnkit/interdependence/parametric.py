"""Parameterised interdependence: a learned attribute matrix A = ψ(w)ᵀ from any reconciliation.

A (m × m') is built by a registered reconciliation ψ (``lorr`` for low rank, ``hm`` /
``lphm`` / ``dual_lphm`` for the Kronecker family, ``identity`` for a dense matrix), so
every parameterisation of W in RPN 1 is also one of A in RPN 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..registry import INTERDEPENDENCES, RECONCILIATIONS
from .base import Interdependence, check_positive_int

__all__ = ["ParameterisedInterdependence"]


@INTERDEPENDENCES.register("parameterised")
class ParameterisedInterdependence(Interdependence):
    """Attribute-level ξ(X) = X A, A = ψ(w)ᵀ ∈ R^{m × m'} with learnable w.

    Args:
        reconciliation: registry name or ``{"name": ..., **params}`` of ψ (default ``lorr``
            with r = 2: a low-rank A).
        reconciliation_params: its keyword arguments.
        out: m' (default: m).
        residual: A = I + ψ(w)ᵀ (w drawn small, so ξ starts near the identity; only when
            m' = m), else A = ψ(w)ᵀ.
    """

    level = "attribute"

    def __init__(self, reconciliation: Any = "lorr", reconciliation_params: Mapping | None = None,
                 out: int | None = None, residual: bool = True) -> None:
        super().__init__()
        params = dict(reconciliation_params or {})
        if reconciliation == "lorr" and not params:
            params = {"r": 2}
        self.psi = RECONCILIATIONS.resolve(reconciliation, params)
        self.out = None if out is None else check_positive_int("out", out, "parameterised interdependence")
        self.residual = bool(residual)
        self.w: nn.Parameter | None = None

    def calculate_m(self, m: int) -> int:
        return self.out or m

    def bind(self, m: int, **factory: Any) -> None:
        super().bind(m)
        mp = self.calculate_m(m)
        if self.residual and mp != m:
            self.residual = False
        self.psi.factory_kwargs = {k: v for k, v in factory.items() if v is not None}
        self.psi.bind(mp, m)
        ell = int(self.psi.calculate_l(mp, m))
        self.w = nn.Parameter(torch.empty(ell, **{k: v for k, v in factory.items() if v is not None}))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.w is not None:
            with torch.no_grad():
                self.w.normal_(0.0, 0.01 if self.residual else 1.0 / max(1, self.m) ** 0.5)

    def form(self) -> str:
        return f"parameterised (ψ = {self.psi.registry_name})"

    def matrix(self, x: Tensor | None = None) -> Tensor:
        m, mp = self.m, self.calculate_m(self.m)
        a = self.psi.reconcile(self.w, mp, m).T
        if self.residual:
            a = a + torch.eye(m, dtype=a.dtype, device=a.device)
        return a

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.matrix().to(x.dtype))
