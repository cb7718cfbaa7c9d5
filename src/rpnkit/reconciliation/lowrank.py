"""Low-rank reconciliations: LoRR and random matrix adaption."""

from __future__ import annotations

from typing import Any

import torch

from ..registry import RECONCILIATIONS
from . import forms
from .base import Reconciliation, check_int

__all__ = ["LowRank", "RandomMatrixAdaption"]


def _lowrank_frobenius_sq(a, b):
    """‖A Bᵀ‖_F² = Σ (AᵀA) ⊙ (BᵀB), in O((n + D) r²)."""
    return ((a.transpose(0, 1) @ a) * (b.transpose(0, 1) @ b)).sum()


@RECONCILIATIONS.register("lorr")
class LowRank(Reconciliation):
    """Low-rank W = A Bᵀ with A n×r, B D×r; w = [vec A, vec B] (l = r(n + D))."""

    homogeneity = 2

    def __init__(self, r: int = 2) -> None:
        super().__init__()
        self.r = check_int("r", r, "LowRank")

    def hparams(self) -> dict[str, Any]:
        return {"r": self.r}

    def calculate_l(self, n, D):  # noqa: N803
        return self.r * (int(n) + int(D))

    def factor_shapes(self, n, D):  # noqa: N803
        return [(n, self.r), (D, self.r)]

    def form(self):
        # w = [vec A, vec B]: a subclass that computes its factors otherwise overrides form()
        return forms.LowRank(left=0, right=1, flat=type(self).factors is LowRank.factors
                             and type(self).form_factors is Reconciliation.form_factors)

    def factors(self, w, n, D):  # noqa: N803
        """A (n×r) and B (D×r) as views of w (one split, no copy; its backward is one cat),
        without the generic shape bookkeeping on every call."""
        r = self.r
        if w.dim() != 1 or w.shape[0] != r * (n + D):
            self.check_w(w, n, D)  # raises with the expected shape
        a, b = w.split((n * r, D * r))
        return [a.view(n, r), b.view(D, r)]

    def reconcile(self, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        return a @ b.transpose(0, 1)

    def apply(self, kx, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        return (kx @ b) @ a.transpose(0, 1)

    def describe_apply(self, n, D):  # noqa: N803
        return f"lorr: (κ(x) B) Aᵀ, rank {self.r}, never forms the {n}×{D} matrix"

    def frobenius_sq(self, w, n, D):  # noqa: N803
        a, b = self.factors(w, n, D)
        return _lowrank_frobenius_sq(a, b)


@RECONCILIATIONS.register("random_matrix_adaption")
class RandomMatrixAdaption(Reconciliation):
    """W = diag(λ₁) A diag(λ₂) Bᵀ; A n×r, B D×r fixed seeded N(0,1) buffers; w = [λ₁, λ₂].

    l = n + r.
    """

    homogeneity = 2

    def __init__(self, r: int = 2, seed: int | None = None) -> None:
        super().__init__()
        self.r = check_int("r", r, "RandomMatrixAdaption")
        self.seed = None if seed is None else int(seed)
        self.register_buffer("A", None)
        self.register_buffer("B", None)

    def hparams(self) -> dict[str, Any]:
        return {"r": self.r, "seed": self.seed}

    def calculate_l(self, n, D):  # noqa: N803
        return int(n) + self.r

    def bind(self, n, D):  # noqa: N803
        super().bind(n, D)
        if self.A is None or tuple(self.A.shape) != (n, self.r):
            self._draw(self.factory_kwargs.get("device"),
                       self.factory_kwargs.get("dtype") or torch.get_default_dtype())

    def _draw(self, device, dtype) -> None:
        n, D, r = self.n, self.D, self.r  # noqa: N806
        if device is not None and torch.device(device).type == "meta":  # shapes only
            self.A = torch.empty(n, r, device=device, dtype=dtype)
            self.B = torch.empty(D, r, device=device, dtype=dtype)
            return
        g = self.generator()
        self.A = torch.randn(n, r, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
        self.B = torch.randn(D, r, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Redraw A and B from the seed, where they are (meta-device init, ``to_empty``)."""
        if self.A is not None and self.n is not None:
            self._draw(self.A.device, self.A.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.A is None and prefix + "A" in state_dict and prefix + "B" in state_dict:
            self.A = torch.empty_like(state_dict[prefix + "A"])
            self.B = torch.empty_like(state_dict[prefix + "B"])
            self.n, self.D = int(self.A.shape[0]), int(self.B.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def factor_shapes(self, n, D):  # noqa: N803
        return [(n,), (self.r,)]

    def form(self):
        return forms.LowRank(left=0, right=1)

    def state_numel(self, n, D):  # noqa: N803
        return (int(n) + int(D)) * self.r

    def form_factors(self, w, n, D):  # noqa: N803
        """W = L Rᵀ with L = diag(λ₁) A diag(λ₂) (n×r) and R = B (D×r, fixed)."""
        lam1, lam2, a, b = self._parts(w, n, D)
        return [lam1.unsqueeze(1) * a * lam2, b]

    def _parts(self, w, n, D):  # noqa: N803
        lam1, lam2 = self.factors(w, n, D)
        self.ensure_bound(n, D)
        a = self.A.to(device=w.device, dtype=w.dtype)
        return lam1, lam2, a, self.B.to(device=w.device, dtype=w.dtype)

    def reconcile(self, w, n, D):  # noqa: N803
        lam1, lam2, a, b = self._parts(w, n, D)
        return (lam1.unsqueeze(1) * a * lam2) @ b.transpose(0, 1)

    def apply(self, kx, w, n, D):  # noqa: N803
        lam1, lam2, a, b = self._parts(w, n, D)
        return (((kx @ b.to(kx.dtype)) * lam2) @ a.to(kx.dtype).transpose(0, 1)) * lam1

    def describe_apply(self, n, D):  # noqa: N803
        return f"random_matrix_adaption: ((κ(x) B) ⊙ λ₂) Aᵀ ⊙ λ₁, rank {self.r}"

    def frobenius_sq(self, w, n, D):  # noqa: N803
        lam1, lam2, a, b = self._parts(w, n, D)
        return _lowrank_frobenius_sq(lam1.unsqueeze(1) * a * lam2, b)
