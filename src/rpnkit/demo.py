"""A seconds-long demo: fit an RPN and a same-size MLP to a 2-D function."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

from .model import RPN


def _fit(model: nn.Module, x, y, xt, yt, epochs: int = 600, lr: float = 0.02) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return nn.functional.mse_loss(model(xt), yt).item()


def main() -> None:
    torch.manual_seed(0)
    f = lambda x: torch.exp(torch.sin(math.pi * x[:, :1]) + x[:, 1:] ** 2)  # noqa: E731
    x = torch.rand(2000, 2) * 2 - 1
    y = f(x)
    xt, x, yt, y = x[:1000], x[1000:], y[:1000], y[1000:]
    rpn = RPN.from_dims(
        [2, 2, 2, 1],
        expansion={"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]},
        reconciliation="lorr",
        reconciliation_params={"r": 1},
    )
    mlp = nn.Sequential(nn.Linear(2, 10), nn.SiLU(), nn.Linear(10, 10), nn.SiLU(), nn.Linear(10, 1))
    rows = []
    for name, model in (("RPN-Ext [2,2,2,1]", rpn), ("MLP [2,10,10,1]", mlp)):
        t0 = time.perf_counter()
        mse = _fit(model, x, y, xt, yt)
        n_par = sum(p.numel() for p in model.parameters())
        rows.append((name, n_par, mse, time.perf_counter() - t0))
    print("f(x, y) = exp(sin(pi x) + y^2), 1000 train / 1000 test samples, 600 full-batch Adam steps")
    print(f"{'model':<20}{'params':>8}{'test MSE':>12}{'seconds':>9}")
    for name, n_par, mse, sec in rows:
        print(f"{name:<20}{n_par:>8}{mse:>12.3e}{sec:>9.1f}")


if __name__ == "__main__":
    main()
