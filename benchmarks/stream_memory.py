"""Peak memory of one streamed epoch vs loading the data whole (npy, 10M x 8 by default).

Every measurement runs in a fresh child process and reports its peak resident set
(``resource.getrusage(...).ru_maxrss``) after the imports (baseline) and at the end:

* ``stream``          - ``open_stream("npy", standardize=True)`` (one validation/statistics
  pass) and one shuffled training epoch of batches, in this process;
* ``stream, 2 workers`` - the same epoch served by 2 DataLoader workers (the peak of the
  largest worker is reported beside the main process);
* ``np.load``         - ``np.load`` of x and y (the arrays alone);
* ``load_data``       - the in-memory route: the arrays, split and standardised by
  :func:`rpnkit.data.load_data` (a ``DataBundle``);
* ``mmap pass``       - a blockwise pass over ``np.load(mmap_mode="r")``: the file pages it
  touches count in the resident set, which is why ``npy`` streams with positional reads.

    python benchmarks/stream_memory.py                    # 10M rows, 8 features
    python benchmarks/stream_memory.py --rows 1000000 --dir /tmp/sm --keep
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)
import numpy as np

SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
MODES = ["stream", "stream, 2 workers", "np.load", "load_data", "mmap pass"]


def _rss_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # KiB on Linux


def write_data(directory: Path, rows: int, features: int, chunk: int = 1_000_000) -> None:
    """x.npy (rows, features), y.npy (rows,) written chunk by chunk."""
    directory.mkdir(parents=True, exist_ok=True)
    x = np.lib.format.open_memmap(directory / "x.npy", mode="w+", dtype=np.float64,
                                  shape=(rows, features))
    y = np.lib.format.open_memmap(directory / "y.npy", mode="w+", dtype=np.float64, shape=(rows,))
    rng = np.random.default_rng(0)
    w = rng.normal(size=features)
    for a in range(0, rows, chunk):
        b = min(a + chunk, rows)
        xc = rng.normal(size=(b - a, features)) * 2.0 + 1.0
        x[a:b] = xc
        y[a:b] = xc @ w + 0.1 * rng.normal(size=b - a)
        x.flush()
        y.flush()
    del x, y


def child(mode: str, directory: Path, batch: int) -> dict:
    import rpnkit.data as data  # noqa: F401 - imports count in the baseline
    from rpnkit.data import RawData, load_data, open_stream

    params = {"x": str(directory / "x.npy"), "y": str(directory / "y.npy")}
    base = _rss_mib()
    t0 = time.perf_counter()
    rows = 0
    if mode.startswith("stream"):
        workers = 2 if "workers" in mode else 0
        bundle = open_stream("npy", params, SPLIT, seed=0, standardize=True)
        for x, _ in bundle.batches("train", batch, epoch=0, seed=0, num_workers=workers):
            rows += len(x)
    elif mode == "np.load":
        x, y = np.load(params["x"]), np.load(params["y"])
        rows = len(x)
    elif mode == "load_data":
        x, y = np.load(params["x"]), np.load(params["y"])
        raw = RawData(x=x, y=y[:, None], task="regression",
                      feature_names=[f"x{i}" for i in range(x.shape[1])], target_names=["y"])
        del x, y
        bundle = load_data("npy", split=SPLIT, seed=0, standardize=True, standardize_target=True,
                           raw=raw)
        rows = bundle.size("train")
    elif mode == "mmap pass":
        x = np.load(params["x"], mmap_mode="r")
        for a in range(0, len(x), 4096):
            rows += len(np.array(x[a : a + 4096]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return {"mode": mode, "baseline": base, "peak": _rss_mib(), "workers_peak":
            _rss_mib(resource.RUSAGE_CHILDREN), "seconds": time.perf_counter() - t0, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--features", type=int, default=8)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dir", type=Path, default=None, help="data folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the data files")
    ap.add_argument("--modes", nargs="*", default=MODES)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write:
        write_data(args.dir, args.rows, args.features)
        return 0
    if args.child:
        print(json.dumps(child(args.child, args.dir, args.batch)))
        return 0
    directory = args.dir or Path(tempfile.mkdtemp(prefix="stream_memory_"))
    try:
        if not (directory / "x.npy").exists():  # in a child: a child's ru_maxrss starts at
            t0 = time.perf_counter()  # the resident set of the parent that forked it
            subprocess.run([sys.executable, __file__, "--write", "--dir", str(directory),
                            "--rows", str(args.rows), "--features", str(args.features)], check=True)
            print(f"wrote {args.rows:,} x {args.features} rows in {time.perf_counter() - t0:.1f}s")
        x = np.load(directory / "x.npy", mmap_mode="r")
        size = (x.nbytes + x.shape[0] * 8) / 2**20
        print(f"data: {x.shape[0]:,} rows x {x.shape[1]} features, x + y = {size:,.0f} MiB on disk; "
              f"batch {args.batch}, split {SPLIT}")
        del x
        results = []
        for mode in args.modes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--dir", str(directory),
                 "--batch", str(args.batch)],
                capture_output=True, text=True, check=True,
            )
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print()
        print("| method | rows served | peak RSS (MiB) | over baseline (MiB) | worker peak (MiB) | time (s) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in results:
            wk = f"{r['workers_peak']:,.0f}" if r["workers_peak"] > 0 else "-"
            print(f"| {r['mode']} | {r['rows']:,} | {r['peak']:,.0f} | {r['peak'] - r['baseline']:,.0f} "
                  f"| {wk} | {r['seconds']:.1f} |")
    finally:
        if args.dir is None and not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
