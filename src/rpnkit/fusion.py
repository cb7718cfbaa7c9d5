"""Fusion of channels and heads: objects registered by name in ``FUSIONS``.

``sum`` (the model's definition), ``mean``, ``max`` / ``min`` / ``prod`` / ``median``
(elementwise over the parts), ``concat``, ``weighted`` (fixed weights), ``learned``
(softmax-normalised learnable weights, initially the mean), ``linear`` (a learned map from
the concatenation to n, initially the mean) and ``parameterised_concat`` (a learned map
from the concatenation whose matrix is a reconciliation ψ(w): lorr, hm, lphm, dual_lphm,
random_matrix_adaption, ...).
A fusion is bound to the widths it receives; ``calculate_n(widths)`` is its shape rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ConfigurationError
from .registry import FUSIONS, RECONCILIATIONS

__all__ = ["FUSIONS", "Fusion", "build_fusion"]


class Fusion(nn.Module):
    """Base class: fuses a list of tensors (*, n_i) into one tensor (*, n)."""

    registry_name = "fusion"
    #: fuse(A y_1, ..., A y_H) = A fuse(y_1, ..., y_H) for a matrix A on dimension -2
    is_linear = True
    #: the fused width is the sum of the parts' widths (heads then split the layer's n)
    splits_width = False

    def calculate_n(self, widths: Sequence[int]) -> int:
        if len(set(widths)) != 1:
            raise ConfigurationError(
                f"{self.registry_name} fusion needs equal widths, got {list(widths)}; use concat"
            )
        return int(widths[0])

    def bind(self, widths: Sequence[int], **factory: Any) -> int:
        self.widths = [int(w) for w in widths]
        return self.calculate_n(self.widths)

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return self.registry_name


@FUSIONS.register("sum")
class SumFusion(Fusion):
    """Σ_i y_i."""

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        y = parts[0]
        for p in parts[1:]:
            y = y + p
        return y


@FUSIONS.register("mean")
class MeanFusion(SumFusion):
    """(1/H) Σ_i y_i."""

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return super().forward(parts) / len(parts) if len(parts) > 1 else parts[0]


@FUSIONS.register("max")
class MaxFusion(Fusion):
    """Elementwise max_i y_i."""

    is_linear = False

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(parts), 0).amax(0) if len(parts) > 1 else parts[0]


@FUSIONS.register("min")
class MinFusion(Fusion):
    """Elementwise min_i y_i."""

    is_linear = False

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(parts), 0).amin(0) if len(parts) > 1 else parts[0]


@FUSIONS.register("prod")
class ProdFusion(Fusion):
    """Elementwise product ∏_i y_i."""

    is_linear = False

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        y = parts[0]
        for p in parts[1:]:
            y = y * p
        return y


@FUSIONS.register("median")
class MedianFusion(Fusion):
    """Elementwise median of the parts (the lower middle value for an even count).

    As ``torch.median`` and the reference toolkit."""

    is_linear = False

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.stack(list(parts), 0).median(0).values if len(parts) > 1 else parts[0]


@FUSIONS.register("concat")
class ConcatFusion(Fusion):
    """[y_1 | ... | y_H] along the last dimension."""

    splits_width = True

    def calculate_n(self, widths: Sequence[int]) -> int:
        return int(sum(widths))

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(parts), dim=-1) if len(parts) > 1 else parts[0]


@FUSIONS.register("weighted")
class WeightedFusion(Fusion):
    """Σ_i a_i y_i with fixed weights ``weights`` (one per part)."""

    def __init__(self, weights: Sequence[float] = ()) -> None:
        super().__init__()
        self.weight_list = [float(w) for w in weights]

    def bind(self, widths: Sequence[int], **factory: Any) -> int:
        n = super().bind(widths)
        if len(self.weight_list) != len(widths):
            raise ConfigurationError(
                f"weighted fusion: {len(self.weight_list)} weights given for {len(widths)} parts"
            )
        self.register_buffer("weights", torch.tensor(self.weight_list, dtype=factory.get("dtype")
                                                     or torch.get_default_dtype()),
                             persistent=False)
        return n

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.einsum("h,h...->...", self.weights.to(parts[0].dtype), torch.stack(list(parts)))


@FUSIONS.register("learned")
class LearnedFusion(Fusion):
    """Σ_i softmax(a)_i y_i with learnable logits a (zeros at start: the mean)."""

    def bind(self, widths: Sequence[int], **factory: Any) -> int:
        n = super().bind(widths)
        f = {k: v for k, v in factory.items() if v is not None}
        self.logits = nn.Parameter(torch.zeros(len(widths), **f))
        return n

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.logits.zero_()

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return torch.einsum("h,h...->...", torch.softmax(self.logits, 0), torch.stack(list(parts)))


@FUSIONS.register("linear")
class LinearFusion(Fusion):
    """A learned map from the concatenation to ``n`` (default: the common width).

    Initially the mean of the parts when their widths equal n."""

    def __init__(self, n: int | None = None) -> None:
        super().__init__()
        self.n = n

    def calculate_n(self, widths: Sequence[int]) -> int:
        return int(self.n) if self.n is not None else super().calculate_n(widths)

    def bind(self, widths: Sequence[int], **factory: Any) -> int:
        n = super().bind(widths)
        f = {k: v for k, v in factory.items() if v is not None}
        self.linear = nn.Linear(sum(widths), n, bias=False, **f)
        self.out_n = n
        self.reset_parameters()
        return n

    def reset_parameters(self) -> None:
        if all(w == self.out_n for w in self.widths):
            with torch.no_grad():
                eye = torch.eye(self.out_n, dtype=self.linear.weight.dtype)
                self.linear.weight.copy_(torch.cat([eye / len(self.widths)] * len(self.widths), 1))
        else:
            self.linear.reset_parameters()

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        return self.linear(torch.cat(list(parts), dim=-1))


@FUSIONS.register("parameterised_concat")
class ParameterisedConcatFusion(Fusion):
    """y = [y_1 | ... | y_H] ψ(w)ᵀ: a learned n × Σn_i map parameterised by a reconciliation.

    Args:
        n: output width (default: the common width of the parts).
        reconciliation / reconciliation_params: ψ (registry name or mapping; default
            ``lorr`` with r = 2). The product runs through ψ's own ``apply`` (low-rank and
            Kronecker forms never form the n × Σn_i matrix). w is initialised as a head's w
            (:func:`rpnkit.init.init_rpn_weights`, the scale of an ``nn.Linear``).
    """

    def __init__(self, n: int | None = None, reconciliation: Any = "lorr",
                 reconciliation_params: Mapping | None = None) -> None:
        super().__init__()
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigurationError(f"parameterised_concat fusion: n must be an integer >= 1, got {n!r}")
        self.n = n
        params = dict(reconciliation_params or {})
        self.psi = RECONCILIATIONS.resolve(reconciliation, params)
        self.w: nn.Parameter | None = None

    def calculate_n(self, widths: Sequence[int]) -> int:
        return int(self.n) if self.n is not None else super().calculate_n(widths)

    def bind(self, widths: Sequence[int], **factory: Any) -> int:
        n = super().bind(widths)
        f = {k: v for k, v in factory.items() if v is not None}
        self.out_n, self.in_d = n, int(sum(self.widths))
        self.psi.factory_kwargs = f
        self.psi.bind(n, self.in_d)
        self.w = nn.Parameter(torch.empty(int(self.psi.calculate_l(n, self.in_d)), **f))
        self.reset_parameters()
        return n

    def reset_parameters(self) -> None:
        if self.w is not None and not self.w.is_meta:
            from .init import init_rpn_weights

            init_rpn_weights(self.w.data.view(1, -1), self.psi, self.out_n, self.in_d)

    def matrix(self) -> Tensor:
        """The n × Σn_i matrix ψ(w) (the definition)."""
        return self.psi.reconcile(self.w, self.out_n, self.in_d)

    def forward(self, parts: Sequence[Tensor]) -> Tensor:
        x = torch.cat(list(parts), dim=-1) if len(parts) > 1 else parts[0]
        flat = x.reshape(-1, self.in_d)
        w = self.w if self.w.dtype == flat.dtype else self.w.to(flat.dtype)
        y = self.psi.apply(flat, w, self.out_n, self.in_d)
        return y.reshape(*x.shape[:-1], self.out_n)

    def extra_repr(self) -> str:
        return f"n={self.n}, reconciliation={self.psi.registry_name!r}"


def build_fusion(spec: Any, **params: Any) -> Fusion:
    """A fusion from a registry name, a ``{"name": ..., **params}`` mapping or a module."""
    return FUSIONS.resolve(spec, params)
