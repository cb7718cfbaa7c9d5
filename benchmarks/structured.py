"""Structured evaluation vs the materialised definition, and vs peers (issue 3).

Run ``make bench`` or::

    .venv/bin/python benchmarks/structured.py --device cpu [--quick]
    .venv/bin/python benchmarks/structured.py --device cuda --quick

Every ratio is measured side by side in one process: for each configuration the same
head (same parameters) is timed once through ``head(x)`` (the structured path that
``head.plan()`` names) and once through the *materialised definition*: dense κ(X)
(B×D), dense ψ(w) (n×D, ``reconcile``), one matmul. Timings are forward+backward of
``y.square().mean()``, median of repeated runs after warm-up; the two variants are
interleaved so that load from other processes hits both alike.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over the step minus the memory
held before it. On CPU (no allocator statistics) the bytes of the distinct tensors saved
for backward by autograd during the forward (``torch.autograd.graph.saved_tensors_hooks``),
excluding parameters, plus the output: the activation memory a training step holds at its
peak between forward and backward. Transient temporaries freed inside the forward are not
counted (for the materialised definition they are of the same size as the saved κ(X)).

Results go to ``benchmarks/results/structured_<device>.md`` (and PNG scaling plots).
"""

from __future__ import annotations

import os

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

# OpenMP's default *active* wait spins between parallel regions; on a shared, oversubscribed
# CPU (other jobs on the same 2 cores) a spinning thread steals the core from the one doing
# the work and every small op pays milliseconds. Passive waiting is set before torch loads
# (export OMP_WAIT_POLICY=ACTIVE to measure the other way); both variants run under it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import rpnkit
from rpnkit import RPN, RPNHead
from rpnkit.contract import materialised_product


def path_name(head):
    return head.contraction.path

RESULTS = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------------------------------------
# measurement helpers
# ---------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def materialised():
    """Make every RPNHead use the materialised definition (for whole-model baselines)."""
    original = RPNHead.expansion_product
    RPNHead.expansion_product = lambda self, x: materialised_product(self, x)
    try:
        yield
    finally:
        RPNHead.expansion_product = original


def step_fn(module: nn.Module, x: torch.Tensor, dense: bool):
    params = [p for p in module.parameters() if p.requires_grad]

    def run():
        for p in params:
            p.grad = None
        if dense:
            with materialised():
                y = module(x)
        else:
            y = module(x)
        y.square().mean().backward()

    return run


#: per-round times of the last :func:`time_pair` call (for ratio spreads)
LAST_ROUNDS: list[list[float]] = []


def iqr(values: list[float]) -> tuple[float, float, float]:
    """(median, 25th, 75th percentile)."""
    v = sorted(values)
    if len(v) < 4:
        return statistics.median(v), v[0], v[-1]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[1], q[0], q[2]


def time_pair(fns: list, device: torch.device, reps: int, warmup: int = 1,
              budget_s: float = 20.0) -> list[float]:
    """Median seconds of each fn, interleaved (a, b, a, b, ...); at least ``reps`` rounds
    (the time budget only stops a run after them). Per-round times: ``LAST_ROUNDS``."""
    for f in fns:
        for _ in range(warmup):
            f()
        sync(device)
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    for i in range(reps):
        for j, f in enumerate(fns):
            sync(device)
            t0 = time.perf_counter()
            f()
            sync(device)
            times[j].append(time.perf_counter() - t0)
        if i >= reps - 1 and time.perf_counter() - start > budget_s:
            break
    LAST_ROUNDS[:] = times
    return [statistics.median(t) for t in times]


def peak_bytes(run, module: nn.Module, x: torch.Tensor, dense: bool) -> int:
    device = x.device
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    param_ptrs = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        ptr = st.data_ptr()
        if ptr not in param_ptrs and ptr not in seen:
            seen[ptr] = st.nbytes()
        return t

    for p in module.parameters():
        p.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        if dense:
            with materialised():
                y = module(x)
        else:
            y = module(x)
    total = sum(seen.values()) + y.numel() * y.element_size()
    y.square().mean().backward()
    return total


def fmt_ms(s: float) -> str:
    return f"{s * 1e3:.2f}" if s < 1 else f"{s * 1e3:.0f}"


def fmt_mb(b: float) -> str:
    return f"{b / 2**20:.1f}"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# benchmark sections
