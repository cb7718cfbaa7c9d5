"""The ``rpnkit`` command line: train / eval / list / run.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback, no files
written: a bad config or ``--out``, a run folder in use by another run or in the wrong
state, a damaged checkpoint or model file), 1 the run failed (an I/O error such as a full
disk, one line naming the file; or an internal error), 130 interrupted (state saved for
``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "build_parser", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = "default.yaml"
log = logging.getLogger("rpnkit.cli")


class _BadInput(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2
        raise _BadInput(f"{message} (see rpnkit {self.prog.split()[-1]} --help)"
                        if " " in self.prog else f"{message} (see rpnkit --help)")


def _device_name(text: str) -> str:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N`` (as in configs)."""
    import re

    if text in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d{1,3}", text):
        return text
    raise argparse.ArgumentTypeError(
        f"invalid device {text[:40]!r}; use auto, cpu, cuda, cuda:N or mps"
    )


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="rpnkit", description="Train and evaluate RPN models from YAML configs.")
    from .. import __version__

    p.add_argument("--version", action="version", version=f"rpnkit {__version__}")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser(
        "train", help="train a model from a YAML config into a run folder",
        usage="rpnkit train CONFIG --out RUN [--set KEY.PATH=VALUE ...] [--init-from RUN] "
              "[--overwrite] [--device DEVICE] [--quiet]\n"
              "       rpnkit train --resume RUN [--set train.epochs=N] [--device DEVICE] [--quiet]",
        description="Train CONFIG into the new run folder --out RUN (required), or continue a "
                    "run with --resume RUN.")
    t.add_argument("config", nargs="?", default=None,
                   help="YAML config file (not needed with --resume RUN: the folder has it)")
    t.add_argument("--out", default=None, metavar="RUN",
                   help="run folder to create (required, unless --resume RUN names it)")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. --set train.epochs=50")
    t.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN",
                   help="continue an interrupted run (RUN, or --out) from its last checkpoint, "
                        "or a finished one to more epochs with --set train.epochs=N (history and "
                        "best-so-far kept); the folder's config is used and train.epochs is "
                        "the only setting that may change")
    t.add_argument("--init-from", dest="init_from", default=None, metavar="RUN",
                   help="start from the weights of another run's model.pt (fine-tuning; the "
                        "config's model must have the same shapes)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (finished, unfinished or stale)")
    t.add_argument("--device", type=_device_name, default=None)
    t.add_argument("--quiet", action="store_true", help="no progress bar or log messages")

    e = sub.add_parser("eval", help="re-evaluate a run folder; prints a JSON object last")
    e.add_argument("run_dir")
    e.add_argument("--best", action="store_true", help="evaluate best.pt instead of model.pt")
    e.add_argument("--device", type=_device_name, default=None,
                   help="default: the run's configured device (as in training)")

    pr = sub.add_parser("predict", help="predict with a trained run on raw data (csv/npy/parquet)")
    pr.add_argument("run_dir", help="run folder (from rpnkit train)")
    pr.add_argument("input", help="raw features: .csv (header with the feature names), .npy or "
                    ".parquet; extra columns such as the target are ignored")
    pr.add_argument("--out", default=None, help="write predictions as CSV here (default: stdout)")
    pr.add_argument("--proba", action="store_true", help="class probabilities (classification)")
    pr.add_argument("--best", action="store_true", help="use best.pt instead of model.pt")

    ex = sub.add_parser("export", help="export a run's model for deployment: raw features in, "
                                       "raw predictions out (torch.export, ONNX or TorchScript)")
    ex.add_argument("run_dir")
    ex.add_argument("--format", dest="fmt", choices=["pt2", "onnx", "torchscript"], default=None,
                    help="pt2: a torch.export program (the default, unless --out ends in .onnx "
                         "or .ts); onnx: needs rpnkit[onnx]; torchscript: deprecated in PyTorch, "
                         "only where tracing works")
    ex.add_argument("--out", default=None,
                    help="output file (default: RUN/model.pt2, RUN/model.onnx or RUN/model.ts)")
    ex.add_argument("--best", action="store_true", help="export best.pt instead of model.pt")

    pl = sub.add_parser("plot", help="draw a trained run's network: every edge's learned curve")
    pl.add_argument("run_dir", help="run folder (from rpnkit train)")
    pl.add_argument("--out", default=None, help="output .png or .svg (default: RUN/model_view.png)")
    pl.add_argument("--best", action="store_true", help="use best.pt instead of model.pt")

    sub.add_parser("list", help="list components, models, datasets, optimizers, ...")
    cv = sub.add_parser("convert", help="convert a reference-toolkit (tinyBIG) YAML config into "
                                        "an rpnkit config (read as data: nothing in it is imported)")
    cv.add_argument("reference", help="the reference toolkit's YAML config")
    cv.add_argument("--out", required=True, metavar="CONFIG",
                    help="rpnkit config to write (atomically; never the input file)")
    cv.add_argument("--reference-quirks", action="store_true",
                    help="reproduce the reference's quirks: keys it ignores (e.g. a post-process "
                         "hook indented at the wrong level) are ignored and reported")
    s = sub.add_parser("search", help="search catalog RPNs under a parameter budget (selection on "
                                      "validation); writes a leaderboard, prints the winner as JSON")
    s.add_argument("config", help="YAML config (its data and train sections; model: is optional; "
                                  "an optional search: section narrows the space)")
    s.add_argument("--budget", type=_positive(int), required=True, metavar="N",
                   help="most trainable parameters a candidate may have")
    s.add_argument("--max-candidates", type=_positive(int), default=None, metavar="K",
                   help="architectures screened, in a fixed order that covers depths and "
                        "expansion families early (default: all of the space)")
    s.add_argument("--epochs", type=_positive(int), default=None, metavar="E",
                   help="epochs of each finalist's training (default: the config's train.epochs)")
    s.add_argument("--max-minutes", type=_positive(float), default=10.0, metavar="M",
                   help="safety stop for the whole search (default 10); when not reached it "
                        "changes nothing, when reached the result says so")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="folder for leaderboard.csv, search.json and winner.yaml")
    s.add_argument("--finalists", type=_positive(int), default=None,
                   help="architectures retrained with every recipe after screening (default 3)")
    s.add_argument("--screen-epochs", type=_positive(int), default=None,
                   help="epochs per candidate while screening (default 200)")
    s.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable)")
    s.add_argument("--overwrite", action="store_true", help="replace an earlier search in DIR")
    s.add_argument("--quiet", action="store_true", help="no per-candidate lines on stderr")

    r = sub.add_parser("run", help="train the default job (or CONFIG) and its baselines; print a table")
    r.add_argument("config", nargs="?", default=None, help="YAML config (default: the bundled demo)")
    r.add_argument("--out", default=None, help="keep run folders here (default: none kept)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    r.add_argument("--device", type=_device_name, default=None)
    r.add_argument("--quiet", action="store_true")
    return p


def _positive(kind: type):
    """An argparse type: a positive ``int``, or a positive finite ``float``."""
    import math

    wanted = "a positive integer" if kind is int else "a positive finite number"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text[:40]!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text[:40]!r}")
        return v

    return parse


