"""Run folders: validate a config, train, and write config / metrics / checkpoints / plots.

A run folder holds

* ``config.yaml`` – the fully resolved config,
* ``metrics.json`` – ``{"final": {"train", "val", "test"}, "best": {"epoch", ...}, "history": [...]}``
  (with ``train.seeds``: the first seed's, plus ``seeds`` (each seed's ``seed`` / ``final`` /
  ``best``) and ``mean`` / ``std`` / ``median`` over the seeds, :mod:`rpnkit.training.seeds`),
* ``model.pt`` – ``{"state_dict", "config", ...}`` of the final model (``torch.load(weights_only=True)``),
* ``best.pt`` – the same for the best-on-validation model (when there is a validation split),
* ``checkpoint.pt`` – full training state while a run is unfinished (``--resume``), saved
  every ``train.checkpoint_seconds`` (default 60) and/or ``train.checkpoint_every`` epochs,
* ``train_state.pt`` – the training state a finished run ended with (weights, optimizer,
  scheduler, history, best so far): ``rpnkit train --resume RUN --set train.epochs=N``
  continues it to N epochs (:func:`train_run`),
* ``metrics.csv`` – one row per epoch, appended as training goes,
* PNG plots: learning curves; fitted curve/surface for function data; confusion matrix
  for classification.

Files are written atomically (temporary file + fsync + rename, permissions ``0666`` less
the umask); ``.pt`` files carry a checksum and are validated when read
(:mod:`rpnkit.training.checkpoint`). A run claims its folder exclusively
(:mod:`rpnkit.training.rundir`): a second run into the same folder is refused, a folder
left by a crash can be resumed (or restarted), ``overwrite=True`` replaces a finished one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..config import ModelConfig, RunConfig, dump_config, parse_config, read_config_text, read_yaml
from ..data import DataBundle, load_data
from ..errors import ConfigurationError
from ..models import build_model
from . import distributed as D
from .checkpoint import (
    MODEL_FORMAT,
    TRAIN_STATE_FORMAT,
    CheckpointError,
    atomic_torch_save,
    atomic_write,
    check_model_file,
    check_train_state,
    file_mode,
    fsync_dir,
    load_checked,
)
from .engine import (
    FitResult,
    InterruptFlag,
    evaluate,
    fit,
    loss_name,
    output_width,
    resolve_device,
    seed_everything,
)

__all__ = ["Prepared", "prepare", "build_from_config", "train_run", "eval_run", "count_params",
           "write_text_atomic", "set_threads", "choose_threads", "num_threads",
           "load_train_state", "load_model_file", "atomic_torch_save", "init_from_run"]

logger = logging.getLogger(__name__)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably, with the usual permissions."""
    data = text.encode("utf-8")
    atomic_write(Path(path), lambda f: f.write(data))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_bundle(cfg: RunConfig) -> DataBundle:
    """The config's data: in memory, or a :class:`~rpnkit.data.StreamingBundle` when
    ``data.stream`` is set (rows are read block by block, never all at once)."""
    d = cfg.data
    if d.stream:
        from ..data.streaming import open_stream

        return open_stream(d.name, d.params(), d.split.as_dict(), cfg.seed, d.standardize)
    return load_data(d.name, d.params(), d.split.as_dict(), cfg.seed, d.standardize,
                     d.standardize_target, d.stratify, labels_as_targets=d.labels_as_targets)