# ---------------------------------------------------------------------------------------------
FIRST_LAYER = [
    ("identity", {"d": 2}, "identity", {}),
    ("identity + symmetric", {"d": 2, "symmetric": True}, "identity", {}),
    ("lorr r=2", {"d": 2}, "lorr", {"r": 2}),
    ("hm p=8 q=784", {"d": 2}, "hm", {"p": 8, "q": 784}),
    ("lphm p=8 q=784 r=5", {"d": 2}, "lphm", {"p": 8, "q": 784, "r": 5}),
    ("dual_lphm p=8 q=784 r=5", {"d": 2}, "dual_lphm", {"p": 8, "q": 784, "r": 5}),
    ("hm p=8 q=785", {"d": 2}, "hm", {"p": 8, "q": 785}),
    ("lphm p=8 q=785 r=5", {"d": 2}, "lphm", {"p": 8, "q": 785, "r": 5}),
    ("dual_lphm p=8 q=785 r=5", {"d": 2}, "dual_lphm", {"p": 8, "q": 785, "r": 5}),
]


def compare(name, module, x, device, reps, rows, extra=None):
    fast, dense = step_fn(module, x, False), step_fn(module, x, True)
    with torch.no_grad():
        y = module(x)
        with materialised():
            y0 = module(x)
    err = rel_err(y, y0)
    tf, td = time_pair([fast, dense], device, reps)
    mf = peak_bytes(fast, module, x, False)
    md = peak_bytes(dense, module, x, True)
    fast_r, dense_r = LAST_ROUNDS
    med, q1, q3 = iqr([d / f for d, f in zip(dense_r, fast_r)])  # paired, per round
    row = [name] + (extra or []) + [
        fmt_ms(td), fmt_ms(tf), f"**{med:.1f}×** [{q1:.1f}–{q3:.1f}]", fmt_mb(md), fmt_mb(mf),
        f"{md / max(mf, 1):.1f}×", f"{err:.1e}",
    ]
    rows.append(row)
    print("  " + " | ".join(row), flush=True)
    return td / tf


def first_layer(device, reps, batch=64):
    rows = []
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 784, generator=g).to(device)
    for name, ep, rec, rp in FIRST_LAYER:
        torch.manual_seed(0)
        head = RPNHead(784, 64, expansion="taylor", expansion_params=ep, reconciliation=rec,
                       reconciliation_params=rp).to(device)
        compare(name, head, x, device, reps, rows, [f"`{path_name(head)}`"])
    hdr = [f"784→64, Taylor d=2, batch {batch}", "path", "materialised ms", "rpnkit ms",
           "speed-up", "materialised MB", "rpnkit MB", "memory cut", "rel. err (fp32)"]
    return table(hdr, rows)


PAPER_MODELS = [
    ("identity", "identity", {}, [{}, {}, {}]),
    ("lorr r=2", "lorr", {"r": 2}, [{}, {}, {}]),
    ("hm p=8, q=m+1", "hm", None, [{"p": 8, "q": 785}, {"p": 8, "q": 65}, {"p": 2, "q": 65}]),
    ("lphm p=8, q=m+1, r=5", "lphm", None,
     [{"p": 8, "q": 785, "r": 5}, {"p": 8, "q": 65, "r": 5}, {"p": 2, "q": 65, "r": 5}]),
    ("dual_lphm p=8, q=m+1, r=5", "dual_lphm", None,
     [{"p": 8, "q": 785, "r": 5}, {"p": 8, "q": 65, "r": 5}, {"p": 2, "q": 65, "r": 5}]),
    ("dual_lphm p=8, q=784/64, r=5", "dual_lphm", None,
     [{"p": 8, "q": 784, "r": 5}, {"p": 8, "q": 64, "r": 5}, {"p": 2, "q": 64, "r": 5}]),
]


def paper_models(device, reps, batch=64):
    rows = []
    x = torch.rand(batch, 784, generator=torch.Generator().manual_seed(1)).to(device)
    for name, rec, rp, per_layer in PAPER_MODELS:
        torch.manual_seed(0)
        layers = [{"reconciliation_params": p} for p in per_layer] if rp is None else None
        model = RPN.from_dims([784, 64, 64, 10], expansion="taylor", expansion_params={"d": 2},
                              reconciliation=rec, reconciliation_params=rp, layers=layers).to(device)
        nparam = sum(p.numel() for p in model.parameters())
        compare(name, model, x, device, reps, rows, [f"{nparam:,}"])
    hdr = [f"[784,64,64,10] Taylor d=2, batch {batch}", "params", "materialised ms",
           "rpnkit ms", "speed-up", "materialised MB", "rpnkit MB", "memory cut", "rel. err"]
    return table(hdr, rows)


