"""Hybrid interdependence: a graph's structure times a learned bilinear form of the data,
softmax-normalised over each node's neighbours (the reference toolkit's
``graph_bilinear_interdependence_head`` ξ, behind its best Cora figure).

Over the edges (i, j) of Â (``graph`` edge tables, sparse; default Â = A + I unnormalised,
as the reference), with W = ψ(w) ∈ R^{m×m} from a registered reconciliation (``identity``:
a dense W, ``lorr`` / ``dual_lphm``: the reference's low-rank options)::

    s_ij = Â_ij · x_j W x_iᵀ,    A_ij = exp(s_ij) / Σ_{k: Â_ik ≠ 0} exp(s_ik),    ξ(X) = A X

(the reference forms Â ⊙ (X W Xᵀ), masks its zeros, takes a column softmax and applies the
transpose: the same matrix for undirected graphs). Scores, the softmax and the product run
over the E edges (gather, scatter-max, index_add): a dense N×N matrix is never formed,
except by :meth:`matrix` for tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES, RECONCILIATIONS
from .graph import GraphInterdependence

__all__ = ["HybridInterdependence"]


@INTERDEPENDENCES.register("hybrid")
class HybridInterdependence(GraphInterdependence):
    """Graph-masked bilinear attention A = softmax_neighbours(Â ⊙ X Wᵀ Xᵀ), ξ(X) = A X.

    Args:
        edges, num_nodes, normalization, self_loops, directed: the graph, as for ``graph``
            (default normalization ``none``: Â = A + I, the reference's).
        reconciliation / reconciliation_params: ψ of the m×m bilinear W (default
            ``identity``: l = m² learnable numbers).
    """

    def __init__(self, edges: Any = None, num_nodes: int = 1, normalization: str = "none",
                 self_loops: bool = True, directed: bool = False, reconciliation: Any = "identity",
                 reconciliation_params: Mapping | None = None,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__(edges, num_nodes, normalization, self_loops, 1, "last", directed, dtype)
        self.psi = RECONCILIATIONS.resolve(reconciliation, dict(reconciliation_params or {}))
        self.w: nn.Parameter | None = None

    def bind(self, m: int, **factory: Any) -> None:
        super().bind(m)
        fk = {k: v for k, v in factory.items() if v is not None}
        self.psi.factory_kwargs = fk
        self.psi.bind(m, m)
        self.w = nn.Parameter(torch.empty(int(self.psi.calculate_l(m, m)), **fk))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.w is not None and not self.w.is_meta:
            with torch.no_grad():  # x_j W x_iᵀ of order 1 for unit-scale rows
                self.w.normal_(0.0, 1.0 / max(1, self.m) ** 0.5)

    def form(self) -> str:
        return (f"sparse attention ({self.num_edges:,} entries of {self.num_nodes:,}², "
                f"bilinear ψ = {self.psi.registry_name})")

    def bilinear(self) -> Tensor:
        if self.w is None:
            raise ConfigurationError("hybrid interdependence: bind(m) it (or build it in a head) first")
        return self.psi.reconcile(self.w, self.m, self.m)

    def attention(self, x: Tensor) -> Tensor:
        """A's values on the edges (row, col) for x of shape (*, N, m) → (*, E)."""
        if x.dim() < 2 or x.shape[-2] != self.num_nodes:
            raise ValueError(
                f"hybrid interdependence over {self.num_nodes} nodes expects input of shape "
                f"(*, {self.num_nodes}, {self.m}), got {tuple(x.shape)}")
        row, col = self.index[0], self.index[1]
        u = torch.matmul(x, self.bilinear().to(x.dtype))  # u_j = x_j W
        s = self.value.to(x.dtype) * (u.index_select(-2, col) * x.index_select(-2, row)).sum(-1)
        lead = s.shape[:-1]
        peak = torch.full((*lead, self.num_nodes), float("-inf"), dtype=s.dtype, device=s.device)
        peak = peak.scatter_reduce(-1, row.expand(*lead, -1), s.detach(), "amax")
        e = torch.exp(s - peak.index_select(-1, row))
        total = torch.zeros_like(peak).index_add(-1, row, e)
        return e / total.index_select(-1, row)

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        if z.shape[-2] != self.num_nodes:
            raise ValueError(
                f"hybrid interdependence over {self.num_nodes} nodes expects input of shape "
                f"(*, {self.num_nodes}, d), got {tuple(z.shape)}")
        a = self.attention(x)
        src = a[..., None] * z.index_select(-2, self.index[1])
        return torch.zeros_like(z).index_add(-2, self.index[0], src)

    def forward(self, x: Tensor) -> Tensor:
        return self.mix(x, x)

    def matrix(self, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ConfigurationError("hybrid interdependence: its matrix depends on the input x")
        n = self.num_nodes
        adj = torch.zeros(n, n, dtype=x.dtype, device=x.device)
        adj[self.index[0], self.index[1]] = self.value.to(x.dtype)
        mask = torch.zeros(n, n, dtype=torch.bool, device=x.device)
        mask[self.index[0], self.index[1]] = True
        w = self.bilinear().to(x.dtype)
        scores = adj * torch.matmul(torch.matmul(x, w.T), x.transpose(-1, -2))
        a = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.nan_to_num(a, nan=0.0)  # a node without any edge takes nothing

    def extra_repr(self) -> str:
        return (f"num_nodes={self.num_nodes}, edges={self.num_edges}, "
                f"normalization={self.normalization!r}, psi={self.psi.registry_name!r}")