def _cmd_search(args) -> int:
    from ..search import search, search_config, write_outputs

    _setup_logging(args.quiet)
    cfg = search_config(args.config, args.sets)  # model: may be left out
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise _BadInput(f"--out {out} exists and is not a folder")
    if (out / "leaderboard.csv").exists() and not args.overwrite:
        raise _BadInput(f"--out {out} already holds a search (leaderboard.csv); add --overwrite to "
                        "replace it or choose another folder")

    def progress(c, i, total):
        if args.quiet:
            return
        val = c.val.get("loss")
        v = f"val loss {val:.4g}" if val is not None else c.status
        print(f"[{i}/{total}] {c.stage} {c.recipe:<10} {c.params:>6} params  {v}  ({c.seconds:.1f}s)  "
              f"{c.name}", file=sys.stderr, flush=True)

    result = search(cfg, args.budget, args.max_minutes, space=cfg.search, screen_epochs=args.screen_epochs,
                    finalists=args.finalists, on_candidate=progress,
                    max_candidates=args.max_candidates, epochs=args.epochs)
    write_outputs(result, cfg, out)
    if result.winner is None:
        print(f"rpnkit: error: no candidate finished within {args.max_minutes:g} minutes "
              f"(see {out / 'leaderboard.csv'}); raise --max-minutes", file=sys.stderr)
        print(_json(result.summary()))
        return 1
    if not args.quiet:
        w = result.winner
        print(f"winner: {w.name} [{w.recipe}], {w.params} parameters; "
              f"{len(result.candidates)} candidates in {result.seconds:.0f}s; leaderboard: "
              f"{out / 'leaderboard.csv'}")
    print(_json(result.summary()))
    return 0


