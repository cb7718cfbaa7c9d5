"""Scaling benchmark: multi-process (DDP) training, streaming memory, mixed precision.

Run::

    .venv/bin/python benchmarks/scale.py                 # full CPU run (~5-10 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --quick         # smoke run (tiny sizes, ~1 min)
    .venv/bin/python benchmarks/scale.py --device cuda   # GPU run (1 vs all GPUs, precisions)

Every number comes from real ``rpnkit train`` runs, started as subprocesses side by side in
one invocation of this script, into run folders under a temporary directory:

* 1 process: ``python benchmarks/scale.py --_worker TIMING -- train CFG --out RUN``;
* N processes: ``python -m torch.distributed.run --nnodes=1 --nproc_per_node=N
  --rdzv-backend=c10d --rdzv-endpoint=127.0.0.1:PORT benchmarks/scale.py --_worker ...``
  (what ``torchrun --nproc_per_node=N -m rpnkit train ...`` does).

The ``--_worker`` mode is ``rpnkit.cli.main`` (``python -m rpnkit``) with a timing hook: it
wraps ``rpnkit.training.run.fit`` to pass an ``on_epoch_end`` callback and wraps
``rpnkit.training.engine.evaluate`` to clock evaluation, so that rank 0 records the
*training* time of every epoch (epoch wall time minus the validation pass). Throughput is
taken from the steady epochs (all but the first, which includes setup and warm-up; the
best of the repeats). ``metrics.json``'s ``seconds`` (the whole ``fit``, with validation
and the final evaluation of all splits) and the wall time of the command (with Python
start-up, data loading and process-group set-up) are reported next to it.

Sections (``--sections a,b,c``; results in ``benchmarks/results/scale_<device>.md``):

(a) data-parallel throughput: 1 process x 1 thread, 1 process x 2 threads and 2 processes x
    1 thread (``OMP_NUM_THREADS`` and ``train.threads`` set per process), same seed and
    global batch; samples/s, ratios, and whether the final metrics agree (DDP is meant to
    follow the 1-process run up to floating-point summation order). On CUDA: 1 GPU vs all
    GPUs (NCCL) when ``torch.cuda.device_count() > 1``. The table reports CPU seconds per
    epoch too (process CPU time, far less sensitive to other jobs than wall time). In the
    full CPU run a second table (a2) repeats this once with global batch 2048, where the
    per-step costs that DDP does not split (optimizer update, gradient all-reduce) weigh
    less against forward/backward.
(b) streaming: runs ``benchmarks/stream_memory.py`` (peak RSS of one streamed epoch over a
    10-million-row npy file vs loading it whole) when that script exists and includes its
    table; otherwise a placeholder says how to run it.
(c) precision: ``train.precision`` fp32 / bf16 / fp16 on MNIST (the shipped 10k test file,
    7000/1000/2000), same seed: training time per step and epoch, final test accuracy,
    ratios against fp32 (``--compile`` adds fp32 / bf16 runs with ``train.compile: true``).

``--quick`` uses 1000/200/300 rows with ``data.stratify: false`` (the stratified split gives
the training split every row not in val/test, whatever its configured count).

The machine may be shared with other jobs: every configuration is repeated (``--repeats``,
interleaved, reversed order on odd repeats) and the fastest repeat is reported; the load
average before each run is printed in the log. Repeats of one configuration must give
identical metrics (CPU training is deterministic); the tables say whether they did.
"""

from __future__ import annotations

import os

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

# passive OpenMP waiting: spinning threads steal the core from the other process/thread
# on a 2-core machine (see structured.py); set before torch loads, inherited by the runs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import json
import math
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
STREAM_SCRIPT = HERE / "stream_memory.py"
LOADS: list[float] = []  # 1-minute load average before every training run


def log(msg: str) -> None:
    print(msg, flush=True)


def default_mnist_root() -> Path:
    for cand in (REPO / "shared" / "datasets" / "mnist",
                 REPO.parent / "shared" / "datasets" / "mnist"):
        if (cand / "t10k-images-idx3-ubyte.gz").is_file() or (cand / "t10k-images-idx3-ubyte").is_file():
            return cand
    return REPO.parent / "shared" / "datasets" / "mnist"


