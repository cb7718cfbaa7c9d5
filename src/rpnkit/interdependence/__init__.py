"""Data interdependence functions ξ (RPN 2), registered by name in ``INTERDEPENDENCES``.

Families: ``identity``; ``graph`` / ``graph_pagerank`` (sparse normalised adjacency,
multi-hop, personalised PageRank); ``grid`` (image patches, cuboid / cylinder / sphere);
``chain`` (sequence neighbours); ``kernel`` (linear, polynomial, RBF, cosine between
instances or attributes); ``attention`` (bilinear low-rank form, softmax) and
``parameterised`` (A from any reconciliation); numerical kernels (``tanh``,
``exponential``, ``minkowski``, ``manhattan``, ``euclidean``, ``chebyshev``, ``canberra``,
``laplacian``, ``anisotropic_rbf``) and statistical kernels (``kl_divergence``,
``pearson``, ``rv_coefficient``, ``mutual_information``) computed from X; ``hybrid``
(graph-masked bilinear attention). Heads and layers that apply them:
:class:`InterdependentHead`, :class:`InterdependentLayer`.
"""

from __future__ import annotations

from typing import Any

from ..registry import INTERDEPENDENCES
from .base import Interdependence
from .basic import IdentityInterdependence
from .graph import GraphInterdependence, PageRankInterdependence, normalised_edges
from .grid import GridInterdependence
from .head import InterdependentHead, InterdependentLayer
from .hybrid import HybridInterdependence
from .kernel import KernelInterdependence, PairwiseInterdependence
from .numerical import (
    AnisotropicRBFInterdependence,
    CanberraInterdependence,
    ChebyshevInterdependence,
    EuclideanInterdependence,
    ExponentialInterdependence,
    LaplacianInterdependence,
    ManhattanInterdependence,
    MinkowskiInterdependence,
    TanhInterdependence,
)
from .parametric import ParameterisedInterdependence
from .sequence import AttentionInterdependence, ChainInterdependence
from .statistical import (
    KLDivergenceInterdependence,
    MutualInformationInterdependence,
    PearsonInterdependence,
    RVCoefficientInterdependence,
)

__all__ = [
    "INTERDEPENDENCES",
    "Interdependence",
    "IdentityInterdependence",
    "GraphInterdependence",
    "PageRankInterdependence",
    "GridInterdependence",
    "ChainInterdependence",
    "AttentionInterdependence",
    "KernelInterdependence",
    "ParameterisedInterdependence",
    "PairwiseInterdependence",
    "TanhInterdependence",
    "ExponentialInterdependence",
    "MinkowskiInterdependence",
    "ManhattanInterdependence",
    "EuclideanInterdependence",
    "ChebyshevInterdependence",
    "CanberraInterdependence",
    "LaplacianInterdependence",
    "AnisotropicRBFInterdependence",
    "KLDivergenceInterdependence",
    "PearsonInterdependence",
    "RVCoefficientInterdependence",
    "MutualInformationInterdependence",
    "HybridInterdependence",
    "InterdependentHead",
    "InterdependentLayer",
    "build_interdependence",
    "normalised_edges",
]


def build_interdependence(name: str, **params: Any) -> Interdependence:
    """Build a registered interdependence by name, e.g. ``build_interdependence("chain", length=8)``."""
    return INTERDEPENDENCES.build(name, **params)
