"""Manifold compressions through scikit-learn (the ``sklearn`` extra): Isomap, LLE, MDS, spectral.

``fit(x)`` runs the scikit-learn estimator on the training data and keeps what the embedding
of *new* points needs in persistent buffers (their first dimension is the number of fitted
samples N, set by ``fit`` or by ``load_state_dict``):

* ``isomap`` and ``lle`` map new points: forward re-implements scikit-learn's ``transform``
  in torch (k nearest training points, then the geodesic kernel-PCA projection for Isomap,
  the regularised barycentre weights for LLE), so it runs on any device, compiles and
  exports, and agrees with ``Isomap.transform`` / ``LocallyLinearEmbedding.transform``.
* ``mds`` and ``spectral`` have no out-of-sample map (scikit-learn defines none): they embed
  the data they are fitted on (:meth:`ManifoldCompression.fit_transform`, buffer
  ``embedding``) and refuse ``forward`` with a ConfigurationError.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..expansion._spline import autocast_off
from ..expansion.base import check_finite_number, check_positive_int
from ..registry import COMPRESSIONS
from .base import FittedCompression

__all__ = ["ManifoldCompression", "Isomap", "LLE", "MDS", "Spectral"]


def _sklearn_manifold():
    try:
        import sklearn.manifold as manifold
    except ImportError as exc:  # pragma: no cover - the extra is installed in the dev env
        raise ConfigurationError(
            "manifold compressions need scikit-learn: pip install 'rpnkit[sklearn]'") from exc
    return manifold


def _seed(seed: Any, owner: str) -> int | None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ConfigurationError(f"{owner}: seed must be an integer >= 0 or None, got {seed!r}")
    return seed


class ManifoldCompression(FittedCompression):
    """Base of the manifold compressions: buffers sized by the fitted sample count N."""

    #: buffer name -> shape with ``N`` for the sample count, ``m``, ``d`` (``()`` scalar)
    _state: dict[str, tuple[str, ...]] = {"embedding": ("N", "d")}
    out_of_sample = False

    def __init__(self, d: int = 2, preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)

    def _shape(self, spec: tuple[str, ...], n: int, m: int) -> tuple[int, ...]:
        return tuple({"N": n, "m": m, "d": self.d}[s] for s in spec)

    def bind_tables(self, m: int) -> None:
        for name, spec in self._state.items():
            old = self._buffers.get(name)
            n = 0 if old is None or "N" not in spec else int(old.shape[spec.index("N")])
            self._buffer(name, self._shape(spec, n, m))

    def _resize(self, n: int) -> None:
        for name, spec in self._state.items():
            old = self._buffers[name]
            shape = self._shape(spec, n, int(self.m))
            if tuple(old.shape) != shape:
                self.register_buffer(name, torch.empty(shape, dtype=old.dtype, device=old.device))

    def _store(self, **values: Any) -> None:
        n = next(int(np.asarray(v).shape[0]) for k, v in values.items()
                 if "N" in self._state[k] and self._state[k][0] == "N")
        self._resize(n)
        for name, value in values.items():
            buf = self._buffers[name]
            buf.copy_(torch.as_tensor(np.asarray(value, dtype=np.float64)).to(buf.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._state:
            key, old = prefix + name, self._buffers.get(name)
            if key in state_dict and old is not None and old.shape != state_dict[key].shape:
                self.register_buffer(name, torch.empty(state_dict[key].shape, dtype=old.dtype,
                                                       device=old.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_fitted(self) -> int:
        """N, the number of samples the compression was fitted on."""
        return int(self._buffers["embedding"].shape[0]) if "embedding" in self._buffers else 0

    def estimator(self):
        raise NotImplementedError

    def fit_transform(self, x: Any, y: Any = None) -> Tensor:
        """Fit on x and return its embedding (N, d) (float64)."""
        self.fit(x, y)
        return self.embedding.detach().to(torch.float64).clone()

    def _check_samples(self, n: int) -> None:
        need = max(self.d + 1, (getattr(self, "n_neighbors", None) or 0) + 1)
        if n < need:
            raise ValueError(f"{type(self).__name__}.fit needs at least {need} samples, got {n}")

    def expand(self, x: Tensor) -> Tensor:
        raise ConfigurationError(
            f"compression {self.registry_name!r} has no out-of-sample transform (scikit-learn "
            f"defines none for it): use .fit_transform(x) to embed the fitted data, or "
            f"'isomap' / 'lle', which map new points")


class _Neighbours(ManifoldCompression):
    out_of_sample = True

    def __init__(self, d: int = 2, n_neighbors: int = 5, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        self.n_neighbors = check_positive_int("n_neighbors", n_neighbors, type(self).__name__)

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "n_neighbors": self.n_neighbors}

    def neighbours(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Distances (B, k) and indices (B, k) of the k nearest fitted samples of each row.

        The search runs on x detached (the choice of neighbours is piecewise constant); the k
        distances are then computed again from x, so they are differentiable any number of
        times (``cdist``'s backward is not differentiable)."""
        train = self.samples.to(x.dtype)
        dist = torch.cdist(x.detach(), train, compute_mode="donot_use_mm_for_euclid_dist")
        idx = torch.topk(dist, self.n_neighbors, dim=1, largest=False).indices
        values = torch.linalg.vector_norm(x.unsqueeze(1) - train[idx], dim=-1)
        return values, idx

    def expand(self, x: Tensor) -> Tensor:
        if autocast_off(x):  # the search and the local solves in the state's dtype (a bf16
            # Gram matrix or kernel loses the embedding); the GEMM after κ is autocast as usual
            with torch.autocast(x.device.type, enabled=False):
                return self.embed(x.to(self.samples.dtype))
        return self.embed(x)

    def embed(self, x: Tensor) -> Tensor:
        """The embedding of new points x (B, m), in x's dtype."""
        raise NotImplementedError


