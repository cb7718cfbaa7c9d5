"""Structured RPN 2 models: graph (GCN-like), grid (CNN-like), chain (RNN-like), attention.

Each is an ``nn.Module`` built from :class:`~rpnkit.interdependence.InterdependentHead` /
``InterdependentLayer`` and the registered κ, ψ, π and ξ, and takes ``dims`` like the
other ready models. With identity κ and ψ:

* :class:`GraphRPN` layer = Â X W (+ b): a GCN layer (Kipf & Welling) over the sparse
  normalised adjacency;
* :class:`GridRPN` layer = ``F.conv2d`` with the same kernel, stride and padding;
* :class:`ChainRPN` layer = the linear recurrence h_t = x_t W + α h_{t-1};
* :class:`AttentionRPN` head = ``scaled_dot_product_attention(X W_q, X W_k, X W_v)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..head import RPNHead
from ..interdependence import InterdependentHead, InterdependentLayer
from ..interdependence.grid import GridInterdependence
from ..modules import build_module_list
from ..seeding import derive_seed
from .classic import _check_dims

__all__ = ["GraphRPN", "GridRPN", "ChainRPN", "AttentionRPN", "InterdependentRPN"]


def _component_options(expansion, reconciliation, expansion_params, reconciliation_params,
                       seed) -> dict[str, Any]:
    return {"expansion": expansion, "reconciliation": reconciliation,
            "expansion_params": expansion_params, "reconciliation_params": reconciliation_params,
            "seed": seed}


def _seeded(opts: Mapping[str, Any], *path: int) -> dict[str, Any]:
    """``opts`` with its seed replaced by the stream of ``path`` (layer, head) under it, so
    that no two layers or heads share random state (:mod:`rpnkit.seeding`)."""
    seed = opts.get("seed")
    return dict(opts) if seed is None else {**opts, "seed": derive_seed(seed, *path)}


def _activation(activation: Any) -> nn.Module:
    mods = build_module_list(activation)
    return nn.Sequential(*mods) if len(mods) else nn.Identity()


def _graph_source(graph: Any, graph_path: str, edges: Any, num_nodes: Any, features: Any):
    """(edges, num_nodes, features or None) from a graph name / GraphData / arrays."""
    if graph is not None and not isinstance(graph, str):
        g = graph
        return np.asarray(g.edges), int(g.num_nodes), np.asarray(g.features)
    if isinstance(graph, str) and graph:
        from ..data.structured import load_graph  # the config's data, looked up by name

        g = load_graph(graph, graph_path)
        return g.edges, g.num_nodes, g.features
    if edges is None or num_nodes is None:
        raise ConfigurationError(
            "GraphRPN needs a graph: graph: cora / citeseer (or a GraphData), or edges and num_nodes"
        )
    return edges, int(num_nodes), None if features is None else np.asarray(features)


class GraphRPN(nn.Module):
    """GCN-like RPN: every layer is ⟨κ(Â X), ψ(w)⟩ + b over the nodes of one graph.

    Args:
        dims: ``[features, hidden..., classes]``.
        graph: ``cora`` / ``citeseer`` (the shipped graphs), a :class:`GraphData`, or ``None``
            with ``edges`` and ``num_nodes``.
        features: (N, features) node features kept as a buffer (taken from ``graph`` by
            default); with them, input of shape (B, 1) is read as node ids (the ``nodes`` view
            of the graph datasets) and answered from one full-graph pass.
        interdependence / interdependence_params: ξ of every layer (default ``graph``; e.g.
            ``graph_pagerank`` or ``{hops: 2}``); edges and num_nodes are filled in.
        expansion, reconciliation, expansion_params, reconciliation_params, seed: κ / ψ.
        heads / head_fusion: heads per layer and their fusion.
        activation, dropout: between layers (dropout also on the input, as in GCN).
        init: initialisation of w (default ``xavier_uniform``, GCN's Glorot).
        normalize_features: scale the stored feature rows to sum 1 (GCN's preprocessing; it
            applies to the node-id input, not to features passed in).
    """

    def __init__(self, dims: Sequence[int], graph: Any = "cora", graph_path: str = "",
                 edges: Any = None, num_nodes: int | None = None, features: Any = None,
                 interdependence: Any = "graph", interdependence_params: Mapping | None = None,
                 expansion: Any = "identity", reconciliation: Any = "identity",
                 expansion_params: Mapping | None = None,
                 reconciliation_params: Mapping | None = None, heads: int = 1,
                 head_fusion: str = "mean", activation: Any = "relu", dropout: float = 0.5,
                 bias: bool = True, init: str = "xavier_uniform", normalize_features: bool = True,
                 seed: int | None = None) -> None:
        super().__init__()
        self.dims = _check_dims(dims, "GraphRPN")
        edges, n_nodes, feats = _graph_source(graph, graph_path, edges, num_nodes, features)
        if feats is not None and feats.shape[1] != self.dims[0]:
            raise ConfigurationError(
                f"GraphRPN: dims[0] = {self.dims[0]} but the graph's nodes have {feats.shape[1]} features"
            )
        self.num_nodes = n_nodes
        if feats is not None:
            feats = np.array(feats, dtype=np.float64)
            if normalize_features:  # rows sum to 1, as in GCN's preprocessing
                feats = feats / np.maximum(np.abs(feats).sum(1, keepdims=True), 1e-12)
            self.register_buffer("features", torch.as_tensor(feats, dtype=torch.get_default_dtype()),
                                 persistent=False)
            # the non-zeros of the (sparse, bag-of-words) features: input dropout only draws
            # masks for them, the same distribution as dropout on the dense matrix
            self.register_buffer("nonzero", torch.as_tensor(np.flatnonzero(feats)),
                                 persistent=False)
        else:
            self.features = self.nonzero = None
        xi_params = {**dict(interdependence_params or {}), "edges": edges, "num_nodes": n_nodes}
        if isinstance(interdependence, Mapping):
            xi_params = {**{k: v for k, v in interdependence.items() if k != "name"}, **xi_params}
            interdependence = interdependence["name"]
        opts = _component_options(expansion, reconciliation, expansion_params,
                                  reconciliation_params, seed)
        self.layers = nn.ModuleList(
            InterdependentLayer(self.dims[i], self.dims[i + 1], fusion=head_fusion,
                                num_heads=heads, interdependence=interdependence,
                                interdependence_params=xi_params, bias=bias, init=init,
                                **_seeded(opts, i))
            for i in range(len(self.dims) - 1)
        )
        self.dropout = nn.Dropout(float(dropout))
        self.activation = _activation(activation)

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].heads[0].dtype

    def _stored_input(self) -> Tensor:
        x = self.features.to(self.dtype)
        p = self.dropout.p
        if not self.training or p == 0:
            return x
        flat = x.flatten()
        vals = flat[self.nonzero]
        keep = torch.rand_like(vals) >= p
        dropped = torch.where(keep, vals / (1 - p), torch.zeros_like(vals))
        return torch.zeros_like(flat).index_put((self.nonzero,), dropped).view_as(x)

    def propagate(self, x: Tensor, stored: bool = False) -> Tensor:
        """All node outputs (N, classes) from node features (N, features); ``stored``: x is
        the stored feature matrix, already through (sparse) input dropout."""
        for i, layer in enumerate(self.layers):
            x = layer(x if (i == 0 and stored) else self.dropout(x))
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype)
        if x.dim() == 2 and x.shape[1] == 1 and self.dims[0] != 1:
            if self.features is None:
                raise ConfigurationError("GraphRPN: node-id input needs the node features (graph or features)")
            return self.propagate(self._stored_input(), stored=True)[x[:, 0].long()]
        if x.shape[-2:] != (self.num_nodes, self.dims[0]):
            raise ValueError(
                f"GraphRPN expects all {self.num_nodes} nodes' features ({self.num_nodes}, "
                f"{self.dims[0]}) or node ids (B, 1), got {tuple(x.shape)}"
            )
        return self.propagate(x)

    def plan(self) -> str:
        return "\n".join(layer.plan() for layer in self.layers)


class GridRPN(nn.Module):
    """CNN-like RPN: patch-interdependent layers (convolution-like), pooling, then a head.

    Args:
        dims: ``[C·H·W, channels_1, ..., channels_k, classes]`` – input width (flattened
            image), the channel counts of the k grid layers, and the classes.
        image: (C, H, W) of the input (default (1, 28, 28), MNIST).
        kernel, stride, padding, shape: the patch ξ (``cuboid`` = a convolution window,
            ``cylinder``, ``sphere``).
        pool: max-pooling window after every grid layer (1: none).
        hidden: widths of RPN layers between the flattened grid and the classes.
        expansion, reconciliation, ...: κ / ψ of the grid heads.
    """

    def __init__(self, dims: Sequence[int], image: Sequence[int] = (1, 28, 28), kernel: int = 3,
                 stride: int = 1, padding: int = 1, shape: str = "cuboid", pool: int = 2,
                 hidden: Sequence[int] = (), expansion: Any = "identity",
                 reconciliation: Any = "identity", expansion_params: Mapping | None = None,
                 reconciliation_params: Mapping | None = None, channels: int = 1,
                 channel_fusion: Any = "sum", activation: Any = "relu", dropout: float = 0.0,
                 seed: int | None = None) -> None:
        super().__init__()
        self.dims = _check_dims(dims, "GridRPN")
        image = [int(v) for v in image]
        if len(image) != 3 or int(np.prod(image)) != self.dims[0]:
            raise ConfigurationError(
                f"GridRPN: image {image} (C, H, W) must hold dims[0] = {self.dims[0]} values"
            )
        c, h, w = image
        opts = _component_options(expansion, reconciliation, expansion_params,
                                  reconciliation_params, seed)
        layers, shapes = [], []
        for li, out_c in enumerate(self.dims[1:-1]):
            xi = GridInterdependence(c, h, w, kernel, stride, padding, shape)
            layers.append(InterdependentHead(c * h * w, out_c, xi, bias=True, channels=channels,
                                             channel_fusion=channel_fusion,
                                             **_seeded(opts, li)))
            h, w = xi.out_height, xi.out_width
            shapes.append((h, w))
            if pool > 1:
                if h < pool or w < pool:
                    raise ConfigurationError(f"GridRPN: a {h}×{w} grid is too small for pooling by {pool}")
                h, w = h // pool, w // pool
            c = out_c
        self.grid_layers = nn.ModuleList(layers)
        self.shapes = shapes
        self.pool = nn.MaxPool2d(pool) if pool > 1 else nn.Identity()
        widths = [c * h * w, *[int(v) for v in hidden], self.dims[-1]]
        self.classifier = nn.ModuleList(
            RPNHead(widths[i], widths[i + 1], bias=True) for i in range(len(widths) - 1)
        )
        self.activation = _activation(activation)
        self.dropout = nn.Dropout(float(dropout))

    @property
    def dtype(self) -> torch.dtype:
        return self.classifier[0].w.dtype

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(self.dtype).reshape(x.shape[0], -1)
        for layer, (h, w) in zip(self.grid_layers, self.shapes):
            y = layer(x)  # (B, P, channels)
            y = self.activation(y.transpose(1, 2).reshape(x.shape[0], -1, h, w))
            x = self.pool(y).flatten(1)
        for i, head in enumerate(self.classifier):
            x = head(self.dropout(x))
            if i < len(self.classifier) - 1:
                x = self.activation(x)
        return x


def _token_ids(x: Tensor, length: int, owner: str) -> Tensor:
    if x.dim() != 2 or x.shape[1] != length:
        raise ValueError(f"{owner} expects token ids of shape (B, {length}), got {tuple(x.shape)}")
    return x.long()


def _masked_mean(h: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


class ChainRPN(nn.Module):
    """RNN-like RPN over token sequences: embedding, chain-interdependent layers, pooling, head.

    Args:
        dims: ``[T, hidden_1, ..., classes]`` – sequence length (the data's width), the
            per-token widths of the chain layers, the classes.
        vocab_size, embed_dim: token embedding (id 0 = padding).
        decays: one chain head per decay α (h_t = x_t W + α h_{t-1}), fused by concat
            (each layer width must be divisible by the number of decays).
        hops, direction: the chain's band and direction.
        pooling: ``mean`` over the non-padding tokens, or ``last``.
    """

    def __init__(self, dims: Sequence[int], vocab_size: int = 20000, embed_dim: int = 64,
                 decays: Sequence[float] = (0.5, 0.9), hops: int | None = None,
                 direction: str = "forward", pooling: str = "mean", expansion: Any = "identity",
                 reconciliation: Any = "identity", expansion_params: Mapping | None = None,
                 reconciliation_params: Mapping | None = None, activation: Any = "tanh",
                 dropout: float = 0.0, seed: int | None = None) -> None:
        super().__init__()
        self.dims = _check_dims(dims, "ChainRPN")
        if pooling not in ("mean", "last"):
            raise ConfigurationError(f"ChainRPN: pooling must be 'mean' or 'last', got {pooling!r}")
        self.length, self.pooling = self.dims[0], pooling
        self.embedding = nn.Embedding(int(vocab_size), int(embed_dim), padding_idx=0)
        decays = [float(d) for d in decays] or [1.0]
        opts = _component_options(expansion, reconciliation, expansion_params,
                                  reconciliation_params, seed)
        layers, prev = [], int(embed_dim)
        for li, width in enumerate(self.dims[1:-1]):
            if width % len(decays):
                raise ConfigurationError(
                    f"ChainRPN: layer width {width} must be divisible by the {len(decays)} decays"
                )
            heads = [InterdependentHead(prev, width // len(decays), "chain",
                                        {"length": self.length, "hops": hops, "decay": a,
                                         "direction": direction}, bias=True,
                                        **_seeded(opts, li, hi))
                     for hi, a in enumerate(decays)]
            layers.append(InterdependentLayer(prev, width, heads, fusion="concat"))
            prev = width
        self.layers = nn.ModuleList(layers)
        self.head = RPNHead(prev, self.dims[-1], bias=True)
        self.activation = _activation(activation)
        self.dropout = nn.Dropout(float(dropout))

    def forward(self, x: Tensor) -> Tensor:
        ids = _token_ids(x, self.length, "ChainRPN")
        h = self.dropout(self.embedding(ids))
        for layer in self.layers:
            h = self.activation(layer(h))
        mask = ids > 0
        if self.pooling == "mean":
            z = _masked_mean(h, mask)
        else:
            last = (mask.long().sum(1) - 1).clamp_min(0)
            z = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(self.dropout(z))


class AttentionRPN(nn.Module):
    """Transformer-like RPN: embedding + positions, attention-interdependent layers, head.

    Each layer has ``heads`` heads ⟨ξ_att(X), ψ(w)⟩ (ψ = W_v, ξ = softmax of a low-rank
    bilinear form) fused by concat, a residual connection when the width is unchanged, an
    RPN feed-forward head and layer norms.

    Args:
        dims: ``[T, width_1, ..., classes]``.
        vocab_size, embed_dim, heads, rank (default width/heads), causal, pooling ``mean``.
    """

    def __init__(self, dims: Sequence[int], vocab_size: int = 20000, embed_dim: int = 64,
                 heads: int = 4, rank: int | None = None, causal: bool = False,
                 expansion: Any = "identity", reconciliation: Any = "identity",
                 expansion_params: Mapping | None = None,
                 reconciliation_params: Mapping | None = None, activation: Any = "relu",
                 dropout: float = 0.0, seed: int | None = None) -> None:
        super().__init__()
        self.dims = _check_dims(dims, "AttentionRPN")
        self.length = self.dims[0]
        self.embedding = nn.Embedding(int(vocab_size), int(embed_dim), padding_idx=0)
        self.position = nn.Parameter(torch.zeros(self.length, int(embed_dim)))
        nn.init.normal_(self.position, std=0.02)
        opts = _component_options(expansion, reconciliation, expansion_params,
                                  reconciliation_params, seed)
        attn, ff, norms, prev = [], [], [], int(embed_dim)
        for li, width in enumerate(self.dims[1:-1]):
            if width % heads:
                raise ConfigurationError(f"AttentionRPN: width {width} must be divisible by heads={heads}")
            r = rank or max(1, width // heads)
            attn.append(InterdependentLayer(prev, width, fusion="concat", num_heads=heads,
                                            interdependence="attention",
                                            interdependence_params={"rank": r, "causal": causal},
                                            **_seeded(opts, li)))
            ff.append(RPNHead(width, width, bias=True))
            norms.append(nn.ModuleList([nn.LayerNorm(width), nn.LayerNorm(width)]))
            prev = width
        self.attn, self.ff, self.norms = nn.ModuleList(attn), nn.ModuleList(ff), nn.ModuleList(norms)
        self.head = RPNHead(prev, self.dims[-1], bias=True)
        self.activation = _activation(activation)
        self.dropout = nn.Dropout(float(dropout))

    def forward(self, x: Tensor) -> Tensor:
        ids = _token_ids(x, self.length, "AttentionRPN")
        h = self.dropout(self.embedding(ids) + self.position)
        for att, ff, (n1, n2) in zip(self.attn, self.ff, self.norms):
            a = att(h)
            h = n1(a + h if a.shape == h.shape else a)
            h = n2(h + self.dropout(self.activation(ff(h))))
        return self.head(_masked_mean(h, ids > 0))


class InterdependentRPN(nn.Module):
    """A generic RPN 2: a chain of :class:`InterdependentLayer` s with one ξ given by name.

    ``model: {name: interdependent_rpn, dims: [m, ..., n], interdependence: {name: kernel,
    kernel: rbf}, expansion: taylor, ...}``. Every layer gets its own ξ (bound to its width);
    ``head_options`` are the RPN head options (κ, ψ, π, channels, bias, init, seed, ...).
    """

    def __init__(self, dims: Sequence[int], interdependence: Any = "identity",
                 interdependence_params: Mapping | None = None, heads: int = 1,
                 head_fusion: Any = "sum", activation: Any = None, **head_options: Any) -> None:
        super().__init__()
        self.dims = _check_dims(dims, "InterdependentRPN")
        self.layers = nn.ModuleList(
            InterdependentLayer(self.dims[i], self.dims[i + 1], fusion=head_fusion, num_heads=heads,
                                interdependence=interdependence,
                                interdependence_params=interdependence_params,
                                output=activation if i < len(self.dims) - 2 else None,
                                **_seeded(head_options, i))
            for i in range(len(self.dims) - 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def plan(self) -> str:
        return "\n".join(layer.plan() for layer in self.layers)


def conv_reference(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int = 1,
                   padding: int = 0) -> Tensor:
    """F.conv2d laid out as a grid head's output (B, P, out) (tests and docs)."""
    y = F.conv2d(x, weight, bias, stride=stride, padding=padding)
    return y.flatten(2).transpose(1, 2)