class PykanLayers(nn.Module):
    """pykan KANLayer stack (forward returns the layer output only)."""

    def __init__(self, widths):
        super().__init__()
        from kan.KANLayer import KANLayer

        self.layers = nn.ModuleList(
            KANLayer(in_dim=a, out_dim=b, num=5, k=3, save_plot_data=False)
            for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)[0]
        return x


def kan_section(device, reps, widths=(784, 64)):
    rows = []
    try:
        import kan  # noqa: F401

        have_pykan = True
    except Exception:  # pragma: no cover - optional peer
        have_pykan = False
    for batch in (64, 1024):
        x = (torch.rand(batch, widths[0], generator=torch.Generator().manual_seed(2)) * 2 - 1)
        x = x.to(device)
        torch.manual_seed(0)
        dims = list(widths)
        rpn = RPN.from_dims(dims, expansion="bspline", expansion_params={"t": 5, "d": 3},
                            reconciliation="identity", remainder="linear",
                            remainder_params={"activation": "silu"}).to(device)
        mlp_layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            mlp_layers += [nn.Linear(a, b), nn.SiLU()]
        mlp = nn.Sequential(*mlp_layers[:-1]).to(device)
        cands = [("rpnkit KAN-equivalent", rpn), ("nn.Linear MLP", mlp)]
        if have_pykan:
            torch.manual_seed(0)
            with contextlib.redirect_stdout(sys.stderr):
                pk = PykanLayers(dims).to(device)
                if device.type == "cuda":
                    for layer in pk.layers:
                        layer.to(device)
                        layer.device = device
            cands.append(("pykan KANLayer", pk))
        fns = [step_fn(mod, x, False) for _, mod in cands]
        times = time_pair(fns, device, reps)
        mems = [peak_bytes(f, mod, x, False) for f, (_, mod) in zip(fns, cands)]
        ref = times[0]
        for (name, mod), t, mb in zip(cands, times, mems):
            nparam = sum(p.numel() for p in mod.parameters() if p.requires_grad)
            rows.append([name, str(batch), f"{nparam:,}", fmt_ms(t), f"{t / ref:.2f}×",
                         fmt_mb(mb)])
            print("  " + " | ".join(rows[-1]), flush=True)
        if not have_pykan:
            rows.append(["pykan (not installed: skipped)", str(batch), "–", "–", "–", "–"])
    hdr = [f"widths {list(widths)}", "batch", "trainable params", "fwd+bwd ms",
           "time / rpnkit", "activation MB"]
    return table(hdr, rows)


