"""Issue-15 benchmark: KAN against the one-GEMM floor and peers, optimizer step, symmetric Taylor,
per-step casts and evaluation memory, before vs after, as paired interleaved rounds.

    .venv/bin/python benchmarks/kan_floor.py [--before /tmp/before/src] [--rounds 21]
                                             [--peers /tmp/peers] [--quick] [--out FILE]

How. Everything timed runs in this one process, so every candidate of a configuration sees
the same machine state: each round times every candidate once (K steps each, K fixed per
configuration from a warm-up), candidates in a rotated order per round. A candidate's figure
is the median over rounds of its per-round median step time, with the interquartile range
(IQR, 25th–75th percentile over rounds); ratios are taken per round (candidate / rpnkit in
the same round) and summarised the same way. The "before" package (``--before``: another
checkout's ``src``, e.g. ``git archive HEAD src | tar -x -C /tmp/before``) is imported
under the name ``rpnkit_before`` next to this checkout's ``rpnkit``.

Candidates (fwd+bwd of ``model(x).square().mean()``, float32, x without grad):

* rpnkit ``KAN(dims)`` after / before;
* ``GEMM floor``: the matrix products a KAN step cannot avoid – per layer one
  (B, m(t+d)+m) × (m(t+d)+m, n) product forward, its weight gradient, and the input
  gradient for hidden layers – on fixed dense inputs, no basis evaluated;
* ``one-GEMM B-spline KAN``: a plain-torch KAN written here (Cox–de Boor on all knots,
  concatenated with SiLU(x), one GEMM per layer), the design of efficient-kan;
* efficient-kan (``efficient_kan`` importable from ``--peers``) and pykan (``kan``, pip
  ``pykan``), each skipped with a note when not installed.

Other sections: the identity model ([784, 64, 64, 10], Taylor d=2, identity ψ) training step
with Adam as built by each package's optimizer registry (before: PyTorch's per-parameter
loop; after: the fused kernel by default); Taylor d=2 784→64 symmetric vs ordered; the number
of ``aten::_to_copy`` per KAN step (profiler); the peak resident memory of evaluating the
identity model on 10,000 rows in a fresh process (old fixed 8192-row chunks vs the budgeted
chunks).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from torch import nn

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results"
sys.path.insert(0, str(ROOT / "src"))

import rpnkit  # noqa: E402


def load_package(src: str, name: str):
    """Import the rpnkit package under ``src`` as module ``name`` (None when absent)."""
    init = Path(src) / "rpnkit" / "__init__.py"
    if not init.exists():
        return None
    spec = importlib.util.spec_from_file_location(
        name, init, submodule_search_locations=[str(init.parent)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def optional(name: str):
    try:
        return __import__(name)
    except Exception as exc:  # a peer that does not import is skipped
        return f"{type(exc).__name__}: {exc}"[:80]


# ------------------------------------------------------------------------------ candidates
class OneGemmKAN(nn.Module):
    """Plain-torch B-spline KAN: dense Cox–de Boor basis ‖ SiLU(x), one GEMM per layer."""

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


class GemmFloor(nn.Module):
    """The KAN step's unavoidable products on fixed dense inputs (no basis evaluated)."""

    def __init__(self, dims, batch, t=5, d=3):
        super().__init__()
        widths = [m * (t + d) + m for m in dims[:-1]]
        self.weights = nn.ParameterList(nn.Parameter(torch.randn(n, w) / w**0.5)
                                        for w, n in zip(widths, dims[1:]))
        self.inputs = [torch.rand(batch, w, requires_grad=i > 0) for i, w in enumerate(widths)]


def floor_step(model):
    def step():
        for p in model.parameters():
            p.grad = None
        for a in model.inputs:
            a.grad = None
        loss = sum((a @ w.t()).square().mean() for a, w in zip(model.inputs, model.weights))
        loss.backward()
    return step


def train_step(model, x):
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        for p in params:
            p.grad = None
        model(x).square().mean().backward()
    return step


def opt_step(model, x, opt):
    def step():
        opt.zero_grad(set_to_none=True)
        model(x).square().mean().backward()
        opt.step()
    return step


