"""Radial basis function and B-spline expansions (grid-based, feature-major)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from ..workspace import BlockPool
from ._spline import (
    autocast_off,
    centred_tables,
    fused_spline_dense,
    radial_basis,
    spline_scalars,
    spline_tables,
    uniform_basis,
)
from .base import Expansion, check_finite_number, check_positive_int
from .fused import FusedPart, columns
from .layout import Segment, dense

__all__ = ["GaussianRBF", "InverseQuadraticRBF", "BSpline", "MAX_GRID", "MAX_SPLINE_DEGREE"]

#: Most centres (RBF ``K``) or knot intervals (B-spline ``t``, KAN's ``grid``) per feature,
#: checked before any tensor is allocated. A million per feature is far beyond what any
#: data resolves; the head's memory budget then bounds m·K or m·(t + d) as a whole.
MAX_GRID = 1 << 20
#: Highest B-spline degree d: the local coefficients are exact rationals built in O(d³)
#: (0.1 s at d = 20), and beyond it the monomial form loses float precision.
MAX_SPLINE_DEGREE = 20


def _check_size(name: str, value: Any, owner: str, maximum: int, minimum: int = 1,
                what: str = "") -> int:
    """``check_positive_int`` with an upper bound, before anything is allocated."""
    value = check_positive_int(name, value, owner, minimum=minimum)
    if value > maximum:
        raise ConfigurationError(
            f"{owner}: {name}{what} must be at most {maximum:,}, got {value:,}"
        )
    return value


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
        self.K = _check_size("K", K, owner, MAX_GRID, what=" (centres per feature)")
        self.eps = check_finite_number("eps", eps, owner)
        # under a `with torch.device(...)` context (meta) the buffer is created there
        centres = torch.linspace(self.range[0], self.range[1], self.K, dtype=torch.float64)
        self.register_buffer("centres", centres)

    def default_centres(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """The construction grid linspace(low, high, K), in float64 on the CPU, rounded once."""
        lo, hi = self.range
        return torch.linspace(lo, hi, self.K, dtype=torch.float64, device="cpu").to(dtype)

    def _is_default(self, c: Tensor) -> bool:
        return (not c.is_meta and c.is_floating_point() and tuple(c.shape) == (self.K,)
                and torch.equal(c.cpu(), self.default_centres(c.dtype)))

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """After a cast, centres that are still the construction grid are re-rounded from
        float64 (a float32 → float64 round trip keeps no float32 rounding). Meta centres
        (meta-device construction) have no values: ``to_empty`` gets the construction grid."""
        old = self.centres
        rebuild = old.is_meta or self._is_default(old)
        super()._apply(fn, recurse)
        if rebuild:
            self._write_default()
        return self

    def _write_default(self) -> None:
        c = self.centres
        if c.is_floating_point() and not c.is_meta and tuple(c.shape) == (self.K,):
            with torch.no_grad():
                c.copy_(self.default_centres(c.dtype))

    def reset_parameters(self) -> None:
        """Write the construction centres linspace(low, high, K) into the ``centres`` buffer,
        in place (its device and dtype kept): after meta-device construction and
        ``to_empty()`` this makes the expansion equal to one built normally."""
        self._write_default()

    def hparams(self) -> dict[str, Any]:
        return {"range": self.range, "K": self.K, "eps": self.eps}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return int(m) * self.K

    def _basis(self, m: int) -> tuple[int, str]:
        return self.K, "feature"

    def _grid(self) -> Tensor:
        return self.centres

    #: "gaussian" / "inverse_quadratic": φ has the analytic path (:class:`RadialBasis`);
    #: None: ``phi`` through autograd (subclasses with their own φ)
    _analytic: str | None = None

    def phi(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def expand(self, x: Tensor) -> Tensor:
        if autocast_off(x):  # in the centres' dtype; the GEMM after it is autocast
            with torch.autocast(x.device.type, enabled=False):
                return self.expand(x.to(self.centres.dtype))
        c = self.centres  # cast once with the module (a head casts it to its dtype)
        if c.dtype != x.dtype or c.device != x.device:
            c = c.to(device=x.device, dtype=x.dtype)
        if self._analytic is not None and type(self).phi is _ANALYTIC_PHI[self._analytic]:
            return radial_basis(x, c, self.eps, self._analytic == "gaussian")
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

_SPLINE_TABLES = ("coef", "dcoef", "cols", "row0", "base")


def _refresh_after_load(module: BSpline, incompatible_keys: Any) -> None:
    # load_state_dict(assign=True) into a meta-built model: real knots, tables still meta
    module._materialise_tables()
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
        self.t = _check_size("t", t, "BSpline", MAX_GRID, what=" (knot intervals; KAN's grid)")
        self.d = _check_size("d", d, "BSpline", MAX_SPLINE_DEGREE, minimum=0, what=" (degree)")
        lo, hi = self.range
        h = (hi - lo) / self.t
        # under a `with torch.device(...)` context (meta) the buffer is created there
        j = torch.arange(-self.d, self.t + self.d + 1, dtype=torch.float64)
        self.register_buffer("knots", lo + j * h)
        self.uniform = True
        # the local path's dense block, reused across steps on the CPU (rpnkit.workspace)
        self._pool = BlockPool()
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def default_knots(self, dtype: torch.dtype = torch.float64, device: Any = None) -> Tensor:
        """The construction grid ``low + j·h``, computed in float64 on the CPU and rounded
        once, then moved to ``device``."""
        lo, hi = self.range
        j = torch.arange(-self.d, self.t + self.d + 1, dtype=torch.float64, device="cpu")
        return (lo + j * ((hi - lo) / self.t)).to(dtype).to(device)

    def _is_default(self, k: Tensor) -> bool:
        return (not k.is_meta and k.is_floating_point()
                and tuple(k.shape) == (self.t + 2 * self.d + 1,)
                and torch.equal(k.cpu(), self.default_knots(k.dtype)))

    def _apply(self, fn, recurse=True):  # noqa: ANN001 - nn.Module's signature
        """After a move or cast, rebuild the exact tables (and the construction grid, when the
        knots are still that grid) in the new dtype, so that float32 → float64 round trips do
        not keep float32 rounding of 1/6 or of the knots. Meta knots (meta-device
        construction) have no values: ``to_empty`` gets the construction grid."""
        old = self.knots
        rebuild = old.is_meta or self._is_default(old)
        super()._apply(fn, recurse)
        if self.__dict__.get("_pool") is not None:  # blocks of the old dtype or device
            self._pool.release()
        if self.knots.is_meta:
            return self
        if rebuild:
            self._write_default_knots()
        if self.m is not None and "spline_coef" in self._buffers:
            k = self.knots
            for name, tab in spline_tables(self.m, self.t, self.d).items():
                want = k.dtype if tab.is_floating_point() else tab.dtype
                self._buffers[f"spline_{name}"] = tab.to(dtype=want).to(k.device)
        return self

    def _write_default_knots(self) -> None:
        k = self.knots
        if k.is_floating_point() and not k.is_meta and \
                tuple(k.shape) == (self.t + 2 * self.d + 1,):
            with torch.no_grad():
                k.copy_(self.default_knots(k.dtype))
            self.uniform = True

    def _materialise_tables(self) -> None:
        """Tables still on meta while the knots are not (``load_state_dict(assign=True)``
        into a meta-built expansion): build them on the knots' device, in their dtype."""
        k = self.knots
        if k.is_meta or self.m is None or "spline_coef" not in self._buffers or \
                not self._buffers["spline_coef"].is_meta:
            return
        for name, tab in spline_tables(self.m, self.t, self.d).items():
            want = k.dtype if tab.is_floating_point() else tab.dtype
            self._buffers[f"spline_{name}"] = tab.to(dtype=want).to(k.device)

    def reset_parameters(self) -> None:
        """Recompute the buffers from the hyperparameters, in place (each keeps its device and
        dtype): the knots become the construction grid of ``range``, t and d (uniform: the
        local path), and the tables of the local path are rebuilt. After meta-device
        construction and ``to_empty()`` this makes the expansion equal to one built normally.
        """
        self._write_default_knots()
        if self.m is None or "spline_coef" not in self._buffers:
            return
        for name, tab in spline_tables(self.m, self.t, self.d).items():
            buf = self._buffers[f"spline_{name}"]
            if buf.is_meta:
                continue
            if tuple(buf.shape) == tuple(tab.shape):
                buf.copy_(tab)
            else:
                self._buffers[f"spline_{name}"] = tab.to(dtype=buf.dtype).to(buf.device)

    def refresh(self) -> None:
        """Recompute what is derived from the knot values: whether they are uniform (one host
        sync). Call it after writing ``knots`` in place; non-uniform knots make the head use
        the Cox–de Boor definition (:meth:`expand`) instead of the local uniform path. Meta
        knots have no values: nothing is derived."""
        k = self.knots.detach()
        if k.is_meta:
            return
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
            dev = self.knots.device  # meta when the expansion was built on meta
            for name, tab in spline_tables(m, self.t, self.d).items():
                self.register_buffer(f"spline_{name}", tab.to(dev), persistent=False)

    def table_numel(self, m: int) -> int:
        if self.d < 1:
            return 0
        return m * (self.t + 2 * self.d + 2) * (self.d + 1) + 2 * m

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
        if autocast_off(x):  # in the knots' dtype; the GEMM after it is autocast
            with torch.autocast(x.device.type, enabled=False):
                return self.basis(x.to(self.knots.dtype)).flatten(1)
        return self.basis(x).flatten(1)

    def _basis(self, m: int) -> tuple[int, str]:
        return self.t + self.d, "feature"

    def _grid(self) -> Tensor:
        return self.knots

    def grid_layout(self) -> tuple[int, int]:
        return self.t, self.d

    def set_grid(self, grid: Tensor) -> None:
        """Overwrite the knots in place (t + 2d + 1 values), set ``range`` to the inner knots
        and :meth:`refresh`."""
        if tuple(grid.shape) != tuple(self.knots.shape):
            raise ConfigurationError(f"BSpline.set_grid: expected {self.knots.numel()} knots "
                                     f"(t + 2d + 1), got shape {tuple(grid.shape)}")
        with torch.no_grad():
            self.knots.copy_(grid.to(device=self.knots.device, dtype=self.knots.dtype))
        self.range = (float(grid[self.d]), float(grid[self.d + self.t]))
        self.refresh()

    def _layout(self, m: int) -> list[Segment]:
        if self.d >= 1:
            return [dense(self.calculate_D(m), "bspline (local, d+1 non-zeros)")]
        return [dense(self.calculate_D(m), "bspline")]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        return [self.local_basis(z) if self.d >= 1 and self.uniform else self.expand(z)]

    def fused_part(self, m: int, offset: int, total: int) -> FusedPart | None:
        """The basis written densely into columns ``[offset, offset + m(t+d))`` of a fused
        head buffer (:mod:`.fused`, the centred cardinal form); None for d = 0 or with
        pre/post-processing."""
        if self.d < 1 or self.has_processing() or "spline_coef" not in self._buffers:
            return None
        return _BSplinePart(self, m, offset, total)

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
        are non-zero; their values are fixed polynomials of f (:mod:`._spline`): per local
        index k its (B, m) values from the powers of f and one scatter (columns computed
        arithmetically; entries outside the grid rewritten from a small table), and a
        backward that touches only those d+1 entries per feature. On the CPU the dense block
        is reused across steps once nothing uses it (:class:`~rpnkit.workspace.BlockPool`).
        Continuous at the knots for d >= 1, so it equals the recursion there too. A NaN or
        ±inf feature gives NaN in its block (in its d+1 local columns; the recursion gives NaN
        in all of its bases), so every product with it is NaN, as with the recursion.
        Knots that are not uniform (:meth:`refresh`) give :meth:`expand`.
        """
        if self.d < 1 or not self.uniform:
            return self.expand(x)
        if autocast_off(x):  # in the knots' dtype; the GEMM after it is autocast
            with torch.autocast(x.device.type, enabled=False):
                return self.local_basis(x.to(self.knots.dtype))
        k = self.knots
        if k.dtype != x.dtype or k.device != x.device:
            k = k.to(device=x.device, dtype=x.dtype)
        return uniform_basis(x, k, self._tables(x), self.t + self.d, self.__dict__.get("_pool"))


class _BSplinePart(FusedPart):
    """The B-spline basis written densely into a fused head buffer by the centred cardinal
    form (:func:`~rpnkit.expansion._spline.fused_spline_dense`: elementwise ops, no index
    tables, no scatter); the knots are read from the expansion on every call, so knots
    overwritten in place are followed (non-uniform knots: :meth:`available` is False)."""

    def __init__(self, exp: BSpline, m: int, offset: int, total: int) -> None:
        super().__init__(m, offset, exp.calculate_D(m), total)
        self.exp = (exp,)  # not a submodule: the head owns the expansion
        self.t, self.d = exp.t, exp.d
        self._build()

    def _build(self) -> None:
        k = self.exp[0].knots
        dtype = k.dtype if k.is_floating_point() else torch.get_default_dtype()
        self.register_buffer("centres", centred_tables(self.t, self.d)["centres"].to(dtype),
                             persistent=False)

    def available(self) -> bool:
        return self.exp[0].uniform

    def tensors(self) -> list[Tensor]:
        return [*super().tensors(), *self.exp[0].buffers(), *self.exp[0].parameters()]

    def fill(self, x: Tensor, out: Tensor, need_grad: bool):
        offsets, scale, scalars = self._tables()
        if offsets.dtype != x.dtype:  # (only if the expansion alone changed dtype)
            offsets, scalars = offsets.to(x.dtype), spline_scalars(self.d, x)
        return fused_spline_dense(x, offsets, scale, scalars, self.d, out, self.offset,
                                  need_grad)

    def _tables(self) -> tuple[Tensor, float, tuple]:
        """(−k₀/h − cᵢ, 1/h as a Python float, :func:`spline_scalars`): recomputed whenever
        the knots or the centres are replaced or written in place (their version counters
        move), so knots overwritten in place are followed without ops per call."""
        k, own = self.exp[0]._buffers["knots"], self._buffers
        c = own["centres"]
        memo = self.__dict__.get("_memo")
        if memo is None or memo[0] is not k or memo[1] is not c or memo[2] != (
                k._version, c._version):
            with torch.no_grad():
                scale = 1.0 / (k[1] - k[0])
                memo = (k, c, (k._version, c._version), -k[0] * scale - c.to(k.dtype),
                        1.0 if scale.is_meta else float(scale), spline_scalars(self.d, k))
            self.__dict__["_memo"] = memo
        return memo[3], memo[4], memo[5]

    def grad(self, state, gk: Tensor, out: Tensor, x: Tensor) -> Tensor:
        b, m = x.shape
        g = columns(gk, self.offset, m, self.width // m)
        return torch.linalg.vecdot(g, state)