def scaling(device, reps, quick):
    """time vs m, d, batch and rank (structured vs materialised where it fits)."""
    curves: dict[str, list[tuple]] = {}
    limit = 4e7 if device.type == "cpu" else 4e8  # B·D above which the dense baseline is skipped

    def point(m, d, batch, rec, rp):
        torch.manual_seed(0)
        head = RPNHead(m, 64, expansion="taylor", expansion_params={"d": d}, reconciliation=rec,
                       reconciliation_params=rp).to(device)
        x = torch.rand(batch, m, generator=torch.Generator().manual_seed(3)).to(device)
        fns = [step_fn(head, x, False)]
        if batch * head.D <= limit:
            fns.append(step_fn(head, x, True))
        ts = time_pair(fns, device, max(3, reps // 2), budget_s=8.0)
        return ts[0], (ts[1] if len(ts) > 1 else float("nan"))

    ms = [64, 128, 256, 512, 784] if not quick else [64, 256, 784]
    for rec, rp in (("lorr", {"r": 2}), ("identity", {})):
        curves[f"m ({rec}, d=2, B=64)"] = [(m, *point(m, 2, 64, rec, rp)) for m in ms]
    curves["m (dual_lphm q=m+1 r=5, d=2, B=64)"] = [
        (m, *point(m, 2, 64, "dual_lphm", {"p": 8, "q": m + 1, "r": 5})) for m in ms
    ]
    ds = [1, 2, 3, 4] if not quick else [1, 2, 3]
    curves["d (lorr r=2, m=32, B=64)"] = [(d, *point(32, d, 64, "lorr", {"r": 2})) for d in ds]
    bs = [16, 64, 256, 1024] if not quick else [16, 64, 256]
    curves["batch (lorr r=2, m=784, d=2)"] = [(b, *point(784, 2, b, "lorr", {"r": 2})) for b in bs]
    rs = [1, 2, 4, 8, 16, 32] if not quick else [1, 4, 16]
    curves["rank (lorr, m=784, d=2, B=64)"] = [(r, *point(784, 2, 64, "lorr", {"r": r}))
                                              for r in rs]
    parts = []
    for name, pts in curves.items():
        rows = [[str(v), fmt_ms(tf), "–" if math.isnan(td) else fmt_ms(td),
                 "–" if math.isnan(td) else f"{td / tf:.1f}×"] for v, tf, td in pts]
        parts.append(f"**time vs {name}**\n\n" + table(
            [name.split(" ")[0], "rpnkit ms", "materialised ms", "speed-up"], rows))
        print(f"  scaling {name}: done", flush=True)
    plot(curves, device)
    return "\n\n".join(parts)


def plot(curves, device) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:  # pragma: no cover - plotting is optional
        return
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    for ax, (name, pts) in zip(axes.flat, curves.items()):
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] * 1e3 for p in pts], "o-", label="rpnkit (structured)")
        dense = [(p[0], p[2] * 1e3) for p in pts if not math.isnan(p[2])]
        if dense:
            ax.plot([d[0] for d in dense], [d[1] for d in dense], "s--", label="materialised")
        ax.set_xlabel(name)
        ax.set_ylabel("fwd+bwd ms")
        ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(f"rpnkit structured evaluation: scaling ({device.type})")
    fig.tight_layout()
    fig.savefig(RESULTS / f"structured_scaling_{device.type}.png", dpi=90)
    plt.close(fig)


