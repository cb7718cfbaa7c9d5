"""Statistical kernel interdependences: A from a statistic between the rows (instances) or
columns (attributes) of X, each treated as a sample of q values (the reference toolkit's
statistical kernels).

Each is a :class:`~rpnkit.interdependence.kernel.PairwiseInterdependence`:

* ``kl_divergence``: KL(P_i ‖ P_j) = Σ_k P_ik (log P_ik - log P_jk), P_i = softmax(u_i)
  (not symmetric; computed from log-softmax, so finite for any finite input);
* ``pearson``: Pearson correlation r_ij of u_i and u_j;
* ``rv_coefficient``: the RV coefficient tr(Σ_ij Σ_ji) / √(tr Σ_ii² tr Σ_jj²), which for two
  single variables is r_ij² (the reference's code returns clamp(r_ij, 0, 1) with a zero
  diagonal instead, unlike its stated formula);
* ``mutual_information``: Gaussian mutual information ½ log(σ_i² σ_j² / det Σ_ij)
  = -½ log(1 - r_ij²), with 1 - r² clamped at 1e-10 and a zero diagonal, as the reference.

Safe input range: any finite X; a constant vector has no correlation (its norm is clamped
at 1e-12, giving r = 0). The statistics need at least two values per vector (q ≥ 2).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import INTERDEPENDENCES
from .kernel import PairwiseInterdependence

__all__ = ["KLDivergenceInterdependence", "PearsonInterdependence",
           "RVCoefficientInterdependence", "MutualInformationInterdependence", "correlation"]

#: smallest norm of a centred vector (a constant vector has r = 0 with every other)
NORM_FLOOR = 1e-12
#: smallest 1 - r² in the Gaussian mutual information (the reference's determinant floor)
MI_FLOOR = 1e-10


def correlation(u: Tensor) -> Tensor:
    """Pearson r between the rows of u (*, p, q) → (*, p, p)."""
    c = u - u.mean(-1, keepdim=True)
    norm = torch.linalg.vector_norm(c, dim=-1).clamp_min(NORM_FLOOR)
    c = c / norm[..., None]
    return torch.matmul(c, c.transpose(-1, -2))


def _off_diagonal(a: Tensor) -> Tensor:
    p = a.shape[-1]
    return a.masked_fill(torch.eye(p, dtype=torch.bool, device=a.device), 0.0)


@INTERDEPENDENCES.register("kl_divergence")
class KLDivergenceInterdependence(PairwiseInterdependence):
    """K[i, j] = KL(softmax(u_i) ‖ softmax(u_j)); output i = Σ_j K[j, i] · input_j."""

    statistic = "KL divergence of softmax-normalised vectors"

    def pairwise(self, u: Tensor) -> Tensor:
        logp = torch.log_softmax(u, dim=-1)
        p = logp.exp()
        # Σ_k P_ik log P_ik - Σ_k P_ik log P_jk
        return (p * logp).sum(-1)[..., :, None] - torch.matmul(p, logp.transpose(-1, -2))


@INTERDEPENDENCES.register("pearson")
class PearsonInterdependence(PairwiseInterdependence):
    """A = Pearson correlation r_ij between the compared vectors (diagonal 1)."""

    statistic = "Pearson correlation"

    def pairwise(self, u: Tensor) -> Tensor:
        return correlation(u)


@INTERDEPENDENCES.register("rv_coefficient")
class RVCoefficientInterdependence(PairwiseInterdependence):
    """A = RV coefficient tr(Σ_ij Σ_ji) / √(tr Σ_ii² tr Σ_jj²) = r_ij² (single variables)."""

    statistic = "RV coefficient"

    def pairwise(self, u: Tensor) -> Tensor:
        return correlation(u).pow(2)


@INTERDEPENDENCES.register("mutual_information")
class MutualInformationInterdependence(PairwiseInterdependence):
    """A = Gaussian mutual information -½ log(1 - r_ij²) off the diagonal, 0 on it."""

    statistic = "Gaussian mutual information"

    def pairwise(self, u: Tensor) -> Tensor:
        r2 = _off_diagonal(correlation(u).pow(2))
        return -0.5 * torch.log((1.0 - r2).clamp_min(MI_FLOOR))
