"""Radial basis function and B-spline expansions (grid-based, feature-major)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from ._spline import RadialBasis, functorch_active, spline_tables, uniform_basis
from .base import Expansion, check_finite_number, check_positive_int
from .layout import Segment, dense

__all__ = ["GaussianRBF", "InverseQuadraticRBF", "BSpline"]


def _check_range(value: Any, owner: str) -> tuple[float, float]:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays, tensors
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigurationError(f"{owner}: range must be a pair (low, high), got {value!r}")
    lo = check_finite_number("range[0]", value[0], owner)
    hi = check_finite_number("range[1]", value[1], owner)
    if not lo < hi:
        raise ConfigurationError(f"{owner}: range must satisfy low < high, got ({lo}, {hi})")
    return lo, hi


class _RBF(Expansion):
    """exp-/quadratic-type bumps φ(ε(x_i - c_k)) on K centres linspace(low, high, K)."""

    def __init__(
        self,
        range: Sequence[float] = (-1.0, 1.0),  # noqa: A002 - SPEC parameter name
        K: int = 10,  # noqa: N803
        eps: float = 1.0,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.range = _check_range(range, owner)
        self.K = check_positive_int("K", K, owner)
        self.eps = check_finite_number("eps", eps, owner)
        centres = torch.linspace(self.range[0], self.range[1], self.K, dtype=torch.float64)
        self.register_buffer("centres", centres)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """After a cast, centres that are still the construction grid are re-rounded from
        float64 (a float32 → float64 round trip keeps no float32 rounding)."""
        old = self.centres.detach().clone()
        super()._apply(fn, recurse)
        c = self.centres
        if c.is_floating_point() and c.shape == old.shape:
            ref = torch.linspace(self.range[0], self.range[1], self.K, dtype=torch.float64)
            if torch.equal(old, ref.to(device=old.device, dtype=old.dtype)):
                with torch.no_grad():
                    c.copy_(ref.to(dtype=c.dtype))
        return self

    def hparams(self) -> dict[str, Any]:
        return {"range": self.range, "K": self.K, "eps": self.eps}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * self.K

    #: "gaussian" / "inverse_quadratic": φ has the analytic path (:class:`RadialBasis`);
    #: None: ``phi`` through autograd (subclasses with their own φ)
    _analytic: str | None = None

    def phi(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        c = self.centres  # cast once with the module (a head casts it to its dtype)
        if c.dtype != x.dtype or c.device != x.device:
            c = c.to(device=x.device, dtype=x.dtype)
        if (self._analytic is not None and type(self).phi is _ANALYTIC_PHI[self._analytic]
                and not functorch_active()):
            return RadialBasis.apply(x, c, self.eps, self._analytic == "gaussian")
        z = self.eps * (x.unsqueeze(-1) - c)
        return self.phi(z).flatten(1)

    def _sympy_z(self, xs: list[Any]) -> list[Any]:
        """ε(x_i - c_k) as sympy expressions, feature-major (the arguments of φ)."""
        from ..modules import float64_array, sympy_number

        eps = sympy_number(self.eps)
        centres = float64_array(self.centres)
        return [eps * (x - sympy_number(c)) for x in xs for c in centres]


@EXPANSIONS.register("gaussian_rbf")
class GaussianRBF(_RBF):
    """Gaussian RBF exp(-(ε(x_i - c_k))²), centres linspace(low, high, K) (D = mK)."""

    _analytic = "gaussian"

    def phi(self, z):
        return torch.exp(-(z * z))

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        return [sympy.exp(-(z**2)) for z in self._sympy_z(xs)]


@EXPANSIONS.register("inverse_quadratic_rbf")
class InverseQuadraticRBF(_RBF):
    """Inverse quadratic RBF 1/(1 + (ε(x_i - c_k))²) (D = mK)."""

    _analytic = "inverse_quadratic"

    def phi(self, z):
        return 1.0 / (1.0 + z * z)

    def _sympy(self, xs: list[Any]) -> list[Any]:
        return [1 / (1 + z**2) for z in self._sympy_z(xs)]


#: the φ each analytic kind stands for (a subclass overriding phi gets autograd instead)
_ANALYTIC_PHI = {"gaussian": GaussianRBF.phi, "inverse_quadratic": InverseQuadraticRBF.phi}

_SPLINE_TABLES = ("coef", "dcoef", "cols", "row0")


def _refresh_after_load(module: BSpline, incompatible_keys: Any) -> None:
    module.refresh()  # loaded knots may be non-uniform (a grid fitted to data)


@EXPANSIONS.register("bspline")
class BSpline(Expansion):
    """Degree-d B-spline basis on t uniform intervals of [low, high], d extra knots each side.

    Knots are ``low + j·h`` for ``j = -d .. t+d`` with ``h = (high - low)/t``; the
    Cox–de Boor recursion gives ``t + d`` bases per feature (feature-major, D = m(t+d)).
    Inside [low, high) the bases sum to one.

    The knots are the buffer ``knots`` (persistent, created in float64 and cast with the
    module, e.g. to the head's parameter dtype when a head is built). A head evaluates the
    basis locally (:meth:`local_basis`: only the d+1 non-zero bases per feature, with an
    analytic backward) while the knots are uniform; code that overwrites ``knots`` in place
    (grid adaptation) calls :meth:`refresh` afterwards, which re-checks uniformity and
    falls back to the Cox–de Boor definition for non-uniform knots. Loading a state dict
    refreshes automatically.
    """

    def __init__(
        self,
        range: Sequence[float] = (-1.0, 1.0),  # noqa: A002
        t: int = 5,
        d: int = 3,
        preprocess: Any = None,
        postprocess: Any = None,
    ) -> None:
        super().__init__(preprocess, postprocess)
        self.range = _check_range(range, "BSpline")
        self.t = check_positive_int("t", t, "BSpline")
        self.d = check_positive_int("d", d, "BSpline", minimum=0)
        lo, hi = self.range
        h = (hi - lo) / self.t
        j = torch.arange(-self.d, self.t + self.d + 1, dtype=torch.float64)
        self.register_buffer("knots", lo + j * h)
        self.uniform = True
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def default_knots(self, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """The construction grid ``low + j·h``, computed in float64 and rounded once."""
        lo, hi = self.range
        j = torch.arange(-self.d, self.t + self.d + 1, dtype=torch.float64)
        return (lo + j * ((hi - lo) / self.t)).to(device=device, dtype=dtype)

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """After a move or cast, rebuild the exact tables (and the construction grid, when the
        knots are still that grid) in the new dtype, so that float32 → float64 round trips do
        not keep float32 rounding of 1/6 or of the knots."""
        old = self.knots.detach().clone() if self.knots.is_floating_point() else None
        super()._apply(fn, recurse)
        k = self.knots
        if old is not None and k.is_floating_point() and k.dim() == 1 and \
                k.numel() == self.t + 2 * self.d + 1:
            grid = self.default_knots(k.dtype, k.device)
            ref = self.default_knots(old.dtype, old.device)
            if torch.equal(old, ref) and not torch.equal(k, grid):
                with torch.no_grad():
                    k.copy_(grid)
        if self.m is not None and "spline_coef" in self._buffers:
            for name, tab in spline_tables(self.m, self.t, self.d).items():
                want = k.dtype if tab.is_floating_point() else tab.dtype
                self._buffers[f"spline_{name}"] = tab.to(device=k.device, dtype=want)
        return self

    def refresh(self) -> None:
        """Recompute what is derived from the knot values: whether they are uniform (one host
        sync). Call it after writing ``knots`` in place; non-uniform knots make the head use
        the Cox–de Boor definition (:meth:`expand`) instead of the local uniform path."""
        k = self.knots.detach()
        if k.dim() != 1 or k.numel() < 2:
            self.uniform = False
            return
        gaps = (k[1:] - k[:-1]).double()
        h = float(gaps[0])
        # rounding of the knot values in their dtype, not a deliberate change of the grid
        tol = 64 * torch.finfo(k.dtype).eps * float(k.double().abs().max())
        self.uniform = bool(h > 0 and float((gaps - h).abs().max()) <= tol)

    def bind_tables(self, m: int) -> None:
        if self.d >= 1:  # column tables and coefficients of the local path, built once
            for name, tab in spline_tables(m, self.t, self.d).items():
                self.register_buffer(f"spline_{name}", tab, persistent=False)

    def table_numel(self, m: int) -> int:
        if self.d < 1:
            return 0
        return m * (self.t + 2 * self.d + 2) * (self.d + 1) + m

    def hparams(self) -> dict[str, Any]:
        return {"range": self.range, "t": self.t, "d": self.d}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * (self.t + self.d)

    def basis(self, x: Tensor) -> Tensor:
        """(B, m, t+d) basis values (the Cox–de Boor recursion, any non-decreasing knots)."""
        k = self.knots
        if k.dtype != x.dtype or k.device != x.device:
            k = k.to(device=x.device, dtype=x.dtype)
        xe = x.unsqueeze(-1)
        b = ((xe >= k[:-1]) & (xe < k[1:])).to(x.dtype)
        for p in range(1, self.d + 1):
            left = (xe - k[: -(p + 1)]) / (k[p:-1] - k[: -(p + 1)])
            right = (k[p + 1 :] - xe) / (k[p + 1 :] - k[1:-p])
            b = left * b[..., :-1] + right * b[..., 1:]
        return b

    def expand(self, x: Tensor) -> Tensor:
        return self.basis(x).flatten(1)

    def _layout(self, m: int) -> list[Segment]:
        if self.d >= 1:
            return [dense(self.calculate_D(m), "bspline (local, d+1 non-zeros)")]
        return [dense(self.calculate_D(m), "bspline")]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [self.local_basis(z) if self.d >= 1 and self.uniform else self.expand(z)]

    def _tables(self, x: Tensor) -> dict[str, Tensor]:
        m = x.shape[1]
        if self.m == m and "spline_coef" in self._buffers:
            tabs = {name: self._buffers[f"spline_{name}"] for name in _SPLINE_TABLES}
        else:  # a standalone call on an unbound width (eager only)
            tabs = spline_tables(m, self.t, self.d)
        out = {}
        for name, tab in tabs.items():
            want = x.dtype if tab.is_floating_point() else tab.dtype
            out[name] = tab if tab.dtype == want and tab.device == x.device else tab.to(
                device=x.device, dtype=want)
        return out

    def local_basis(self, x: Tensor) -> Tensor:
        """The same basis as :meth:`expand` (d >= 1, uniform knots), evaluated locally:
        (B, m·(t+d)).

        On knot interval j (u = (x − k₀)/h, j = ⌊u⌋, f = u − j) only the d+1 bases j−d … j
        are non-zero; their values are fixed polynomials of f (:mod:`._spline`): d products,
        one (B·m, d+1)×(d+1, d+1) product and one scatter, and a backward that touches only
        those d+1 entries per feature. Continuous at the knots for d >= 1, so it equals the
        recursion there too. A NaN or ±inf feature gives NaN in its block (the recursion gives
        NaN in all of its bases), so every product with it is NaN, as with the recursion.
        Knots that are not uniform (:meth:`refresh`) give :meth:`expand`.
        """
        if self.d < 1 or not self.uniform:
            return self.expand(x)
        k = self.knots
        if k.dtype != x.dtype or k.device != x.device:
            k = k.to(device=x.device, dtype=x.dtype)
        return uniform_basis(x, k, self._tables(x), self.t + self.d)
