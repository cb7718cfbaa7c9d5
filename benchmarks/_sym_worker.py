"""Worker of ``structured.py --sections sym`` (issue 21 item 5): times training steps of
symmetric and ordered Taylor heads with the rpnkit found under ``argv[1]`` (a ``src``
folder), one process per package so that a "before" tree and the working tree run side by
side. Talks JSON lines: ``{"reps": K}`` -> per-config seconds of K steps of each variant."""

from __future__ import annotations

import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, sys.argv[1])

import torch

import rpnkit
from rpnkit import RPNHead

#: (name, reconciliation, params, d, m); batch 256, n = 8 outputs
RECS = [("identity", "identity", {}), ("lorr r=2", "lorr", {"r": 2}),
        ("lphm p=2 q=8 r=2", "lphm", {"p": 2, "q": 8, "r": 2})]
CONFIGS = [(f"{name}, d={d}, m={m}", rec, rp, d, m) for name, rec, rp in RECS
           for d in (2, 3) for m in (64, 256)
           if not (d == 3 and m == 256 and rec != "lorr")]  # ordered m^3·n: too big here
BATCH, N = 256, 8


def step_of(module, x):
    params = list(module.parameters())

    def run():
        for p in params:
            p.grad = None
        module(x).square().mean().backward()

    return run


class Floor(torch.nn.Module):
    """The GEMM floor of symmetric identity: κ(X) built once (outside the step), y = K Wᵀ."""

    def __init__(self, head, x):
        super().__init__()
        with torch.no_grad():
            self.register_buffer("k", head.expansion(x))
        self.w = torch.nn.Parameter(head.w.detach().reshape(N, -1).clone())

    def forward(self, _x):
        return self.k @ self.w.t()


def main() -> None:
    torch.set_num_threads(1)
    steps, paths = {}, {}
    g = torch.Generator().manual_seed(0)
    for name, rec, rp, d, m in CONFIGS:
        x = torch.rand(BATCH, m, generator=g) * 2 - 1
        variants = {}
        for sym in (True, False):
            torch.manual_seed(0)
            head = RPNHead(m, N, expansion="taylor", expansion_params={"d": d, "symmetric": sym},
                           reconciliation=rec, reconciliation_params=rp)
            variants["sym" if sym else "ord"] = step_of(head, x)
            paths[f"{name}/{'sym' if sym else 'ord'}"] = head.contraction.path
            if sym and rec == "identity" and d == 3:
                variants["floor"] = step_of(Floor(head, x), x)
        for f in variants.values():
            f()
        steps[name] = variants
    print(json.dumps({"ready": True, "file": rpnkit.__file__, "paths": paths}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("cmd") == "quit":
            break
        out = {}
        for name, variants in steps.items():
            for var, f in variants.items():
                t0 = time.perf_counter()
                for _ in range(req["reps"]):
                    f()
                out[f"{name}/{var}"] = (time.perf_counter() - t0) / req["reps"]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