# ---------------------------------------------------------------------------------------------
# worker: `rpnkit train` with per-epoch timing (every rank writes TIMING.rank<R>)
# ---------------------------------------------------------------------------------------------
def worker(timing_file: str, argv: list[str]) -> int:
    import torch

    from rpnkit.cli import main
    from rpnkit.training import engine, run

    # wall clock and process CPU time (all threads, gloo's included) of evaluation, so that
    # an epoch's training share is its time minus its validation pass
    clock = {"eval": 0.0, "eval_cpu": 0.0}
    epochs: list[dict[str, float]] = []
    original_eval, original_fit = engine.evaluate, run.fit

    def timed_evaluate(*args, **kwargs):
        t, c = time.perf_counter(), time.process_time()
        try:
            return original_eval(*args, **kwargs)
        finally:
            clock["eval"] += time.perf_counter() - t
            clock["eval_cpu"] += time.process_time() - c

    def timed_fit(*args, **kwargs):
        user_cb = kwargs.get("on_epoch_end")
        last = {"t": time.perf_counter(), "cpu": time.process_time(), **clock}
        t0 = last["t"]

        def on_epoch_end(epoch, rec):
            now, cpu = time.perf_counter(), time.process_time()
            ev, ev_cpu = clock["eval"] - last["eval"], clock["eval_cpu"] - last["eval_cpu"]
            epochs.append({"epoch": epoch, "wall": now - last["t"], "eval": ev,
                           "train": now - last["t"] - ev,
                           "train_cpu": cpu - last["cpu"] - ev_cpu})
            last.update(t=now, cpu=cpu, **clock)
            if user_cb is not None:
                user_cb(epoch, rec)

        kwargs["on_epoch_end"] = on_epoch_end
        result = original_fit(*args, **kwargs)
        rank = os.environ.get("RANK", "0")
        Path(f"{timing_file}.rank{rank}").write_text(json.dumps(
            {"rank": int(rank), "epochs": epochs, "fit_seconds": time.perf_counter() - t0,
             "torch_threads": torch.get_num_threads()}))
        return result

    engine.evaluate = timed_evaluate
    run.fit = timed_fit
    return main(argv)


# ---------------------------------------------------------------------------------------------
# launching runs
# ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunFailed(RuntimeError):
    pass


