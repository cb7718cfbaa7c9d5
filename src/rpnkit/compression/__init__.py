"""Compression functions κ: R^m -> R^d, d <= m (registry ``COMPRESSIONS``, :mod:`.base`).

Each is an :class:`~rpnkit.expansion.Expansion` (so a head takes it as its ``expansion``, by
instance or by name) that shrinks its input: ``pca``, ``random_projection``,
``feature_selection``, ``max_pooling``, ``mean_pooling``, ``naive_probabilistic`` and the
manifold methods ``isomap``, ``lle``, ``mds``, ``spectral`` (scikit-learn extra). Fitted ones
(:class:`FittedCompression`) learn their state with an explicit ``fit(x_train)``.
"""

from .base import Compression, FittedCompression
from .linear import PCA, FeatureSelection, RandomProjection
from .manifold import LLE, MDS, Isomap, ManifoldCompression, Spectral
from .pooling import MaxPooling, MeanPooling, Pooling
from .probabilistic import NaiveProbabilistic

__all__ = [
    "Compression",
    "FittedCompression",
    "PCA",
    "RandomProjection",
    "FeatureSelection",
    "Pooling",
    "MaxPooling",
    "MeanPooling",
    "NaiveProbabilistic",
    "ManifoldCompression",
    "Isomap",
    "LLE",
    "MDS",
    "Spectral",
]
