"""Base class of data expansion functions κ: R^m -> R^D."""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..modules import apply_list, bind_module_list, build_module_list, compact_repr
from ..structure import BasisBlock, ExpansionStructure, elementwise_chain
from .layout import Segment, dense, segment_monomials

__all__ = ["Expansion", "check_positive_int"]


def check_positive_int(name: str, value: Any, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigurationError(
            f"{owner}: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def check_finite_number(name: str, value: Any, owner: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigurationError(f"{owner}: {name} must be a number, got {value!r}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{owner}: {name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ConfigurationError(f"{owner}: {name} must be > 0, got {value!r}")
    return value


class Expansion(nn.Module):
    """Data expansion κ(x) = post(expand(pre(x))), mapping (B, m) to (B, D).

    Subclasses implement :meth:`expand` and :meth:`calculate_D`. ``preprocess``
    and ``postprocess`` are (lists of) modules or module names; they are
    registered submodules, so they train, save, move and switch to eval mode
    with the expansion. Preprocessing must keep the width m.
    """

    registry_name = "expansion"
    #: True when the expansion has no learnable or size-dependent pieces besides pre/post.
    elementwise_width: int | None = None

    def __init__(self, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__()
        self.preprocess = build_module_list(preprocess)
        self.postprocess = build_module_list(postprocess)
        self.m: int | None = None

    # -- sizes -----------------------------------------------------------------
    def calculate_D(self, m: int) -> int:  # noqa: N802 - public contract name
        raise NotImplementedError

    def bind(self, m: int) -> None:
        """Bind to input width ``m``: creates size-dependent pre/post modules."""
        m = check_positive_int("m", m, type(self).__name__)
        if self.m is not None and self.m != m and self.has_processing():
            raise ConfigurationError(
                f"{type(self).__name__} has pre/post-processing bound to m={self.m}, cannot "
                f"rebind to m={m}; give each head its own expansion instance"
            )
        self.m = m
        bind_module_list(self.preprocess, m)
        bind_module_list(self.postprocess, self.calculate_D(m))
        self.bind_tables(m)

    def bind_tables(self, m: int) -> None:
        """Create index tables for width m as non-persistent buffers (override; see
        :meth:`table`). Called once by :meth:`bind`, i.e. when a head is built."""

    def table(self, name: str, m: int, make) -> Tensor:
        """Index table ``name`` for width ``m``: the buffer bound at construction when m is the
        bound width, else ``make(m)`` (a standalone call on a new width, eager only)."""
        if self.m == m and name in self._buffers:
            return self._buffers[name]
        return make(m)

    # -- evaluation ------------------------------------------------------------
    def expand(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(
                f"{type(self).__name__} expects a 2-D input (batch, m), got shape {tuple(x.shape)}"
            )
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype())
        if self.m is not None and x.shape[1] != self.m and self.has_processing():
            raise ValueError(
                f"{type(self).__name__} is bound to m={self.m} features, got input with "
                f"{x.shape[1]} (shape {tuple(x.shape)})"
            )
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.check_input(x)
        x = apply_list(self.preprocess, x)
        out = self.expand(x)
        return apply_list(self.postprocess, out)

    # -- structure ---------------------------------------------------------------
    def layout(self, m: int) -> list[Segment]:
        """The segments κ(x) is made of for input width ``m`` (see :mod:`.layout`).

        Post-processing acts on the whole output, so an expansion with post-processing is one
        dense segment; otherwise the class's :meth:`_layout` decides (default: one dense
        segment). Pre-processing keeps the width, so it never changes the layout.
        """
        if len(self.postprocess) > 0:
            return [dense(self.calculate_D(m), f"{self.registry_name} (postprocess: materialised)")]
        return self._layout(int(m))

    def segment_inputs(self, x: Tensor) -> list[Tensor]:
        """The tensors of :meth:`layout`'s segments for a batch x (B, m), in order.

        A dense segment's tensor is its (B, width) block; a power/sympower segment's tensor is
        its base z (B, m). Pre-processing runs once here.
        """
        if len(self.postprocess) > 0:
            return [self(x)]
        x = apply_list(self.preprocess, self.check_input(x))
        return self._segment_inputs(x)

    def fused_part(self, m: int, offset: int, total: int):
        """A :class:`~rpnkit.expansion.fused.FusedPart` writing κ(x) (input width ``m``) into
        columns ``[offset, offset + D)`` of a (B, total + 1) head buffer, or None (the
        default: the head keeps its planned contraction). Built once, with the head."""
        return None

    def _layout(self, m: int) -> list[Segment]:
        """Layout of the core expansion (no pre/post); override to expose structure."""
        return [dense(self.calculate_D(m), self.registry_name)]

    def _segment_inputs(self, z: Tensor) -> list[Tensor]:
        """Segment tensors of the core expansion for pre-processed input z."""
        return [self.expand(z)]

    # -- the declared Structure ---------------------------------------------------------
    def structure(self, m: int | None = None) -> ExpansionStructure:
        """Everything the library needs to know about κ at width ``m`` (default: the bound
        width), as one :class:`~rpnkit.structure.ExpansionStructure`: its segments, whether
        it is linear, which inputs each column depends on, the monomials of structured
        columns and its per-input basis blocks with their pre-processing chains and grids.

        A subclass declares its own structure through :meth:`_basis` (elementwise bases),
        :meth:`_is_linear`, :meth:`_columns` / :meth:`_grid`, or by overriding
        :meth:`_core_structure`; pre/post-processing is accounted for here.
        """
        if m is None:
            if self.m is None:
                raise ConfigurationError(
                    f"{type(self).__name__}.structure(): not bound to a width; pass m"
                )
            m = self.m
        m = int(m)
        D = int(self.calculate_D(m))
        segments = tuple(self.layout(m))
        linear, columns, monomials, bases = self._core_structure(m)
        pre = tuple(self.preprocess)
        if pre:
            linear = False
            monomials = None
            if not elementwise_chain(pre):
                columns = None
            bases = tuple(b.shifted(0, pre) for b in bases)
        if len(self.postprocess):
            linear = False
            monomials = None
            bases = tuple(b.shifted(None) for b in bases)  # post-processed: not columns
            if not elementwise_chain(self.postprocess):
                columns = None
        return ExpansionStructure(self.registry_name, m, D, segments, bool(linear),
                                  tuple(bases), columns, monomials)

    def _core_structure(self, m: int) -> tuple[bool, Any, Any, tuple]:
        """(linear, columns, monomials, bases) of the core expansion (no pre/post): columns
        and monomials as zero-argument callables (evaluated only when asked), or None."""
        D = int(self.calculate_D(m))
        basis = self._basis(m)
        if basis is not None:
            per_input, order = basis
            block = BasisBlock(0, m, int(per_input), order, self, (), self._grid())
            if block.width != D:
                raise ConfigurationError(
                    f"{type(self).__name__}: declared basis of {per_input} per input gives "
                    f"{block.width} columns, but calculate_D({m}) = {D}"
                )

            def columns():
                return [frozenset((block.input_of(c),)) for c in range(D)]

            return self._is_linear(), columns, lambda: [None] * D, (block,)
        layout = self._layout(m)
        if any(seg.kind == "dense" for seg in layout) and self._columns(m) is None:
            return self._is_linear(), None, None, ()

        def walk(want_monomials: bool) -> list:
            out: list = []
            dense_cols = None
            for seg in layout:
                if seg.kind == "dense":
                    if dense_cols is None:
                        dense_cols = self._columns(m)
                    out.extend([None] * seg.width if want_monomials
                               else dense_cols[len(out):len(out) + seg.width])
                    continue
                for row in segment_monomials(seg):
                    out.append(tuple(sorted(row)) if want_monomials else frozenset(row))
            return out

        return self._is_linear(), lambda: walk(False), lambda: walk(True), ()

    def _basis(self, m: int) -> tuple[int, str] | None:
        """(functions per input, ``"feature"`` or ``"block"`` order) for an elementwise
        expansion (every column a function of one input), else None (the default)."""
        return None

    def _grid(self) -> Tensor | None:
        """The grid tensor of the basis (knots, centres), if it has one."""
        return None

    def _is_linear(self) -> bool:
        """Whether the core expansion is a fixed linear map of its input (default False).

        Declared for the class that defines :meth:`expand`: a subclass that overrides
        ``expand`` must declare it again."""
        return False

    def _columns(self, m: int) -> list[frozenset] | None:
        """Per dense column, the set of inputs it depends on (non-elementwise expansions with
        a known dependence, e.g. feature subsets); None: unknown (every input)."""
        return None

    # -- grids (rpnkit.grid) ---------------------------------------------------------------
    def grid_layout(self) -> tuple[int, int] | None:
        """``(t, d)`` when the grid is a knot vector of t intervals with d extra knots on each
        side that :meth:`set_grid` may move to the data (B-splines), else None (default)."""
        return None

    def set_grid(self, grid: Tensor) -> None:
        """Overwrite the grid with ``grid`` (same shape) and re-derive what depends on it."""
        raise ConfigurationError(
            f"{type(self).__name__} has no adjustable grid (grid_layout() is None)"
        )

    # -- sizes, before anything is allocated -----------------------------------------------
    def table_numel(self, m: int) -> int:
        """Numbers in the index tables :meth:`bind_tables` creates for width m (default 0)."""
        return 0

    def safe_abs(self, dtype: torch.dtype) -> float | None:
        """Largest |x| this expansion maps to finite values in ``dtype`` (None: no limit known).

        Expansions that grow fast override it (hyperbolic: exp overflow; polynomials of degree
        d: |x|^d overflow); training warns once when its inputs leave this range.
        """
        return None

    def cheaper(self, m: int) -> list[tuple[str, int]]:
        """Cheaper settings of this expansion for width m, as (description, D) (default none);
        used in memory-budget messages (:mod:`rpnkit.budget`)."""
        return []

    def has_processing(self) -> bool:
        return len(self.preprocess) > 0 or len(self.postprocess) > 0

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def __repr__(self) -> str:
        return compact_repr(self)

    def hparams(self) -> dict[str, Any]:
        """Hyperparameters (for repr, configs and symbolic export)."""
        return {}

    # -- closed form -------------------------------------------------------------
    def sympy(self, xs: list[Any]) -> list[Any]:
        """κ as sympy expressions: the D expressions of κ(x) for input expressions ``xs``.

        Applies the pre-processing, the class's :meth:`_sympy`, then the post-processing
        (modules with a closed form, see :func:`rpnkit.modules.module_sympy`); the result is
        in κ's column order. A user expansion gets symbolic export by overriding
        :meth:`_sympy` (or this method, which then also owns pre/post-processing).

        Raises:
            NoClosedFormError: naming the expansion (or module) that has no closed form.
        """
        from ..modules import modules_sympy

        name = f"expansion {self.registry_name!r}"
        xs = modules_sympy(self.preprocess, xs, f"{name} preprocess")
        out = self._sympy(xs)
        return modules_sympy(self.postprocess, out, f"{name} postprocess")

    def _sympy(self, xs: list[Any]) -> list[Any]:
        """Closed form of the core expansion (no pre/post) for pre-processed ``xs``."""
        from ..errors import NoClosedFormError

        raise NoClosedFormError(
            f"expansion {self.registry_name!r} ({type(self).__name__}) has no closed form: "
            f"{type(self).__name__} defines no sympy form (override _sympy(xs) or sympy(xs))"
        )
