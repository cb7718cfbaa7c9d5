"""Base class of parameter reconciliation functions ψ: R^l -> R^{n×D}."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from . import forms

if TYPE_CHECKING:
    from ..structure import ReconciliationStructure

__all__ = ["Reconciliation", "check_int", "divisors"]


def check_int(name: str, value: Any, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigurationError(f"{owner}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def divisors(k: int, limit: int = 40) -> list[int]:
    """Divisors of k in increasing order, found in O(√k); at most ``limit`` of them (the
    smallest and the largest), for error messages."""
    k = int(k)
    small, large = [], []
    i = 1
    while i * i <= k:
        if k % i == 0:
            small.append(i)
            if i != k // i:
                large.append(k // i)
        i += 1
    found = small + large[::-1]
    if len(found) > limit:
        found = found[: limit // 2] + found[-(limit // 2):]
    return found


class Reconciliation(nn.Module):
    """Parameter reconciliation ψ turning one channel's w ∈ R^l into W ∈ R^{n×D}.

    * :meth:`calculate_l` – number of learnable numbers per channel;
    * :meth:`reconcile` – the dense n×D matrix (the mathematical definition);
    * :meth:`apply` – ``kx @ reconcile(w).T`` computed in the cheapest exact way
      (factorised forms override it);
    * :meth:`bind` – create size-dependent state (masks, fixed random matrices,
      hypernetwork output layers); an :class:`~rpnkit.RPNHead` calls it at construction.
    """

    registry_name = "reconciliation"
    #: W is homogeneous of this degree in w (W(αw) = α^k W(w)); None when it is not.
    homogeneity: ClassVar[int | None] = 1

    def __init__(self) -> None:
        super().__init__()
        self.n: int | None = None
        self.D: int | None = None
        #: seed for size-dependent random state when the component has no ``seed`` of its
        #: own; set by the head before binding (drawn from torch's generator otherwise).
        self.bound_seed: int | None = None
        #: ``device`` / ``dtype`` for state created at binding (set by the head).
        self.factory_kwargs: dict[str, Any] = {}

    def hparams(self) -> dict[str, Any]:
        return {}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    # -- sizes ---------------------------------------------------------------
    def calculate_l(self, n: int, D: int) -> int:  # noqa: N803
        raise NotImplementedError

    def check_sizes(self, n: int, D: int) -> None:  # noqa: N803
        """Raise a ConfigurationError when (n, D) cannot be used; default accepts any."""
        check_int("n", n, type(self).__name__)
        check_int("D", D, type(self).__name__)

    def bind(self, n: int, D: int) -> None:  # noqa: N803
        """Bind to an (n, D) matrix, once; subclasses create size-dependent state here."""
        self.check_sizes(n, D)
        if self.n is not None and (self.n, self.D) != (n, D):
            raise ConfigurationError(
                f"{type(self).__name__} is already bound to n={self.n}, D={self.D}; cannot "
                f"rebind to n={n}, D={D}. Give each head its own reconciliation instance"
            )
        self.n, self.D = int(n), int(D)

    def generator(self) -> torch.Generator:
        """A CPU generator for size-dependent random state: the component's own ``seed`` if it
        has one, else the head's seed, else a seed drawn from torch's global generator."""
        seed = getattr(self, "seed", None)
        if seed is None:
            if self.bound_seed is None:
                self.bound_seed = int(torch.randint(0, 2**62, (1,)).item())
            seed = self.bound_seed
        return torch.Generator().manual_seed(int(seed))

    def ensure_bound(self, n: int, D: int) -> None:  # noqa: N803
        """Raise unless bound to (n, D): size-dependent state is never created lazily."""
        if self.n is None:
            raise ConfigurationError(
                f"{type(self).__name__} has size-dependent state that is created when it is "
                f"bound: build an RPNHead with it, or call .bind(n, D) once before "
                f"reconcile(w, n={n}, D={D})"
            )
        if (self.n, self.D) != (n, D):
            raise ValueError(
                f"{type(self).__name__} is bound to n={self.n}, D={self.D}, but was asked for "
                f"n={n}, D={D}; build a new instance for other sizes"
            )

    def check_w(self, w: Tensor, n: int, D: int) -> None:  # noqa: N803
        ell = self.calculate_l(n, D)
        if w.dim() != 1 or w.shape[0] != ell:
            raise ValueError(
                f"{type(self).__name__}: w must have shape ({ell},) for n={n}, D={D}, got "
                f"{tuple(w.shape)}"
            )

    def factor_shapes(self, n: int, D: int) -> list[tuple[int, ...]]:  # noqa: N803
        """Shapes of the pieces w is cut into, in order (SPEC §7 layout, row-major)."""
        raise NotImplementedError(f"{type(self).__name__} has no factorised layout")

    def state_numel(self, n: int, D: int) -> int:  # noqa: N803
        """Numbers of fixed state bound to (n, D) (masks, random matrices, hypernet layers);
        used to check the memory budget before binding. Default 0."""
        return 0

    def form(self) -> forms.Form:
        """The algebraic form of W (:mod:`.forms`); the contraction's fast path follows it.

        Default: :class:`~.forms.Opaque` (κ(x) is built and :meth:`apply` is used).
        """
        return forms.Opaque()

    def structure(self, n: int, D: int) -> ReconciliationStructure:  # noqa: N803
        """ψ's declaration for an (n, D) weight: its form, l, factor shapes and the init
        homogeneity derived from the form (:class:`~rpnkit.structure.ReconciliationStructure`)."""
        from ..init import init_homogeneity
        from ..structure import ReconciliationStructure

        form = forms.form_of(self)
        try:
            shapes = tuple(tuple(s) for s in self.factor_shapes(n, D))
        except NotImplementedError:
            shapes = None
        return ReconciliationStructure(self.registry_name, int(n), int(D),
                                       int(self.calculate_l(n, D)), form, shapes,
                                       init_homogeneity(self))

    def form_factors(self, w: Tensor, n: int, D: int) -> list[Tensor]:  # noqa: N803
        """The matrices the form's indices refer to; default: :meth:`factors`."""
        return self.factors(w, n, D)

    def factors(self, w: Tensor, n: int, D: int) -> list[Tensor]:  # noqa: N803
        """Cut w into its factors (one ``torch.split``, so the backward is one cat)."""
        self.check_w(w, n, D)
        shapes = self.factor_shapes(n, D)
        sizes = [math.prod(sh) for sh in shapes]
        return [p.reshape(sh) for p, sh in zip(torch.split(w, sizes), shapes)]

    # -- evaluation ------------------------------------------------------------
    def reconcile(self, w: Tensor, n: int, D: int) -> Tensor:  # noqa: N803
        raise NotImplementedError

    def apply(self, kx: Tensor, w: Tensor, n: int, D: int) -> Tensor:  # noqa: N803
        """``kx @ ψ(w).T`` for kx of shape (B, D); overridden by factorised forms."""
        return kx @ self.reconcile(w, n, D).transpose(0, 1).to(kx.dtype)

    def forward(self, w: Tensor, n: int, D: int) -> Tensor:  # noqa: N803
        return self.reconcile(w, n, D)

    def describe_apply(self, n: int, D: int) -> str:  # noqa: N803
        """One line saying how :meth:`apply` evaluates the product."""
        return "dense: materialise ψ(w) (n×D) and multiply"

    def frobenius_sq(self, w: Tensor, n: int, D: int) -> Tensor:  # noqa: N803
        """‖ψ(w)‖_F² (used by :mod:`rpnkit.init`); factorised forms never build ψ(w)."""
        return self.reconcile(w, n, D).pow(2).sum()

    def init_gain(self) -> float:
        """Factor on the initial scale of w for forms linear in w (see :mod:`rpnkit.init`)."""
        return 1.0
