"""Random-matrix hypernetwork reconciliation: a hypernetwork whose layers are fixed
low-rank random matrices (the reference toolkit's ``random_matrix_hypernet``)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ..registry import RECONCILIATIONS
from . import forms
from .base import Reconciliation, check_int

__all__ = ["RandomMatrixHyperNet"]

_NAMES = ("P", "Q", "S", "T")


@RECONCILIATIONS.register("random_matrix_hypernet")
class RandomMatrixHyperNet(Reconciliation):
    """W = reshape(σ(w P Qᵀ) S Tᵀ, n×D); P l×r, Q h×r, S h×r, T nD×r fixed seeded buffers.

    w ∈ R^l is the learnable code (l = ``l``, independent of n and D); h = ``hidden``. The
    random matrices are drawn once, when the component is bound to (n, D), from its ``seed``
    (else the head's): P, Q, S standard normal and T normal with standard deviation
    √(2 / (3·D·r·h)), so that W starts at the RMS 1/√(3D) of a D-input ``nn.Linear`` for
    codes drawn uniform(±1) (``reference_scale=True``: T standard normal, as the reference,
    whose W is then of order √(r·h)). W = Σ_k h_k T_k, a combination of r fixed n×D
    matrices with weights h = σ(w P Qᵀ) S. Memory: (l + 2h + nD)·r numbers of fixed state.
    """

    homogeneity = None

    def __init__(self, r: int = 2, l: int = 64, hidden: int = 128,  # noqa: E741
                 seed: int | None = None, reference_scale: bool = False) -> None:
        super().__init__()
        owner = "RandomMatrixHyperNet"
        self.r = check_int("r", r, owner)
        self.l = check_int("l", l, owner)
        self.hidden = check_int("hidden", hidden, owner)
        self.seed = None if seed is None else int(seed)
        self.reference_scale = bool(reference_scale)
        for name in _NAMES:
            self.register_buffer(name, None)

    def hparams(self) -> dict[str, Any]:
        return {"r": self.r, "l": self.l, "hidden": self.hidden, "seed": self.seed,
                "reference_scale": self.reference_scale}

    def form(self):
        return forms.Dense()

    def calculate_l(self, n, D):  # noqa: N803
        return self.l

    def state_numel(self, n, D):  # noqa: N803
        return (self.l + 2 * self.hidden + int(n) * int(D)) * self.r

    def _shapes(self, n: int, D: int) -> list[tuple[int, int]]:  # noqa: N803
        return [(self.l, self.r), (self.hidden, self.r), (self.hidden, self.r),
                (int(n) * int(D), self.r)]

    def _draw(self, device: Any, dtype: torch.dtype) -> None:
        shapes = self._shapes(self.n, self.D)
        if device is not None and torch.device(device).type == "meta":
            for name, shape in zip(_NAMES, shapes):
                setattr(self, name, torch.empty(shape, device=device, dtype=dtype))
            return
        g = self.generator()
        t_std = 1.0 if self.reference_scale else math.sqrt(2.0 / (3.0 * self.D * self.r * self.hidden))
        for name, shape in zip(_NAMES, shapes):
            value = torch.randn(shape, generator=g, dtype=torch.float64)
            if name == "T":
                value = value * t_std
            setattr(self, name, value.to(device=device, dtype=dtype))

    def bind(self, n, D):  # noqa: N803
        super().bind(n, D)
        if self.T is None or tuple(self.T.shape) != (int(n) * int(D), self.r):
            self._draw(self.factory_kwargs.get("device"),
                       self.factory_kwargs.get("dtype") or torch.get_default_dtype())

    def reset_parameters(self) -> None:
        """Redraw the random matrices from the seed, where they are (meta init, to_empty)."""
        if self.T is not None and self.n is not None:
            self._draw(self.T.device, self.T.dtype)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.T is None and all(prefix + k in state_dict for k in _NAMES):
            for name in _NAMES:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def ensure_bound(self, n, D):  # noqa: N803
        # loaded from a state dict into an unbound instance: T's rows fix n·D
        if self.n is None and self.T is not None and self.T.shape[0] == int(n) * int(D):
            self.n, self.D = int(n), int(D)
        super().ensure_bound(n, D)

    def code_weights(self, w):
        """h = σ(w P Qᵀ) S ∈ R^r, the weights of the r fixed matrices."""
        p, q, s = (getattr(self, k).to(device=w.device, dtype=w.dtype) for k in _NAMES[:3])
        return torch.sigmoid((w @ p) @ q.transpose(0, 1)) @ s

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        self.ensure_bound(n, D)
        t = self.T.to(device=w.device, dtype=w.dtype)
        return (t @ self.code_weights(w)).reshape(n, D)

    def describe_apply(self, n, D):  # noqa: N803
        return (f"random_matrix_hypernet: W = Σ_k h_k T_k (r = {self.r} fixed n×D matrices), "
                f"then one GEMM")
