"""A plain PyTorch MLP used as the same-size baseline (registered as model ``torch_mlp``)."""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigurationError
from ..modules import ACTIVATIONS

__all__ = ["TorchMLP"]


class TorchMLP(nn.Module):
    """Plain MLP of nn.Linear layers with an activation between them (baseline)."""

    def __init__(self, dims: list[int], activation: str = "silu", bias: bool = True) -> None:
        super().__init__()
        if len(dims) < 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
            raise ConfigurationError(f"torch_mlp: dims must be >= 2 positive integers, got {dims!r}")
        if activation not in ACTIVATIONS:
            raise ConfigurationError(
                f"torch_mlp: unknown activation {activation!r}; valid: {', '.join(ACTIVATIONS)}"
            )
        self.dims = list(dims)
        mods: list[nn.Module] = []
        for i in range(len(dims) - 1):
            mods.append(nn.Linear(dims[i], dims[i + 1], bias=bias))
            if i < len(dims) - 2:
                mods.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() > 2:
            x = x.flatten(1)
        return self.net(x)
