"""Sequence interdependence: chains (RNN-like) and bilinear attention (Transformer-like).

Both act on the tokens of one sample, dimension -2 of a (*, T, d) input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice, check_positive_int

__all__ = ["ChainInterdependence", "AttentionInterdependence", "MAX_CHAIN_LENGTH"]

#: longest chain: its band is a dense T×T matrix (built in float64 with a few temporaries)
MAX_CHAIN_LENGTH = 8192


@INTERDEPENDENCES.register("chain")
class ChainInterdependence(Interdependence):
    """Instance-level chain over T tokens: token t depends on its neighbours up to ``hops``.

    A[t, s] = decay^{|t-s|} for the neighbours s allowed by ``direction`` (``forward``:
    s ≤ t, the past; ``backward``: s ≥ t; ``both``) within ``hops`` steps (``None``: the
    whole chain). ``normalize`` divides each row by its sum. With ``direction: forward``,
    ``hops: None`` and decay α, ξ(X) W is the linear recurrence h_t = x_t W + α h_{t-1}.

    Form: a T×T lower/upper band (T is the sequence length, small), applied by one batched
    matrix product; ``hops`` bounds the band.
    """

    level = "instance"
    left_multiplies = True
    couples_rows = True  # tokens along dimension -2: input (*, T, d), never a bare batch

    def __init__(self, length: int = 1, hops: int | None = None, direction: str = "forward",
                 decay: float = 1.0, self_loop: bool = True, normalize: bool = False) -> None:
        super().__init__()
        owner = "chain interdependence"
        self.length = check_positive_int("length", length, owner)
        if self.length > MAX_CHAIN_LENGTH:
            raise ConfigurationError(
                f"{owner}: length={self.length:,} is above the limit of {MAX_CHAIN_LENGTH:,} "
                f"tokens (the chain is a dense T×T matrix: {self.length:,}² entries)"
            )
        self.hops = None if hops is None else check_positive_int("hops", hops, owner)
        self.direction = check_choice("direction", direction, ("forward", "backward", "both"), owner)
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not math.isfinite(decay):
            raise ConfigurationError(f"{owner}: decay must be a finite number, got {decay!r}")
        self.decay, self.self_loop, self.normalize = float(decay), bool(self_loop), bool(normalize)
        t = torch.arange(self.length, dtype=torch.float64)
        lag = t[:, None] - t[None, :]  # t - s
        if self.direction == "forward":
            allowed = lag >= 0
        elif self.direction == "backward":
            allowed = lag <= 0
        else:
            allowed = torch.ones_like(lag, dtype=torch.bool)
        if self.hops is not None:  # a band wider than the chain is the whole chain
            allowed &= lag.abs() <= min(self.hops, self.length)
        if not self.self_loop:
            allowed &= lag != 0
        a = torch.where(allowed, torch.tensor(self.decay, dtype=torch.float64) ** lag.abs(),
                        torch.zeros((), dtype=torch.float64))
        if self.normalize:
            a = a / a.sum(1, keepdim=True).clamp_min(1e-12)
        self.register_buffer("a", a.to(torch.get_default_dtype()), persistent=False)
        self._a64 = a.numpy()  # the exact values: every dtype change re-rounds from them

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self.a = torch.as_tensor(self._a64).to(dtype=self.a.dtype, device=self.a.device)
        return out

    def form(self) -> str:
        band = "full" if self.hops is None else f"±{self.hops}"
        return f"banded ({self.direction}, {band}, T={self.length})"

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        if z.dim() < 2 or z.shape[-2] != self.length:
            raise ValueError(f"chain interdependence over T={self.length} tokens expects input "
                             f"of shape (*, {self.length}, d), got {tuple(z.shape)}")
        return torch.matmul(self.a.to(z.dtype), z)

    def matrix(self, x: Tensor | None = None) -> Tensor:
        return self.a if x is None else self.a.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"length={self.length}, hops={self.hops}, direction={self.direction!r}, "
                f"decay={self.decay}, normalize={self.normalize}")


@INTERDEPENDENCES.register("attention")
class AttentionInterdependence(Interdependence):
    """Bilinear (attention-like) instance ξ(X) = softmax(X W_q W_kᵀ Xᵀ / √r + mask) X.

    The bilinear form W_q W_kᵀ is a low-rank (rank r = ``rank``) matrix – the ``lorr``
    reconciliation's form – and is applied factor by factor, never formed. ``causal``
    masks the future. With the head's ψ holding W_v, the head output equals
    ``scaled_dot_product_attention(X W_q, X W_k, X W_v)``.
    """

    level = "instance"
    left_multiplies = True
    couples_rows = True  # tokens along dimension -2: input (*, T, d), never a bare batch

    def __init__(self, rank: int = 16, causal: bool = False, bias: bool = False) -> None:
        super().__init__()
        self.rank = check_positive_int("rank", rank, "attention interdependence")
        self.causal, self.use_bias = bool(causal), bool(bias)
        self.query: nn.Linear | None = None
        self.key: nn.Linear | None = None

    def bind(self, m: int, **factory: Any) -> None:
        super().bind(m)
        self.query = nn.Linear(m, self.rank, bias=self.use_bias, **factory)
        self.key = nn.Linear(m, self.rank, bias=self.use_bias, **factory)

    def reset_parameters(self) -> None:
        if self.query is not None:
            self.query.reset_parameters()
            self.key.reset_parameters()

    def form(self) -> str:
        return f"data (softmax of a rank-{self.rank} bilinear form{', causal' if self.causal else ''})"

    def scores(self, x: Tensor) -> Tensor:
        if self.query is None:
            raise ConfigurationError("attention interdependence: bind(m) it (or build it in a head) first")
        q, k = self.query(x), self.key(x)
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.rank)
        if self.causal:
            t = x.shape[-2]
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            s = s.masked_fill(future, float("-inf"))
        return torch.softmax(s, dim=-1)

    def mix(self, z: Tensor, x: Tensor) -> Tensor:
        return torch.matmul(self.scores(x), z)

    def matrix(self, x: Tensor | None = None) -> Tensor:
        if x is None:
            raise ConfigurationError("attention interdependence: its matrix depends on the input x")
        return self.scores(x)

    def extra_repr(self) -> str:
        return f"m={self.m}, rank={self.rank}, causal={self.causal}"
