"""Initialisation of RPN parameter vectors (SPEC §5).

The goal is that the *reconciled* matrix W = ψ(w) has the scale a dense layer
with fan-in D would get, whatever ψ is:

* ``default`` – W ~ uniform(±1/√D) in scale (what ``nn.Linear`` gives a D-input layer);
* ``xavier_uniform`` – bound √(6/(n+D));  ``xavier_normal`` – std √(2/(n+D));
* ``kaiming_uniform`` – bound √(6/D) (ReLU gain); ``kaiming_normal`` – std √(2/D);
* ``zeros`` – all parameters zero (useful for residual-style fine-tuning).

The degree k of W in w (:func:`init_homogeneity`) is read off the algebraic form the
reconciliation declares (:mod:`rpnkit.reconciliation.forms`: dense 1, low rank F_l F_rᵀ 2,
Kronecker A ⊗ B the degrees of A and B added – hm 2, lphm 3, dual_lphm 4, duplicated
padding 1), so a user class that declares a form gets the right scale; a class's own
``homogeneity`` attribute decides when it is declared at least as specifically as the form
(e.g. ``None`` for a hypernetwork, whose W is not homogeneous in w).

For reconciliations that are linear in w (identity, masking, duplicated
padding) w is drawn directly from the named distribution (masking: scaled by
1/√p, the kept weights' effective fan-in being p·D, so that W's RMS is the
dense layer's). For forms that are
homogeneous of degree k in w (lorr and random matrix adaption: 2, hm: 2,
lphm: 3, dual_lphm: 4) w is drawn from the same family with unit scale, the
realised root-mean-square of W is measured, and w is multiplied by
(target_rms / rms)^(1/k) so that the realised W has exactly the target RMS.
The scale therefore depends on the fan-in D only, never on the parameter count.
The RMS comes from ``psi.frobenius_sq``, which factorised forms evaluate from their
factors (‖A ⊗ B‖ = ‖A‖‖B‖, ‖A Bᵀ‖² = Σ (AᵀA) ⊙ (BᵀB)), so ψ(w) is never built.
Hypernet codes are drawn uniform(±1).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import ConfigurationError, UnknownNameError, did_you_mean
from .reconciliation.base import Reconciliation
from .reconciliation.forms import form_of

__all__ = ["INIT_SCHEMES", "target_scale", "init_rpn_weights", "init_homogeneity"]

INIT_SCHEMES = (
    "default",
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "zeros",
)


def target_scale(scheme: str, n: int, D: int) -> tuple[str, float]:  # noqa: N803
    """Return (family, std) for ``scheme``: family is 'uniform' or 'normal'."""
    if scheme == "default":
        return "uniform", 1.0 / math.sqrt(3 * D)
    if scheme == "xavier_uniform":
        return "uniform", math.sqrt(6.0 / (n + D)) / math.sqrt(3)
    if scheme == "xavier_normal":
        return "normal", math.sqrt(2.0 / (n + D))
    if scheme == "kaiming_uniform":
        return "uniform", math.sqrt(6.0 / D) / math.sqrt(3)
    if scheme == "kaiming_normal":
        return "normal", math.sqrt(2.0 / D)
    if scheme == "zeros":
        return "zeros", 0.0
    raise UnknownNameError(
        f"unknown init scheme {scheme!r}{did_you_mean(scheme, INIT_SCHEMES)}; "
        f"valid: {', '.join(INIT_SCHEMES)}"
    )


def _owner(cls: type, name: str) -> type | None:
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def init_homogeneity(psi: Reconciliation) -> int | None:
    """Degree k of W = ψ(w) in w used by the initialisation (None: not homogeneous).

    The declared form decides (``form_of(psi).degree``) unless the class states
    ``homogeneity`` itself at least as specifically as it states its form (an instance
    attribute, or a class at or below the one defining ``form``); opaque forms fall back to
    ``psi.homogeneity``.
    """
    if "homogeneity" in vars(psi):
        return psi.homogeneity
    degree = form_of(psi).degree
    if degree is None:
        return psi.homogeneity
    h_cls = _owner(type(psi), "homogeneity")
    if h_cls is None or h_cls is Reconciliation:  # only the base class's default
        return degree
    f_cls = _owner(type(psi), "form")
    if f_cls is None or issubclass(h_cls, f_cls):
        return psi.homogeneity
    return degree


def _draw(family: str, shape: tuple[int, ...], std: float, like: Tensor) -> Tensor:
    if family == "uniform":
        bound = std * math.sqrt(3)
        return torch.empty(shape, dtype=like.dtype, device=like.device).uniform_(-bound, bound)
    if family == "normal":
        return torch.empty(shape, dtype=like.dtype, device=like.device).normal_(0.0, std)
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


@torch.no_grad()
def init_rpn_weights(w: Tensor, psi: Reconciliation, n: int, D: int, scheme: str = "default") -> None:  # noqa: N803
    """Initialise ``w`` (channels, l) in place so that ψ(w_c) has the scheme's scale."""
    if not isinstance(scheme, str):
        raise ConfigurationError(f"init scheme must be a name, got {scheme!r}")
    family, std = target_scale(scheme, n, D)
    channels, ell = w.shape
    if ell == 0 or w.is_meta:  # nothing to draw (meta tensors hold no values)
        return
    if family == "zeros":
        w.zero_()
        return
    k = init_homogeneity(psi)
    if k is None:
        w.copy_(_draw("uniform", (channels, ell), 1.0 / math.sqrt(3), w))
        return
    if k == 1:
        w.copy_(_draw(family, (channels, ell), std * psi.init_gain(), w))
        return
    for c in range(channels):
        wc = _draw(family, (ell,), 1.0, w)
        rms = math.sqrt(psi.frobenius_sq(wc, n, D).item() / (n * D))
        if rms > 0 and math.isfinite(rms):
            wc = wc * (std / rms) ** (1.0 / k)
        w[c].copy_(wc)