@COMPRESSIONS.register("isomap")
class Isomap(_Neighbours):
    """Isomap (scikit-learn): geodesic kernel PCA; maps new points like Isomap.transform.

    A new point's geodesic distance to fitted sample j is min over its k nearest fitted
    samples i of |x - x_i| + G_ij; the double-centred kernel -G²/2 is projected onto the
    fitted kernel-PCA axes.
    """

    _state = {"samples": ("N", "m"), "geodesic": ("N", "N"), "fit_rows": ("N",),
              "fit_all": (), "projection": ("N", "d"), "embedding": ("N", "d")}

    def estimator(self):
        return _sklearn_manifold().Isomap(n_neighbors=self.n_neighbors, n_components=self.d)

    def _fit(self, z: Tensor, y: Any) -> None:
        self._check_samples(z.shape[0])
        est = self.estimator()
        emb = est.fit_transform(z.numpy())
        kpca = est.kernel_pca_
        vals, vecs = kpca.eigenvalues_, kpca.eigenvectors_
        scaled = np.zeros_like(vecs)
        nz = np.flatnonzero(vals)
        scaled[:, nz] = vecs[:, nz] / np.sqrt(vals[nz])
        self._store(samples=z.numpy(), geodesic=est.dist_matrix_,
                    fit_rows=kpca._centerer.K_fit_rows_, fit_all=kpca._centerer.K_fit_all_,
                    projection=scaled, embedding=emb)

    def embed(self, x: Tensor) -> Tensor:
        dist, idx = self.neighbours(x)
        geo = (self.geodesic.to(x.dtype)[idx] + dist.unsqueeze(-1)).amin(1)  # (B, N)
        k = -0.5 * geo * geo
        k = k - self.fit_rows.to(x.dtype) - k.mean(1, keepdim=True) + self.fit_all.to(x.dtype)
        return k @ self.projection.to(x.dtype)