def build_from_config(mc: ModelConfig, seed: int, in_width: int, out_width: int,
                      what: str = "model", plan_batch: int | None = None) -> nn.Module:
    """Seed, check the dims against the data, and build the model by registry name. An RPN
    whose ``model:`` section does not set ``plan_batch`` plans its contractions for
    ``plan_batch`` rows (the run's batch size) when given."""
    if mc.dims[0] != in_width:
        raise ConfigurationError(
            f"{what}.dims[0] = {mc.dims[0]} but the data has {in_width} input features"
        )
    if mc.dims[-1] != out_width:
        raise ConfigurationError(
            f"{what}.dims[-1] = {mc.dims[-1]} but the data and loss need {out_width} outputs"
        )
    seed_everything(seed)
    kwargs = mc.build_kwargs()
    if mc.name == "rpn" and plan_batch is not None and "plan_batch" not in kwargs:
        kwargs["plan_batch"] = int(plan_batch)
    try:
        model = build_model(mc.name, **kwargs)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None
    except TypeError as exc:
        raise ConfigurationError(f"{what} {mc.name!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigurationError(f"{what} {mc.name!r} did not build an nn.Module")
    return model


SMALL_MODEL = 200_000


def max_threads() -> int:
    """The most CPU threads a run may ask for: 4 per core of this machine."""
    return 4 * (os.cpu_count() or 1)


def choose_threads(threads: int | None, model: nn.Module, device: torch.device) -> int | None:
    """CPU threads for a run: ``threads`` or, by default, 1 for small models (None: leave as is).

    Small models are dominated by per-op overhead, where extra threads only add
    contention. Training and ``eval`` apply the same rule, so results match exactly.
    ``threads`` must lie in 1 .. :func:`max_threads` (far more threads than cores crash or
    hang PyTorch's thread pool).
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= max_threads()):
        raise ConfigurationError(
            f"train.threads must be an integer from 1 to {max_threads()} (4 x the machine's "
            f"{os.cpu_count() or 1} CPU cores) or null, got {str(threads)[:40]}"
        )
    if device.type != "cpu":
        return None
    if threads is None:
        return 1 if count_params(model) < SMALL_MODEL else None
    return int(threads)


def set_threads(threads: int | None, model: nn.Module, device: torch.device) -> int:
    """Apply :func:`choose_threads` to the whole process (scripts); returns the thread count."""
    n = choose_threads(threads, model, device)
    if n is not None:
        torch.set_num_threads(n)
    return torch.get_num_threads()


@contextlib.contextmanager
def num_threads(n: int | None):
    """Temporarily use ``n`` CPU threads (None: unchanged); restores the previous count."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _check_train(cfg: RunConfig, model: nn.Module, bundle: DataBundle, lname: str) -> None:
    """Build optimizer, scheduler and loss once (then discard them) so that bad options fail
    before anything is written."""
    from .components import LOSSES, OPTIMIZERS, SCHEDULERS, check_metrics, default_metrics

    t = cfg.train
    metrics = check_metrics(t.metrics, bundle.task) if t.metrics else default_metrics(bundle.task)
    if t.monitor != "loss" and t.monitor not in metrics:
        raise ConfigurationError(
            f"train.monitor {t.monitor!r} is neither 'loss' nor one of the metrics {metrics}"
        )
    if t.early_stopping is not None and bundle.size("val") == 0:
        raise ConfigurationError(
            "train.early_stopping needs a validation split: set data.split.val > 0"
        )
    loss_params = t.loss.params() if t.loss is not None else {}
    try:
        LOSSES.build(lname, **loss_params)()
        opt = OPTIMIZERS.build(t.optimizer.name, **t.optimizer.params())(
            [p for p in model.parameters() if p.requires_grad]
        )
        SCHEDULERS.build(t.scheduler.name, **t.scheduler.params())(opt, t.epochs)
    except ConfigurationError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"train: {exc}") from None


@dataclass
class Prepared:
    cfg: RunConfig
    bundle: DataBundle
    model: nn.Module
    device: torch.device
    loss: str
    out_width: int
    threads: int | None = None


def prepare(cfg: RunConfig, device: str | None = None) -> Prepared:
    """Everything that can fail on bad input, done before any file is written."""
    dev = resolve_device(device or cfg.device)
    bundle = load_bundle(cfg)
    lname = loss_name(cfg.train, bundle.task)
    width = output_width(bundle, lname)
    from .components import check_metrics

    if cfg.train.metrics:
        check_metrics(cfg.train.metrics, bundle.task)
    model = build_from_config(cfg.model, cfg.seed, bundle.n_features, width,
                              plan_batch=cfg.train.batch_size)
    threads = choose_threads(cfg.train.threads, model, dev)
    _check_train(cfg, model, bundle, lname)
    for i, b in enumerate(cfg.baselines):  # validate baselines too (built again when trained)
        build_from_config(b, cfg.seed, bundle.n_features, width, f"baselines[{i}]")
    if cfg.train.logging == "tensorboard":
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "train.logging: tensorboard needs the tensorboard package "
                "(pip install tensorboard)"
            ) from None
    if cfg.train.optimizer.name == "lbfgs" and cfg.train.batch_size is not None:
        logger.info("lbfgs with mini-batches: one L-BFGS step per batch")
    return Prepared(cfg, bundle, model, dev, lname, width, threads)


