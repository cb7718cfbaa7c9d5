"""Identity, masking and constant reconciliations."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from ..errors import ConfigurationError
from ..registry import RECONCILIATIONS
from . import forms
from .base import Reconciliation

__all__ = ["IdentityReconciliation", "Masking", "Constant", "Zero", "One", "ConstantEye"]


@RECONCILIATIONS.register("identity")
class IdentityReconciliation(Reconciliation):
    """W = reshape(w, n×D) (l = nD)."""

    def calculate_l(self, n, D):  # noqa: N803
        return int(n) * int(D)

    def form(self):
        # declared for this class's own reconcile: a subclass that overrides it is plain dense
        return forms.Dense(reshape=type(self).reconcile is IdentityReconciliation.reconcile)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        return w.reshape(n, D)

    def apply(self, kx, w, n, D):  # noqa: N803
        return kx @ self.reconcile(w, n, D).transpose(0, 1)

    def describe_apply(self, n, D):  # noqa: N803
        return "identity: one GEMM with reshape(w, n×D)"


@RECONCILIATIONS.register("masking")
class Masking(Reconciliation):
    """W = M ⊙ reshape(w, n×D), M a fixed seeded Bernoulli(p) 0/1 mask (buffer ``mask``)."""

    def __init__(self, p: float = 0.5, seed: int | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) <= 1.0:
            raise ConfigurationError(f"Masking: keep ratio p must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.seed = None if seed is None else int(seed)
        self.register_buffer("mask", None)

    def hparams(self) -> dict[str, Any]:
        return {"p": self.p, "seed": self.seed}

    def calculate_l(self, n, D):  # noqa: N803
        return int(n) * int(D)

    def form(self):
        return forms.Dense()

    def state_numel(self, n, D):  # noqa: N803
        return int(n) * int(D)

    def bind(self, n, D):  # noqa: N803
        super().bind(n, D)
        if self.mask is None or tuple(self.mask.shape) != (n, D):
            dtype = self.factory_kwargs.get("dtype") or torch.get_default_dtype()
            device = self.factory_kwargs.get("device")
            if device is not None and torch.device(device).type == "meta":
                self.mask = torch.empty(n, D, device=device, dtype=dtype)  # shapes only
                return
            keep = torch.rand(n, D, generator=self.generator(), dtype=torch.float64) < self.p
            self.mask = keep.to(device=device, dtype=dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "mask"
        if key in state_dict and self.mask is None:
            self.mask = torch.empty_like(state_dict[key])
            self.n, self.D = (int(s) for s in state_dict[key].shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        self.ensure_bound(n, D)
        return self.mask.to(device=w.device, dtype=w.dtype) * w.reshape(n, D)

    def describe_apply(self, n, D):  # noqa: N803
        return f"masking: one GEMM with the masked matrix (keep ratio {self.p})"

    def init_gain(self) -> float:
        """Kept weights see an effective fan-in p·D, so they start 1/√p larger (W's RMS is
        then that of a dense D-input layer)."""
        return 1.0 / math.sqrt(self.p) if self.p > 0 else 1.0


class _Fixed(Reconciliation):
    """A fixed matrix with no learnable numbers (l = 0)."""

    homogeneity = None

    def factor_shapes(self, n, D):  # noqa: N803
        return []

    def calculate_l(self, n, D):  # noqa: N803
        return 0


@RECONCILIATIONS.register("constant")
class Constant(_Fixed):
    """W = c·1_{n×D} (l = 0)."""

    def __init__(self, c: float = 1.0) -> None:
        super().__init__()
        if isinstance(c, bool) or not isinstance(c, numbers.Real):
            raise ConfigurationError(f"Constant: c must be a number, got {c!r}")
        self.c = float(c)

    def hparams(self) -> dict[str, Any]:
        return {"c": self.c}

    def form(self):
        return forms.Fixed("constant", self.c)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        return torch.full((n, D), self.c, dtype=w.dtype, device=w.device)

    def apply(self, kx, w, n, D):  # noqa: N803
        return (self.c * kx.sum(dim=1, keepdim=True)).expand(-1, n)

    def describe_apply(self, n, D):  # noqa: N803
        return "constant: c × row sums of κ(x), no matrix"


@RECONCILIATIONS.register("zero")
class Zero(_Fixed):
    """W = 0 (l = 0)."""

    def form(self):
        return forms.Fixed("zero")

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        return torch.zeros(n, D, dtype=w.dtype, device=w.device)

    def apply(self, kx, w, n, D):  # noqa: N803
        return kx.new_zeros(kx.shape[0], n) + 0.0 * kx.sum()

    def describe_apply(self, n, D):  # noqa: N803
        return "zero: returns zeros"


@RECONCILIATIONS.register("one")
class One(_Fixed):
    """W = 1_{n×D} (l = 0)."""

    def form(self):
        return forms.Fixed("constant", 1.0)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        return torch.ones(n, D, dtype=w.dtype, device=w.device)

    def apply(self, kx, w, n, D):  # noqa: N803
        return kx.sum(dim=1, keepdim=True).expand(-1, n)

    def describe_apply(self, n, D):  # noqa: N803
        return "one: row sums of κ(x), no matrix"


@RECONCILIATIONS.register("constant_eye")
class ConstantEye(_Fixed):
    """W = I_{n×D} (ones on the main diagonal; l = 0)."""

    def form(self):
        return forms.Fixed("eye")

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        return torch.eye(n, D, dtype=w.dtype, device=w.device)

    def apply(self, kx, w, n, D):  # noqa: N803
        k = min(n, D)
        out = kx[:, :k]
        if n > k:
            out = torch.cat([out, kx.new_zeros(kx.shape[0], n - k)], dim=1)
        return out

    def describe_apply(self, n, D):  # noqa: N803
        return "constant_eye: copies the first min(n, D) features"
