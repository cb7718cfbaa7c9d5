"""How an expansion lays out its output κ(x): a list of :class:`Segment` s.

An expansion declares its layout once (:meth:`Expansion.layout`) and hands the tensors the
segments are made of to the head (:meth:`Expansion.segment_inputs`). The contraction
(:mod:`rpnkit.contract`) combines the layout with the reconciliation's algebraic form; it
never needs to know which expansion produced a segment.

Kinds of segment (consecutive column ranges of κ(x), in order):

``dense``
    ``width`` columns that are materialised; the input tensor *is* the (B, width) block.
``power``
    the ordered tensor power ``lead ⊗ z^{⊗(k-1)}`` of a base z (B, m), width
    ``m_lead · m^{k-1}``; ``lead`` is z, or ``[1; z]`` when ``tilde`` (then ``lead ⊗ z``
    is ``[z | z⊗z]``: Taylor's degrees 1 and 2 together). The input tensor is z.
``sympower``
    the unique degree-k monomials of z (non-decreasing index tuples, lexicographic), width
    ``C(m+k-1, k)``. The input tensor is z.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

__all__ = ["Segment", "dense", "power", "sympower", "monomial_indices", "segment_monomials"]

KINDS = ("dense", "power", "sympower")


@dataclass(frozen=True)
class Segment:
    """A column range of κ(x) and how it is built (see the module docstring)."""

    kind: str
    width: int
    m: int = 0
    k: int = 1
    tilde: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"segment kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def m_lead(self) -> int:
        return self.m + 1 if self.tilde else self.m

    @property
    def structured(self) -> bool:
        return self.kind != "dense"


def dense(width: int, label: str = "") -> Segment:
    return Segment("dense", int(width), label=label)


def power(m: int, k: int, tilde: bool = False, label: str = "") -> Segment:
    m, k = int(m), int(k)
    width = (m + 1 if tilde else m) * m ** (k - 1)
    return Segment("power", width, m=m, k=k, tilde=bool(tilde), label=label or f"x^⊗{k}")


def sympower(m: int, k: int, label: str = "") -> Segment:
    m, k = int(m), int(k)
    return Segment("sympower", math.comb(m + k - 1, k), m=m, k=k, label=label or f"sym(x^{k})")


def monomial_indices(m: int, k: int) -> torch.Tensor:
    """Index tuples i_1 <= ... <= i_k (lexicographic), shape (C(m+k-1, k), k), long, on CPU.

    Computed once per (m, k) when a component binds its sizes, never in ``forward``.
    """
    m, k = int(m), int(k)
    if k == 1:
        return torch.arange(m, dtype=torch.long).reshape(m, 1)
    if k == 2:  # the upper triangle row by row is the lexicographic order (no Python tuples)
        return torch.triu_indices(m, m, dtype=torch.long).t().contiguous()
    rows = list(itertools.combinations_with_replacement(range(m), k))
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), k)


def segment_monomials(seg: Segment) -> list[tuple[int, ...]]:
    """The input indices multiplied in each column of a ``power`` / ``sympower`` segment, in
    column order (an index repeats for a higher power; ``()`` for the constant of a tilde
    lead). Small widths only (inspection, pruning)."""
    if seg.kind == "power":
        lead = [()] + [(i,) for i in range(seg.m)] if seg.tilde else [(i,) for i in range(seg.m)]
        tails: list[tuple[int, ...]] = [()]
        for _ in range(seg.k - 1):
            tails = [t + (i,) for t in tails for i in range(seg.m)]
        return [a + t for a in lead for t in tails]
    if seg.kind == "sympower":
        return [tuple(r) for r in itertools.combinations_with_replacement(range(seg.m), seg.k)]
    raise ValueError(f"segment_monomials: a {seg.kind!r} segment has no declared monomials")