def sym_section(before: str, after: str, rounds: int, reps: int) -> str:
    """Symmetric vs ordered Taylor (issue 21 item 5), before/after in one run: one worker
    process per package (``_sym_worker.py``), asked alternately (before, after, before, ...);
    per round each worker times every config's symmetric head, ordered head and (symmetric
    identity, d = 3) the GEMM floor. Ratios are per round, median [IQR] over rounds."""
    import json
    import subprocess

    worker = Path(__file__).resolve().parent / "_sym_worker.py"
    procs, ready = {}, {}
    for tag, src in (("before", before), ("after", after)):
        procs[tag] = subprocess.Popen([sys.executable, str(worker), src], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        ready[tag] = json.loads(procs[tag].stdout.readline())
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for r in range(rounds):
        for tag in ("before", "after"):
            procs[tag].stdin.write(json.dumps({"reps": reps}) + "\n")
            procs[tag].stdin.flush()
            runs[tag].append(json.loads(procs[tag].stdout.readline()))
        print(f"  round {r + 1}/{rounds}", flush=True)
    for proc in procs.values():
        proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        proc.stdin.flush()
        proc.wait()

    def ratio(num, den):
        med, q1, q3 = iqr([a[num] / b[den] for a, b in zip(*pairs)])
        return f"{med:.2f} [{q1:.2f}–{q3:.2f}]"

    names = sorted({k.rsplit("/", 1)[0] for k in runs["after"][0]}, key=list(
        dict.fromkeys(k.rsplit("/", 1)[0] for k in runs["after"][0])).index)
    rows, floor_rows = [], []
    for name in names:
        sym, ord_ = f"{name}/sym", f"{name}/ord"
        cells = [name, f"`{ready['before']['paths'][sym]}` → `{ready['after']['paths'][sym]}`"]
        for tag in ("before", "after"):
            pairs = (runs[tag], runs[tag])
            cells.append(ratio(ord_, sym))
        pairs = (runs["before"], runs["after"])
        cells.append(ratio(sym, sym))
        cells.append(fmt_ms(statistics.median(a[sym] for a in runs["after"])))
        cells.append(fmt_ms(statistics.median(a[ord_] for a in runs["after"])))
        rows.append(cells)
        if f"{name}/floor" in runs["after"][0]:
            fl = f"{name}/floor"
            cells = [name]
            for tag in ("before", "after"):
                pairs = (runs[tag], runs[tag])
                cells.append(ratio(sym, fl))
            cells.append(fmt_ms(statistics.median(a[fl] for a in runs["after"])))
            floor_rows.append(cells)
    hdr = [f"Taylor, batch {256}, n=8, fwd+bwd", "symmetric path (before → after)",
           "ordered / symmetric, before", "ordered / symmetric, after",
           "symmetric before / after", "symmetric ms (after)", "ordered ms (after)"]
    fhdr = ["symmetric identity", "symmetric / GEMM floor, before",
            "symmetric / GEMM floor, after", "floor ms"]
    return "\n".join([
        f"before: `{ready['before']['file']}`; after: `{ready['after']['file']}`; {rounds} "
        f"rounds × {reps} step(s) per variant, 1 thread per worker, OMP_WAIT_POLICY=PASSIVE; "
        "ratios > 1 mean the symmetric head (or, last column, the after tree) is faster.", "",
        table(hdr, rows), "",
        "GEMM floor: κ(X) built once outside the step, one parameter W (n×D), y = K Wᵀ "
        "(forward GEMM + weight-gradient GEMM).", "",
        table(fhdr, floor_rows)])


# ---------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and sizes")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per variant")
    ap.add_argument("--sections", default="first,models,kan,scaling")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--before", default=None,
                    help="sym section: src folder of the 'before' package (git archive HEAD src)")
    ap.add_argument("--rounds", type=int, default=7, help="sym section: paired rounds")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("CUDA requested but not available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    reps = args.reps or (5 if args.quick else 21)
    RESULTS.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    sections = args.sections.split(",")
    threads = torch.get_num_threads()
    env = ", ".join(f"{k}={os.environ.get(k)}" for k in
                    ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"))
    name = (torch.cuda.get_device_name(device) if device.type == "cuda" else
            f"CPU ({os.cpu_count()} logical), torch threads {threads}, interop "
            f"{torch.get_num_interop_threads()}, {env}, load average "
            f"{os.getloadavg()[0]:.2f} at start")
    out = [
        f"# rpnkit structured evaluation – {device.type}",
        "",
        f"Device: {name}; torch {torch.__version__}; float32; forward+backward of a training "
        f"step (loss = mean square of the output, input without grad); median of {reps} "
        "interleaved rounds after warm-up; speed-ups are per-round ratios, median "
        "[interquartile range]. *materialised* = dense κ(X), dense ψ(w), one matmul "
        "(the definition). Memory: " + ("CUDA peak allocated during the step." if
                                        device.type == "cuda" else
                                        "bytes saved for backward (non-parameter) + output."),
        f"Command: `python benchmarks/structured.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    t0 = time.perf_counter()
    if "first" in sections:
        print("MNIST first layer", flush=True)
        out += ["## MNIST first layer", "", first_layer(device, reps), ""]
        if device.type == "cuda":  # batch 64 is launch-bound on a GPU: also show a full batch
            out += [first_layer(device, reps, batch=1024), ""]
    if "models" in sections:
        print("paper models", flush=True)
        out += ["## Whole [784, 64, 64, 10] models", "", paper_models(device, reps), ""]
    if "kan" in sections:
        print("KAN-equivalent", flush=True)
        out += ["## KAN-equivalent layer (bspline t=5 d=3 + identity + SiLU linear remainder)",
                "", kan_section(device, reps), ""]
    if "scaling" in sections:
        print("scaling", flush=True)
        out += ["## Scaling", "", f"![scaling](structured_scaling_{device.type}.png)", "",
                scaling(device, reps, args.quick), ""]
    if "sym" in sections:
        print("symmetric vs ordered Taylor", flush=True)
        here = str(Path(__file__).resolve().parents[1] / "src")
        out += ["## Symmetric vs ordered Taylor (issue 21 item 5)", "",
                sym_section(args.before or here, here, args.rounds, 1), ""]
    out.append(f"_Total benchmark time {time.perf_counter() - t0:.0f} s; rpnkit "
               f"{rpnkit.__version__}._")
    path = RESULTS / (f"structured_{device.type}.md" if sections != ["sym"] else
                      f"structured_sym_{device.type}.md")
    path.write_text("\n".join(out) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
