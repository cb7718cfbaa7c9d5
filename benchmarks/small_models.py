"""Small models, before vs after, in one run (issue 21 items 2 and 7).

    .venv/bin/python benchmarks/small_models.py --before /tmp/before_h15/src [--after src]
                                                [--rounds R] [--reps K] [--compile-epochs E]
                                                [--no-compile] [--note TEXT]

Make the "before" package with ``git archive <rev> src | tar -x -C /tmp/before_h15``.

Step sections (AdamW lr 1e-3, one training step = zero_grad, forward, MSE, backward, step):

* ``RPN-Ext [2,2,1]`` (47 parameters: extended[bspline, taylor d=2], lorr r=1, remainder
  zero), batch 100, against the 51-parameter MLP ``[2,5,5,1]`` (SiLU), batch 100;
* ``RPN-Ext [2,2,2,1]`` (71 parameters, the default job's model), batch 100, against the
  151-parameter MLP ``[2,10,10,1]`` (SiLU), batch 100;
* ``KAN [2,5,1]`` (rpnkit's ``models.KAN``), batch 64, against a naive one-GEMM KAN written
  here (:class:`NaiveKAN`: the basis by Cox–de Boor on all knots, concatenated with SiLU(x),
  one matmul per layer) and, with ``--peers DIR`` (a folder holding the ``efficient_kan``
  package, e.g. from github.com/Blealtan/efficient-kan ``src/``), efficient-kan's ``KAN``
  (grid 5, order 3).

How: two long-lived worker subprocesses (this script with ``--worker SRC``), one per
package, both with ``OMP_WAIT_POLICY=PASSIVE`` and ``torch.set_num_threads(1)``, talking JSON
lines. Every worker builds every model (``torch.manual_seed(0)``), warms up, and is then
asked alternately – before, after, before, after, ... for R rounds – to time K steps of
each model; only one worker runs at a time, so load from other processes hits both alike.
Reported: the median [IQR] over rounds of the per-step time, and of the per-round ratios
(rpnkit model / its reference, measured in the same worker in the same round). The aten
ops of one forward+backward are counted with ``torch.profiler``.

Compile section: ``fit`` of the RPN-Ext model (170 training rows, batch 64: the last batch
is partial; val and test splits evaluated) with ``compile: false`` and ``compile: true``, in
a fresh worker per run (wall time including compilation, and the number of graphs dynamo
compiled).

Results: printed, and written to ``benchmarks/results/small_models.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from _stats import fmt

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results"

PAIRS = [("rpn_ext", "mlp", "RPN-Ext [2,2,1] B=100 / MLP [2,5,5,1] B=100 (target <= 1.5)"),
         ("rpn_ext3", "mlp10", "RPN-Ext [2,2,2,1] B=100 / MLP [2,10,10,1] B=100"),
         ("naive_kan", "kan", "naive one-GEMM KAN / rpnkit KAN [2,5,1] B=64 (target >= 1.2)"),
         ("efficient_kan", "kan", "efficient-kan / rpnkit KAN [2,5,1] B=64 (target >= 1.2)")]
#: where the worker imports efficient-kan from (``--peers``), if given
PEERS_ENV = "RPNKIT_BENCH_PEERS"


# ------------------------------------------------------------------------------------- worker
def _worker(src: str) -> None:
    sys.path.insert(0, src)
    import torch
    from torch import nn

    torch.set_num_threads(1)
    import rpnkit
    from rpnkit.models import KAN

    class NaiveKAN(nn.Module):
        """One-GEMM B-spline KAN: Cox–de Boor basis on all knots ‖ SiLU(x), one matmul."""

        def __init__(self, dims, t=5, d=3, lo=-1.0, hi=1.0):
            super().__init__()
            h = (hi - lo) / t
            self.register_buffer("knots", lo + h * torch.arange(-d, t + d + 1, dtype=torch.float32))
            self.d = d
            self.weights = nn.ParameterList(
                nn.Parameter(torch.randn(n, m * (t + d) + m) / (m * (t + d + 1)) ** 0.5)
                for m, n in zip(dims[:-1], dims[1:]))

        def basis(self, x):
            k, xe = self.knots, x.unsqueeze(-1)
            b = ((xe >= k[:-1]) & (xe < k[1:])).to(x.dtype)
            for p in range(1, self.d + 1):
                b = ((xe - k[: -(p + 1)]) / (k[p:-1] - k[: -(p + 1)]) * b[..., :-1]
                     + (k[p + 1:] - xe) / (k[p + 1:] - k[1:-p]) * b[..., 1:])
            return b.flatten(1)

        def forward(self, x):
            for w in self.weights:
                x = torch.cat([self.basis(x), nn.functional.silu(x)], 1) @ w.t()
            return x

    def rpn_ext(dims=(2, 2, 1)):
        return rpnkit.RPN.from_dims(
            list(dims), expansion={"name": "extended", "expansions": ["bspline", {"name": "taylor", "d": 2}]},
            reconciliation="lorr", reconciliation_params={"r": 1}, remainder="zero")

    def mlp(h=5):
        return nn.Sequential(nn.Linear(2, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 1))

    builders = {"rpn_ext": (rpn_ext, 100), "mlp": (mlp, 100),
                "rpn_ext3": (lambda: rpn_ext((2, 2, 2, 1)), 100), "mlp10": (lambda: mlp(10), 100),
                "kan": (lambda: KAN([2, 5, 1]), 64),
                "naive_kan": (lambda: NaiveKAN([2, 5, 1]), 64)}
    if os.environ.get(PEERS_ENV):
        sys.path.insert(0, os.environ[PEERS_ENV])
        import efficient_kan

        builders["efficient_kan"] = (
            lambda: efficient_kan.KAN([2, 5, 1], grid_size=5, spline_order=3), 64)
    steps, info = {}, {}
    for name, (make, batch) in builders.items():
        torch.manual_seed(0)
        model = make()
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(1)
        x = torch.rand(batch, 2, generator=g) * 2 - 1
        y = torch.rand(batch, 1, generator=g)

        def step(model=model, opt=opt, x=x, y=y):
            opt.zero_grad(set_to_none=True)
            loss = (model(x) - y).square().mean()
            loss.backward()
            opt.step()

        for _ in range(30):
            step()
        from torch.profiler import profile

        with profile() as prof:
            model(x).square().mean().backward()
        ops = sum(1 for e in prof.events() if e.name.startswith("aten::"))
        info[name] = {"params": sum(p.numel() for p in model.parameters()), "ops": ops,
                      "batch": batch}
        steps[name] = step
    print(json.dumps({"ready": True, "file": rpnkit.__file__, "info": info,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        out = {}
        for name, step in steps.items():
            t0 = time.thread_time()  # CPU time of this (single) thread: robust to load
            for _ in range(req["reps"]):
                step()
            out[name] = (time.thread_time() - t0) / req["reps"]
        print(json.dumps(out), flush=True)


def _compile_worker(src: str, compile_: bool, epochs: int) -> None:
    sys.path.insert(0, src)
    import torch

    torch.set_num_threads(1)
    import torch._dynamo
    from torch._dynamo.utils import counters

    import rpnkit
    from rpnkit.training import fit

    g = torch.Generator().manual_seed(0)
    x = torch.rand(250, 2, generator=g) * 2 - 1
    y = (x[:, :1] * x[:, 1:2]).contiguous()
    data = {"train": (x[:170], y[:170]), "val": (x[170:210], y[170:210]), "test": (x[210:], y[210:])}
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims(
        [2, 2, 1], expansion={"name": "extended", "expansions": ["bspline", {"name": "taylor", "d": 2}]},
        reconciliation="lorr", reconciliation_params={"r": 1}, remainder="zero")
    t0 = time.perf_counter()
    res = fit(model, data, {"epochs": epochs, "batch_size": 64, "compile": compile_,
                            "optimizer": {"name": "adamw"}})
    wall = time.perf_counter() - t0
    print(json.dumps({"wall": wall, "graphs": int(counters["stats"].get("unique_graphs", 0)),
                      "test_mse": res.final["test"]["mse"]}), flush=True)


# ------------------------------------------------------------------------------------- driver
def _env() -> dict:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    return env


def _start(src: str) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, str(HERE), "--worker", src], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env(), cwd="/tmp")
    ready = _read(proc)
    want = str(Path(src).resolve() / "rpnkit")
    if not ready["file"].startswith(want):
        raise SystemExit(f"worker for {src} imported rpnkit from {ready['file']}")
    return proc, ready


def _read(proc: subprocess.Popen) -> dict:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("worker died")
        if line.startswith("{"):
            return json.loads(line)


def _ask(proc: subprocess.Popen, req: dict) -> dict:
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.flush()
    return _read(proc)


def _fmt(values: list[float], scale: float = 1e6, digits: int = 0) -> str:
    return fmt(values, scale, digits)


def _compile_run(src: str, compile_: bool, epochs: int) -> dict:
    out = subprocess.run([sys.executable, str(HERE), "--compile-worker", src,
                          "--compile", "1" if compile_ else "0", "--epochs", str(epochs)],
                         capture_output=True, text=True, env=_env(), cwd="/tmp", check=True)
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="/tmp/before_h15/src")
    ap.add_argument("--after", default=str(ROOT / "src"))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--compile-epochs", type=int, default=3)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--note", default="", help="a paragraph appended to the results file")
    ap.add_argument("--peers", default="",
                    help="a folder holding the efficient_kan package (adds efficient-kan [2,5,1])")
    ap.add_argument("--worker")
    ap.add_argument("--compile-worker")
    ap.add_argument("--compile", default="0")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker)
    if args.compile_worker:
        return _compile_worker(args.compile_worker, args.compile == "1", args.epochs)

    sides = {"before": args.before, "after": args.after}
    if args.peers:
        os.environ[PEERS_ENV] = str(Path(args.peers).resolve())
    procs, ready = {}, {}
    for side, src in sides.items():
        procs[side], ready[side] = _start(src)
    models = [m for m in ready["after"]["info"] if m in ready["before"]["info"]]
    pairs = [p for p in PAIRS if p[0] in models and p[1] in models]
    times = {side: {m: [] for m in models} for side in sides}
    ratios = {side: {a: [] for a, _b, _t in pairs} for side in sides}
    for _ in range(args.rounds):
        for side in sides:
            got = _ask(procs[side], {"cmd": "time", "reps": args.reps})
            for m in models:
                times[side][m].append(got[m])
            for a, b, _t in pairs:
                ratios[side][a].append(got[a] / got[b])
    for p in procs.values():
        p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        p.stdin.flush()
        p.wait()

    lines = [
        "# Small models: per-step cost before vs after (issue 21 items 2 and 7)",
        "",
        f"torch {ready['after']['torch']}, {platform.processor() or platform.machine()}, "
        f"torch.set_num_threads(1) (OMP_NUM_THREADS=MKL_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE) "
        f"in every worker; {args.rounds} paired interleaved rounds of {args.reps} steps; "
        f"median [IQR] over rounds. CPU: {os.cpu_count()} logical cores, shared with other "
        f"processes; times are the worker thread's CPU time (`time.thread_time`): waiting "
        f"for the CPU does not count, cache and frequency effects of other load still do "
        f"(ratios are per round, within one worker).",
        f"before: `{sides['before']}`; after: `{sides['after']}`; generated by "
        f"`benchmarks/small_models.py`.",
        "",
        "## Training step (AdamW, MSE), µs per step",
        "",
        "| model | params | aten ops fwd+bwd (before → after) | before µs | after µs |",
        "|---|---|---|---|---|",
    ]
    names = {"rpn_ext": "RPN-Ext [2,2,1] B=100", "mlp": "MLP [2,5,5,1] (SiLU) B=100",
             "rpn_ext3": "RPN-Ext [2,2,2,1] B=100", "mlp10": "MLP [2,10,10,1] (SiLU) B=100",
             "kan": "rpnkit KAN [2,5,1] B=64", "naive_kan": "naive one-GEMM KAN [2,5,1] B=64",
             "efficient_kan": "efficient-kan [2,5,1] B=64 (grid 5, order 3)"}
    for m in models:
        ib, ia = ready["before"]["info"][m], ready["after"]["info"][m]
        lines.append(f"| {names[m]} | {ia['params']} | {ib['ops']} → {ia['ops']} | "
                     f"{_fmt(times['before'][m])} | {_fmt(times['after'][m])} |")
    lines += ["", "## Ratios (per round, same worker)", "", "| ratio | before | after |",
              "|---|---|---|"]
    for a, _b, title in pairs:
        rb, ra = ratios["before"][a], ratios["after"][a]
        lines.append(f"| {title} | {_fmt(rb, 1, 2)} | {_fmt(ra, 1, 2)} |")
    if not args.no_compile:
        lines += ["", f"## compile (fit of RPN-Ext, {args.compile_epochs} epochs, 170 rows, "
                  "batch 64: last batch partial; val and test evaluated)", "",
                  "| package | compile | wall s | graphs compiled | test mse |", "|---|---|---|---|---|"]
        for side, src in sides.items():
            for comp in (False, True):
                r = _compile_run(src, comp, args.compile_epochs)
                lines.append(f"| {side} | {comp} | {r['wall']:.1f} | {r['graphs']} | "
                             f"{r['test_mse']:.6g} |")
    old = RESULTS / "small_models.md"
    if args.no_compile and old.exists() and "## compile" in old.read_text():
        # keep the previous run's compile table (its heading and rows, not its notes)
        kept = old.read_text().split("## compile", 1)[1].split("\n## ", 1)[0]
        head, body = kept.split("\n", 1)
        head = head.split(" – kept from", 1)[0]
        rows = [ln for ln in body.splitlines() if ln.startswith("|")]
        lines += ["", f"## compile{head} – kept from a previous run (this run: --no-compile)",
                  "", *rows]
    if args.note:
        lines += ["", args.note]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "small_models.md").write_text(text)


if __name__ == "__main__":
    main()
