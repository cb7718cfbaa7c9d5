"""Algebraic forms a reconciliation ψ can declare (:meth:`Reconciliation.form`).

The form says what W = ψ(w) *is*, in terms of the pieces of w that
:meth:`Reconciliation.factor_shapes` declares (``form_factors(w, n, D)``, by default those
pieces themselves, in order). :mod:`rpnkit.contract` turns a form and an expansion's layout
into the cheapest exact product; it never looks at the reconciliation's class, so a subclass
inherits its parent's form and fast path, and a reconciliation written outside rpnkit gets a
fast path by declaring a form.

``Opaque``
    nothing known: κ(x) is built and ``reconcile``/``apply`` are used (the default).
``Dense``
    W = ``reconcile(w, n, D)`` is cheap to form (it is the parameter, or a small function
    of it) – identity, masking, hypernet.
``LowRank(left, right, flat)``
    W = F_left F_rightᵀ with F_left (n, r), F_right (D, r); ``flat``: w is [vec F_left,
    vec F_right] row-major (left = 0, right = 1), so the factors are views of w.
``Kronecker(p, q, a, b, flat)``
    W = A ⊗ B with A (p, q), B (n/p, D/q). ``a`` / ``b`` name the factors: ``()`` is all
    ones, ``(i,)`` is F_i itself, ``(i, j)`` is F_i F_jᵀ. ``flat``: w is [vec F_0, vec F_1,
    ...] row-major in ``factor_shapes`` order, so the factors are views of w.
``Fixed(kind, c)``
    a constant matrix with l = 0: ``"zero"``, ``"constant"`` (c·1), ``"eye"`` (I_{n×D}).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Form", "Opaque", "Dense", "LowRank", "Kronecker", "Fixed", "form_of"]


@dataclass(frozen=True)
class Form:
    """Base of the declared algebraic forms."""

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()

    @property
    def degree(self) -> int | None:
        """Degree of W = ψ(w) in w that the form implies (W(αw) = α^k W(w)), each factor
        being a piece of w; None when the form says nothing (opaque). Initialisation scales
        w by it (:func:`rpnkit.init.init_homogeneity`)."""
        return None


@dataclass(frozen=True)
class Opaque(Form):
    pass


@dataclass(frozen=True)
class Dense(Form):
    #: W is exactly ``w`` reshaped row-major to n×D (the identity reconciliation): w's entries
    #: are W's entries, so a least-squares refit may solve for W directly
    reshape: bool = False

    @property
    def degree(self) -> int:
        return 1


@dataclass(frozen=True)
class LowRank(Form):
    left: int = 0
    right: int = 1
    #: w is exactly [vec F_left, vec F_right] (row-major, nothing else): the factors are views
    #: of w, so a fused product may write w's gradient as one flat buffer (lorr)
    flat: bool = False

    @property
    def degree(self) -> int:
        return 2  # F_left F_rightᵀ: a product of two factors


@dataclass(frozen=True)
class Kronecker(Form):
    p: int
    q: int
    a: tuple[int, ...] = (0,)
    b: tuple[int, ...] = (1,)
    #: w is exactly [vec F_0, vec F_1, ...] (row-major, in factor order, nothing else): the
    #: factors are views of w, so the Kronecker product may write w's gradient as one buffer
    flat: bool = False

    @property
    def degree(self) -> int:
        # A ⊗ B: a factor named by two indices is a product (2), by one the factor (1), by
        # none the all-ones matrix (0)
        return len(self.a) + len(self.b)

    def __post_init__(self) -> None:
        for name, idx in (("a", self.a), ("b", self.b)):
            if len(idx) > 2 or (name == "b" and len(idx) == 0):
                raise ValueError(f"Kronecker form: bad factor indices {name}={idx}")


@dataclass(frozen=True)
class Fixed(Form):
    which: str = "zero"
    c: float = 1.0

    @property
    def degree(self) -> int:
        return 0

    def __post_init__(self) -> None:
        if self.which not in ("zero", "constant", "eye"):
            raise ValueError(f"Fixed form: which must be zero/constant/eye, got {self.which!r}")


_BY_NAME = {"opaque": Opaque, "dense": Dense, "lowrank": LowRank, "low_rank": LowRank}


def form_of(rec) -> Form:
    """The declared form of reconciliation ``rec``: ``rec.form()`` (or a ``form`` attribute
    holding a :class:`Form`, or one of the names ``"dense"``, ``"lowrank"``, ``"opaque"``;
    ``"kronecker"`` reads ``rec.p`` / ``rec.q`` and means W = F_0 ⊗ F_1)."""
    value = getattr(rec, "form", None)
    if callable(value) and not isinstance(value, Form):
        value = value()
    if value is None:
        return Opaque()
    if isinstance(value, Form):
        return value
    if isinstance(value, str):
        key = value.lower()
        if key in _BY_NAME:
            return _BY_NAME[key]()
        if key == "kronecker":
            return Kronecker(int(rec.p), int(rec.q))
    raise TypeError(
        f"{type(rec).__name__}.form must give an rpnkit.reconciliation.forms.Form (or one of "
        f"'dense', 'lowrank', 'kronecker', 'opaque'), got {value!r}"
    )
