"""Speed of two rpnkit revisions side by side (old vs new fast path), in one run.

    .venv/bin/python benchmarks/compare_revisions.py [--before /work/before/src] [--after src]
                                                     [--quick] [--reps K] [--rounds R]

Measures the issue-3 configurations of ``benchmarks/structured.py`` – the MNIST first
layer (784→64, Taylor d=2, batch 64, identity / symmetric identity / lorr / hm / lphm /
dual_lphm with q = 784 and q = 785), whole [784, 64, 64, 10] models (lorr r=2 and
dual_lphm q=m+1) and the rpnkit KAN-equivalent layer – for the package under ``--before``
and the one under ``--after``.

How: two long-lived worker subprocesses (this script with ``--worker``), one per package
(its ``src`` first on ``sys.path``; the worker checks ``rpnkit.__file__``), both with
``OMP_WAIT_POLICY=PASSIVE`` and the same ``torch.set_num_threads``. They talk JSON lines
over stdin/stdout. For each configuration both build the same module (same constructor
arguments, ``torch.manual_seed(0)`` before construction; the new worker then loads the old
one's parameters by name, so both compute the same function and the outputs are compared),
warm up, and are then asked alternately – old, new, old, new, ... for R rounds – to time K
forward+backward steps of ``module(x).square().mean()`` (float32 input, no grad on x). Only
one worker runs at a time, so load from other processes hits both alike. A side's time is
the median over rounds of the per-round medians; per-round medians are listed at the end.

Results: printed, and written to ``benchmarks/results/compare_revisions.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results"

TAYLOR2 = {"expansion": "taylor", "expansion_params": {"d": 2}}


def _head(name, rec, rp, sym=False):
    ep = {"d": 2, "symmetric": True} if sym else {"d": 2}
    return {"name": name, "section": "first", "kind": "head", "m": 784, "n": 64, "batch": 64,
            "options": {"expansion": "taylor", "expansion_params": ep,
                        "reconciliation": rec, "reconciliation_params": rp}}


def _model(name, rec, per_layer):
    return {"name": name, "section": "models", "kind": "model", "dims": [784, 64, 64, 10],
            "batch": 64, "options": dict(TAYLOR2, reconciliation=rec),
            "layers": [{"reconciliation_params": p} for p in per_layer]}


def _model_shared(name, rec, rp):
    return {"name": name, "section": "models", "kind": "model", "dims": [784, 64, 64, 10],
            "batch": 64, "options": dict(TAYLOR2, reconciliation=rec, reconciliation_params=rp),
            "layers": None}


def _kan(batch):
    return {"name": f"KAN-equivalent 784→64, batch {batch}", "section": "kan", "kind": "model",
            "dims": [784, 64], "batch": batch, "signed": True, "layers": None,
            "options": {"expansion": "bspline", "expansion_params": {"t": 5, "d": 3},
                        "reconciliation": "identity", "remainder": "linear",
                        "remainder_params": {"activation": "silu"}}}


CONFIGS = [
    _head("identity", "identity", {}),
    _head("identity + symmetric", "identity", {}, sym=True),
    _head("lorr r=2", "lorr", {"r": 2}),
    _head("hm p=8 q=784", "hm", {"p": 8, "q": 784}),
    _head("lphm p=8 q=784 r=5", "lphm", {"p": 8, "q": 784, "r": 5}),
    _head("dual_lphm p=8 q=784 r=5", "dual_lphm", {"p": 8, "q": 784, "r": 5}),
    _head("hm p=8 q=785", "hm", {"p": 8, "q": 785}),
    _head("lphm p=8 q=785 r=5", "lphm", {"p": 8, "q": 785, "r": 5}),
    _head("dual_lphm p=8 q=785 r=5", "dual_lphm", {"p": 8, "q": 785, "r": 5}),
    _model_shared("model lorr r=2", "lorr", {"r": 2}),
    _model("model dual_lphm p=8, q=m+1, r=5", "dual_lphm",
           [{"p": 8, "q": 785, "r": 5}, {"p": 8, "q": 65, "r": 5}, {"p": 2, "q": 65, "r": 5}]),
    _kan(64),
    _kan(1024),
]


# =============================================================================================
# worker: one rpnkit revision, driven over stdin/stdout
# =============================================================================================
def worker(src: str, threads: int) -> int:
    proto = sys.stdout
    sys.stdout = sys.stderr  # anything else printed must not corrupt the protocol
    sys.path.insert(0, src)
    import gc

    import torch

    import rpnkit
    from rpnkit import RPN, RPNHead

    torch.set_num_threads(threads)
    try:
        from rpnkit.structured import path_name as old_path_name
    except ImportError:
        old_path_name = None

    def path_of(head) -> str:
        if hasattr(head, "contraction"):
            return head.contraction.path
        return old_path_name(head) if old_path_name else "?"

    def reply(obj) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    state: dict = {}

    def build(cfg, load, save):
        state.clear()
        gc.collect()
        torch.manual_seed(0)
        if cfg["kind"] == "head":
            module = RPNHead(cfg["m"], cfg["n"], **cfg["options"])
            m = cfg["m"]
        else:
            module = RPN.from_dims(cfg["dims"], layers=cfg["layers"], **cfg["options"])
            m = cfg["dims"][0]
        x = torch.rand(cfg["batch"], m, generator=torch.Generator().manual_seed(1))
        if cfg.get("signed"):
            x = x * 2 - 1
        named = dict(module.named_parameters())
        loaded = 0
        if load:
            ref = torch.load(load)
            with torch.no_grad():
                for k, v in ref.items():
                    if k in named and named[k].shape == v.shape:
                        named[k].copy_(v)
                        loaded += 1
        if save:
            torch.save({k: v.detach() for k, v in named.items()}, save)
        heads = [mod for mod in module.modules() if isinstance(mod, RPNHead)]
        paths = [path_of(h) for h in heads]
        params = [p for p in module.parameters() if p.requires_grad]

        def step():
            for p in params:
                p.grad = None
            module(x).square().mean().backward()

        state.update(module=module, x=x, step=step)
        t0 = time.perf_counter()
        step()  # first call: lazy set-up, allocator warm-up
        first = time.perf_counter() - t0
        step()
        t0 = time.perf_counter()
        step()
        one = time.perf_counter() - t0
        return {"paths": paths, "n_params": sum(p.numel() for p in named.values()),
                "n_named": len(named), "loaded": loaded, "first_s": first, "step_s": one}

    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        try:
            if cmd == "hello":
                reply({"file": rpnkit.__file__, "version": rpnkit.__version__,
                       "torch": torch.__version__, "threads": torch.get_num_threads(),
                       "omp": os.environ.get("OMP_WAIT_POLICY")})
            elif cmd == "build":
                reply(build(msg["cfg"], msg.get("load"), msg.get("save")))
            elif cmd == "output":
                with torch.no_grad():
                    y = state["module"](state["x"])
                torch.save(y, msg["save"])
                reply({"ok": True})
            elif cmd == "time":
                step = state["step"]
                times = []
                gc.collect()
                gc.disable()
                try:
                    for _ in range(msg["k"]):
                        t0 = time.perf_counter()
                        step()
                        times.append(time.perf_counter() - t0)
                finally:
                    gc.enable()
                reply({"times": times})
            elif cmd == "quit":
                reply({"ok": True})
                return 0
            else:
                reply({"error": f"unknown command {cmd!r}"})
        except Exception as exc:  # reported to the driver, which stops
            reply({"error": f"{type(exc).__name__}: {exc}"})
    return 0


# =============================================================================================
# driver
# =============================================================================================
class Worker:
    def __init__(self, label: str, src: str, threads: int) -> None:
        self.label = label
        env = dict(os.environ)
        env["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]]
                                                     if env.get("PYTHONPATH") else []))
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), "--worker", "--src", src, "--threads", str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT),
        )

    def ask(self, **msg):
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.label} worker died (exit {self.proc.wait()})")
        out = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"{self.label} worker: {out['error']}")
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already gone
            self.ask(cmd="quit")
        self.proc.wait(timeout=30)


def git_id(path: str) -> str:
    def git(*a):
        r = subprocess.run(["git", "--no-optional-locks", "-C", path, *a],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "?"
    dirty = git("status", "--porcelain", "--", ".")
    return commit + ("+uncommitted" if dirty else "")


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def paths_str(paths: list[str]) -> str:
    """One path per head: `p` (×N when all N heads agree) or `a` / `b` / `c`."""
    if len(set(paths)) == 1:
        return f"`{paths[0]}`" + (f" ×{len(paths)}" if len(paths) > 1 else "")
    return " / ".join(f"`{p}`" for p in paths)


def rel_err(a_path: str, b_path: str) -> float:
    import torch

    a, b = torch.load(a_path), torch.load(b_path)
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", default="/work/before/src", help="old package's src folder")
    ap.add_argument("--after", default=str(ROOT / "src"), help="new package's src folder")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and repetitions")
    ap.add_argument("--reps", type=int, default=None,
                    help="timed steps per request (default: ~0.25 s worth, 3..40)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="old/new rounds (default 9, quick 3)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads in both workers (default: usable cores)")
    ap.add_argument("--only", default=None, help="comma-separated substrings of config names")
    ap.add_argument("--out", default=str(RESULTS / "compare_revisions.md"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--src", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    threads = args.threads or len(os.sched_getaffinity(0))
    if args.worker:
        return worker(args.src, threads)

    before, after = str(Path(args.before).resolve()), str(Path(args.after).resolve())
    rounds = args.rounds or (3 if args.quick else 9)
    target = 0.1 if args.quick else 0.25  # seconds of timed steps per request
    configs = [c for c in CONFIGS if not (args.quick and c["name"].endswith("batch 1024"))]
    if args.only:
        keys = args.only.split(",")
        configs = [c for c in configs if any(k in c["name"] for k in keys)]
    ids = {"old": git_id(before), "new": git_id(after)}
    t_start = time.perf_counter()
    load0 = os.getloadavg()
    workers = {"old": Worker("old", before, threads), "new": Worker("new", after, threads)}
    rows, detail, notes = [], [], []
    try:
        hello = {k: w.ask(cmd="hello") for k, w in workers.items()}
        for side, src in (("old", before), ("new", after)):
            if not hello[side]["file"].startswith(src + os.sep):
                raise RuntimeError(f"{side} worker imported {hello[side]['file']}, not from {src}")
        if hello["old"]["threads"] != hello["new"]["threads"]:
            raise RuntimeError(f"thread counts differ: {hello}")
        print(f"old: {hello['old']['file']} ({ids['old']})\nnew: {hello['new']['file']} "
              f"({ids['new']})\nthreads {threads}, OMP_WAIT_POLICY={hello['old']['omp']}, "
              f"{rounds} rounds", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            for i, cfg in enumerate(configs):
                ptmp = os.path.join(tmp, f"p{i}.pt")
                b_old = workers["old"].ask(cmd="build", cfg=cfg, save=ptmp)
                b_new = workers["new"].ask(cmd="build", cfg=cfg, load=ptmp)
                same = b_new["loaded"] == b_new["n_named"] == b_old["n_named"]
                if same:
                    for side, w in workers.items():
                        w.ask(cmd="output", save=os.path.join(tmp, f"y{i}{side}.pt"))
                    err = f"{rel_err(os.path.join(tmp, f'y{i}new.pt'), os.path.join(tmp, f'y{i}old.pt')):.1e}"
                else:
                    err = "–"
                    notes.append(f"{cfg['name']}: parameters not transferable "
                                 f"({b_new['loaded']}/{b_new['n_named']} loaded); outputs "
                                 "not compared")
                step = max(b_old["step_s"], b_new["step_s"])
                k = args.reps or max(3, min(40, round(target / max(step, 1e-6))))
                per = {"old": [], "new": []}
                best = {"old": float("inf"), "new": float("inf")}
                for _ in range(rounds):
                    for side in ("old", "new"):
                        ts = workers[side].ask(cmd="time", k=k)["times"]
                        per[side].append(statistics.median(ts))
                        best[side] = min(best[side], *ts)
                t_old = statistics.median(per["old"])
                t_new = statistics.median(per["new"])
                ratio = t_new / t_old
                flag = " ⚠" if ratio > 1.10 else ""
                row = [cfg["name"], paths_str(b_old["paths"]), paths_str(b_new["paths"]),
                       f"{t_old * 1e3:.2f}", f"{t_new * 1e3:.2f}", f"**{ratio:.2f}**{flag}",
                       f"{best['old'] * 1e3:.2f}", f"{best['new'] * 1e3:.2f}",
                       f"{best['new'] / best['old']:.2f}", f"{k}×{rounds}", err]
                rows.append(row)
                detail.append([cfg["name"],
                               " ".join(f"{t * 1e3:.2f}" for t in per["old"]),
                               " ".join(f"{t * 1e3:.2f}" for t in per["new"]),
                               " ".join(f"{n / o:.2f}" for o, n in zip(per["old"], per["new"])),
                               f"{b_old['first_s'] * 1e3:.0f} / {b_new['first_s'] * 1e3:.0f}"])
                print("  " + " | ".join(row), flush=True)
    finally:
        for w in workers.values():
            w.close()
    elapsed = time.perf_counter() - t_start
    load1 = os.getloadavg()
    cmd = "python benchmarks/compare_revisions.py" + (" " + " ".join(sys.argv[1:])
                                                       if argv is None and sys.argv[1:] else "")
    hdr = ["configuration (float32, fwd+bwd)", "old path", "new path", "old ms", "new ms",
           "new/old", "old min ms", "new min ms", "min new/old", "reps×rounds",
           "rel. diff new vs old"]
    out = [
        "# rpnkit fast path: old vs new revision, side by side",
        "",
        f"- **old**: `{before}` at `{ids['old']}` (rpnkit {hello['old']['version']})",
        f"- **new**: `{after}` at `{ids['new']}` (rpnkit {hello['new']['version']})",
        f"- torch {hello['new']['torch']}, CPU, {threads} threads in each worker, "
        f"OMP_WAIT_POLICY={hello['new']['omp']}; machine load average "
        f"{load0[0]:.1f} at start, {load1[0]:.1f} at end.",
        "- Measured: forward+backward of `module(x).square().mean()` (x float32 without grad; "
        "grads reset to None each step), same constructor arguments in both "
        "(`torch.manual_seed(0)` before construction; the new side then loads the old side's "
        "parameters by name). Two long-lived worker processes, asked alternately (old, new, "
        f"old, new, …) for {rounds} rounds of K timed steps (K chosen per configuration from a "
        "warm-up step, the same for both); ms = median over rounds of the per-round median, "
        "min ms = fastest single step (less sensitive to load from other processes). "
        "Section \"first\": Taylor d=2, 784→64, batch 64; \"model\": [784, 64, 64, 10] Taylor "
        "d=2, batch 64; KAN-equivalent: bspline t=5 d=3 + identity + SiLU linear remainder.",
        f"- Command: `{cmd}`; total time {elapsed:.0f} s.",
        "",
        table(hdr, rows),
        "",
        "⚠ = new more than 10% slower than old (median); check the min columns and the "
        "per-round numbers below before calling it a regression.",
        "",
        "## Per-round medians (ms)",
        "",
        table(["configuration", "old, per round", "new, per round", "new/old per round",
               "first step ms old / new"], detail),
        "",
    ]
    out += [f"- {n}" for n in notes]
    text = "\n".join(out).rstrip() + "\n"
    print()
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
