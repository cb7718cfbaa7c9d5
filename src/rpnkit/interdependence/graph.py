"""Graph interdependence: normalised adjacency, multi-hop and personalised PageRank.

The adjacency is held as edge tables (row, col, value) – non-persistent buffers built at
construction – and multiplied sparsely: ``torch.sparse.mm`` in eager mode, an equivalent
``index_add`` (scatter) product under ``torch.compile`` (which does not trace sparse
tensors). A dense N×N matrix is never formed, except by :meth:`matrix` for tests.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice, check_positive_int

__all__ = ["GraphInterdependence", "PageRankInterdependence", "normalised_edges"]

NORMALIZATIONS = ("sym", "row", "col", "none")
ACCUMULATE = ("last", "sum", "mean")
#: most nodes a graph may have: (row, col) pairs are keyed as row * N + col in int64
MAX_GRAPH_NODES = 2**31
#: most propagation steps: every step is one sparse product in every forward pass
MAX_HOPS = 1000
#: bytes per entry of the edge tables while they are built (int64 pairs, sort keys,
#: values, degrees and their temporaries)
_BYTES_PER_ENTRY = 64


def check_graph_size(num_nodes: int, num_edges: int, owner: str) -> None:
    """Refuse a graph whose edge tables would not fit the memory budget, before building."""
    from ..budget import format_bytes, memory_budget

    if num_nodes > MAX_GRAPH_NODES:
        raise ConfigurationError(
            f"{owner}: num_nodes={num_nodes:,} is above the limit of {MAX_GRAPH_NODES:,} nodes"
        )
    need = (2 * int(num_edges) + int(num_nodes)) * _BYTES_PER_ENTRY
    budget, source = memory_budget()
    if budget is not None and need > budget:
        raise ConfigurationError(
            f"{owner}: a graph of {num_nodes:,} nodes and {num_edges:,} edges needs about "
            f"{format_bytes(need)} to build its edge tables, above the memory budget of "
            f"{format_bytes(budget)} ({source}; set RPNKIT_MEMORY_BUDGET to change it)"
        )


def _edge_array(edges: Any, num_nodes: int, owner: str) -> np.ndarray:
    # A tensor or array of shape (2, E) is an edge index (PyTorch Geometric's convention),
    # whatever E is (E = 2 included); a Python list is a list of (source, target) pairs,
    # or two rows of equal length E != 2.
    index_layout = isinstance(edges, (Tensor, np.ndarray))
    if isinstance(edges, Tensor):
        edges = edges.detach().cpu().numpy()
    arr = np.asarray(edges if edges is not None else np.zeros((0, 2)), dtype=np.float64)
    if arr.ndim == 2 and arr.shape[0] == 2 and (index_layout or arr.shape[1] != 2):
        arr = arr.T
    if arr.size == 0:
        arr = np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigurationError(
            f"{owner}: edges must be an (E, 2) list of node pairs (or a (2, E) edge index), "
            f"got shape {np.shape(edges)}"
        )
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise ConfigurationError(f"{owner}: edges must hold integer node indices")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_nodes):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ConfigurationError(
            f"{owner}: edge endpoint {bad} is outside the {num_nodes} nodes [0, {num_nodes - 1}]"
        )
    return arr


def normalised_edges(edges: Any, num_nodes: int, normalization: str = "sym",
                     self_loops: bool = True, directed: bool = False,
                     owner: str = "graph interdependence") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, col, value) of Â, sorted by (row, col), duplicates merged (float64 values).

    ``sym``: D^-1/2 (A + I) D^-1/2 (GCN); ``row``: D^-1 (A + I) (mean of neighbours);
    ``col``: (A + I) D^-1; ``none``: A + I. ``self_loops=False`` drops the + I.
    Undirected graphs (default) use every edge in both directions.
    """
    arr = _edge_array(edges, num_nodes, owner)
    check_graph_size(num_nodes, len(arr), owner)
    if not directed:
        arr = np.concatenate([arr, arr[:, ::-1]], axis=0)
    arr = arr[arr[:, 0] != arr[:, 1]]
    if self_loops:
        loops = np.arange(num_nodes, dtype=np.int64)
        arr = np.concatenate([arr, np.stack([loops, loops], 1)], axis=0)
    key = np.unique(arr[:, 0] * num_nodes + arr[:, 1])
    row, col = key // num_nodes, key % num_nodes
    val = np.ones(len(key), dtype=np.float64)
    deg_out = np.bincount(row, minlength=num_nodes).astype(np.float64)
    deg_in = np.bincount(col, minlength=num_nodes).astype(np.float64)
    with np.errstate(divide="ignore"):
        inv_sqrt_out = np.where(deg_out > 0, deg_out ** -0.5, 0.0)
        inv_sqrt_in = np.where(deg_in > 0, deg_in ** -0.5, 0.0)
    if normalization == "sym":
        val = inv_sqrt_out[row] * val * inv_sqrt_in[col]
    elif normalization == "row":
        val = val / deg_out[row]
    elif normalization == "col":
        val = val / deg_in[col]
    return row, col, val


