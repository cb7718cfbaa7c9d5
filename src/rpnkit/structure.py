"""What a component declares about itself: one typed Structure object per component.

Every component returns, once its sizes bind, a frozen Structure that says everything the
rest of the library needs to know about it. The contraction planner, the RPN 2 reordering,
:mod:`rpnkit.inspection` / :mod:`rpnkit.grid` / :mod:`rpnkit.pruning` / symbolic fitting,
initialisation, the memory budget and the text of ``plan()`` read only these objects:
nobody outside a component compares registry names, reads a component's private buffers or
probes it numerically to learn its structure (a test greps the library for that).

:class:`ExpansionStructure` (κ)
    ``D``; ``segments`` (the layout, :mod:`rpnkit.expansion.layout`); ``linear`` (κ(x) is a
    fixed linear map of x, so κ(A X) = A κ(X)); ``columns`` (for each of the D columns, the
    set of inputs it depends on; ``None`` when a post-processing or a mixing pre-processing
    couples them all); ``monomials`` (exponent vectors of structured columns, else None per
    column); ``bases`` (the per-input basis blocks of elementwise parts, each with its whole
    pre-processing chain and its grid).
:class:`ReconciliationStructure` (ψ)
    the algebraic ``form`` (:mod:`rpnkit.reconciliation.forms`), ``l``, ``factor_shapes``
    and the init ``homogeneity`` (the degree of W in w) derived from the form.
:class:`InterdependenceStructure` (ξ)
    ``side`` (``left``: A acts on dimension -2, the instances; ``right``: on the last
    dimension, the attributes), ``sites``, ``m_out``, ``couples_rows`` (A mixes positions
    along dimension -2, so a 2-D input's batch rows would be mixed), ``transductive``
    (the rows of a 2-D input *are* the instances, e.g. the nodes of one graph) and ``form``.
:class:`HeadStructure`
    the three (four) of them together with the planned path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from torch import Tensor, nn

__all__ = [
    "BasisBlock",
    "ExpansionStructure",
    "ReconciliationStructure",
    "InterdependenceStructure",
    "HeadStructure",
    "ELEMENTWISE_MODULES",
    "elementwise_chain",
    "form_homogeneity",
]

#: torch modules that act on each entry alone (pre-processing keeps inputs separate)
ELEMENTWISE_MODULES: tuple[type, ...] = (
    nn.Identity, nn.ReLU, nn.SiLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.ELU,
    nn.LeakyReLU, nn.Dropout, nn.Hardtanh, nn.ReLU6, nn.Mish, nn.Softsign, nn.Tanhshrink,
    nn.Hardsigmoid, nn.Hardswish, nn.CELU, nn.SELU, nn.LogSigmoid,
)


def elementwise_chain(modules: Any) -> bool:
    """Whether every module of ``modules`` acts entry by entry (declared by the module with an
    ``elementwise`` attribute, or one of torch's elementwise activations)."""
    for mod in modules:
        flag = getattr(mod, "elementwise", None)
        if flag is None:
            flag = isinstance(mod, ELEMENTWISE_MODULES)
        if not flag:
            return False
    return True


@dataclass(frozen=True, eq=False)
class BasisBlock:
    """A block of κ's columns made of one per-input basis of ``per_input`` functions.

    Columns ``offset .. offset + width`` (width = m · per_input); ``order`` is ``feature``
    (column offset + i·K + k is basis k of input i) or ``block`` (offset + k·m + i).
    ``offset`` is None when the block's values are not columns of the expansion that lists it
    (a post-processing acts on them, or a ``nested`` expansion feeds them to a later one);
    ``m`` is then the width the leaf sees, and the block still serves grid updates.
    ``leaf`` is the expansion that evaluates the basis, ``chain`` the modules applied from
    the head's input to the leaf's input (every enclosing pre-processing, then the leaf's
    own), ``grid`` the leaf's grid tensor (B-spline knots, RBF centres) or None.
    """

    offset: int | None
    m: int
    per_input: int
    order: str
    leaf: nn.Module
    chain: tuple[nn.Module, ...] = ()
    grid: Tensor | None = None

    @property
    def width(self) -> int:
        return self.m * self.per_input

    def column(self, i: int, k: int) -> int:
        """The column of κ holding basis k of input i."""
        if self.order == "feature":
            return self.offset + i * self.per_input + k
        return self.offset + k * self.m + i

    def columns_of(self, i: int) -> list[int]:
        return [self.column(i, k) for k in range(self.per_input)]

    def shifted(self, offset: int | None, chain: tuple[nn.Module, ...] = ()) -> BasisBlock:
        """This block inside an enclosing expansion: its columns start ``offset`` later (None:
        they are not columns of the enclosing expansion) and ``chain`` runs first."""
        start = None if offset is None or self.offset is None else self.offset + offset
        return BasisBlock(start, self.m, self.per_input, self.order, self.leaf,
                          tuple(chain) + self.chain, self.grid)

    def inputs(self, x: Tensor) -> Tensor:
        """The values the leaf's basis sees for the listing expansion's input x."""
        for mod in self.chain:
            x = mod(x)
        return x

    def input_of(self, column: int) -> int:
        c = column - self.offset
        return c // self.per_input if self.order == "feature" else c % self.m


@dataclass(frozen=True, eq=False)
class ExpansionStructure:
    """κ's declaration for input width ``m`` (see the module docstring).

    ``columns`` and ``monomials`` are computed on first access (D can be 10⁵–10⁶ for a
    Taylor expansion of an image; planners never need them, inspection does): ``columns[c]``
    is the frozenset of inputs column c depends on (``columns`` is None when a mixing
    pre/post-processing couples every column to every input), ``monomials[c]`` the sorted
    tuple of inputs multiplied in a structured column (an index repeats for a power; None
    for other columns).
    """

    name: str
    m: int
    D: int
    segments: tuple
    linear: bool = False
    bases: tuple[BasisBlock, ...] = ()
    columns_fn: Callable[[], Any] | None = field(default=None, repr=False)
    monomials_fn: Callable[[], Any] | None = field(default=None, repr=False)

    @cached_property
    def columns(self) -> tuple[frozenset, ...] | None:
        cols = None if self.columns_fn is None else self.columns_fn()
        if cols is not None and len(cols) != self.D:
            return None
        return None if cols is None else tuple(cols)

    @cached_property
    def monomials(self) -> tuple | None:
        mons = None if self.monomials_fn is None else self.monomials_fn()
        if mons is not None and len(mons) != self.D:
            return None
        return None if mons is None else tuple(mons)

    @property
    def elementwise(self) -> bool:
        """Every column depends on exactly one input (asked of the declaration, cheaply)."""
        if self.columns_fn is None:
            return False
        if sum(b.width for b in self.bases if b.offset is not None) == self.D:
            return True
        return self.columns is not None and all(len(c) == 1 for c in self.columns)

    def column_inputs(self) -> list[frozenset]:
        """Per column, the inputs it depends on (all of them where nothing is declared)."""
        if self.columns is None:
            return [frozenset(range(self.m))] * self.D
        return list(self.columns)


def form_homogeneity(form: Any) -> int | None:
    """Degree of W = ψ(w) in w, read off the declared algebraic form (``Form.degree``): dense
    1, low rank 2 (F_l F_rᵀ), Kronecker A ⊗ B the degrees of A and B added (a factor named by
    two indices is a product, by none the all-ones matrix), fixed 0, opaque None."""
    return form.degree


@dataclass(frozen=True, eq=False)
class ReconciliationStructure:
    """ψ's declaration for an (n, D) weight (see the module docstring)."""

    name: str
    n: int
    D: int
    l: int  # noqa: E741 - the paper's name
    form: Any
    factor_shapes: tuple | None = None
    #: the degree of W in w the initialisation uses (:func:`rpnkit.init.init_homogeneity`:
    #: the form's degree unless the class states its own); None: not homogeneous
    homogeneity: int | None = 1

    @property
    def kind(self) -> str:
        return self.form.kind


@dataclass(frozen=True, eq=False)
class InterdependenceStructure:
    """ξ's declaration for input width ``m`` (see the module docstring)."""

    name: str
    m: int
    m_out: int
    side: str = "right"
    sites: int = 1
    couples_rows: bool = False
    transductive: bool = False
    form: str = "dense"
    #: the minimal input rank ξ accepts: 3 for token/sequence ξ that needs (*, T, d)
    min_rank: int = 2


@dataclass(frozen=True, eq=False)
class HeadStructure:
    expansion: ExpansionStructure
    reconciliation: ReconciliationStructure
    interdependence: InterdependenceStructure | None = None
    path: str = ""
    extra: dict = field(default_factory=dict)
