"""Issue 21 item 3: the KAN basis without gathers, before vs after, paired interleaved rounds.

    .venv/bin/python benchmarks/kan_basis.py [--before /tmp/before_h14/src] [--rounds 7]

"before" is another checkout's ``src`` (``git archive <rev> src | tar -x -C /tmp/before_h14``),
imported as ``rpnkit_before``. One process, torch threads 1; per configuration every candidate
is timed once per round (K steps, order rotated per round); figures are the median over rounds
of the per-round median step [IQR]. Step: fwd+bwd of ``KAN([784, 64, 10])(x).square().mean()``,
float32, x without grad. The batch exponent is the slope of log(step time) against log(B)
between B=256 and B=2048 (1.0: cost per row flat). GEMM floor: kan_floor.py's ``GemmFloor``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
from pathlib import Path

import _venv  # noqa: F401

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kan_floor as kf

import rpnkit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="/tmp/before_h14/src")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--budget", type=float, default=0.3)
    ap.add_argument("--batches", default="256,1024,2048")
    ap.add_argument("--out", default=str(kf.RESULTS / "kan_basis_cpu.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    before = kf.load_package(args.before, "rpnkit_before")
    dims = [784, 64, 10]
    load = os.getloadavg()[0]
    lines = [
        "# Issue 21 item 3: KAN basis without gathers (paired, interleaved rounds)", "",
        f"- torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs; torch "
        f"threads {torch.get_num_threads()}, interop {torch.get_num_interop_threads()}; env "
        f"{ {k: os.environ.get(k) for k in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OMP_WAIT_POLICY')} }",
        f"- load average at start {load:.2f} (a shared machine: read the ratios, which are "
        "paired per round)",
        f"- rounds {args.rounds}; after = {kf.ROOT / 'src'}, before = {args.before}",
        f"- command: `python benchmarks/kan_basis.py {' '.join(sys.argv[1:])}`", "",
        f"## KAN {dims}, fwd+bwd, float32", "",
    ]
    med, rel = {}, {}
    for batch in (int(b) for b in args.batches.split(",")):
        torch.manual_seed(0)
        x = torch.rand(batch, dims[0]) * 2 - 1
        cands = {"rpnkit (after)": kf.train_step(rpnkit.models.KAN(dims), x)}
        if before is not None:
            cands["rpnkit (before)"] = kf.train_step(before.models.KAN(dims), x)
        cands["GEMM floor"] = kf.floor_step(kf.GemmFloor(dims, batch))
        res = kf.timed_rounds(cands, args.rounds, args.budget)
        for n in cands:
            med[(n, batch)] = kf.quantiles(res[n])[0]
            rel[(n, batch)] = kf.quantiles([a / f for a, f in zip(res[n], res["GEMM floor"])])[0]
        lines.append(kf.section_table(f"batch {batch}", res, "GEMM floor").replace("###", "###"))
        for n in cands:
            lines.append(f"- {n}: {1e6 * med[(n, batch)] / batch:.1f} µs per row")
        if before is not None:
            lines.append("- rpnkit after / before, per round: "
                         f"{kf.fmt_ratio(res['rpnkit (after)'], res['rpnkit (before)'])}")
        lines.append("")
        print("\n".join(lines[-len(cands) - 9:]), flush=True)
    bs = sorted({b for _n, b in med})
    if len(bs) >= 2:
        lines += ["## Batch exponent (slope of log time vs log B, "
                  f"B={bs[0]}→{bs[-1]})", "", "| candidate | exponent |", "|---|---|"]
        for n in dict.fromkeys(n for n, _b in med):
            e = math.log(med[(n, bs[-1])] / med[(n, bs[0])]) / math.log(bs[-1] / bs[0])
            lines.append(f"| {n} | {e:.2f} |")
        lines += ["", "Load-robust form: the slope of log(per-round ratio to the GEMM floor) against "
                  "log B (0: cost per row grows exactly as the floor's; the batch exponent is the "
                  "floor's exponent plus this).", "", "| candidate | exponent relative to the "
                  "GEMM floor |", "|---|---|"]
        for n in dict.fromkeys(n for n, _b in rel):
            if n != "GEMM floor":
                e = math.log(rel[(n, bs[-1])] / rel[(n, bs[0])]) / math.log(bs[-1] / bs[0])
                lines.append(f"| {n} | {e:+.2f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-6:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
