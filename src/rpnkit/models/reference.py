"""The reference toolkit's ready models by name: ``gcn``, ``gat``, ``cnn``, ``rnn``,
``regression_rnn``, ``transformer``.

Each is built from registered parts: ``gcn`` / ``gat`` / ``cnn`` / ``transformer`` are the
structured models of :mod:`.structured` with the reference's defaults; ``rnn`` and
``regression_rnn`` follow the reference's layout (per-token RPN layers and chain layers over
a continuous sequence), which the token-id :class:`~.structured.ChainRPN` does not have.
With identity κ and ψ (the defaults):

* ``gcn`` layer = Â X W, Â = D^{-1/2}(A + I)D^{-1/2} (Kipf & Welling), ReLU between layers;
* ``gat`` layer = softmax over each node's neighbours of x_i W_bᵀ x_jᵀ, times X W (the
  reference's graph-bilinear ξ, ``hybrid``) = ``scaled_dot_product_attention`` with the
  graph as mask;
* ``cnn`` = conv2d → ReLU → 2×2 max-pool per grid layer, then linear heads;
* ``rnn`` = per-token layer relu(x_t W₁), chain layer relu((h_t + h_{t-1}) W₂), mean over
  t, linear output (``regression_rnn``: the output reads all T steps, flattened);
* ``transformer`` = attention layers equal to ``scaled_dot_product_attention`` with
  rank-3 queries/keys (the reference's low-rank interdependence), residuals, layer norms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigurationError
from ..head import RPNHead
from ..interdependence import InterdependentHead
from .classic import _check_dims
from .structured import AttentionRPN, GraphRPN, GridRPN, _activation, _component_options, _seeded

__all__ = ["GCN", "GAT", "CNN", "RNN", "RegressionRNN", "Transformer"]


class GCN(GraphRPN):
    """GCN as an RPN (reference ``gcn``): Â X W layers, ReLU between, no bias, no dropout.

    Every option of :class:`~rpnkit.models.GraphRPN` is accepted (``graph``, ``edges`` /
    ``num_nodes``, ``expansion``, ``reconciliation``, ``heads``, ...); only the defaults
    differ: ``bias=False`` and ``dropout=0.0`` as in the reference (``enable_bias``,
    ``with_dropout`` off). Â is the symmetric normalisation (the reference's default is a
    column normalisation; give ``interdependence_params={"normalization": ...}`` to change).
    """

    def __init__(self, dims: Sequence[int], graph: Any = "cora", bias: bool = False,
                 dropout: float = 0.0, **options: Any) -> None:
        super().__init__(dims, graph=graph, bias=bias, dropout=dropout, **options)


class GAT(GraphRPN):
    """Graph attention as an RPN (reference ``gat``): ξ = softmax over neighbours of a learned
    bilinear form (``hybrid`` ξ), no bias, no dropout.

    Options as :class:`~rpnkit.models.GraphRPN`; ``interdependence_params`` reach the
    ``hybrid`` ξ (e.g. ``{"reconciliation": "lorr", "reconciliation_params": {"r": 3}}``,
    the reference's ``with_lorr_interdependence``).
    """

    def __init__(self, dims: Sequence[int], graph: Any = "cora", interdependence: Any = "hybrid",
                 bias: bool = False, dropout: float = 0.0, **options: Any) -> None:
        super().__init__(dims, graph=graph, interdependence=interdependence, bias=bias,
                         dropout=dropout, **options)


class CNN(GridRPN):
    """CNN as an RPN (reference ``cnn``): 3×3 patch layers (conv2d), ReLU, 2×2 max pooling,
    then fully connected RPN heads with dropout 0.5 (the reference's ``p_fc``).

    Options as :class:`~rpnkit.models.GridRPN` (``dims = [C·H·W, channels..., classes]``,
    ``image``, ``kernel``, ``padding``, ``pool``, ``hidden``, ...).
    """

    def __init__(self, dims: Sequence[int], image: Sequence[int] = (1, 28, 28),
                 dropout: float = 0.5, **options: Any) -> None:
        super().__init__(dims, image=image, dropout=dropout, **options)


class Transformer(AttentionRPN):
    """Transformer as an RPN (reference ``transformer``): attention layers with rank-3
    queries/keys (the reference's low-rank interdependence, ``r_interdependence=3``),
    residuals, layer norms, dropout 0.25.

    Options as :class:`~rpnkit.models.AttentionRPN` (token ids of shape (B, T)).
    """

    def __init__(self, dims: Sequence[int], rank: int | None = 3, dropout: float = 0.25,
                 **options: Any) -> None:
        super().__init__(dims, rank=rank, dropout=dropout, **options)


class RNN(nn.Module):
    """RNN as an RPN (reference ``rnn``): per-token layers and chain layers over T steps.

    Args:
        dims: ``[features per step, hidden_1, ..., outputs]``.
        length: T, the number of steps; input is (B, T·features) (the reference's flattened
            sequence) or (B, T, features).
        hops, direction, decay: the chain ξ of the h→h layers (default one hop into the past,
            decay 1: ξ(H)_t = H_t + H_{t-1}, the reference's ``h=1``, ``self_dependence``).
        expansion, reconciliation, expansion_params, reconciliation_params, seed: κ / ψ of
            every layer.
        activation: after every hidden layer (default relu); bias: on every layer (default
            False, the reference's ``enable_bias``).

    For every hidden width h: token layer x_t ↦ act(⟨κ(x_t), ψ(w)⟩) (width → h), then chain
    layer H ↦ act(⟨κ(ξ(H)), ψ(w)⟩) (h → h); the output head reads the mean over t.
    """

    flatten_output = False

    def __init__(self, dims: Sequence[int], length: int = 1, hops: int | None = 1,
                 direction: str = "forward", decay: float = 1.0, expansion: Any = "identity",
                 reconciliation: Any = "identity", expansion_params: Mapping | None = None,
                 reconciliation_params: Mapping | None = None, activation: Any = "relu",
                 bias: bool = False, seed: int | None = None) -> None:
        super().__init__()
        name = type(self).__name__
        self.dims = _check_dims(dims, name)
        if len(self.dims) < 3:
            raise ConfigurationError(
                f"{name}: dims needs at least [features, hidden, outputs], got {self.dims}")
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigurationError(f"{name}: length must be an integer >= 1, got {length!r}")
        self.length = int(length)
        opts = _component_options(expansion, reconciliation, expansion_params,
                                  reconciliation_params, seed)
        tokens, chains, prev = [], [], self.dims[0]
        chain = {"length": self.length, "hops": hops, "direction": direction, "decay": decay}
        for li, width in enumerate(self.dims[1:-1]):
            tokens.append(RPNHead(prev, width, bias=bias, **_seeded(opts, li, 0)))
            chains.append(InterdependentHead(width, width, "chain", chain, bias=bias,
                                             **_seeded(opts, li, 1)))
            prev = width
        self.tokens, self.chains = nn.ModuleList(tokens), nn.ModuleList(chains)
        width_out = prev * self.length if self.flatten_output else prev
        self.output = RPNHead(width_out, self.dims[-1], bias=bias,
                              **_seeded(opts, len(self.dims) - 2, 0))
        self.activation = _activation(activation)

    def steps(self, x: Tensor) -> Tensor:
        """x as (B, T, features)."""
        t, f = self.length, self.dims[0]
        if x.dim() == 2 and x.shape[1] == t * f:
            return x.reshape(x.shape[0], t, f)
        if x.dim() == 3 and tuple(x.shape[1:]) == (t, f):
            return x
        raise ValueError(f"{type(self).__name__} expects (B, {t * f}) or (B, {t}, {f}) "
                         f"(T={t} steps of {f} features), got {tuple(x.shape)}")

    def hidden(self, x: Tensor) -> Tensor:
        """The last chain layer's states (B, T, h)."""
        h = self.steps(x.to(self.output.w.dtype))
        for token, chain in zip(self.tokens, self.chains):
            h = self.activation(token(h))
            h = self.activation(chain(h))
        return h

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden(x)
        return self.output(h.flatten(1) if self.flatten_output else h.mean(1))


class RegressionRNN(RNN):
    """RNN for sequence regression (reference ``regression_rnn``): as ``rnn``, but the output
    head reads all T hidden states flattened (width T·h) instead of their mean."""

    flatten_output = True
