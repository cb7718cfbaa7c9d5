"""RPNLayer: H heads on the same input, fused by sum / mean / concat / linear."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError, did_you_mean
from .head import RPNHead, check_dim
from .modules import apply_list, bind_module_list, build_module_list

__all__ = ["RPNLayer", "HEAD_FUSIONS"]

HEAD_FUSIONS = ("sum", "mean", "concat", "linear")


def _fresh(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Deep-copy module-valued options so that every head owns its components."""
    return {k: copy.deepcopy(v) if isinstance(v, nn.Module) else v for k, v in kwargs.items()}


class RPNLayer(nn.Module):
    """A layer of H heads: ``fuse_h(head_h(x))``, then optional output modules.

    Args:
        m, n: input and output widths of the layer.
        heads: the heads (``RPNHead`` instances). When omitted, ``num_heads`` heads are
            built from ``head_kwargs`` (expansion, reconciliation, remainder, channels,
            bias, init ... as for :class:`RPNHead`).
        fusion: ``"sum"`` (default, the model's definition), ``"mean"``, ``"concat"``
            (output width Σ n_h) or ``"linear"`` (a learned map from the concatenation to n,
            initialised to the mean of the heads when they all have width n).

            With ``concat`` and given heads, ``n`` may be the fused width Σ n_h or, when
            every head is n wide (SPEC §1: each head maps R^m to R^n), the heads' width; the
            layer then outputs H·n and ``layer.n`` holds that fused width. Auto-built concat
            heads split n evenly (``n`` divisible by ``num_heads``).
        output: module(s) applied to the fused output (activation, norm, dropout).
        head_output: module(s) applied to each auto-built head's output.
    """

    def __init__(
        self,
        m: int,
        n: int,
        heads: Sequence[RPNHead] | None = None,
        fusion: str = "sum",
        num_heads: int = 1,
        output: Any = None,
        head_output: Any = None,
        **head_kwargs: Any,
    ) -> None:
        super().__init__()
        self.m = check_dim("m", m, "RPNLayer")
        self.n = check_dim("n", n, "RPNLayer")
        if fusion not in HEAD_FUSIONS:
            raise ConfigurationError(
                f"RPNLayer: fusion must be one of {HEAD_FUSIONS}, got {fusion!r}"
            )
        self.fusion = fusion
        head_options = list(inspect.signature(RPNHead.__init__).parameters)[3:]
        for key in head_kwargs:
            if key not in head_options:
                raise ConfigurationError(
                    f"RPNLayer: unknown head option {key!r}{did_you_mean(key, head_options)}; "
                    f"valid: {', '.join(head_options)}"
                )
        if heads is None:
            num_heads = check_dim("num_heads", num_heads, "RPNLayer")
            if fusion == "concat":
                if self.n % num_heads:
                    raise ConfigurationError(
                        f"RPNLayer: concat fusion splits n={self.n} over {num_heads} heads; "
                        f"n must be divisible by the number of heads"
                    )
                head_n = self.n // num_heads
            else:
                head_n = self.n
            heads = [
                RPNHead(self.m, head_n, output=copy.deepcopy(head_output), **_fresh(head_kwargs))
                for _ in range(num_heads)
            ]
        elif head_kwargs or head_output is not None:
            raise ConfigurationError(
                f"RPNLayer: head options {sorted(head_kwargs)} given together with built heads"
            )
        heads = list(heads)
        if not heads:
            raise ConfigurationError("RPNLayer: needs at least one head")
        for i, h in enumerate(heads):
            if not isinstance(h, RPNHead):
                raise ConfigurationError(
                    f"RPNLayer: head {i} is a {type(h).__name__}, expected RPNHead"
                )
            if h.m != self.m:
                raise ConfigurationError(
                    f"RPNLayer(m={self.m}): head {i} takes m={h.m} inputs; every head must take "
                    f"the layer's m={self.m}"
                )
        widths = [h.n for h in heads]
        if fusion in ("sum", "mean") and any(w != self.n for w in widths):
            raise ConfigurationError(
                f"RPNLayer(n={self.n}) with {fusion!r} fusion needs every head to output n={self.n}, "
                f"got head widths {widths}"
            )
        if fusion == "concat" and sum(widths) != self.n and all(w == self.n for w in widths):
            # SPEC §1 reading: every head maps R^m -> R^n and concat outputs Σ n_h = H·n
            self.n = sum(widths)
        if fusion == "concat" and sum(widths) != self.n:
            raise ConfigurationError(
                f"RPNLayer(n={self.n}) with 'concat' fusion needs the head widths to sum to "
                f"{self.n}, got {widths} (sum {sum(widths)})"
            )
        self.heads = nn.ModuleList(heads)
        self.fusion_linear: nn.Linear | None = None
        if fusion == "linear":
            self.fusion_linear = nn.Linear(sum(widths), self.n, bias=False)
            if all(w == self.n for w in widths):
                with torch.no_grad():
                    eye = torch.eye(self.n) / len(widths)
                    self.fusion_linear.weight.copy_(torch.cat([eye] * len(widths), dim=1))
        self.output = build_module_list(output)
        bind_module_list(self.output, self.n)

    def forward(self, x: Tensor) -> Tensor:
        outs = [h(x) for h in self.heads]
        if self.fusion in ("sum", "mean"):
            y = outs[0]
            for o in outs[1:]:
                y = y + o
            if self.fusion == "mean" and len(outs) > 1:
                y = y / len(outs)
        else:
            y = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
            if self.fusion_linear is not None:
                # cast like the heads do, so float64 input stays float64 in a float32 layer
                y = y @ self.fusion_linear.weight.to(y.dtype).transpose(0, 1)
        return apply_list(self.output, y)

    def plan(self) -> str:
        lines = [f"RPNLayer {self.m}->{self.n}, {len(self.heads)} head(s), {self.fusion} fusion"]
        lines += [f"  head {i}: {h.plan()}" for i, h in enumerate(self.heads)]
        return "\n".join(lines)

    def extra_repr(self) -> str:
        return f"m={self.m}, n={self.n}, heads={len(self.heads)}, fusion={self.fusion!r}"
