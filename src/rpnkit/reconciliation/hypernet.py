"""Hypernetwork reconciliation: W = reshape(Net(z), n×D)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..modules import apply_list
from ..registry import RECONCILIATIONS
from .base import Reconciliation, check_int

__all__ = ["HyperNet"]


def _seeded_linear(
    fan_in: int, fan_out: int, g: torch.Generator, bound: float | None = None
) -> nn.Linear:
    lin = nn.Linear(fan_in, fan_out)
    bound = 1.0 / math.sqrt(fan_in) if bound is None else bound
    with torch.no_grad():
        lin.weight.copy_((torch.rand(fan_out, fan_in, generator=g) * 2 - 1) * bound)
        lin.bias.copy_((torch.rand(fan_out, generator=g) * 2 - 1) * bound)
    return lin


@RECONCILIATIONS.register("hypernet")
class HyperNet(Reconciliation):
    """W = reshape(Net(z), n×D), Net = Linear(l, hidden)–sigmoid–Linear(hidden, nD).

    z ∈ R^l is the learnable code (l = ``l``, independent of n and D). ``Net`` is a
    registered submodule, seeded, and frozen by default (``frozen=False`` trains it).
    The output layer is created when the component is bound to (n, D), initialised
    uniform(±1/√(D·(hidden/4 + 1))) so that W has roughly the RMS 1/√(3D) of a D-input
    ``nn.Linear`` (SPEC §5) for codes z drawn uniform(±1), as :mod:`rpnkit.init` does.
    """

    homogeneity = None

    def __init__(self, l: int = 64, hidden: int = 128, frozen: bool = True, seed: int = 0) -> None:  # noqa: E741
        super().__init__()
        self.l = check_int("l", l, "HyperNet")
        self.hidden = check_int("hidden", hidden, "HyperNet")
        self.frozen = bool(frozen)
        self.seed = int(seed)
        g = torch.Generator().manual_seed(self.seed)
        self.net = nn.Sequential(_seeded_linear(self.l, self.hidden, g), nn.Sigmoid())
        self._freeze()

    def hparams(self) -> dict[str, Any]:
        return {"l": self.l, "hidden": self.hidden, "frozen": self.frozen, "seed": self.seed}

    def _freeze(self) -> None:
        if self.frozen:
            for p in self.net.parameters():
                p.requires_grad_(False)

    def calculate_l(self, n, D):  # noqa: N803
        return self.l

    def bind(self, n, D):  # noqa: N803
        super().bind(n, D)
        if len(self.net) == 2:
            g = torch.Generator().manual_seed(self.seed + 1)
            first = self.net[0].weight  # follow an earlier .to() / .double() of the module
            # sigmoid outputs have E[h²] ≈ 1/4, so this bound gives W an RMS ≈ 1/√(3D):
            # the scale nn.Linear gives a D-input layer (SPEC §5), whatever `hidden` is.
            bound = 1.0 / math.sqrt(int(D) * (self.hidden / 4 + 1))
            out = _seeded_linear(self.hidden, int(n) * int(D), g, bound)
            self.net.append(out.to(device=first.device, dtype=first.dtype))
            self._freeze()

    def reset_state(self) -> None:
        super().reset_state()
        while len(self.net) > 2:
            del self.net[-1]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "net.2.weight"
        if len(self.net) == 2 and key in state_dict:
            out = state_dict[key].shape[0]
            first = self.net[0].weight
            self.net.append(nn.Linear(self.hidden, out, device=first.device, dtype=first.dtype))
            self._freeze()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        self.ensure_bound(n, D)
        # evaluated in w's dtype (a float32 net on a float64 code computes in float64)
        return apply_list(self.net, w).reshape(n, D)

    def describe_apply(self, n, D):  # noqa: N803
        return "hypernet: evaluate the hypernetwork, then one GEMM with the n×D matrix"