def _json(obj) -> str:
    """One line of valid JSON for stdout: NaN and ±inf become null, numpy scalars numbers."""
    import math

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
            return v
        if hasattr(v, "item") and callable(v.item) and getattr(v, "ndim", 0) == 0:
            v = v.item()  # numpy / torch scalars
        if isinstance(v, float):
            return v if math.isfinite(v) else None
        return v

    return json.dumps(clean(obj), allow_nan=False, default=str)


def _bounded(msg: str, limit: int = 600) -> str:
    """An error line of bounded length: runs of more than 24 digits are shortened (a 99-digit
    width is shown as its first digits and its length), and the line is cut at ``limit``."""
    import re

    msg = re.sub(r"\d{25,}", lambda m: f"{m.group()[:12]}...({len(m.group())} digits)", msg)
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _setup_logging(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="rpnkit: %(message)s", stream=sys.stderr)
    logging.getLogger("rpnkit").setLevel(level)


def _check_out(out: Path, resume: bool = False, overwrite: bool = False,
               extend: bool = False) -> None:
    """Check --out before any data or model is built; nothing is written."""
    from ..training.rundir import check_out_path

    check_out_path(out, resume, overwrite, extend)


def _cmd_train(args) -> int:
    from ..config import load_config
    from ..errors import ConfigurationError
    from ..training import InterruptFlag, TrainingInterrupted, handle_signals, prepare, train_run
    from ..training import distributed as D
    from ..training.engine import DIVERGENCE_HINT, resolve_device
    from ..training.run import _same_config, init_from_run, train_dtype

    _setup_logging(args.quiet)
    if args.init_from is not None and args.resume:
        raise _BadInput("--init-from starts a new run; it cannot be combined with --resume")
    sets = list(args.sets) + ([f"device={args.device}"] if args.device else [])
    if isinstance(args.resume, str):  # --resume RUN: the folder is the run
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise _BadInput(f"--resume {args.resume} and --out {args.out} name different folders")
        args.out = args.resume
    if args.out is None:
        raise _BadInput("train needs --out RUN (or --resume RUN to continue a run)")
    args.resume = bool(args.resume)
    if args.config is None:
        if not args.resume:
            raise _BadInput("train needs a config file (or --resume RUN to continue a run)")
        args.config = str(Path(args.out) / "config.yaml")
        if not Path(args.config).is_file():
            raise _BadInput(f"--resume: {args.out} has no config.yaml (not a run folder)")
    cfg = load_config(args.config, sets)  # every rank validates the config before any collective
    out = Path(args.out)
    if D.env_world_size() > 1:
        world = D.init_from_env(resolve_device(cfg.device))
        if not world.main:
            logging.getLogger("rpnkit").setLevel(logging.WARNING)
    else:
        world = D.World()
    error: Exception | None = None
    try:
        if world.main:  # the run folder is rank 0's
            extend = args.resume and _same_config(out, cfg) is not None
            _check_out(out, args.resume, args.overwrite, extend)
        prep = prepare(cfg)
        if args.init_from is not None:  # every rank loads the same weights
            init_from_run(prep.model, args.init_from, dtype=train_dtype(cfg))
    except Exception as exc:
        error = exc
    if not D.all_agree(error is None):  # one rank's bad input stops every rank, no hang
        D.shutdown()
        bad_input = isinstance(error, (_BadInput, ConfigurationError))
        if error is not None and (world.main or not bad_input):
            raise error  # bad input is the same on every rank: rank 0 says it once
        raise _Quiet()
    if world.main and not args.quiet:
        for line in _model_summary(cfg.model.title(), prep.model):
            log.info("%s", line)
    flag = InterruptFlag()
    try:
        with handle_signals(flag):
            result = train_run(prep, out, resume=args.resume, progress=not args.quiet,
                               interrupt=flag, overwrite=args.overwrite)
    except OSError as exc:  # e.g. a full disk: the folder keeps its last complete checkpoint
        D.shutdown()
        if world.main:
            hint = (" (the run folder keeps its last checkpoint: fix this, then add --resume)"
                    if (out / "checkpoint.pt").is_file() else "")
            print(f"rpnkit: error: {_os_error(exc)}{hint}", file=sys.stderr)
        return 1
    except TrainingInterrupted as exc:
        if world.main:
            launcher = "torchrun --nproc_per_node=N -m rpnkit" if world.distributed else "rpnkit"
            print(f"rpnkit: {exc}; continue with: {launcher} train --resume {out}",
                  file=sys.stderr)
        D.shutdown()
        return 130
    D.shutdown()
    if not world.main:
        return 0
    if result.stopped and "non-finite" in result.stopped.get("reason", ""):
        print(f"rpnkit: warning: {result.stopped['reason']} in epoch {result.stopped['epoch']}; "
              f"kept the weights of epoch {result.stopped['restored_epoch']}; {DIVERGENCE_HINT}",
              file=sys.stderr)
    if not args.quiet:
        print(_summary(cfg.model.title(), result))
        print(f"run folder: {out}")
    print(_json({"test": result.final["test"], "best": {**result.best, "test": result.best_metrics["test"]},
                      "out": str(out)}))
    return 0