def launch(work: Path, name: str, cfg: dict[str, Any], nproc: int, threads: int | None,
           timeout: float) -> dict[str, Any]:
    """Train ``cfg`` with ``nproc`` processes (``threads`` CPU threads each); returns the
    run's metrics.json, timings and wall time."""
    folder = work / name
    folder.mkdir(parents=True)
    cfg_path, run_dir, timing = folder / "config.yaml", folder / "run", folder / "timing.json"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    me = [str(Path(__file__).resolve()), "--_worker", str(timing), "--",
          "train", str(cfg_path), "--out", str(run_dir), "--quiet"]
    if nproc == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1",
               f"--nproc_per_node={nproc}", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{free_port()}", *me]
    env = dict(os.environ)
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    if threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")]))
    load = os.getloadavg()[0]
    LOADS.append(load)
    log(f"  [{name}] {nproc} process(es) x {threads or 'default'} thread(s), load avg {load:.2f}")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=str(folder), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise RunFailed(f"{name}: timed out after {timeout:.0f}s: {' '.join(cmd)}") from exc
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not (run_dir / "metrics.json").is_file():
        tail = (proc.stderr or proc.stdout or "")[-3000:]
        raise RunFailed(f"{name}: exit {proc.returncode}\ncommand: {' '.join(cmd)}\n"
                        f"env: OMP_NUM_THREADS={env.get('OMP_NUM_THREADS')}\n{tail}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ranks = {}
    for r in range(nproc):
        f = Path(f"{timing}.rank{r}")
        if f.is_file():
            ranks[r] = json.loads(f.read_text())
    tm = ranks.get(0, {"epochs": []})
    epochs = tm["epochs"]

    def steady(key: str, eps: list[dict]) -> float:
        vals = [e[key] for e in eps[1:]] or [e[key] for e in eps]
        return statistics.median(vals) if vals else float("nan")

    # CPU seconds per steady epoch, per process (training only, validation excluded)
    cpu = [steady("train_cpu", ranks[r]["epochs"]) for r in sorted(ranks)]
    res = {
        "name": name, "nproc": nproc, "threads": threads, "wall": wall, "load": load,
        "metrics": metrics, "timing": tm, "cmd": cmd, "config": cfg,
        "epoch_train": steady("train", epochs),
        "first_epoch_train": epochs[0]["train"] if epochs else float("nan"),
        "eval_per_epoch": statistics.median([e["eval"] for e in epochs]) if epochs else 0.0,
        "cpu_per_rank": cpu if len(cpu) == nproc else [],
    }
    cpu_txt = ", ".join(f"{c:.2f}" for c in cpu)
    log(f"    train {res['epoch_train']:.2f} s/epoch (first {res['first_epoch_train']:.2f}), "
        f"CPU s/epoch per process [{cpu_txt}], "
        f"metrics.json seconds {metrics.get('seconds')}, wall {wall:.1f}s, "
        f"test {short_metrics(metrics)}")
    return res


def short_metrics(metrics: dict[str, Any]) -> str:
    test = metrics.get("final", {}).get("test", {})
    return ", ".join(f"{k}={v:.4f}" for k, v in test.items() if isinstance(v, (int, float)))


def run_repeated(work: Path, plan: list[tuple[str, dict, int, int | None]], repeats: int,
                 timeout: float) -> tuple[dict[str, list[dict]], list[str]]:
    """Run every (name, cfg, nproc, threads) ``repeats`` times, interleaved."""
    out: dict[str, list[dict]] = {name: [] for name, *_ in plan}
    errors: list[str] = []
    failed: set[str] = set()
    for rep in range(repeats):
        order = plan if rep % 2 == 0 else plan[::-1]
        for name, cfg, nproc, threads in order:
            if name in failed:
                continue
            try:
                out[name].append(launch(work, f"{name}-r{rep}", cfg, nproc, threads, timeout))
            except RunFailed as exc:
                failed.add(name)
                errors.append(str(exc))
                log(f"    FAILED: {str(exc).splitlines()[0]}")
    return out, errors


def min_cpu(runs: list[dict]) -> list[float]:
    """Per-process CPU s/epoch of the repeat with the least total CPU time."""
    cands = [r["cpu_per_rank"] for r in runs if r.get("cpu_per_rank")]
    return min(cands, key=sum) if cands else []


def best(runs: list[dict]) -> dict | None:
    return min(runs, key=lambda r: r["epoch_train"]) if runs else None


def repeats_identical(runs: list[dict]) -> str:
    """Whether all repeats of one configuration gave bit-identical histories and final
    metrics (else where they first differ)."""
    if len(runs) < 2:
        return "n/a (1 run)"
    ref = runs[0]["metrics"]
    for r in runs[1:]:
        m = r["metrics"]
        ha, hb = ref.get("history", []), m.get("history", [])
        for i, (a, b) in enumerate(zip(ha, hb)):
            diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            if diff:
                return f"**no** (epoch {i + 1}: {', '.join(diff)})"
        if len(ha) != len(hb):
            return "**no** (epochs run)"
        for split, vals in (ref.get("final") or {}).items():
            other = (m.get("final") or {}).get(split)
            if other != vals:
                keys = sorted(k for k in set(vals) | set(other or {})
                              if vals.get(k) != (other or {}).get(k))
                return f"**no** (final {split}: {', '.join(keys)})"
    return "yes"


# ---------------------------------------------------------------------------------------------
# configs
# ---------------------------------------------------------------------------------------------
def mnist_cfg(root: Path, split: dict[str, int], dims: list[int], recon: Any, epochs: int,
              batch: int, lr: float, device: str, **train: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "mnist", "root": str(root), "part": "test",
                            "download": False, "split": dict(split)}
    if sum(split.values()) < 10_000:
        # the stratified split (the default for classification) gives the training split
        # every row not in val/test, ignoring a smaller train count
        data["stratify"] = False
    return {
        "seed": 0,
        "device": device,
        "data": data,
        "model": {"dims": list(dims),
                  "expansion": {"name": "taylor", "d": 2, "preprocess": ["layer_norm"]},
                  "reconciliation": recon, "remainder": "zero"},
        "train": {"epochs": epochs, "batch_size": batch,
                  "optimizer": {"name": "adam", "lr": lr}, "scheduler": "cosine",
                  "loss": "cross_entropy", **train},
        "plots": False,
    }


def sizes(args) -> dict[str, Any]:
    cuda = args.device == "cuda"
    if args.quick:
        split = {"train": 1000, "val": 200, "test": 300}
        return {"split": split, "a_big": None,
                "a": {"recon": {"name": "lorr", "r": 2}, "epochs": 2, "batch": 128, "lr": 0.005},
                "c": {"recon": {"name": "lorr", "r": 2}, "epochs": 2, "batch": 128, "lr": 0.005}}
    split = {"train": 7000, "val": 1000, "test": 2000}
    if cuda:  # the paper-sized dense reconciliation: 39.4M parameters
        return {"split": split, "a_big": None,
                "a": {"recon": "identity", "epochs": 4, "batch": 256, "lr": 0.001},
                "c": {"recon": "identity", "epochs": 4, "batch": 128, "lr": 0.001}}
    return {"split": split,
            # 9.9M parameters, ~0.2 s per forward+backward of 256 rows on one core
            "a": {"recon": {"name": "lorr", "r": 16}, "epochs": 3, "batch": 256, "lr": 0.005},
            # the same model with 8x larger global batches, 2 epochs, 1 repeat
            "a_big": {"epochs": 2, "batch": 2048},
            # 5.0M parameters, ~3 s per epoch on 2 cores
            "c": {"recon": {"name": "lorr", "r": 8}, "epochs": 3, "batch": 128, "lr": 0.005}}


def with_threads(cfg: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """A copy of ``cfg`` with ``train.threads`` (rpnkit otherwise picks 1 for small models)."""
    out = json.loads(json.dumps(cfg))
    if threads is not None:
        out["train"]["threads"] = threads
    return out


def title_of(cfg: dict[str, Any]) -> str:
    m = cfg["model"]
    recon = m["reconciliation"]
    rname = recon if isinstance(recon, str) else ", ".join(
        [recon["name"]] + [f"{k}={v}" for k, v in recon.items() if k != "name"])
    return f"RPN {m['dims']} taylor d=2 (layer_norm) / {rname} / zero"


# ---------------------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------------------
def table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v):
        if isinstance(v, float):
            if math.isnan(v):
                return "–"
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def n_train_of(res: dict, default: int) -> int:
    """The training split's size as the run reports it (metrics.json ``data.sizes``)."""
    return int(res["metrics"].get("data", {}).get("sizes", {}).get("train") or default)


def test_metric(res: dict, key: str) -> float:
    v = res["metrics"].get("final", {}).get("test", {}).get(key)
    return float(v) if isinstance(v, (int, float)) else float("nan")


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def history_diff(a: dict, b: dict, first: bool = False) -> float:
    """Largest relative difference of the per-epoch training losses (NaN: histories differ
    in length, which counts as disagreement)."""
    ha = [h.get("train_loss") for h in a["metrics"].get("history", [])]
    hb = [h.get("train_loss") for h in b["metrics"].get("history", [])]
    if len(ha) != len(hb) or not ha:
        return float("inf")
    if first:
        ha, hb = ha[:1], hb[:1]
    return max(rel(x, y) for x, y in zip(ha, hb))


# ---------------------------------------------------------------------------------------------
# (a) data-parallel throughput
# ---------------------------------------------------------------------------------------------
def section_a(args, work: Path, root: Path, errors: list[str], big: bool = False) -> str:
    """The throughput table; ``big``: the large-batch variant (one repeat, fewer epochs)."""
    sz = sizes(args)
    p = dict(sz["a"])
    repeats = args.repeats
    if big:
        p.update(sz["a_big"])
        repeats = 1
    cfg = mnist_cfg(root, sz["split"], [784, 64, 10], p["recon"], p["epochs"], p["batch"],
                    p["lr"], args.device)
    n_train = sz["split"]["train"]
    if args.device == "cpu":
        plan = [(name, with_threads(cfg, t), nproc, t)
                for name, nproc, t in (("1p-1t", 1, 1), ("1p-2t", 1, 2), ("2p-1t", 2, 1))]
        labels = {"1p-1t": "1 process x 1 thread", "1p-2t": "1 process x 2 threads",
                  "2p-1t": "2 processes x 1 thread (gloo)"}
    else:
        import torch

        ngpu = torch.cuda.device_count()
        plan = [("1gpu", cfg, 1, None)]
        labels = {"1gpu": "1 GPU"}
        if ngpu > 1:
            plan.append((f"{ngpu}gpu", cfg, ngpu, None))
            labels[f"{ngpu}gpu"] = f"{ngpu} GPUs (nccl)"
    log(f"(a{'2' if big else ''}) data-parallel throughput: {title_of(cfg)}, batch {p['batch']}, "
        f"{p['epochs']} epochs")
    runs, errs = run_repeated(work / ("a2" if big else "a"), plan, repeats, args.run_timeout)
    errors += errs
    bests = {name: best(rs) for name, rs in runs.items()}
    ref_name = plan[0][0]
    ref = bests.get(ref_name)
    cpu = {name: min_cpu(rs) for name, rs in runs.items()}
    rows = []
    for name, _cfg, _nproc, threads in plan:
        b = bests.get(name)
        if b is None:
            rows.append([labels[name], "FAILED"] + [""] * 13)
            continue
        n_tr = n_train_of(b, n_train)
        sps = n_tr / b["epoch_train"]
        m = b["metrics"]
        e2e = m.get("epochs_run", 0) * n_tr / max(float(m.get("seconds") or 0), 1e-9)
        c = cpu.get(name) or []
        c_ref = sum(cpu.get(ref_name) or []) or float("nan")
        if args.device == "cpu" and c:
            # the fastest this could run on otherwise idle cores: each process's CPU work,
            # with its threads perfectly parallel (a lower bound on the epoch time)
            idle = max(x / (threads or 1) for x in c)
            bound = c_ref / idle
        else:
            bound = float("nan")
        rows.append([
            labels[name], m.get("world_size"), m.get("global_batch_size"),
            b["epoch_train"], sps,
            (ref["epoch_train"] / b["epoch_train"]) if ref else float("nan"),
            sum(c) if c else float("nan"), bound,
            b["eval_per_epoch"], float(m.get("seconds") or float("nan")), e2e, b["wall"],
            test_metric(b, "accuracy"), test_metric(b, "loss"), repeats_identical(runs[name]),
        ])
    if big:
        out = [f"### (a2) The same with global batch {p['batch']}", "",
               f"Per-process batches of {p['batch'] // max(plan[-1][2], 1)}: the work that "
               "grows with the batch (forward/backward) against the per-step work that does not "
               f"(optimizer update, gradient all-reduce). {p['epochs']} epochs, 1 repeat (the "
               "training curve differs from the table above: other batch size).", ""]
    else:
        out = [f"## (a) Data-parallel training throughput ({args.device.upper()})", "",
               f"Model {title_of(cfg)} ({model_params(bests)} parameters), MNIST "
               f"{sz['split']['train']}/{sz['split']['val']}/{sz['split']['test']} "
               f"(train/val/test), global batch {p['batch']}, {p['epochs']} epochs, Adam lr "
               f"{p['lr']}, cosine schedule, seed 0. Best of {repeats} interleaved repeat(s).",
               ""]
    out += [
           table(["setup", "world", "global batch", "train s/epoch (steady)", "samples/s",
                  f"speed-up vs {labels[ref_name]}", "CPU s/epoch (all processes)",
                  "idle-machine speed-up bound", "val eval s/epoch",
                  "metrics.json seconds", "end-to-end samples/s", "wall s (command)",
                  "test acc", "test loss", "repeats identical"], rows),
           ""]
    if not big:
        out += [
           "'train s/epoch' and 'samples/s' are wall-clock (the fastest repeat) and suffer "
           "from anything else running on the machine. 'CPU s/epoch' is the CPU time the "
           "training part of a steady epoch cost, summed over processes (least over repeats; "
           "much less sensitive to other load): more CPU seconds than 1 process x 1 thread "
           "is the overhead of that setup. 'idle-machine speed-up bound' = CPU s/epoch of 1 "
           "process x 1 thread / (largest per-process CPU s/epoch / threads per process): "
           "the speed-up if the cores were otherwise idle and threads never waited (an upper "
           "bound; for 1 process x 2 threads a loose one, as serial parts keep one thread "
           "idle without costing CPU time).",
           ""]
    # agreement
    agree_rows = []
    for name, *_ in plan[1:]:
        b = bests.get(name)
        if b is None or ref is None:
            continue
        d_acc = abs(test_metric(b, "accuracy") - test_metric(ref, "accuracy"))
        d_loss = rel(test_metric(b, "loss"), test_metric(ref, "loss"))
        d_first, d_hist = history_diff(b, ref, first=True), history_diff(b, ref)
        n_test = int(b["metrics"].get("data", {}).get("sizes", {}).get("test") or 1000)
        # a wrong gradient (e.g. a mis-weighted rank share) shows in the first epoch's loss
        # already; later the runs drift apart slowly (Adam amplifies rounding differences)
        ok = (d_first <= 1e-3 and d_hist <= 2e-2 and d_loss <= 5e-2
              and d_acc <= max(0.01, 5 / n_test))
        agree_rows.append([f"{labels[name]} vs {labels[ref_name]}", d_first, d_hist, d_loss,
                           d_acc, "yes" if ok else "**NO**"])
    if agree_rows and big:
        out += [table(["pair", "rel. diff epoch-1 train_loss", "max rel. diff train_loss",
                       "rel. diff final test loss", "|Δ test acc|", "agree"], agree_rows), ""]
    elif agree_rows:
        out += ["Agreement of the final metrics (same seed, same global batches; differences "
                "come only from floating-point summation order: other thread count / gradient "
                "all-reduce):", "",
                table(["pair", "rel. diff epoch-1 train_loss", "max rel. diff train_loss",
                       "rel. diff final test loss", "|Δ test acc|", "agree"], agree_rows),
                "", "Tolerances: epoch-1 train loss 1e-3, any epoch 2e-2, final test loss 5e-2 "
                "(relative), test accuracy max(0.01, 5 test samples)."
                + (" The '1 process x 2 threads' row is the noise floor: the same computation "
                   "with another summation order and no DDP." if args.device == "cpu" else ""),
                ""]
    if args.device == "cpu" and big:
        c1, c2, cd = (sum(cpu.get(k) or []) for k in ("1p-1t", "1p-2t", "2p-1t"))
        if c1 and cd:
            out += [f"In CPU time 2 processes cost {cd / c1:.2f}x the work of 1 process x 1 "
                    f"thread per epoch at this batch size (1 process x 2 threads: "
                    f"{c2 / c1:.2f}x).", ""]
    elif args.device == "cpu":
        b1, b2, bd = (bests.get(k) for k in ("1p-1t", "1p-2t", "2p-1t"))
        note = ["**What the ratio means on this machine.** It has "
                f"{os.cpu_count()} logical CPUs. '2 processes x 1 thread' and '1 process x 2 "
                "threads' use the same two cores, so the speed-up of 2 processes over 1 process x "
                "1 thread is bounded by 2 and measures how well data parallelism uses the second "
                "core; the fair comparison is 2 processes against 1 process x 2 threads (ideal "
                "1.0): above 1, processes use the two cores better than intra-op threading; below "
                "1, DDP's costs (gloo all-reduce of the gradients every step, per-rank batches half "
                "as large, two copies of the data and model) outweigh it. Nothing here predicts "
                "scaling on a machine with more cores or on GPUs."]
        if b1 and b2 and bd:
            note.append(
                f"Measured (wall clock): 2 processes {b1['epoch_train'] / bd['epoch_train']:.2f}x "
                f"vs 1x1, {b2['epoch_train'] / bd['epoch_train']:.2f}x vs 1x2 (1x2 threads is "
                f"{b1['epoch_train'] / b2['epoch_train']:.2f}x vs 1x1).")
        c1, cd = sum(cpu.get("1p-1t") or []), sum(cpu.get("2p-1t") or [])
        if c1 and cd:
            note.append(
                f"In CPU time 2 processes cost {cd / c1:.2f}x the work of 1 process x 1 thread "
                "per epoch: each process still runs the optimizer update (Adam) over all "
                f"{model_params(bests)} parameters and sends its whole gradient "
                f"({grad_mb(bests):.0f} MB fp32) through gloo's all-reduce (TCP loopback) every "
                "step; only forward/backward is split (and runs on half-size batches).")

        out += [" ".join(note), ""]
    elif len(plan) == 1:
        out += ["Only one GPU is visible (torch.cuda.device_count() == 1): no multi-GPU row.", ""]
    out += [log_detail(runs, labels), ""]
    return "\n".join(out)


def grad_mb(bests: dict[str, dict | None]) -> float:
    for b in bests.values():
        if b is not None and b["metrics"].get("model", {}).get("params"):
            return 4 * b["metrics"]["model"]["params"] / 1e6
    return float("nan")


def model_params(bests: dict[str, dict | None]) -> str:
    for b in bests.values():
        if b is not None:
            p = b["metrics"].get("model", {}).get("params")
            if p:
                return f"{p / 1e6:.2f}M"
    return "?"


def log_detail(runs: dict[str, list[dict]], labels: dict[str, str]) -> str:
    lines = ["<details><summary>all repeats</summary>", ""]
    rows = []
    for name, rs in runs.items():
        for r in rs:
            rows.append([labels.get(name, name), r["name"], r["load"], r["first_epoch_train"],
                         ", ".join(f"{e['train']:.2f}" for e in r["timing"]["epochs"]),
                         float(r["metrics"].get("seconds") or float("nan")), r["wall"]])
    lines.append(table(["setup", "run", "load avg before", "first epoch train s",
                        "train s per epoch", "metrics.json seconds", "wall s"], rows))
    lines += ["", "</details>"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# (b) streaming
# ---------------------------------------------------------------------------------------------
def section_b(args, errors: list[str]) -> str:
    head = "## (b) Streaming: peak RSS of one streamed epoch vs loading whole"
    how = ("`.venv/bin/python benchmarks/stream_memory.py` (10-million-row npy dataset, one "
           "epoch streamed through `rpnkit.data.streaming`, peak RSS vs loading the whole "
           "array), then re-run `benchmarks/scale.py --sections b` to include its table here.")
    if not STREAM_SCRIPT.is_file():
        log("(b) streaming: benchmarks/stream_memory.py not found, placeholder")
        return "\n".join([head, "", "> **PLACEHOLDER – not measured.** "
                          "`benchmarks/stream_memory.py` did not exist when this ran. Run " + how,
                          ""])
    cmd = [sys.executable, str(STREAM_SCRIPT)]
    try:
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True,
                                  timeout=120, cwd=str(REPO)).stdout
    except subprocess.TimeoutExpired:
        helptext = ""
    if args.quick and "--quick" in helptext:
        cmd.append("--quick")
    elif args.quick and "--rows" in helptext:
        cmd += ["--rows", "1000000"]
    log(f"(b) streaming: {' '.join(cmd)}")
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.stream_timeout,
                              cwd=str(REPO))
    except subprocess.TimeoutExpired:
        msg = f"`{' '.join(cmd)}` timed out after {args.stream_timeout:.0f}s"
        errors.append(msg)
        return "\n".join([head, "", f"> **FAILED:** {msg}. Run " + how, ""])
    wall = time.perf_counter() - t
    stdout = proc.stdout or ""
    if proc.returncode != 0:
        tail = (proc.stderr or stdout)[-3000:]
        errors.append(f"stream_memory.py: exit {proc.returncode}\n{tail}")
        return "\n".join([head, "", f"> **FAILED** (exit {proc.returncode}): `{' '.join(cmd)}`",
                          "", "```", tail.strip(), "```", ""])
    tables = extract_tables(stdout)
    body = tables if tables else "```\n" + stdout.strip() + "\n```"
    shown = " ".join(["python", "benchmarks/stream_memory.py", *cmd[2:]])
    out = [head, "", f"From `{shown}` ({wall:.0f} s; the modes are described in that "
           "script's docstring; each runs in a fresh child process):", "", body, ""]
    ratio = stream_ratio(tables)
    if ratio:
        out += [ratio, ""]
    return "\n".join(out)


