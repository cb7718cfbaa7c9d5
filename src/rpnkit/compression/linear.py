"""Linear compressions: PCA, random projection, feature selection."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..expansion.base import check_finite_number
from ..registry import COMPRESSIONS
from .base import Compression, FittedCompression

__all__ = ["PCA", "RandomProjection", "FeatureSelection"]


@COMPRESSIONS.register("pca")
class PCA(FittedCompression):
    """PCA: κ(x) = (x - μ) Vᵀ (÷ √λ when whiten), V the top-d principal axes learned by fit.

    ``fit(x)`` computes the mean μ and the top-d right singular vectors of the centred data
    (float64 SVD), with scikit-learn's sign convention (each axis's largest-magnitude entry
    positive), and the explained variances λ = s²/(N-1). Not fitted: forward raises.
    ``center=False`` skips the mean (then κ is linear).
    """

    def __init__(self, d: int = 2, center: bool = True, whiten: bool = False,
                 preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        self.center, self.whiten = bool(center), bool(whiten)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "center": self.center, "whiten": self.whiten}

    def bind_tables(self, m: int) -> None:
        self._buffer("mean", (m,))
        self._buffer("components", (self.d, m))
        self._buffer("explained_variance", (self.d,), fill=1.0)

    def _fit(self, z: Tensor, y: Any) -> None:
        n = z.shape[0]
        if n < max(2, self.d):
            raise ValueError(f"PCA.fit needs at least max(2, d) = {max(2, self.d)} samples, "
                             f"got {n}")
        mean = z.mean(0) if self.center else torch.zeros_like(z[0])
        _, s, vt = torch.linalg.svd(z - mean, full_matrices=False)
        vt = vt[: self.d]
        idx = vt.abs().argmax(1)
        signs = torch.sign(vt.gather(1, idx[:, None]))
        signs[signs == 0] = 1
        self.mean.copy_(mean)
        self.components.copy_(vt * signs)
        self.explained_variance.copy_(s[: self.d] ** 2 / (n - 1))

    def expand(self, x: Tensor) -> Tensor:
        comps = self.components.to(x.dtype)
        out = (x - self.mean.to(x.dtype)) @ comps.T if self.center else x @ comps.T
        if self.whiten:
            out = out / self.explained_variance.to(x.dtype).clamp_min(1e-300).sqrt()
        return out

    def _is_linear(self) -> bool:
        return not self.center  # centring makes κ affine, not linear


@COMPRESSIONS.register("random_projection")
class RandomProjection(Compression):
    """Random projection κ(x) = x Rᵀ, R a fixed seeded (d, m) matrix (Johnson–Lindenstrauss).

    ``kind="gaussian"``: R_ij ~ N(0, 1/d) (scikit-learn's GaussianRandomProjection);
    ``kind="sparse"`` (the reference toolkit's choice): R_ij = ±√(1/(density·d)) with
    probability density/2 each, else 0, density = 1/√m by default (Li et al.,
    scikit-learn's SparseRandomProjection). R is drawn when the width binds, from ``seed``
    (else from torch's global generator), and saved in the state dict. No fitting needed.
    """

    def __init__(self, d: int = 2, kind: str = "gaussian", density: float | None = None,
                 seed: int | None = None, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        self.d = self._target(d)
        if kind not in ("gaussian", "sparse"):
            raise ConfigurationError(
                f"RandomProjection: kind must be 'gaussian' or 'sparse', got {kind!r}")
        self.kind = kind
        if density is not None:
            density = check_finite_number("density", density, "RandomProjection", positive=True)
            if density > 1:
                raise ConfigurationError(f"RandomProjection: density must be in (0, 1], got {density}")
            if kind != "sparse":
                raise ConfigurationError("RandomProjection: density applies to kind='sparse' only")
        self.density = density
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ConfigurationError(f"RandomProjection: seed must be an integer >= 0 or None, "
                                     f"got {seed!r}")
        self.seed = seed
        self._drawn_seed: int | None = None

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "kind": self.kind, "density": self.density, "seed": self.seed}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        return self.check_width(int(m), self.d)

    def density_for(self, m: int) -> float:
        return self.density if self.density is not None else 1.0 / math.sqrt(m)

    def draw(self, m: int) -> Tensor:
        """The (d, m) matrix for width m (float64), from the seed of this instance."""
        if self._drawn_seed is None:
            self._drawn_seed = (self.seed if self.seed is not None
                                else int(torch.randint(0, 2**62, (1,)).item()))
        g = torch.Generator().manual_seed(self._drawn_seed)
        if self.kind == "gaussian":
            return torch.randn(self.d, m, generator=g, dtype=torch.float64) / math.sqrt(self.d)
        s = self.density_for(m)
        u = torch.rand(self.d, m, generator=g, dtype=torch.float64)
        value = math.sqrt(1.0 / (s * self.d))
        return torch.where(u < s / 2, -value, torch.where(u < s, value, 0.0))

    def bind_tables(self, m: int) -> None:
        old = self._buffers.get("matrix")
        if old is not None and tuple(old.shape) == (self.d, m):
            return
        dtype = old.dtype if old is not None else torch.get_default_dtype()
        self.register_buffer("matrix", self.draw(m).to(dtype))

    def reset_parameters(self) -> None:
        """Redraw R from this instance's seed (the same matrix again; after ``to_empty()``)."""
        if self.m is not None:
            with torch.no_grad():
                self.matrix.copy_(self.draw(self.m))

    def expand(self, x: Tensor) -> Tensor:
        if "matrix" not in self._buffers:
            raise ConfigurationError(
                "RandomProjection is not bound to a width: R is drawn by bind(m) (a head binds "
                "it when built); call .bind(m) to use it on its own")
        return x @ self.matrix.to(x.dtype).T

    def _is_linear(self) -> bool:
        return True


@COMPRESSIONS.register("feature_selection")
class FeatureSelection(FittedCompression):
    """Feature selection κ(x) = x[:, S]: the d inputs of largest training variance, in input order.

    ``fit(x)`` scores every input by its variance over x and keeps the top d (ties go to the
    later input, as scikit-learn's SelectKBest); the reference toolkit's variance-threshold
    selection keeps the same set. The index buffer S is saved in the state dict.
    """

    def __init__(self, d: int = 2, score: str = "variance", preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        if score != "variance":
            raise ConfigurationError(f"FeatureSelection: score must be 'variance', got {score!r}")
        self.score = score

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "score": self.score}

    def bind_tables(self, m: int) -> None:
        old = self._buffers.get("index")
        if old is None or tuple(old.shape) != (self.d,):
            self.register_buffer("index", torch.arange(self.d))

    def scores(self, z: Tensor) -> Tensor:
        return z.var(0, unbiased=False)

    def _fit(self, z: Tensor, y: Any) -> None:
        scores = self.scores(z)
        order = torch.sort(scores, stable=True).indices  # ascending; ties keep input order
        self.index.copy_(torch.sort(order[-self.d:]).values)

    def expand(self, x: Tensor) -> Tensor:
        return x.index_select(1, self.index.to(x.device))

    def _is_linear(self) -> bool:
        return True

    def _columns(self, m: int) -> list[frozenset] | None:
        if not self.is_fitted:
            return None
        return [frozenset((int(i),)) for i in self.index.tolist()]