@COMPRESSIONS.register("lle")
class LLE(_Neighbours):
    """Locally linear embedding (scikit-learn, standard); maps new points like LLE.transform.

    A new point is written as the regularised barycentre of its k nearest fitted samples
    (weights w solving (C Cᵀ + reg·tr(C Cᵀ) I) w = 1, normalised to sum 1) and mapped to the
    same combination of their embeddings.
    """

    _state = {"samples": ("N", "m"), "embedding": ("N", "d")}

    def __init__(self, d: int = 2, n_neighbors: int = 5, reg: float = 1e-3,
                 seed: int | None = None, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(d, n_neighbors, preprocess, postprocess)
        self.reg = check_finite_number("reg", reg, "LLE", positive=True)
        self.seed = _seed(seed, "LLE")

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "reg": self.reg, "seed": self.seed}

    def estimator(self):
        return _sklearn_manifold().LocallyLinearEmbedding(
            n_neighbors=self.n_neighbors, n_components=self.d, reg=self.reg,
            random_state=self.seed)

    def _fit(self, z: Tensor, y: Any) -> None:
        self._check_samples(z.shape[0])
        emb = self.estimator().fit_transform(z.numpy())
        self._store(samples=z.numpy(), embedding=emb)

    def embed(self, x: Tensor) -> Tensor:
        _, idx = self.neighbours(x)
        c = self.samples.to(x.dtype)[idx] - x.unsqueeze(1)  # (B, k, m)
        g = c @ c.transpose(1, 2)
        trace = g.diagonal(dim1=1, dim2=2).sum(-1)
        r = torch.where(trace > 0, self.reg * trace, torch.full_like(trace, self.reg))
        eye = torch.eye(self.n_neighbors, dtype=x.dtype, device=x.device)
        g = g + r[:, None, None] * eye
        w = torch.linalg.solve(g, torch.ones_like(trace).unsqueeze(-1).expand(-1, self.n_neighbors))
        w = w / w.sum(-1, keepdim=True)
        return (w.unsqueeze(-1) * self.embedding.to(x.dtype)[idx]).sum(1)


@COMPRESSIONS.register("mds")
class MDS(ManifoldCompression):
    """Metric MDS (scikit-learn) of the fitted data; no out-of-sample map (forward refuses)."""

    def __init__(self, d: int = 2, seed: int | None = None, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        self.seed = _seed(seed, "MDS")

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "seed": self.seed}

    def estimator(self):
        return _sklearn_manifold().MDS(n_components=self.d, n_init=1, init="classical_mds",
                                       random_state=self.seed)

    def _fit(self, z: Tensor, y: Any) -> None:
        self._check_samples(z.shape[0])
        self._store(embedding=self.estimator().fit_transform(z.numpy()))


@COMPRESSIONS.register("spectral")
class Spectral(ManifoldCompression):
    """Spectral embedding (scikit-learn) of the fitted data; no out-of-sample map (forward refuses).

    Laplacian eigenmaps of the k-nearest-neighbour affinity graph (``n_neighbors``)."""

    def __init__(self, d: int = 2, n_neighbors: int | None = None, seed: int | None = None,
                 preprocess: Any = None, postprocess: Any = None) -> None:
        super().__init__(d, preprocess, postprocess)
        self.n_neighbors = (None if n_neighbors is None
                            else check_positive_int("n_neighbors", n_neighbors, "Spectral"))
        self.seed = _seed(seed, "Spectral")

    def hparams(self) -> dict[str, Any]:
        return {"d": self.d, "n_neighbors": self.n_neighbors, "seed": self.seed}

    def estimator(self):
        return _sklearn_manifold().SpectralEmbedding(n_components=self.d,
                                                     n_neighbors=self.n_neighbors,
                                                     random_state=self.seed)

    def _fit(self, z: Tensor, y: Any) -> None:
        self._check_samples(z.shape[0])
        self._store(embedding=self.estimator().fit_transform(z.numpy()))