def stream_ratio(tables: str) -> str:
    """'stream' vs 'load_data' memory over the baseline, when the table has those rows."""
    header: list[str] = []
    rows: dict[str, list[str]] = {}
    for line in tables.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not header:
            header = cells
        elif not all(set(c) <= set(":-") for c in cells):
            rows[cells[0]] = cells
    col = next((i for i, h in enumerate(header) if "over baseline" in h), None)
    try:
        s, f = (float(rows[k][col].replace(",", "")) for k in ("stream", "load_data"))
    except (KeyError, TypeError, ValueError, IndexError):
        return ""
    return (f"Streaming one epoch held {s:,.0f} MiB over the interpreter baseline against "
            f"{f:,.0f} MiB for the in-memory route (`load_data`): "
            f"{f / max(s, 1e-9):,.0f}x less.")


def extract_tables(text: str) -> str:
    """The Markdown tables (and the lines introducing them) of ``text``."""
    blocks, cur = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            cur.append(line)
        elif cur:
            blocks.append("\n".join(cur))
            cur = []
    if cur:
        blocks.append("\n".join(cur))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------------------------------------
# (c) precision
# ---------------------------------------------------------------------------------------------
def section_c(args, work: Path, root: Path, errors: list[str]) -> str:
    sz = sizes(args)
    p = sz["c"]
    threads = 2 if args.device == "cpu" else None
    base = mnist_cfg(root, sz["split"], [784, 64, 10], p["recon"], p["epochs"], p["batch"],
                     p["lr"], args.device)
    if threads is not None:
        base["train"]["threads"] = threads
    variants = [("fp32", {}), ("bf16", {}), ("fp16", {})]
    if args.compile:
        variants += [("fp32+compile", {"compile": True}), ("bf16+compile", {"compile": True})]
    plan = []
    for name, extra in variants:
        c = json.loads(json.dumps(base))
        c["train"]["precision"] = name.split("+")[0]
        c["train"].update(extra)
        plan.append((name, c, 1, threads))
    log(f"(c) precision: {title_of(base)}, batch {p['batch']}, {p['epochs']} epochs")
    runs, errs = run_repeated(work / "c", plan, args.repeats, args.run_timeout)
    errors += errs
    bests = {name: best(rs) for name, rs in runs.items()}
    ref = bests.get("fp32")
    n_train = next((n_train_of(b, sz["split"]["train"]) for b in bests.values() if b),
                   sz["split"]["train"])
    steps = math.ceil(n_train / p["batch"])
    rows = []
    for name, *_ in plan:
        b = bests.get(name)
        if b is None:
            rows.append([name, "FAILED"] + [""] * 11)
            continue
        val_acc = [h.get("val_accuracy") for h in b["metrics"].get("history", [])]
        c, c_ref = sum(min_cpu(runs[name])), sum(min_cpu(runs.get("fp32", [])))
        rows.append([
            name, b["epoch_train"], 1000 * b["epoch_train"] / steps,
            (b["epoch_train"] / ref["epoch_train"]) if ref else float("nan"),
            c if c else float("nan"), (c / c_ref) if c and c_ref else float("nan"),
            b["first_epoch_train"], float(b["metrics"].get("seconds") or float("nan")),
            test_metric(b, "accuracy"),
            (test_metric(b, "accuracy") - test_metric(ref, "accuracy")) if ref else float("nan"),
            test_metric(b, "loss"),
            " / ".join(f"{v:.3f}" for v in val_acc if isinstance(v, (int, float))),
            repeats_identical(runs[name]),
        ])
    where = f"1 process x {threads} threads" if threads else "1 GPU"
    out = [f"## (c) Mixed precision on MNIST ({args.device.upper()})", "",
           f"Model {title_of(base)} ({model_params(bests)} parameters), MNIST "
           f"{sz['split']['train']}/{sz['split']['val']}/{sz['split']['test']} (the shipped "
           f"10k-image test file), batch {p['batch']} ({steps} steps/epoch), {p['epochs']} "
           f"epochs, Adam lr {p['lr']}, cosine, seed 0, {where}; `train.precision` "
           f"(autocast; fp16 with a GradScaler). Best of {args.repeats} interleaved repeat(s).",
           "",
           table(["precision", "train s/epoch (steady)", "ms/step", "time ratio vs fp32",
                  "CPU s/epoch", "CPU ratio vs fp32", "first epoch train s", "metrics.json seconds", "test acc",
                  "Δ test acc vs fp32", "test loss", "val acc per epoch", "repeats identical"],
                 rows), ""]
    if args.device == "cpu":
        out += [f"CPU: {cpu_model()}; bf16/fp16 speed on CPU depends on AVX512-BF16/AMX "
                f"support ({cpu_flags()}). A ratio below 1 means faster than fp32.", ""]
    out += [log_detail(runs, {n: n for n, *_ in plan}), ""]
    return "\n".join(out)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                want = ["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"]
                return "flags: " + (", ".join(f for f in want if f in have) or "none of " + ", ".join(want))
    return "flags unknown"