# ------------------------------------------------------------------------------ timing
def quantiles(v):
    v = sorted(v)
    if len(v) < 4:
        return statistics.median(v), v[0], v[-1]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[1], q[0], q[2]


def timed_rounds(cands: dict, rounds: int, budget_s: float) -> dict:
    """{name: per-round median seconds}, candidates interleaved and rotated per round."""
    names = list(cands)
    for fn in cands.values():  # warm-up
        fn()
        fn()
    t0 = time.perf_counter()
    for fn in cands.values():
        fn()
    per_step = (time.perf_counter() - t0) / len(cands)
    reps = max(1, min(50, int(budget_s / max(per_step, 1e-6) / len(cands))))
    out = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            ts = []
            for _ in range(reps):
                t = time.perf_counter()
                cands[n]()
                ts.append(time.perf_counter() - t)
            out[n].append(statistics.median(ts))
    out["_reps"] = reps
    return out


def fmt_ms(v):
    med, q1, q3 = quantiles(v)
    return f"{1e3 * med:.3g} [{1e3 * q1:.3g}–{1e3 * q3:.3g}]"


def fmt_ratio(a, b):
    med, q1, q3 = quantiles([x / y for x, y in zip(a, b)])
    return f"**{med:.2f}** [{q1:.2f}–{q3:.2f}]"