def _model_summary(title: str, model) -> list[str]:
    """Parameters per layer and, for RPN heads, the planned path of each head."""
    def count(mod) -> int:
        return sum(p.numel() for p in mod.parameters() if p.requires_grad)

    lines = [f"model {title}: {count(model):,} trainable parameters"]
    for i, layer in enumerate(getattr(model, "layers", [])):
        heads = getattr(layer, "heads", None)
        if heads is None:
            continue
        inner = [i for h in heads for i in getattr(h, "inner", [h])]  # RPN 2 heads wrap RPN heads
        paths = ", ".join(sorted({getattr(h, "contraction", None).path for h in inner
                                  if getattr(h, "contraction", None) is not None}))
        lines.append(f"  layer {i}: {layer.m}->{layer.n}, {len(heads)} head(s), "
                     f"{count(layer):,} parameters, path {paths or '-'}")
    return lines


class _Quiet(Exception):
    """Bad input seen on another rank (which reports it): exit 2 without a second message."""


def _os_error(exc: OSError) -> str:
    what = exc.strerror or " ".join(str(exc).split())
    return f"{what}: {exc.filename!r}" if exc.filename else what


def _summary(title: str, result) -> str:
    lines = [f"{title}: {result.epochs_run} epochs in {result.seconds:.1f}s"]
    for split in ("train", "val", "test"):
        m = result.final.get(split)
        if m:
            lines.append(f"  final {split:<5} " + "  ".join(f"{k}={v:.4g}" for k, v in m.items()))
    if result.best.get("monitor"):
        m = result.best_metrics.get("test", {})
        lines.append(f"  best (epoch {result.best['epoch']}, by {result.best['monitor']}) test "
                     + "  ".join(f"{k}={v:.4g}" for k, v in m.items()))
    return "\n".join(lines)


def _cmd_eval(args) -> int:
    from ..training import eval_run

    _setup_logging(True)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise _BadInput(f"run folder {str(run_dir)!r} does not exist")
    res = eval_run(run_dir, args.device, "best" if args.best else "final")
    print(_json(res))
    return 0