# ---------------------------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--_worker":
        timing = sys.argv[2]
        rest = sys.argv[3:]
        if rest and rest[0] == "--":
            rest = rest[1:]
        return worker(timing, rest)

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (smoke run)")
    ap.add_argument("--sections", default="a,b,c", help="comma-separated subset of a,b,c")
    ap.add_argument("--repeats", type=int, default=None,
                    help="interleaved repeats per configuration (default 2, --quick 1)")
    ap.add_argument("--compile", action="store_true", help="(c): add train.compile runs")
    ap.add_argument("--mnist-root", type=Path, default=None,
                    help="folder with t10k-images-idx3-ubyte.gz (default: shared/datasets/mnist)")
    ap.add_argument("--out", type=Path, default=None,
                    help="Markdown file (default benchmarks/results/scale_<device>.md)")
    ap.add_argument("--keep", action="store_true", help="keep the run folders (path printed)")
    ap.add_argument("--run-timeout", type=float, default=600.0, help="seconds per training run")
    ap.add_argument("--stream-timeout", type=float, default=900.0,
                    help="seconds for stream_memory.py")
    args = ap.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 2
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if set(sections) - {"a", "b", "c"}:
        ap.error(f"--sections: unknown {sorted(set(sections) - {'a', 'b', 'c'})}")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        log("CUDA is not available: the GPU section is skipped (nothing written). "
            "Run with --device cpu for the CPU tables.")
        return 0
    if args.device == "cpu" and torch.cuda.is_available():
        log(f"CUDA is available ({torch.cuda.device_count()} device(s)): run with --device cuda "
            "for the GPU tables (scale_cuda.md).")
    root = args.mnist_root or default_mnist_root()
    if ("a" in sections or "c" in sections) and not (root / "t10k-images-idx3-ubyte.gz").is_file() \
            and not (root / "t10k-images-idx3-ubyte").is_file():
        ap.error(f"MNIST test file not found in {root} (use --mnist-root)")

    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rpnkit-scale-"))
    errors: list[str] = []
    parts: list[str] = []
    try:
        if "a" in sections:
            parts.append(section_a(args, work, root, errors))
            if sizes(args)["a_big"]:
                parts.append(section_a(args, work, root, errors, big=True))
        if "b" in sections:
            if args.device == "cpu":
                parts.append(section_b(args, errors))
            else:
                parts.append("## (b) Streaming\n\nHost-memory benchmark: see `scale_cpu.md`.\n")
        if "c" in sections:
            parts.append(section_c(args, work, root, errors))
    finally:
        if args.keep:
            log(f"run folders kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - t_all

    cmdline = " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]])
    if args.device == "cuda":
        hw = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    else:
        hw = f"{cpu_model()}, {os.cpu_count()} logical CPUs"
    header = [f"# Scaling benchmark ({args.device.upper()}{', quick' if args.quick else ''})", "",
              f"`{cmdline}` — {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
              f"{hw}, Python {platform.python_version()}; total {total / 60:.1f} min. "
              "Generated by benchmarks/scale.py (see its docstring for the method). Runs are "
              "`rpnkit train` subprocesses (multi-process via `python -m torch.distributed.run`); "
              "'train s/epoch' is rank 0's epoch time minus its validation pass, median over "
              "the epochs after the first; 'metrics.json seconds' is the engine's own `seconds` "
              "(whole fit with validation and final evaluation); 'wall s' adds interpreter "
              "start-up, data loading and process-group set-up. The machine may be shared with "
              "other jobs: the 1-minute load average before the training runs was "
              + (f"{min(LOADS):.1f}–{max(LOADS):.1f}" if LOADS else "not measured")
              + f" on {os.cpu_count()} logical CPUs (per run under 'all repeats'); wall-clock "
              "ratios taken under load are unreliable, CPU-time columns less so.", ""]
    if errors:
        header += ["**Errors:**", "", *[f"```\n{e.strip()}\n```" for e in errors], ""]
    text = "\n".join(header + parts)
    dest = args.out or RESULTS / f"scale_{args.device}.md"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text + "\n", encoding="utf-8")
    log("")
    log(text)
    log(f"\nwritten to {dest} ({total:.0f} s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