def _checkpoint_payload(state_dict, cfg: RunConfig, epoch: int, kind: str,
                        preprocessing: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": MODEL_FORMAT,
        "kind": kind,
        "state_dict": state_dict,
        "config": cfg.to_dict(),
        "epoch": epoch,
        "rpnkit_version": __version__,
        # everything needed to use the weights on raw data (rpnkit.load_run, rpnkit predict)
        "preprocessing": preprocessing,
    }


def read_run_config(path: Path) -> RunConfig:
    """A run folder's ``config.yaml``: a regular file of at most 1 MiB (checked before it is
    read), parsed and validated."""
    return parse_config(read_yaml(read_config_text(path), str(path)), str(path))


def _same_config(out: Path, cfg: RunConfig) -> int | None:
    """``--resume`` continues the run of ``out/config.yaml``: the config must be the same
    except for the device and ``train.epochs`` (a run may be continued to more epochs).
    Returns the saved ``train.epochs`` when ``cfg`` asks for another number (else None)."""
    path = out / "config.yaml"
    if not path.is_file():
        return None
    saved = read_run_config(path)
    a, b = saved.to_dict(), cfg.to_dict()
    for d in (a, b):
        d.pop("device", None)
    old, new = a.get("train", {}).pop("epochs", None), b.get("train", {}).pop("epochs", None)
    if a != b:
        key = _first_difference(a, b)
        raise ConfigurationError(
            f"--resume: {key} differs from the config saved in {path}; only train.epochs (and "
            "the device) may change when a run is resumed or continued (use --init-from RUN "
            "with a new --out to fine-tune with other settings)"
        )
    return old if old != new else None


def _first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The dotted path of the first key where the nested mappings ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "the config"


def _extended_state(state: dict[str, Any], prep: Prepared, old_epochs: int) -> dict[str, Any]:
    """A saved training state of a run planned for ``old_epochs``, continued to the config's
    ``train.epochs``: the scheduler becomes the new horizon's schedule at the same epoch (a
    cosine decay over N epochs, at the epoch reached; constant, exponential and step schedules
    are unchanged), and a run that had stopped (early stopping, divergence) trains on from
    its saved weights with a fresh patience. History, best-so-far, weights, optimizer moments
    and random streams are kept. Refuses ``train.epochs`` that adds no epoch."""
    import warnings

    epochs = prep.cfg.train.epochs
    done = state.get("epoch")
    if not isinstance(done, int) or isinstance(done, bool) or done < 0:
        return state  # check_train_state names the bad field
    if epochs < done or (epochs == done and not state.get("stopped")):
        raise ConfigurationError(
            f"--resume: the run has trained {done} epochs (of {old_epochs}); train.epochs="
            f"{epochs} adds none: set train.epochs above {done} to continue it")
    state = dict(state)
    if state.get("stopped"):
        state["stopped"] = None
        state["bad_epochs"] = 0
    opt, sched = _reference_optimizer(prep)
    if sched is not None and isinstance(state.get("optimizer"), dict):
        with warnings.catch_warnings():  # scheduler steps without optimizer steps: intended
            warnings.simplefilter("ignore")
            for _ in range(done):
                sched.step()
        state["scheduler"] = sched.state_dict()
        groups = state["optimizer"].get("param_groups")
        if isinstance(groups, list) and len(groups) == len(opt.param_groups):
            state["optimizer"] = {**state["optimizer"], "param_groups": [
                {**g, "lr": ref["lr"]} if isinstance(g, dict) else g
                for g, ref in zip(groups, opt.param_groups)]}
    return state


