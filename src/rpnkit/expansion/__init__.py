"""Data expansion functions κ (SPEC §2). Every class is registered by its SPEC name."""

from .base import Expansion
from .basic import Identity, Linear, Reciprocal
from .composite import Extended, Nested
from .geometric import CuboidPatch, CylinderPatch, SpherePatch
from .polynomial import Chebyshev, Hermite, Jacobi, Laguerre, Legendre, Taylor
from .probabilistic import (
    Combinatorial,
    CombinatorialNormal,
    NaiveCauchy,
    NaiveChi2,
    NaiveExponential,
    NaiveGamma,
    NaiveLaplace,
    NaiveNormal,
)
from .rbf import BSpline, GaussianRBF, InverseQuadraticRBF
from .recurrence_polynomial import Bessel, Fibonacci, Gegenbauer, Lucas, ReverseBessel
from .trigonometric import ArcHyperbolic, ArcTrigonometric, Fourier, Hyperbolic, Trigonometric
from .wavelet import (
    BetaWavelet,
    DoGWavelet,
    HaarWavelet,
    MeyerWavelet,
    RickerWavelet,
    ShannonWavelet,
)

__all__ = [
    "Expansion",
    "Identity",
    "Reciprocal",
    "Linear",
    "Taylor",
    "Fourier",
    "Trigonometric",
    "Hyperbolic",
    "ArcTrigonometric",
    "ArcHyperbolic",
    "GaussianRBF",
    "InverseQuadraticRBF",
    "BSpline",
    "Chebyshev",
    "Jacobi",
    "Legendre",
    "Hermite",
    "Laguerre",
    "Gegenbauer",
    "Bessel",
    "ReverseBessel",
    "Fibonacci",
    "Lucas",
    "MeyerWavelet",
    "RickerWavelet",
    "ShannonWavelet",
    "BetaWavelet",
    "HaarWavelet",
    "DoGWavelet",
    "CuboidPatch",
    "CylinderPatch",
    "SpherePatch",
    "NaiveNormal",
    "NaiveLaplace",
    "NaiveCauchy",
    "NaiveGamma",
    "NaiveExponential",
    "NaiveChi2",
    "Combinatorial",
    "CombinatorialNormal",
    "Nested",
    "Extended",
]
