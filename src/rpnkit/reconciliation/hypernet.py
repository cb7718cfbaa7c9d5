"""Hypernetwork reconciliation: W = reshape(Net(z), n×D)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..registry import RECONCILIATIONS
from . import forms
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

    def __init__(
        self, l: int = 64, hidden: int = 128, frozen: bool = True, seed: int | None = None  # noqa: E741
    ) -> None:
        super().__init__()
        self.l = check_int("l", l, "HyperNet")
        self.hidden = check_int("hidden", hidden, "HyperNet")
        self.frozen = bool(frozen)
        self.seed = None if seed is None else int(seed)
        self.net = nn.Sequential()  # Linear(l, hidden), Sigmoid, Linear(hidden, nD): built at bind

    def hparams(self) -> dict[str, Any]:
        return {"l": self.l, "hidden": self.hidden, "frozen": self.frozen, "seed": self.seed}

    def form(self):
        return forms.Dense()

    def _freeze(self) -> None:
        if self.frozen:
            for p in self.net.parameters():
                p.requires_grad_(False)

    def calculate_l(self, n, D):  # noqa: N803
        return self.l

    def state_numel(self, n, D):  # noqa: N803
        return (self.l + 1) * self.hidden + (self.hidden + 1) * int(n) * int(D)

    def bind(self, n, D):  # noqa: N803
        super().bind(n, D)
        if len(self.net) == 0:
            g = self.generator()
            # sigmoid outputs have E[h²] ≈ 1/4, so this bound gives W an RMS ≈ 1/√(3D):
            # the scale nn.Linear gives a D-input layer (SPEC §5), whatever `hidden` is.
            bound = 1.0 / math.sqrt(int(D) * (self.hidden / 4 + 1))
            fk = self.factory_kwargs
            self.net.append(_seeded_linear(self.l, self.hidden, g).to(**fk))
            self.net.append(nn.Sigmoid())
            self.net.append(_seeded_linear(self.hidden, int(n) * int(D), g, bound).to(**fk))
            self._freeze()

    def reset_parameters(self) -> None:
        """Redraw the hypernetwork from its seed (the head's code z is the head's parameter)."""
        if len(self.net):
            n, D = self.n, self.D  # noqa: N806
            dev, dt = self.net[0].weight.device, self.net[0].weight.dtype
            self.net = nn.Sequential()
            self.factory_kwargs = {"device": dev, "dtype": dt}
            self.n = None
            self.bind(n, D)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key0, key2 = prefix + "net.0.weight", prefix + "net.2.weight"
        if len(self.net) == 0 and key0 in state_dict and key2 in state_dict:
            like = state_dict[key0]
            self.net.append(nn.Linear(self.l, self.hidden, device=like.device, dtype=like.dtype))
            self.net.append(nn.Sigmoid())
            self.net.append(nn.Linear(self.hidden, state_dict[key2].shape[0], device=like.device,
                                      dtype=like.dtype))
            self._freeze()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reconcile(self, w, n, D):  # noqa: N803
        self.check_w(w, n, D)
        self.ensure_bound(n, D)
        net_dtype = self.net[0].weight.dtype
        return self.net(w.to(net_dtype)).to(w.dtype).reshape(n, D)

    def ensure_bound(self, n, D):  # noqa: N803
        # loaded from a state dict into an unbound instance: the output layer fixes n·D
        if self.n is None and len(self.net) == 3 and self.net[2].out_features == n * D:
            self.n, self.D = int(n), int(D)
        super().ensure_bound(n, D)

    def describe_apply(self, n, D):  # noqa: N803
        return "hypernet: evaluate the hypernetwork, then one GEMM with the n×D matrix"