def init_from_run(model: nn.Module, run: str | Path, which: str = "final",
                  dtype: torch.dtype | None = None) -> Path:
    """Load the weights of run folder ``run`` (``model.pt``, or ``best.pt`` for ``which=
    "best"``) into ``model`` (``rpnkit train CONFIG --init-from RUN``: fine-tuning). Every
    parameter and buffer must have the same name and shape; the values are cast to the
    model's dtype (``dtype``: the model is moved to it first, e.g. the new run's
    ``train.dtype``). The new run standardises with its own data's statistics. A refusal is
    one line naming the first entry that does not fit."""
    run = Path(run)
    name = {"final": "model.pt", "best": "best.pt"}[which]
    path = run / name
    if not (run / "config.yaml").is_file() or not path.is_file():
        what = "has no config.yaml" if not (run / "config.yaml").is_file() else f"has no {name}"
        raise ConfigurationError(f"--init-from {short_path(run)}: not a finished run folder "
                                 f"({what})")
    payload = load_checked(path, "model file", (MODEL_FORMAT,))
    theirs, ours = payload.get("state_dict"), model.state_dict()
    if not isinstance(theirs, dict):
        raise ConfigurationError(f"--init-from {short_path(path)}: no weights in the file")
    for key in list(ours) + [k for k in theirs if k not in ours]:
        if key not in theirs:
            raise ConfigurationError(f"--init-from {short_path(run)}: its model has no "
                                     f"{str(key)[:80]!r} (the model, dims and components must "
                                     "be those of this config)")
        if key not in ours:
            raise ConfigurationError(f"--init-from {short_path(run)}: its model has "
                                     f"{str(key)[:80]!r}, which this config's model lacks")
        t, o = theirs[key], ours[key]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(o.shape):
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ConfigurationError(f"--init-from {short_path(run)}: {key} has shape {got} "
                                     f"there and {tuple(o.shape)} in this config's model")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ConfigurationError(f"--init-from {short_path(path)}: {key} holds NaN or inf")
    check_model_file(payload, path)  # format, kind, epoch, config (weights checked above)
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_state_dict(theirs)  # cast to the model's dtype
    return path


def short_path(path: Path) -> str:
    text = repr(str(path))
    return text if len(text) <= 120 else text[:80] + "..." + text[-30:]


def train_dtype(cfg: RunConfig) -> torch.dtype:
    return torch.float64 if cfg.train.dtype == "float64" else torch.float32


def _reference_optimizer(prep: Prepared):
    """A fresh optimizer and scheduler of the config for ``prep.model`` (nothing stepped):
    what a resumed state must fit."""
    from .components import OPTIMIZERS, SCHEDULERS

    t = prep.cfg.train
    params = [p for p in prep.model.parameters() if p.requires_grad]
    opt = OPTIMIZERS.build(t.optimizer.name, **t.optimizer.params())(params)
    return opt, SCHEDULERS.build(t.scheduler.name, **t.scheduler.params())(opt, t.epochs)


def load_train_state(path: Path, prep: Prepared, old_epochs: int | None = None
                     ) -> dict[str, Any]:
    """Read and validate a run folder's ``checkpoint.pt`` (or ``train_state.pt``) for
    ``prep``: checksum and format tag, every field's type and range, the weights against
    the model and the optimizer and scheduler states against those of the config
    (:func:`check_train_state`); :class:`CheckpointError` names the file and the field.
    ``old_epochs``: the state belongs to a run planned for that many epochs and is continued
    to the config's ``train.epochs`` (:func:`_extended_state`)."""
    if prep.cfg.train.seeds is not None:  # batched seeds: validated by fit_seeds on resume
        from .seeds import SEEDS_STATE_FORMAT

        if old_epochs is not None:
            raise ConfigurationError("--resume: a run with train.seeds cannot change "
                                     "train.epochs; resume it with its own config")
        return load_checked(path, "checkpoint", (SEEDS_STATE_FORMAT,))
    state = load_checked(path, "checkpoint", (TRAIN_STATE_FORMAT,))
    if old_epochs is not None:
        state = _extended_state(state, prep, old_epochs)
    opt, sched = _reference_optimizer(prep)
    check_train_state(state, prep.model, prep.cfg.train.epochs, path, optimizer=opt,
                      scheduler=sched, dtype=train_dtype(prep.cfg))
    return state