def section_table(title, res, ref, rows_note=""):
    names = [n for n in res if not n.startswith("_")]
    lines = [f"### {title}", "", f"{res['_reps']} steps per candidate per round; {rows_note}".rstrip("; "),
             "", f"| candidate | ms per step, median [IQR] | ratio to {ref}, median [IQR] |",
             "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {fmt_ms(res[n])} | {fmt_ratio(res[n], res[ref])} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ sections
def kan_section(dims, batch, before, peers, rounds, budget):
    torch.manual_seed(0)
    x = torch.rand(batch, dims[0]) * 2 - 1
    cands, notes = {}, []
    cands["rpnkit (after)"] = train_step(rpnkit.models.KAN(dims), x)
    if before is not None:
        cands["rpnkit (before)"] = train_step(before.models.KAN(dims), x)
    fl = GemmFloor(dims, batch)
    cands["GEMM floor"] = floor_step(fl)
    cands["one-GEMM B-spline KAN (plain torch)"] = train_step(OneGemmKAN(dims), x)
    ek = peers.get("efficient_kan")
    if isinstance(ek, str):
        notes.append(f"efficient-kan skipped ({ek})")
    else:
        cands["efficient-kan"] = train_step(ek.KAN(list(dims), grid_size=5, spline_order=3), x)
    pk = peers.get("kan")
    big = sum(m * n for m, n in zip(dims[:-1], dims[1:])) * batch > 2_000_000
    if isinstance(pk, str):
        notes.append(f"pykan skipped ({pk})")
    elif big:
        notes.append("pykan skipped at this size (its (B, m, n) activations do not fit the "
                     "time budget)")
    else:
        model = pk.KAN(width=list(dims), grid=5, k=3, auto_save=False, seed=0, device="cpu")
        cands["pykan"] = train_step(model, x)
    res = timed_rounds(cands, rounds, budget)
    return res, notes


def identity_step_section(before, rounds, budget):
    from rpnkit.training.components import OPTIMIZERS

    dims = [784, 64, 64, 10]
    opts = {"expansion": "taylor", "reconciliation": "identity", "remainder": "zero",
            "expansion_params": {"d": 2}}
    torch.manual_seed(0)
    x = torch.rand(64, 784)
    cands = {}
    m_after = rpnkit.RPN.from_dims(dims, **opts)
    cands["after: registry adam (fused by default)"] = opt_step(
        m_after, x, OPTIMIZERS.build("adam", lr=1e-3)(list(m_after.parameters())))
    if before is not None:
        from importlib import import_module

        bopt = import_module("rpnkit_before.training.components").OPTIMIZERS
        m_before = before.RPN.from_dims(dims, **opts)
        cands["before: registry adam"] = opt_step(
            m_before, x, bopt.build("adam", lr=1e-3)(list(m_before.parameters())))
    m_loop = rpnkit.RPN.from_dims(dims, **opts)
    cands["after, fused: false (per-parameter loop)"] = opt_step(
        m_loop, x, OPTIMIZERS.build("adam", lr=1e-3, fused=False)(list(m_loop.parameters())))
    params = sum(p.numel() for p in m_after.parameters())
    return timed_rounds(cands, rounds, budget), params


def taylor_section(before, rounds, budget):
    torch.manual_seed(0)
    x = torch.rand(64, 784)
    cands = {}
    for label, pkg in (("after", rpnkit), ("before", before)):
        if pkg is None:
            continue
        for sym in (True, False):
            head = pkg.RPNHead(784, 64, expansion="taylor",
                               expansion_params={"d": 2, "symmetric": sym},
                               reconciliation="identity")
            path = head.contraction.path
            cands[f"{label}: {'symmetric' if sym else 'ordered'} ({path}, D={head.D:,})"] = \
                train_step(head, x)
    return timed_rounds(cands, rounds, budget)


def rbf_section(before, rounds, budget):
    """Gaussian RBF head 64→64 (K=10) as a hidden layer: x requires grad, batch 1024."""
    torch.manual_seed(0)
    cands = {}
    for label, pkg in (("after", rpnkit), ("before", before)):
        if pkg is None:
            continue
        for name in ("gaussian_rbf", "inverse_quadratic_rbf"):
            head = pkg.RPNHead(64, 64, expansion=name, reconciliation="identity")
            x = torch.randn(1024, 64, requires_grad=True)
            cands[f"{label}: {name}"] = _with_input_grad(head, x)
    return timed_rounds(cands, rounds, budget)


def _with_input_grad(module, x):
    def step():
        for p in module.parameters():
            p.grad = None
        x.grad = None
        module(x).square().mean().backward()
    return step


def count_copies(pkg, dims, batch):
    torch.manual_seed(0)
    model = pkg.models.KAN(dims)
    x = torch.rand(batch, dims[0]) * 2 - 1
    step = train_step(model, x)
    step()
    with torch.profiler.profile() as prof:
        step()
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")


EVAL_CHILD = r"""
import resource, sys, json, torch
sys.path.insert(0, sys.argv[1])
import rpnkit
torch.set_num_threads(int(sys.argv[3]))
torch.manual_seed(0)
model = rpnkit.RPN.from_dims([784, 64, 64, 10], expansion="taylor", reconciliation="identity",
                             remainder="zero", expansion_params={"d": 2}).eval()
x = torch.rand(10000, 784)
chunk = int(sys.argv[2])
if chunk == 0:
    from rpnkit.budget import eval_rows
    chunk = eval_rows(model, torch.float32)
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
try:  # reset the high-water mark after building the model (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    pass
base = status("VmRSS:")
import time
t = time.perf_counter()
with torch.no_grad():
    out = torch.cat([model(c) for c in x.split(chunk)])
dt = time.perf_counter() - t
peak = status("VmHWM:")
life = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"chunk": chunk, "base_mb": base, "peak_mb": peak, "life_mb": life, "s": dt}))
"""


def eval_memory_section(threads, repeats=3):
    """Each variant in ``repeats`` fresh processes, alternating; peak from every run."""
    variants = (("fixed 8192-row chunks (before: evaluate's default)", 8192),
                ("budgeted chunks (after: eval_batch_size null)", 0))
    runs = {label: [] for label, _ in variants}
    for _ in range(repeats):
        for label, chunk in variants:
            out = subprocess.run([sys.executable, "-c", EVAL_CHILD, str(ROOT / "src"),
                                  str(chunk), str(threads)], capture_output=True, text=True,
                                 timeout=600)
            if out.returncode == 0:
                runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    for label, _ in variants:
        rs = runs[label]
        if not rs:
            rows.append(f"| {label} | failed | | | |")
            continue
        peak = statistics.median(r["peak_mb"] for r in rs)
        extra = statistics.median(r["peak_mb"] - r["base_mb"] for r in rs)
        secs = sorted(r["s"] for r in rs)
        rows.append(f"| {label} | {rs[0]['chunk']} | {peak:.0f} | {extra:.0f} | "
                    f"{statistics.median(secs):.1f} [{secs[0]:.1f}–{secs[-1]:.1f}] |")
    return ("### Evaluation memory: identity model [784, 64, 64, 10], 10,000 rows, fresh "
            f"process each ({repeats} processes per variant, alternating)\n\n"
            "Peak RSS while evaluating (VmHWM, reset after the model is built) and the part "
            "above the RSS before evaluating (medians); seconds: median [min–max].\n\n"
            "| chunking | rows per chunk | peak RSS while evaluating, MB | of which evaluation, "
            "MB | seconds |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def header(args, threads):
    env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    return (f"# Issue 15: floors, peers, before/after (paired, interleaved rounds)\n\n"
            f"- torch {torch.__version__}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs; torch threads {threads}, interop "
            f"{torch.get_num_interop_threads()}; env {env}\n"
            f"- load average at start {load[0]:.2f}\n"
            f"- rounds {args.rounds} (interleaved, order rotated per round); after = "
            f"{ROOT / 'src'}, before = {args.before}\n"
            f"- command: `python benchmarks/kan_floor.py {' '.join(sys.argv[1:])}`\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="/tmp/before/src")
    ap.add_argument("--peers", default="/tmp/peers",
                    help="folder holding efficient_kan (fetched for measurement only)")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--budget", type=float, default=0.15, help="seconds per candidate per round")
    ap.add_argument("--quick", action="store_true", help="3 rounds, small budget (a smoke run)")
    ap.add_argument("--only", default="kan,optimizer,taylor,rbf,copies,memory")
    ap.add_argument("--out", default=str(RESULTS / "kan_floor_cpu.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.budget = 3, 0.02
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    sys.path.insert(0, args.peers)
    peers = {"efficient_kan": optional("efficient_kan"), "kan": optional("kan")}
    before = load_package(args.before, "rpnkit_before")
    only = set(args.only.split(","))
    parts = [header(args, threads)]
    if before is None:
        parts.append(f"\n(before package not found under {args.before}: after only)\n")

    def emit(text):
        parts.append("\n" + text)
        print(text, flush=True)

    if "kan" in only:
        emit("## KAN (B-spline t=5, d=3, SiLU base), fwd+bwd\n")
        for dims, batch in (([2, 5, 1], 64), ([2, 5, 1], 1024), ([784, 64, 10], 256),
                            ([784, 64, 10], 1024)):
            res, notes = kan_section(dims, batch, before, peers, args.rounds, args.budget)
            emit(section_table(f"KAN {dims}, batch {batch}", res, "rpnkit (after)",
                               "; ".join(notes)))
    if "optimizer" in only:
        res, params = identity_step_section(before, args.rounds, args.budget * 4)
        ref = next(iter(res))
        emit(section_table(f"Identity model [784, 64, 64, 10] ({params:,} parameters), batch "
                           f"64: fwd + bwd + Adam step", res, ref))
    if "taylor" in only:
        res = taylor_section(before, args.rounds, args.budget * 4)
        ref = next(iter(res))
        emit(section_table("Taylor d=2, 784→64, identity ψ, batch 64, fwd+bwd", res, ref))
    if "rbf" in only:
        res = rbf_section(before, args.rounds, args.budget)
        ref = next(iter(res))
        emit(section_table("RBF head 64→64, K=10, batch 1024, input with grad (hidden layer), "
                           "fwd+bwd", res, ref))
    if "copies" in only:
        rows = []
        for dims, batch in (([2, 5, 1], 64), ([784, 64, 10], 1024)):
            after = count_copies(rpnkit, dims, batch)
            bef = count_copies(before, dims, batch) if before is not None else "–"
            rows.append(f"| KAN {dims}, batch {batch} | {bef} | {after} |")
        emit("### aten::_to_copy per KAN training step (torch.profiler)\n\n| configuration | "
             "before | after |\n|---|---|---|\n" + "\n".join(rows) + "\n")
    if "memory" in only:
        emit(eval_memory_section(threads))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("".join(parts))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
