"""Base class of data interdependence functions ξ (RPN 2).

An interdependence describes how the attributes of one instance, or the instances of one
input, depend on each other, as a matrix A applied around the expansion κ::

    attribute level   ξ(X) = X A          A ∈ R^{m × m'}  (acts on the last dimension)
    instance level    ξ(X) = A X          A ∈ R^{b' × b}  (acts on dimension -2: the nodes of
                                                          a graph, the tokens of a sequence)

A head then computes g = ⟨κ(ξ(X)), ψ(w)⟩ + π(X) (:class:`~rpnkit.interdependence.InterdependentHead`).

Every ξ declares:

* its shape rule, ``calculate_m(m)`` (attribute width after ξ) and ``sites(m)`` (how many
  positions one sample becomes: 1 for plain attribute ξ, the number of patches for grids);
* its structured ``form()``: ``"identity"``, ``"sparse"`` (edge tables, never a dense N×N),
  ``"patch"`` (unfold / conv-style), ``"banded"``, ``"dense"`` (small matrices only),
  ``"data"`` (A is computed from X: kernels, attention), ``"parameterised"``;
* ``left_multiplies``: ξ(X) = A(X) X with A acting on dimension -2, so that for a linear
  κ, ⟨ξ(X), W⟩ = A(X) ⟨X, W⟩ and the head may apply A after the (narrower) product;
* ``matrix(...)``: the dense A, the definition used by the tests (small sizes only).

Index tables, normalised adjacency values and masks are non-persistent buffers built at
construction, so ``.to()``, ``.double()``, ``state_dict`` and ``torch.compile`` need no
special case; ``forward`` is straight tensor code.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..structure import InterdependenceStructure

__all__ = ["Interdependence", "check_positive_int", "check_choice"]


def check_positive_int(name: str, value: Any, owner: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigurationError(
            f"{owner}: {name} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def check_choice(name: str, value: Any, choices: tuple[str, ...], owner: str) -> str:
    if value not in choices:
        raise ConfigurationError(
            f"{owner}: {name} must be one of {', '.join(choices)}; got {value!r}"
        )
    return value


class Interdependence(nn.Module):
    """ξ: a matrix describing attribute or instance interdependence (see module docstring)."""

    #: "attribute" (acts on the last dimension) or "instance" (acts on dimension -2)
    level: str = "attribute"
    #: ξ(X) = A(X) X along dimension -2 (instance level), see the module docstring
    left_multiplies: bool = False
    registry_name: str = "interdependence"

    def __init__(self) -> None:
        super().__init__()
        self.m: int | None = None

    # -- shape rules ---------------------------------------------------------
    def calculate_m(self, m: int) -> int:
        """Attribute width after ξ (default: unchanged)."""
        return m

    def sites(self, m: int) -> int:
        """Positions one sample becomes after ξ (default 1; patches for grids)."""
        return 1

    def bind(self, m: int, **factory: Any) -> None:
        """Bind the input width m (tables that depend on it are built here)."""
        self.m = int(m)

    def form(self) -> str:
        return "dense"

    #: ξ's A depends on, or mixes, the positions along dimension -2 (instances, tokens)
    couples_rows: bool = False
    #: the rows of a 2-D input are the instances ξ relates (one graph's nodes): declared
    #: transductive, so a (N, m) input is the whole graph, not a batch of samples
    transductive: bool = False

    def structure(self, m: int | None = None) -> InterdependenceStructure:
        """ξ's declaration (:class:`~rpnkit.structure.InterdependenceStructure`): its side,
        sites, output width, whether it couples the rows along dimension -2 and whether a
        2-D input is its whole (transductive) instance set."""
        from ..structure import InterdependenceStructure

        m = self.m if m is None else int(m)
        if m is None:
            raise ConfigurationError(f"{type(self).__name__}.structure(): bind(m) it first")
        couples = bool(self.couples_rows)
        return InterdependenceStructure(
            self.registry_name, int(m), int(self.calculate_m(m)),
            "left" if self.left_multiplies else "right", int(self.sites(m)), couples,
            bool(self.transductive), self.form(), 2 if self.transductive or not couples else 3)

    # -- evaluation ------------------------------------------------------------
    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        """A(x) z along dimension -2 (only for ``left_multiplies`` ξ)."""
        raise NotImplementedError(f"{type(self).__name__} does not act by left multiplication")

    def forward(self, x: Tensor) -> Tensor:
        if self.left_multiplies:
            return self.mix(x, x)
        raise NotImplementedError

    def matrix(self, x: Tensor | None = None) -> Tensor:
        """Dense A (the definition; small sizes only)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"level={self.level}, form={self.form()}"