def load_model_file(path: Path, model: nn.Module | None = None,
                    epochs: int | None = None, cfg: RunConfig | None = None) -> dict[str, Any]:
    """Read and validate a run folder's ``model.pt`` / ``best.pt`` (checksum, format, epoch,
    weights against ``model``, preprocessing against ``cfg``'s model widths);
    :class:`CheckpointError` names the file and the field."""
    payload = load_checked(path, "model file", (MODEL_FORMAT,))
    kw: dict[str, Any] = {}
    if cfg is not None:
        kw = {"dtype": train_dtype(cfg), "inputs": cfg.model.dims[0],
              "outputs": cfg.model.dims[-1]}
        if epochs is None:
            epochs = cfg.train.epochs + cfg.train.polish
    check_model_file(payload, path, model, epochs, **kw)
    return payload


def train_run(
    prep: Prepared,
    out: Path,
    resume: bool = False,
    progress: bool = False,
    interrupt: InterruptFlag | None = None,
    on_epoch_end=None,
    overwrite: bool = False,
) -> FitResult:
    """Train ``prep`` into run folder ``out``, holding it exclusively while training.

    The folder is claimed (created, locked, its state checked) after validation. A fresh run
    needs a new, empty or stale folder; ``resume`` continues from ``checkpoint.pt`` (or starts
    a stale folder again from scratch); ``overwrite`` replaces a finished or unfinished run.
    Bad states raise :class:`~rpnkit.training.rundir.RunFolderError`, a damaged checkpoint
    :class:`~rpnkit.training.checkpoint.CheckpointError` (both ``ConfigurationError``);
    nothing is written then. Under torchrun only rank 0 touches the folder.
    """
    from .rundir import TRAIN_STATE, RunFolder, RunFolderError, check_out_path

    cfg = prep.cfg
    out = Path(out)
    ckpt = out / "checkpoint.pt"
    state = None
    main = D.world().main
    folder: RunFolder | None = None
    error: BaseException | None = None
    if main:
        try:
            old_epochs = _same_config(out, cfg) if resume else None
            check_out_path(out, resume, overwrite, extend=old_epochs is not None)
            folder = RunFolder(out)
            kind = folder.claim(resume, overwrite, extend=old_epochs is not None).kind
            if resume:
                old_epochs = _same_config(out, cfg)  # again, under the lock
            if kind == "unfinished" and resume:
                state = load_train_state(ckpt, prep, old_epochs)
            elif kind == "finished" and resume:  # continued to more epochs
                if not (out / TRAIN_STATE).is_file():
                    raise RunFolderError(
                        f"--resume: {short_path(out)} kept no training state ({TRAIN_STATE}: "
                        "it ran with train.checkpoint_seconds 0 and no checkpoint_every); "
                        f"fine-tune from its weights instead: rpnkit train CONFIG --init-from "
                        f"{out} --out NEW")
                state = load_train_state(out / TRAIN_STATE, prep, old_epochs or cfg.train.epochs)
                # the folder holds an unfinished run from here on (resumable as usual)
                atomic_torch_save(state, ckpt)
            elif kind != "missing" and kind != "empty":
                folder.clear()  # replaced (fresh / overwrite) or restarted from scratch
        except BaseException as exc:  # re-raised below, after every rank has agreed
            error = exc
            if folder is not None:
                folder.release(failed=True)
    if not D.all_agree(error is None):  # rank 0 could not claim the folder: every rank stops
        if error is not None:
            raise error
        raise RunFolderError(f"rank 0 could not use the run folder {out}")
    try:
        if resume:
            state = D.broadcast_object(state)  # rank 0 reads the folder, every rank resumes
        if main:
            text = dump_config(cfg)
            path = out / "config.yaml"
            if not (path.is_file() and _read_or_none(path) == text):
                write_text_atomic(path, text)  # a new file renamed over the name: no link followed
        with num_threads(prep.threads):
            try:
                return _train_run(prep, out, ckpt, state, progress, interrupt, on_epoch_end)
            except CheckpointError as exc:  # the state did not fit (found before training)
                raise CheckpointError(f"checkpoint {ckpt}: {exc}") from None
    finally:
        if folder is not None:
            folder.release()