@INTERDEPENDENCES.register("graph")
class GraphInterdependence(Interdependence):
    """Instance-level ξ(X) = Â^k X (or Σ_t Â^t X) over the nodes of a graph; sparse form.

    Args:
        edges: (E, 2) node pairs (or a (2, E) edge index); list, array or tensor.
        num_nodes: number of nodes N (the size of dimension -2 of the input).
        normalization: ``sym`` (GCN, default), ``row``, ``col`` or ``none``.
        self_loops: add A + I (default True).
        hops: k ≥ 1, the number of propagation steps.
        accumulate: ``last`` (Â^k X), ``sum`` (Σ_{t=1..k} Â^t X) or ``mean``.
        directed: use the edges as given (default: both directions).
    """

    level = "instance"
    left_multiplies = True
    couples_rows = True
    transductive = True  # a (N, m) input is the graph's N nodes

    def __init__(self, edges: Any = None, num_nodes: int = 1, normalization: str = "sym",
                 self_loops: bool = True, hops: int = 1, accumulate: str = "last",
                 directed: bool = False, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        owner = f"{type(self).registry_name} interdependence"
        self.num_nodes = check_positive_int("num_nodes", num_nodes, owner)
        self.normalization = check_choice("normalization", normalization, NORMALIZATIONS, owner)
        self.hops = check_positive_int("hops", hops, owner)
        if self.hops > MAX_HOPS:
            raise ConfigurationError(
                f"{owner}: hops={self.hops:,} is above the limit of {MAX_HOPS:,} propagation "
                "steps (each is a sparse product in every forward pass)"
            )
        self.accumulate = check_choice("accumulate", accumulate, ACCUMULATE, owner)
        self.self_loops, self.directed = bool(self_loops), bool(directed)
        row, col, val = normalised_edges(edges, self.num_nodes, normalization, self_loops,
                                         directed, owner)
        dtype = dtype or torch.get_default_dtype()
        self.register_buffer("index", torch.as_tensor(np.stack([row, col])), persistent=False)
        self.register_buffer("value", torch.as_tensor(val, dtype=dtype), persistent=False)
        self._value64 = val  # the exact values: every dtype change re-rounds from them
        self._index64 = np.stack([row, col])  # and to_empty() refills the table from it

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.value = torch.as_tensor(self._value64).to(dtype=self.value.dtype,
                                                        device=self.value.device)
        self.index = torch.as_tensor(self._index64).to(device=self.index.device)
        return out

    @property
    def num_edges(self) -> int:
        return int(self.value.numel())

    def form(self) -> str:
        return f"sparse ({self.num_edges:,} entries of {self.num_nodes:,}²)"

    def propagate(self, z: Tensor) -> Tensor:
        """Â z for z of shape (N, d): one sparse product."""
        n = self.num_nodes
        val = self.value.to(z.dtype)
        if torch.compiler.is_compiling():  # scatter form: traceable, same products and sums
            return torch.zeros(n, z.shape[1], dtype=z.dtype, device=z.device).index_add(
                0, self.index[0], val[:, None] * z[self.index[1]]
            )
        adj = torch.sparse_coo_tensor(self.index, val, (n, n), is_coalesced=True,
                                      check_invariants=False)
        return torch.sparse.mm(adj, z)

    def _flat(self, z: Tensor) -> tuple[Tensor, tuple]:
        if z.dim() < 2 or z.shape[-2] != self.num_nodes:
            raise ValueError(
                f"graph interdependence over {self.num_nodes} nodes expects input of shape "
                f"(*, {self.num_nodes}, d), got {tuple(z.shape)}"
            )
        moved = z.movedim(-2, 0)
        return moved.reshape(self.num_nodes, -1), tuple(moved.shape)

    def _steps(self, z: Tensor) -> Tensor:
        out = None
        for _ in range(self.hops):  # a fixed number of sparse products (not a loop over data)
            z = self.propagate(z)
            out = z if (out is None or self.accumulate == "last") else out + z
        if self.accumulate == "mean":
            out = out / self.hops
        return out

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        flat, shape = self._flat(z)
        return self._steps(flat).reshape(shape).movedim(0, -2)

    def matrix(self, x: Tensor | None = None) -> Tensor:
        dtype = self.value.dtype if x is None else x.dtype
        a = torch.zeros(self.num_nodes, self.num_nodes, dtype=dtype, device=self.value.device)
        a[self.index[0], self.index[1]] = self.value.to(dtype)
        p, out = torch.eye(self.num_nodes, dtype=dtype, device=a.device), None
        for _ in range(self.hops):
            p = a @ p
            out = p if (out is None or self.accumulate == "last") else out + p
        return out / self.hops if self.accumulate == "mean" else out

    def extra_repr(self) -> str:
        return (f"num_nodes={self.num_nodes}, edges={self.num_edges}, "
                f"normalization={self.normalization!r}, hops={self.hops}, "
                f"accumulate={self.accumulate!r}")


@INTERDEPENDENCES.register("graph_pagerank")
class PageRankInterdependence(GraphInterdependence):
    """Personalised PageRank ξ(X) = H_K with H_0 = X, H_{t+1} = (1-α) Â H_t + α X (sparse).

    K = ``hops`` truncation steps (default 10) and teleport probability ``alpha``; as
    K grows it tends to α (I - (1-α) Â)^{-1} X.
    """

    def __init__(self, edges: Any = None, num_nodes: int = 1, alpha: float = 0.1,
                 hops: int = 10, normalization: str = "sym", self_loops: bool = True,
                 directed: bool = False, dtype: torch.dtype | None = None) -> None:
        super().__init__(edges, num_nodes, normalization, self_loops, hops, "last", directed,
                         dtype)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 1:
            raise ConfigurationError(
                f"graph_pagerank interdependence: alpha must be in (0, 1], got {alpha!r}"
            )
        self.alpha = float(alpha)

    def _steps(self, z: Tensor) -> Tensor:
        h = z
        for _ in range(self.hops):
            h = (1 - self.alpha) * self.propagate(h) + self.alpha * z
        return h

    def matrix(self, x: Tensor | None = None) -> Tensor:
        self_hops = self.hops
        self.hops = 1
        try:
            a = super().matrix(x)
        finally:
            self.hops = self_hops
        eye = torch.eye(self.num_nodes, dtype=a.dtype, device=a.device)
        h = eye
        for _ in range(self.hops):
            h = (1 - self.alpha) * (a @ h) + self.alpha * eye
        return h

    def extra_repr(self) -> str:
        return f"num_nodes={self.num_nodes}, edges={self.num_edges}, alpha={self.alpha}, hops={self.hops}"