def _cmd_predict(args) -> int:
    from ..predict import atomic_text, export_target, load_run, write_predictions

    _setup_logging(True)
    # --out is checked before anything is read: an existing, writable folder, not a run file
    path = export_target(args.run_dir, args.out, "predictions.csv") if args.out else None
    run = load_run(args.run_dir, "best" if args.best else "final")
    # the input is read, predicted and written chunk by chunk (bounded memory); to --out
    # through a temporary file renamed at the end: never a partial CSV under its name
    if path is None:
        write_predictions(run, args.input, sys.stdout, args.proba)
        return 0
    with _signals_interrupt(), atomic_text(path) as f:  # SIGTERM/SIGHUP: temporary file removed
        n = write_predictions(run, args.input, f, args.proba)
    print(f"{n} predictions written to {args.out}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _signals_interrupt():
    """SIGTERM and SIGHUP raise KeyboardInterrupt meanwhile (so that ``finally`` blocks run:
    exit 130 with one line, no partial output)."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            with contextlib.suppress(ValueError, OSError):  # not the main thread: leave as is
                old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _cmd_plot(args) -> int:
    from ..training.plots import require_matplotlib

    require_matplotlib("rpnkit plot")  # before anything is loaded: one line naming the extra
    from ..inspection import model_view
    from ..predict import load_run
    from ..training.run import load_bundle

    _setup_logging(True)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise _BadInput(f"run folder {str(run_dir)!r} does not exist")
    out = Path(args.out) if args.out else run_dir / "model_view.png"
    if out.suffix.lower() not in (".png", ".svg"):
        raise _BadInput(f"--out must end in .png or .svg, got {out.name!r}")
    run = load_run(run_dir, "best" if args.best else "final")
    if run.config.data.stream:
        raise _BadInput("plot needs the run's data in memory (the run streams its data)")
    bundle = load_bundle(run.config)
    x = bundle.x["train"][:2000]
    try:
        path = model_view(run.model, out, x=x, names=run.feature_names or None)
    except ValueError as exc:
        raise _BadInput(str(exc)) from None
    print(path)
    return 0


def _cmd_export(args) -> int:
    from ..predict import export_run

    _setup_logging(True)
    path = export_run(args.run_dir, args.fmt, args.out, "best" if args.best else "final")
    print(path)
    return 0


def _cmd_convert(args) -> int:
    from ..convert import convert_file

    result = convert_file(args.reference, args.out, reference_quirks=args.reference_quirks)
    for note in result.notes:
        print(f"rpnkit: note: {note}", file=sys.stderr)
    print(f"rpnkit: converted {args.reference} -> {args.out}", file=sys.stderr)
    return 0


def _cmd_list(args) -> int:
    from .listing import render, static

    print(render(static()))  # a generated table of the registries: no torch (see listing.py)
    return 0


def _default_config_path() -> Path:
    from importlib import resources

    return Path(str(resources.files("rpnkit").joinpath("resources", DEFAULT_CONFIG)))


def _cmd_run(args) -> int:
    from ..config import load_config
    from ..training import (
        InterruptFlag,
        Prepared,
        TrainingInterrupted,
        build_from_config,
        count_params,
        fit,
        handle_signals,
        prepare,
        train_run,
    )
    from ..training.engine import output_width
    from ..training.run import choose_threads, num_threads

    _setup_logging(args.quiet)
    sets = list(args.sets) + ([f"device={args.device}"] if args.device else [])
    path = Path(args.config) if args.config else _default_config_path()
    cfg = load_config(path, sets)
    out = Path(args.out) if args.out else None
    if out is not None:
        _check_out(out, False)
    prep = prepare(cfg)
    b = prep.bundle
    sizes = "/".join(str(b.size(s)) for s in ("train", "val", "test"))
    desc = b.info.get("expression") or b.info.get("equation") or b.name
    print(f"job: {cfg.title or path.name} | data {b.name} ({desc}), train/val/test = {sizes}, "
          f"seed {cfg.seed}, {cfg.train.epochs} epochs, {cfg.train.optimizer.name}", flush=True)
    rows = []
    models = [("model", cfg.model)] + [(f"baseline{i}", m) for i, m in enumerate(cfg.baselines)]
    width = output_width(b, prep.loss)
    flag = InterruptFlag()
    try:
        with handle_signals(flag):
            for tag, mc in models:
                model = prep.model if tag == "model" else build_from_config(
                    mc, cfg.seed, b.n_features, width, tag)
                threads = choose_threads(cfg.train.threads, model, prep.device)
                if out is not None:
                    sub_cfg = cfg.model_copy(update={"model": mc, "baselines": []})
                    p2 = Prepared(sub_cfg, b, model, prep.device, prep.loss, width, threads)
                    res = train_run(p2, out / tag, progress=not args.quiet, interrupt=flag)
                else:
                    with num_threads(threads):
                        res = fit(model, b, cfg.train, seed=cfg.seed, device=prep.device,
                                  progress=not args.quiet, interrupt=flag)
                rows.append((mc.title(), count_params(model), res))
    except TrainingInterrupted:
        print("rpnkit: interrupted", file=sys.stderr)
        return 130
    key = "mse" if b.task == "regression" else "accuracy"
    has_val = b.size("val") > 0
    print(_table(rows, key, has_val))
    if out is not None:
        print(f"run folders: {out}/model, {out}/baseline0 ...")
    print(_json({r[0]: {"params": r[1], "test": r[2].final["test"]} for r in rows}))
    return 0


def _table(rows, key: str, has_val: bool) -> str:
    """The `run` results table; every column is as wide as its widest cell, two spaces apart."""
    header = ["model", "params", f"final test {key}"]
    if has_val:
        header.append(f"best-val test {key}")
    header.append("seconds")
    body = []
    for title, n_par, res in rows:
        cells = [title, str(n_par), f"{res.final['test'][key]:.4g}"]
        if has_val:
            cells.append(f"{res.best_metrics['test'][key]:.4g}")
        cells.append(f"{res.seconds:.1f}")
        body.append(cells)
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def fmt(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    return "\n".join(fmt(r) for r in [header, *body])


def main(argv: list[str] | None = None) -> int:
    from ..errors import ConfigurationError

    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            if not argv:
                parser.print_help()
                return 0
            raise _BadInput("no command given (see rpnkit --help)")
        handler = {"train": _cmd_train, "eval": _cmd_eval, "list": _cmd_list, "run": _cmd_run,
                   "predict": _cmd_predict, "export": _cmd_export, "search": _cmd_search,
                   "plot": _cmd_plot, "convert": _cmd_convert}
        return handler[args.command](args)
    except _Quiet:
        return 2
    except (_BadInput, ConfigurationError) as exc:
        msg = _bounded(" ".join(str(exc).split()))
        _record_for_torchrun(f"rpnkit: error: {msg}")
        if _worker_rank() > 0:  # under torchrun every rank sees the same bad input: rank 0 says it
            return 2
        print(f"rpnkit: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rpnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `rpnkit list | head`: stop quietly
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # the environment, not a bug: a full disk, a vanished folder ...
        _record_for_torchrun(f"rpnkit: error: {_os_error(exc)}")
        if _worker_rank() > 0:
            return 1
        print(f"rpnkit: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except SystemExit as exc:  # --help
        return int(exc.code or 0) if isinstance(exc.code, int) else 0
    except Exception as exc:
        if os.environ.get("RPNKIT_DEBUG"):
            raise
        msg = _bounded(" ".join(f"{type(exc).__name__}: {exc}".split()))
        line = f"rpnkit: internal error: {msg} (set RPNKIT_DEBUG=1 for a traceback)"
        _record_for_torchrun(line)
        print(line, file=sys.stderr)
        return 1


def _record_for_torchrun(line: str) -> None:
    """Under torchrun, ``line`` becomes the root cause of torchrun's failure report (its
    elastic error file; see :func:`rpnkit.training.distributed.record_error`)."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from ..training.distributed import record_error

        record_error(line)


def _worker_rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    try:
        return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    except ValueError:
        return 0


def _entry() -> None:  # pragma: no cover
    sys.exit(main())