def _read_or_none(path: Path) -> str | None:
    """The UTF-8 text of run file ``path`` (a regular file, not through a link, never
    blocking), or None."""
    flags = os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


class EpochLog:
    """Rank 0's per-epoch record: ``metrics.csv`` in the run folder (one row per epoch,
    appended as it happens, so a long run can be followed with ``tail -f``) and, with
    ``train.logging: tensorboard``, TensorBoard scalars under ``RUN/tensorboard``.

    The header is written atomically (a new file renamed over the name); rows are appended
    through :func:`~rpnkit.training.rundir.open_run_file`, which follows no link."""

    def __init__(self, out: Path, tensorboard: bool, then=None, keep_rows: int = 0) -> None:
        self.path = Path(out) / "metrics.csv"
        self.columns: list[str] | None = None
        self.keep_rows = keep_rows  # resumed at epoch k: rows past k (logged before a crash) go
        self.trimmed = False
        text = _read_or_none(self.path)
        if text:  # resumed: keep appending under the same header
            self.columns = text.splitlines()[0].split(",")
        self.writer = None
        if tensorboard:
            from .rundir import check_run_files

            check_run_files(out, (), ("tensorboard",))  # a real folder, not a link
            from torch.utils.tensorboard import SummaryWriter  # checked in prepare()

            self.writer = SummaryWriter(str(Path(out) / "tensorboard"))
        self.then = then

    def _trim(self) -> None:
        self.trimmed = True
        text = _read_or_none(self.path)
        if text is None:
            self.columns = None
            return
        lines = text.splitlines(keepends=True)
        keep = lines[: 1 + self.keep_rows]
        if keep and not keep[-1].endswith("\n"):  # a row cut short by a crash
            keep = keep[:-1]
        linked = False
        with contextlib.suppress(OSError):  # hard-linked (cp -al): appends would change the
            linked = os.lstat(self.path).st_nlink > 1  # other copy too: write our own file
        if keep != lines or linked:
            write_text_atomic(self.path, "".join(keep))
        if not keep:
            self.columns = None

    def __call__(self, epoch: int, rec: dict[str, Any]) -> None:
        from .rundir import open_run_file

        if not self.trimmed:
            self._trim()
        if self.columns is None:
            self.columns = list(rec)
            write_text_atomic(self.path, ",".join(self.columns) + "\n")
        row = ",".join(_csv_value(rec.get(c)) for c in self.columns) + "\n"
        fd = open_run_file(self.path, os.O_WRONLY | os.O_APPEND)
        with os.fdopen(fd, "ab") as f:
            f.write(row.encode("utf-8"))
        if self.writer is not None:
            for key, value in rec.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key.replace("_", "/", 1), value, epoch)
            self.writer.flush()
        if self.then is not None:
            self.then(epoch, rec)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _train_run(prep, out, ckpt, state, progress, interrupt, on_epoch_end) -> FitResult:
    cfg = prep.cfg
    if D.world().main:
        keep = len(state["history"]) if state is not None else 0
        on_epoch_end = EpochLog(out, cfg.train.logging == "tensorboard", on_epoch_end, keep)
    try:
        return _fit_and_write(prep, out, ckpt, state, progress, interrupt, on_epoch_end)
    finally:
        if isinstance(on_epoch_end, EpochLog):
            on_epoch_end.close()


def _seed_models(prep: Prepared) -> list[nn.Module] | None:
    """With ``train.seeds``: one model per seed, each built after seeding with its seed (as
    a single run with ``seed: s`` builds it); None without."""
    t = prep.cfg.train
    if t.seeds is None:
        return None
    from .seeds import seed_list

    width = prep.out_width
    return [build_from_config(prep.cfg.model, s, prep.bundle.n_features, width,
                              plan_batch=t.batch_size)
            for s in seed_list(prep.cfg.seed, t.seeds)]


def _fit_and_write(prep, out, ckpt, state, progress, interrupt, on_epoch_end) -> FitResult:
    cfg = prep.cfg
    models = _seed_models(prep)
    result = fit(
        prep.model if models is None else models,
        prep.bundle,
        cfg.train,
        seed=cfg.seed,
        device=prep.device,
        progress=progress,
        checkpoint_path=ckpt,
        resume=state,
        interrupt=interrupt,
        on_epoch_end=on_epoch_end,
    )
    if models is not None:  # model.pt / best.pt / plots: the first seed's model
        prep.model.load_state_dict(models[0].state_dict())
    if not D.world().main:  # only rank 0 writes the run folder
        return result
    result.extra["model"] = {"name": cfg.model.name, "title": cfg.model.title(),
                             "params": count_params(prep.model)}
    result.extra["data"] = {"name": prep.bundle.name, "task": prep.bundle.task,
                            "sizes": {s: prep.bundle.size(s) for s in ("train", "val", "test")}}
    final_sd = {k: v.detach().cpu() for k, v in prep.model.state_dict().items()}
    from ..predict import preprocessing_of

    pre = preprocessing_of(prep.bundle, prep.loss)
    atomic_torch_save(_checkpoint_payload(final_sd, cfg, result.epochs_run, "final", pre),
                      out / "model.pt")
    if result.best_state is not None:
        best_sd = {k: v.detach().cpu() for k, v in result.best_state.items()}
        atomic_torch_save(_checkpoint_payload(best_sd, cfg, result.best["epoch"], "best", pre),
                          out / "best.pt")
    write_text_atomic(out / "metrics.json", json.dumps(_jsonable(result.metrics_json()), indent=1))
    if cfg.plots and getattr(prep.bundle, "streaming", False):
        logger.info("plots skipped: they need the data in memory (data.stream is set)")
    elif cfg.plots:
        try:
            from .plots import make_plots

            for png in make_plots(out, prep, result):
                with contextlib.suppress(OSError, TypeError):
                    os.chmod(png, file_mode())  # written via mkstemp (0600)
        except Exception:  # plots must never lose a finished run
            logger.exception("plotting failed")
    from .rundir import TRAIN_STATE

    # the state training ended with is kept: --resume --set train.epochs=N continues from it
    if ckpt.exists():
        os.replace(ckpt, out / TRAIN_STATE)
        fsync_dir(out)
    elif (out / TRAIN_STATE).exists():  # an older run's state: it would continue the wrong run
        (out / TRAIN_STATE).unlink()
        fsync_dir(out)
    return result


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None  # valid JSON: null for NaN and ±inf
    return obj


def eval_run(run_dir: Path, device: str | None = None, which: str = "final") -> dict[str, Any]:
    """Re-evaluate a run folder's model on its config's splits."""
    run_dir = Path(run_dir)
    name = {"final": "model.pt", "best": "best.pt"}[which]
    if not (run_dir / "config.yaml").is_file():
        raise ConfigurationError(f"{run_dir} is not a run folder (no config.yaml)")
    if not (run_dir / name).is_file():
        raise ConfigurationError(f"{run_dir} has no {name} (unfinished run? use train --resume)")
    cfg = read_run_config(run_dir / "config.yaml")
    prep = prepare(cfg, device)
    payload = load_model_file(run_dir / name, prep.model, cfg=cfg)
    dtype = train_dtype(cfg)
    prep.model.to(device=prep.device, dtype=dtype)
    try:
        prep.model.load_state_dict(payload["state_dict"])
    except (RuntimeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise CheckpointError(f"{run_dir / name} does not fit the model: {reason}") from None
    metrics = cfg.train.metrics or None
    loss_params = cfg.train.loss.params() if cfg.train.loss is not None else None
    with num_threads(prep.threads):
        res = {
            s: evaluate(prep.model, prep.bundle, s, prep.loss, metrics, prep.device, dtype,
                        cfg.train.eval_batch_size, loss_params=loss_params)
            for s in ("test", "val", "train")
        }
    return _jsonable({**res, "epoch": payload.get("epoch"), "checkpoint": name})
