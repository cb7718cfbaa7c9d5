"""The training loop: seeded, resumable, with validation-only model selection.

:func:`fit` is the one training loop of rpnkit: run folders (``rpnkit train``) and the
scikit-learn estimators both train through it. It trains a model on a
:class:`~rpnkit.data.DataBundle` or on in-memory arrays/tensors (see :func:`as_bundle`)
following a :class:`~rpnkit.config.TrainConfig` (optimizer, scheduler and loss by
registry name, batch size, early stopping ...) and writes nothing unless a
``checkpoint_path`` is given. It selects the best epoch and applies early stopping on
the **validation** split only (the test split is evaluated once, at the end); without a
validation split, early stopping watches the training loss instead. A non-finite
training loss stops the run and restores the last good weights. When an interrupt flag
is raised (SIGINT/SIGTERM, see :func:`handle_signals`) the complete training state is
saved and :class:`TrainingInterrupted` is raised; :func:`fit` with ``resume=`` continues
bit-for-bit on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

from ..budget import eval_rows
from ..config import TrainConfig, _format_error
from ..data import DataBundle
from ..errors import ConfigurationError
from . import distributed as D
from .checkpoint import (
    TRAIN_STATE_FORMAT,
    CheckpointError,
    atomic_torch_save,  # re-exported: rpnkit.training.engine.atomic_torch_save
    check_train_state,
)
from .components import (
    HIGHER_IS_BETTER,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    check_metrics,
    compute_metrics,
    default_metrics,
)

__all__ = [
    "fit",
    "evaluate",
    "score",
    "as_bundle",
    "train_config",
    "FitResult",
    "InterruptFlag",
    "TrainingInterrupted",
    "handle_signals",
    "resolve_device",
    "seed_everything",
    "atomic_torch_save",
    "loss_name",
    "output_width",
]

logger = logging.getLogger(__name__)


class TrainingInterrupted(Exception):
    """Training stopped on a signal; the state was saved to ``checkpoint``."""

    def __init__(self, epoch: int, checkpoint: Path | None, signum: int | None = None) -> None:
        self.epoch, self.checkpoint, self.signum = epoch, checkpoint, signum
        where = f"; state saved to {checkpoint}" if checkpoint else ""
        super().__init__(f"training interrupted during epoch {epoch + 1}{where}")


class InterruptFlag:
    def __init__(self) -> None:
        self.signum: int | None = None

    def set(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum

    def __bool__(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def handle_signals(flag: InterruptFlag):
    """Route SIGINT/SIGTERM/SIGHUP to ``flag`` while training (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {}

    def handler(signum, frame):
        flag.set(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            old[sig] = signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigurationError(f"device {name!r} requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError("device 'mps' requested but it is not available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def loss_name(cfg: TrainConfig, task: str) -> str:
    if cfg.loss is not None:
        return cfg.loss.name
    return "mse" if task == "regression" else "cross_entropy"


def output_width(bundle: DataBundle, loss: str) -> int:
    """The model output width the data and loss require."""
    task_of = getattr(LOSSES.get(loss), "task", "regression")
    if task_of != bundle.task:
        raise ConfigurationError(
            f"loss {loss!r} is for {task_of} but dataset {bundle.name!r} is {bundle.task}"
        )
    if bundle.task == "regression":
        return bundle.n_targets
    if loss == "bce":
        if bundle.n_classes != 2:
            raise ConfigurationError(
                f"loss 'bce' needs two classes, dataset {bundle.name!r} has {bundle.n_classes}; "
                "use cross_entropy"
            )
        return 1
    return int(bundle.n_classes or 0)


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best: dict[str, Any]
    final: dict[str, dict[str, float]]
    best_metrics: dict[str, dict[str, float]]
    best_state: dict[str, Tensor] | None
    stopped: dict[str, Any] | None
    epochs_run: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def metrics_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"final": self.final, "best": {**self.best, **self.best_metrics}}
        if self.stopped:
            out["stopped"] = self.stopped
        out["epochs_run"] = self.epochs_run
        out["seconds"] = round(self.seconds, 3)
        out["history"] = self.history
        out.update(self.extra)
        return out


_SPLITS = ("train", "val", "test")


def _n_rows(a: Any) -> int:
    return int(a.shape[0])


def _empty_like(a: Any) -> Any:
    return a[:0]


def _check_finite_input(a: Any, what: str) -> None:
    """Refuse NaN/inf in in-memory data (a numeric array or tensor), naming the first row."""
    # a NaN or inf anywhere makes the sum non-finite: one pass, no mask, in the common case
    # (a non-finite sum of finite values, i.e. overflow, gets the exact check below)
    if isinstance(a, Tensor):
        if not a.is_floating_point() and not a.is_complex():
            return
        a = a.detach()
        if bool(torch.isfinite(a.sum())):
            return
        bad = ~torch.isfinite(a)
        if not bool(bad.any()):
            return
        bad = bad.cpu().numpy()
    else:
        if a.dtype.kind not in "fc":
            return
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(a.sum()):
                return
        bad = ~np.isfinite(a)
        if not bad.any():
            return
    row = int(np.flatnonzero(bad.reshape(len(bad), -1).any(axis=1))[0]) if bad.ndim else 0
    raise ConfigurationError(f"{what} holds NaN or inf (first at row {row}); clean the data "
                             "before training")


def as_bundle(data: Any, task: str | None = None, name: str = "arrays") -> DataBundle:
    """A :class:`~rpnkit.data.DataBundle` from in-memory data (a bundle is returned as is).

    ``data`` is ``(X, y)`` (a training split only) or a mapping
    ``{"train": (X, y), "val": (X, y), "test": (X, y)}`` (``val`` and ``test`` optional).
    ``X`` and ``y`` are numpy arrays or torch tensors (tensors are kept as they are, e.g.
    already on the GPU). ``task`` is ``"regression"`` or ``"classification"``; by default
    integer or boolean targets mean classification. Class targets are integers
    ``0..k-1``; regression targets of shape ``(N,)`` become ``(N, 1)``. Nothing is
    standardised.
    """
    if isinstance(data, DataBundle) or getattr(data, "streaming", False):
        return data
    if isinstance(data, Mapping):
        unknown = set(data) - set(_SPLITS)
        if unknown or "train" not in data:
            raise ConfigurationError(
                f"in-memory data: expected a mapping with a 'train' entry and optional 'val' / "
                f"'test' entries, got keys {sorted(map(str, data))}"
            )
        splits = {k: data[k] for k in _SPLITS if data.get(k) is not None}
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        splits = {"train": data}
    else:
        raise ConfigurationError(
            f"fit: data must be a DataBundle, an (X, y) pair or a mapping of splits, "
            f"got {type(data).__name__}"
        )
    xs: dict[str, Any] = {}
    ys: dict[str, Any] = {}
    for split, pair in splits.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ConfigurationError(f"in-memory data: split {split!r} must be an (X, y) pair")
        x, y = pair
        x = x if isinstance(x, Tensor) else np.asarray(x)
        y = y if isinstance(y, Tensor) else np.asarray(y)
        if x.ndim < 2 or _n_rows(x) != _n_rows(y):
            raise ConfigurationError(
                f"in-memory data: split {split!r} needs X of shape (N, features...) and y with "
                f"N rows, got X {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        _check_finite_input(x, f"in-memory data: X of split {split!r}")
        _check_finite_input(y, f"in-memory data: y of split {split!r}")
        xs[split], ys[split] = x, y
    y_tr = ys["train"]
    if task is None:
        integral = (not torch.is_floating_point(y_tr)) if isinstance(y_tr, Tensor) else (
            y_tr.dtype.kind in "biu")
        task = "classification" if integral else "regression"
    if task not in ("regression", "classification"):
        raise ConfigurationError(f"task must be 'regression' or 'classification', got {task!r}")
    classes = class_dtype = None
    if task == "classification":
        k = 0
        for split, y in ys.items():
            if y.ndim != 1:
                raise ConfigurationError(
                    f"in-memory data: class targets must be 1-D, split {split!r} has shape "
                    f"{tuple(y.shape)}"
                )
            if _n_rows(y):
                lo, hi = int(y.min()), int(y.max())
                if lo < 0:
                    raise ConfigurationError("in-memory data: class targets must be integers >= 0")
                k = max(k, hi + 1)
        if k < 2:
            raise ConfigurationError(
                f"in-memory data: classification needs at least two classes, the targets hold "
                f"only {'class 0' if k == 1 else 'no rows'}; use task='regression' or more data"
            )
        classes = [str(c) for c in range(k)]
        class_dtype = str(y_tr.dtype).removeprefix("torch.")  # the labels' type, as given
    else:
        ys = {s: (y.reshape(-1, 1) if y.ndim == 1 else y) for s, y in ys.items()}
    for split in _SPLITS:
        if split not in xs:
            xs[split], ys[split] = _empty_like(xs["train"]), _empty_like(ys["train"])
    n_out = 1 if task == "classification" else int(ys["train"].shape[1])
    return DataBundle(
        name=name,
        task=task,
        x=xs,
        y=ys,
        feature_names=[f"x{i}" for i in range(int(np.prod(xs["train"].shape[1:])))],
        target_names=[f"y{i}" for i in range(n_out)],
        classes=classes,
        class_dtype=class_dtype,
    )


def train_config(cfg: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    """``cfg`` as a :class:`~rpnkit.config.TrainConfig` (``None``: the defaults; a mapping is
    validated like the ``train:`` section of a YAML config)."""
    if cfg is None:
        return TrainConfig()
    if isinstance(cfg, TrainConfig):
        return cfg
    if isinstance(cfg, Mapping):
        try:
            return TrainConfig.model_validate(dict(cfg))
        except ValidationError as exc:
            raise ConfigurationError(f"train: {_format_error(exc)}") from None
    raise ConfigurationError(f"train config must be a TrainConfig or a mapping, got {type(cfg).__name__}")


def _tensors(bundle: DataBundle, split: str, device, dtype, loss: str):
    x = torch.as_tensor(bundle.x[split], dtype=dtype, device=device)
    y_np = bundle.y[split]
    if bundle.task == "regression" or loss == "bce":
        y = torch.as_tensor(y_np, dtype=dtype, device=device)
    else:
        y = torch.as_tensor(y_np, dtype=torch.long, device=device)
    return x, y


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of ``precision`` (fp32: none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def _dynamic_batch(compiled: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``compiled(x)`` with x's batch dimension marked dynamic before every call, so that
    one graph serves every batch size: the last partial batch of an epoch and the evaluation
    chunks reuse the training graph's code instead of recompiling (evaluation runs without
    gradients, which gives one more graph, compiled once). ``maybe_mark_dynamic`` never
    fails where a model specialises the size (e.g. a batch of one row). Row slices are
    copied to offset 0 first (dynamo specialises on a zero storage offset)."""
    from torch._dynamo import maybe_mark_dynamic

    def forward(x: Tensor) -> Tensor:
        if isinstance(x, Tensor) and x.dim() > 0:
            if x.storage_offset() != 0:  # a row slice (evaluation chunk): dynamo guards on
                x = x.clone()  # storage offset 0 vs not, so one copy of the rows saves a graph
            maybe_mark_dynamic(x, 0)
        return compiled(x)

    forward.compiled = compiled  # type: ignore[attr-defined]
    return forward


def _outputs(model: Callable[[Tensor], Tensor], x: Tensor, batch: int) -> Tensor:
    outs = [model(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    return torch.cat(outs) if outs else x.new_zeros((0, 1))


def _target(y: Any, device, dtype, task: str, loss: str) -> Tensor:
    if task == "regression" or loss == "bce":
        return torch.as_tensor(y, dtype=dtype, device=device)
    return torch.as_tensor(y, dtype=torch.long, device=device)


@torch.no_grad()
def _stream_outputs(fwd, bundle, split: str, device, dtype, loss: str, batch: int,
                    precision: str) -> tuple[Tensor, Tensor]:
    """Outputs and targets of a streamed split; in a process group every rank reads its
    share of each batch and the results are gathered (metrics do not depend on row order)."""
    w = D.world()
    outs, ys = [], []
    for xb, yb in bundle.batches(split, batch, shuffle=False, rank=w.rank, world=w.size):
        if xb.shape[0] == 0:
            continue
        with autocast(device, precision):
            outs.append(fwd(torch.as_tensor(xb, dtype=dtype, device=device)).to(dtype))
        ys.append(_target(yb, device, dtype, bundle.task, loss))
    width = bundle.n_targets if bundle.task == "regression" else (bundle.n_classes or 1)
    out = torch.cat(outs) if outs else torch.zeros(0, width, dtype=dtype, device=device)
    y = torch.cat(ys) if ys else _target(np.zeros((0, width) if bundle.task == "regression"
                                                  else (0,)), device, dtype, bundle.task, loss)
    if w.distributed:
        out, y = D.gather_cat(out), D.gather_cat(y)
    return out, y


@torch.no_grad()
def evaluate(
    model: nn.Module,
    bundle: DataBundle,
    split: str,
    loss: str = "mse",
    metrics: list[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int | None = None,
    loss_params: Mapping[str, Any] | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    precision: str = "fp32",
    forward: Callable[[Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on one split (metrics in the targets' original scale).

    The loss is ``loss_fn`` when given (the training loss object, so that options such as
    ``label_smoothing`` count), else loss ``loss`` built with ``loss_params``. ``forward``
    (e.g. a compiled model) replaces ``model(x)``; ``precision`` selects mixed precision.
    In a process group every rank evaluates its shard of the split and the outputs are
    gathered: the metrics are those of the whole split, on every rank. ``batch_size`` rows
    are evaluated at a time (None: as many as the model's plan fits in the memory budget's
    evaluation share, :func:`rpnkit.budget.eval_rows`).
    """
    if bundle.size(split) == 0:
        return {}
    device = torch.device(device)
    if batch_size is None:  # chunks sized from the model's plan under the memory budget
        batch_size = eval_rows(model, dtype, device)
    was_training = model.training
    set_training(model, False)
    try:
        w = D.world()
        fwd = model if forward is None else forward
        if getattr(bundle, "streaming", False):
            out, y = _stream_outputs(fwd, bundle, split, device, dtype, loss, batch_size,
                                     precision)
        else:
            x, y = _tensors(bundle, split, device, dtype, loss)
            start, stop = D.shard_range(x.shape[0], w.rank, w.size)  # all rows for 1 process
            with autocast(device, precision):
                out = _outputs(fwd, x[start:stop], batch_size)
            out = D.gather_rows(out.to(dtype), x.shape[0])
        if loss_fn is None:
            loss_fn = LOSSES.build(loss, **dict(loss_params or {}))()
        return score(out.to(dtype), y, bundle, loss_fn, metrics)
    finally:
        set_training(model, was_training)


def set_training(model: nn.Module, mode: bool) -> None:
    """``model.train(mode)``, without ``nn.Module.__setattr__`` per submodule: the flag is
    written into each module's ``__dict__`` (what ``train`` does for a module that does not
    override it; one that does is called). Twice per epoch on every submodule, the plain
    ``train`` / ``eval`` cost a tiny model's fit a few percent."""
    base = nn.Module.train
    for mod in model.modules():
        if type(mod).train is base:
            mod.__dict__["training"] = mode
        else:
            mod.train(mode)


def score(out: Tensor, y: Tensor, bundle: DataBundle, loss_fn: Callable[[Tensor, Tensor], Tensor],
          metrics: list[str] | None = None) -> dict[str, float]:
    """Loss and metrics of the outputs ``out`` of one split against its targets ``y`` (metrics
    in the targets' original scale): what :func:`evaluate` reports, from outputs computed
    elsewhere (e.g. one seed of a batched run, :mod:`rpnkit.training.seeds`)."""
    res = {"loss": float(loss_fn(out, y))}
    names = metrics or default_metrics(bundle.task)
    if bundle.task == "regression" and bundle.y_std is not None:
        std = torch.as_tensor(bundle.y_std, dtype=out.dtype, device=out.device)
        mean = torch.as_tensor(bundle.y_mean, dtype=out.dtype, device=out.device)
        out, y = out * std + mean, y * std + mean
    res.update(compute_metrics(names, bundle.task, out, y, bundle.n_classes))
    return res


#: what to try when the training loss diverges
DIVERGENCE_HINT = ("try a lower train.optimizer.lr, train.grad_clip: 1.0, or a bounded "
                   "preprocess such as tanh or layer_norm before fast-growing expansions")


class _ProgressLines:
    """Progress as INFO log lines when stderr is not a terminal (nohup, CI, cluster logs,
    ``| cat``): at most one every ``RPNKIT_PROGRESS_SECONDS`` (default 30) seconds, also
    in the middle of a long epoch (epoch, batch i/N, running loss, samples/s, time left)
    and at epoch ends (with the monitored validation value), and always at the last epoch.
    The time left extrapolates the time per batch so far over the batches still to run."""

    _clock = staticmethod(time.monotonic)

    def __init__(self, epochs: int, start_epoch: int, n_batches: int, start_batch: int = 0) -> None:
        try:
            self.every = float(os.environ.get("RPNKIT_PROGRESS_SECONDS", "30"))
        except ValueError:
            self.every = 30.0
        if not math.isfinite(self.every):
            self.every = 30.0
        self.epochs, self.n_batches = epochs, max(int(n_batches), 1)
        self.total = epochs * self.n_batches
        self.done0 = start_epoch * self.n_batches + start_batch
        self.t0 = self.last = self._clock()

    def _eta(self, now: float, done: int) -> str:
        ran = done - self.done0
        if ran <= 0:
            return "?"
        return _duration((now - self.t0) / ran * (self.total - done))

    def batch(self, epoch: int, b: int, loss: float, samples_per_s: float) -> None:
        """After batch ``b`` (1-based) of epoch ``epoch`` (1-based) of a longer epoch."""
        now = self._clock()
        if now - self.last < self.every:
            return
        self.last = now
        done = (epoch - 1) * self.n_batches + b
        logger.info("epoch %d/%d batch %d/%d loss=%.4g %.3g samples/s ETA %s", epoch,
                    self.epochs, b, self.n_batches, loss, samples_per_s, self._eta(now, done))

    def update(self, epoch: int, loss: float, val: float | None, val_name: str,
               samples_per_s: float) -> None:
        """At the end of epoch ``epoch`` (1-based)."""
        now = self._clock()
        if now - self.last < self.every and epoch < self.epochs:
            return
        self.last = now
        val_part = f" {val_name}={val:.4g}" if val is not None else ""
        logger.info("epoch %d/%d loss=%.4g%s %.3g samples/s ETA %s", epoch, self.epochs, loss,
                    val_part, samples_per_s, self._eta(now, epoch * self.n_batches))


@contextlib.contextmanager
def _progress_output(enabled: bool):
    """Progress lines are INFO records of this module's logger; when the program has set
    up no logging at all (a script calling ``rpnkit.fit(..., progress=True)``), they go to
    stderr for the duration of the call, so that asking for progress shows it."""
    if not enabled or logger.hasHandlers():
        yield
        return
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("rpnkit: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.INFO):
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class _RangeCheck:
    """Forward pre-hook: warn (once) when a module's input leaves its expansion's safe range."""

    def __init__(self, name: str) -> None:
        self.name, self.done = name, False

    def __call__(self, module: nn.Module, args: tuple) -> None:
        if self.done or not args or not isinstance(args[0], Tensor):
            return
        msg = module.input_range_problem(args[0])
        if msg:
            self.done = True
            logger.warning("%s: %s", self.name, msg)


def _install_range_checks(model: nn.Module) -> list:
    """Forward pre-hooks that warn once per module whose inputs leave the range its expansion
    keeps finite (modules with ``input_range_problem``, e.g. RPN heads); removed after the
    first epoch."""
    handles = []
    for name, mod in model.named_modules():
        check = getattr(mod, "input_range_problem", None)
        if not callable(check):
            continue

        handles.append(mod.register_forward_pre_hook(_RangeCheck(name or type(mod).__name__)))
    return handles


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _holds_state(model: nn.Module, state: Mapping[str, Tensor]) -> bool:
    """Whether ``model``'s weights and buffers are exactly ``state`` (then evaluating one is
    evaluating the other)."""
    current = model.state_dict()
    if current.keys() != state.keys():
        return False
    for k, v in current.items():
        w = state[k]
        if not isinstance(w, Tensor) or (v.shape, v.dtype, v.device) != (w.shape, w.dtype, w.device):
            return False
        if not torch.equal(v.detach(), w):
            return False
    return True


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def polish_config(cfg: TrainConfig) -> TrainConfig:
    """The L-BFGS phase of a recipe with ``polish: k``: k full-batch epochs of L-BFGS (lr 1,
    strong-Wolfe line search, 20 iterations per epoch), no schedule, clipping or early stop."""
    phase = TrainConfig.model_validate({"optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20},
                                        "scheduler": "none"})
    return cfg.model_copy(update={"epochs": cfg.polish, "polish": 0, "optimizer": phase.optimizer,
                                  "scheduler": phase.scheduler, "batch_size": None, "grad_clip": None,
                                  "early_stopping": None, "precision": "fp32"})


def _fit_with_polish(model, bundle, cfg, seed, device, progress, checkpoint_path, resume, interrupt,
                     on_epoch_end, checkpoint_extra, restore_best, task) -> FitResult:
    """``cfg.polish`` > 0: the main schedule (checkpointed and resumable as usual), then the
    L-BFGS polish from its best-on-validation weights; the better phase (validation loss) is
    the run's best. A run interrupted during the polish resumes at the polish."""
    main_cfg = cfg.model_copy(update={"polish": 0})
    r1 = fit(model, bundle, main_cfg, seed, device, progress, checkpoint_path, resume, interrupt,
             on_epoch_end, checkpoint_extra, restore_best=True, task=task)
    n1 = r1.epochs_run

    def shifted(epoch: int, record: dict[str, Any]) -> None:
        if on_epoch_end is not None:
            on_epoch_end(epoch + n1, {**record, "epoch": record.get("epoch", epoch) + n1})

    r2 = fit(model, bundle, polish_config(cfg), seed, device, progress, None, None, interrupt,
             shifted, None, restore_best=restore_best, task=task)
    v1 = r1.best_metrics.get("val", {}).get("loss", math.nan)
    v2 = r2.best_metrics.get("val", {}).get("loss", math.nan)
    second = r2.best_state is not None and _finite(v2) and (not _finite(v1) or v2 <= v1)
    if r1.best_state is not None and not second:
        best = r1.best
        best_metrics, best_state = r1.best_metrics, r1.best_state
        if restore_best:
            model.load_state_dict(r1.best_state)
    else:
        best = {**r2.best, "epoch": r2.best.get("epoch", 0) + n1}
        best_metrics, best_state = r2.best_metrics, r2.best_state
    history = list(r1.history) + [{**h, "epoch": h.get("epoch", 0) + n1, "phase": "polish"}
                                  for h in r2.history]
    return FitResult(history=history, best=best, final=r2.final, best_metrics=best_metrics,
                     best_state=best_state, stopped=r2.stopped or r1.stopped, epochs_run=n1 + r2.epochs_run,
                     seconds=r1.seconds + r2.seconds, extra={**r1.extra, "polish_epochs": r2.epochs_run})


def fit(
    model: nn.Module,
    bundle: DataBundle | tuple | Mapping[str, Any],
    cfg: TrainConfig | Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint_path: Path | None = None,
    resume: dict[str, Any] | None = None,
    interrupt: InterruptFlag | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    restore_best: bool = False,
    task: str | None = None,
    seeds: int | list[int] | None = None,
) -> FitResult:
    """Train ``model`` on ``bundle`` following ``cfg``; see the module docstring.

    Args:
        model: the module to train (moved to ``device`` and ``cfg.dtype``).
        bundle: a :class:`~rpnkit.data.DataBundle`, or in-memory data for
            :func:`as_bundle` (``(X, y)`` or ``{"train": (X, y), "val": (X, y)}``; ``task``
            is passed on to it).
        cfg: a :class:`~rpnkit.config.TrainConfig` or a mapping in its YAML form
            (``{"epochs": 50, "optimizer": {"name": "adamw", "lr": 1e-3}, "loss": "mse"}``);
            ``None`` for the defaults.
        seed: seeds the minibatch shuffling (the model's initialisation is the caller's).
        progress: show a tqdm progress bar (on stderr, when it is a terminal).
        checkpoint_path: where the training state is saved (atomically, with a checksum):
            on interrupts, every ``cfg.checkpoint_every`` epochs, every
            ``cfg.checkpoint_seconds`` seconds (mid-epoch too, and at the end of any epoch
            that took longer) and, when either is set, once more when training ends;
            ``None`` writes no file at all.
        resume: a training state saved there (validated first: a state that does not fit
            the model or the config raises :class:`~rpnkit.training.checkpoint.CheckpointError`).
        restore_best: end with the best-on-validation weights loaded into ``model``
            (default: the final weights; ``FitResult.best_state`` holds the best ones).
        seeds: train independent copies as one batched model (overrides ``cfg.seeds``): an
            int S or a list of seeds; ``model`` may then also be a list of modules (one per
            seed) or a callable ``seed -> module``. See :func:`rpnkit.training.seeds.fit_seeds`
            (returns its :class:`~rpnkit.training.seeds.SeedsResult`).
    """
    t_start = time.perf_counter()
    cfg = train_config(cfg)
    if seeds is not None or cfg.seeds is not None:
        from .seeds import fit_seeds, seed_list

        return fit_seeds(model, bundle, cfg, seed_list(seed, cfg.seeds if seeds is None else seeds),
                         device=device, progress=progress, checkpoint_path=checkpoint_path,
                         resume=resume, interrupt=interrupt, on_epoch_end=on_epoch_end,
                         checkpoint_extra=checkpoint_extra, restore_best=restore_best, task=task)
    if cfg.polish:
        return _fit_with_polish(model, bundle, cfg, seed, device, progress, checkpoint_path, resume,
                                interrupt, on_epoch_end, checkpoint_extra, restore_best, task)
    bundle = as_bundle(bundle, task)
    device = torch.device(device) if not isinstance(device, torch.device) else device
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    lname = loss_name(cfg, bundle.task)
    loss_params = cfg.loss.params() if cfg.loss is not None else {}
    loss_fn = LOSSES.build(lname, **loss_params)()
    loss_task = getattr(LOSSES.get(lname), "task", "regression")
    if loss_task != bundle.task:
        raise ConfigurationError(f"loss {lname!r} is for {loss_task} but the data is {bundle.task}")
    metrics = check_metrics(cfg.metrics, bundle.task) if cfg.metrics else default_metrics(bundle.task)
    monitor = cfg.monitor
    if monitor != "loss" and monitor not in metrics:
        raise ConfigurationError(
            f"train.monitor {monitor!r} is neither 'loss' nor one of the metrics {metrics}"
        )
    has_val = bundle.size("val") > 0
    # without a validation split, early stopping watches the training loss
    higher_better = has_val and monitor in HIGHER_IS_BETTER
    interrupt = interrupt if interrupt is not None else InterruptFlag()

    model.to(device=device, dtype=dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build(cfg.optimizer.name, **cfg.optimizer.params())(params)
    scheduler = SCHEDULERS.build(cfg.scheduler.name, **cfg.scheduler.params())(optimizer, cfg.epochs)
    world = D.world()
    precision = cfg.precision
    train_model: nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else world.local_rank] \
            if device.type == "cuda" else None
        train_model = DistributedDataParallel(model, device_ids=ids)
    forward: Callable[[Tensor], Tensor] = train_model
    eval_forward: Callable[[Tensor], Tensor] | None = None
    if cfg.compile:
        forward = _dynamic_batch(torch.compile(train_model))
        eval_forward = forward if not world.distributed else _dynamic_batch(torch.compile(model))
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    range_checks = [] if cfg.compile else _install_range_checks(model)
    # rows per evaluation chunk: decided once from the model's plan (not per evaluation)
    eval_batch = cfg.eval_batch_size or eval_rows(model, dtype, device)

    streaming = bool(getattr(bundle, "streaming", False))
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    if streaming:  # read block by block: the order of an epoch follows (seed, epoch)
        n = bundle.size("train")
        full_batch = False
        batch = cfg.batch_size or 1024
        n_batches = bundle.num_batches("train", batch)
        x_tr = y_tr = x_full = y_full = None
    else:
        x_tr, y_tr = _tensors(bundle, "train", device, dtype, lname)
        n = x_tr.shape[0]
        full_batch = (cfg.batch_size is None and n <= cfg.full_batch_max) or (
            cfg.batch_size is not None and cfg.batch_size >= n
        )
        batch = n if full_batch else (cfg.batch_size or 128)
        n_batches = 1 if full_batch else math.ceil(n / batch)
        if world.distributed and full_batch:  # this rank's share of the one global batch
            x_full, y_full = x_tr[world.rank :: world.size], y_tr[world.rank :: world.size]
        else:
            x_full, y_full = x_tr, y_tr
    # inspection hooks (rpnkit.grid / rpnkit.pruning): regulariser, grid updates, masks
    reg = grid_every = None
    if cfg.reg_l1 > 0 or cfg.reg_entropy > 0 or cfg.grid_update_every:
        if streaming:
            raise ConfigurationError("train.reg_l1 / reg_entropy / grid_update_every need the "
                                     "training data in memory (not stream: true)")
        from ..pruning import Regularizer

        if cfg.reg_l1 > 0 or cfg.reg_entropy > 0:
            reg = Regularizer(model, x_tr[:4096], cfg.reg_l1, cfg.reg_entropy)
        grid_every = cfg.grid_update_every or None
    from ..pruning import masked_pairs, zero_masked

    # pruned entries stay zero after every step; the masked parameters are looked up once
    # (and again after each epoch's callback, which may prune), not walked per step
    mask_pairs = [masked_pairs(model)]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "monitor": f"val_{monitor}" if has_val else None}
    best_value: float | None = None
    best_state: dict[str, Tensor] | None = None
    bad_epochs = 0
    start_epoch, start_batch = 0, 0
    perm: Tensor | None = None
    acc_loss, acc_n = 0.0, 0
    stopped: dict[str, Any] | None = None
    elapsed_before = 0.0

    if resume is not None:
        check_train_state(resume, model, cfg.epochs, optimizer=optimizer, scheduler=scheduler)
        rb, rperm = int(resume["batch"]), resume.get("perm")
        if rb > 0 and (rb >= n_batches or (not full_batch and not streaming and (
                rperm is None or tuple(rperm.shape) != (n,)))):
            raise CheckpointError(f"resume state: batch {rb} / permutation do not fit the "
                                  f"{n_batches} batches of {n} training rows")
        try:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume.get("scheduler") is not None:
                scheduler.load_state_dict(resume["scheduler"])
            gen.set_state(resume["generator"])
            torch.set_rng_state(resume["torch_rng"])
            if device.type == "cuda" and resume.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(resume["cuda_rng"], device)
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise CheckpointError(f"resume state does not fit this model/optimizer: {reason}") \
                from None
        history = list(resume["history"])
        best = dict(resume["best"])
        best_value = resume["best_value"]
        best_state = resume["best_state"]
        bad_epochs = int(resume["bad_epochs"])
        start_epoch, start_batch = int(resume["epoch"]), int(resume["batch"])
        perm = resume.get("perm")
        acc_loss, acc_n = float(resume["acc_loss"]), int(resume["acc_n"])
        elapsed_before = float(resume.get("seconds", 0.0))
        if resume.get("stopped"):
            stopped = resume["stopped"]
            start_epoch = cfg.epochs  # the run had already finished
    last_good = _clone_state(model)
    if resume is not None and resume.get("last_good") is not None:  # saved mid-epoch
        last_good = {k: v.to(device) for k, v in resume["last_good"].items()}
    every_s = float(getattr(cfg, "checkpoint_seconds", 0) or 0)
    periodic = checkpoint_path is not None and bool(cfg.checkpoint_every or every_s > 0)
    saved: dict[str, Any] = {"at": time.perf_counter(), "pos": None if resume is None else (
        int(resume["epoch"]), int(resume["batch"]))}

    def save_state(epoch: int, batch_idx: int) -> Path | None:
        saved["at"], saved["pos"] = time.perf_counter(), (epoch, batch_idx)
        if checkpoint_path is None or not world.main:  # one writer: rank 0
            return checkpoint_path
        state = {
            "format": TRAIN_STATE_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "history": history,
            "best": best,
            "best_value": best_value,
            "best_state": best_state,
            "bad_epochs": bad_epochs,
            "epoch": epoch,
            "batch": batch_idx,
            "perm": perm if batch_idx > 0 else None,
            "last_good": last_good if batch_idx > 0 else None,  # weights of the last epoch end
            "acc_loss": acc_loss,
            "acc_n": acc_n,
            "stopped": stopped,
            "seconds": elapsed_before + time.perf_counter() - t_start,
            **(checkpoint_extra or {}),
        }
        atomic_torch_save(state, checkpoint_path)
        return checkpoint_path

    def step(xb: Tensor, yb: Tensor, global_n: int, stop: bool) -> tuple[float, bool]:
        """One optimiser step on this rank's share ``xb`` of a global batch of ``global_n``
        rows; returns (mean loss over the global batch, whether any rank asked to stop)."""
        holder: dict[str, Any] = {}
        local_n = xb.shape[0]
        # each rank back-propagates its share of the global mean loss (Σ_local ℓ / global_n), so
        # every intermediate gradient has the scale it has in one process (fp16 loss scaling
        # then overflows on the same steps); DDP averages over ranks, so the gradients are
        # multiplied by the world size afterwards: their sum is the global mean's gradient
        weight = local_n / global_n if world.distributed else 1.0

        def closure():
            optimizer.zero_grad(set_to_none=True)
            with autocast(device, precision):
                out = forward(xb)
                loss = loss_fn(out, yb) if local_n > 0 else out.sum() * 0.0
                if reg is not None:
                    loss = loss + reg()
            value = loss.detach()
            if world.distributed:  # the global mean loss (and stop requests) on every rank
                value = value.double()
                stats = torch.stack([value * local_n,
                                     value.new_tensor(1.0 if stop else 0.0)]).cpu()
                D.all_sum(stats)
                value = stats[0] / global_n
                holder.setdefault("stop", bool(stats[1] > 0))
            now = float(value)  # (one read; a tiny model's step is ~1 ms of ~100 ops)
            holder.setdefault("first", now)
            if not math.isfinite(now):  # every rank skips the backward alike
                return value
            scaled = loss * weight if world.distributed else loss
            if scaler is not None:
                scaler.scale(scaled).backward()
            else:
                scaled.backward()
            if world.distributed:
                for p in params:
                    if p.grad is not None:
                        p.grad.mul_(world.size)
            if cfg.grad_clip is not None:
                if scaler is not None:
                    scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            return value

        if isinstance(optimizer, torch.optim.LBFGS):
            optimizer.step(closure)
        else:
            closure()
            if math.isfinite(holder["first"]):
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
        if mask_pairs[0]:
            zero_masked(mask_pairs[0])
        return holder["first"], holder.get("stop", stop)

    bar = None
    lines: _ProgressLines | None = None
    progress_logs = contextlib.ExitStack()  # closed with the bar, in the finally below
    if progress and world.main:
        import sys

        if sys.stderr.isatty():  # a bar over the batches of all epochs
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.epochs * n_batches, initial=start_epoch * n_batches + start_batch,
                       desc=f"epoch {min(start_epoch + 1, cfg.epochs)}/{cfg.epochs}",
                       unit="batch", leave=False, mininterval=0.2, dynamic_ncols=True)
        else:  # nohup, CI, cluster logs: a plain progress line every few seconds
            lines = _ProgressLines(cfg.epochs, start_epoch, n_batches, start_batch)
            progress_logs.enter_context(_progress_output(True))
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            if grid_every and epoch > 0 and epoch % grid_every == 0 and start_batch == 0:
                from ..grid import update_grid

                update_grid(model, x_tr)
                optimizer.state.clear()  # moments / curvature of the old grid's weights
                mask_pairs[0] = masked_pairs(model)
            # --- one epoch of optimisation
            if not full_batch and not streaming and (perm is None or start_batch == 0):
                perm = torch.randperm(n, generator=gen)
            b0 = start_batch
            start_batch = 0
            nonfinite = False
            t_epoch = time.perf_counter()
            seen = 0
            stream = None
            if streaming:
                stream = bundle.batches("train", batch, epoch=epoch, seed=seed, shuffle=True,
                                        rank=world.rank, world=world.size, start_batch=b0,
                                        num_workers=cfg.num_workers)
            for b in range(b0, n_batches):
                if full_batch:
                    xb, yb, global_n = x_full, y_full, n
                elif stream is not None:
                    xs, ys = next(stream)
                    global_n = min(batch, n - b * batch)
                    xb = torch.as_tensor(xs, dtype=dtype, device=device)
                    yb = _target(ys, device, dtype, bundle.task, lname)
                else:
                    idx = perm[b * batch : (b + 1) * batch]
                    global_n = idx.numel()
                    if world.distributed:  # rows rank, rank+world, ... of the global batch
                        idx = idx[world.rank :: world.size]
                    idx = idx.to(device)
                    xb, yb = x_tr[idx], y_tr[idx]
                bl, stop_now = step(xb, yb, global_n, bool(interrupt))
                if not _finite(bl):
                    nonfinite = True
                    break
                acc_loss += bl * global_n
                acc_n += global_n
                seen += global_n
                if bar is not None:
                    bar.update(1)
                elif lines is not None and b + 1 < n_batches:  # the epoch's end has its line
                    lines.batch(epoch + 1, b + 1, acc_loss / max(acc_n, 1),
                                seen / max(time.perf_counter() - t_epoch, 1e-9))
                if stop_now and b + 1 < n_batches:
                    path = save_state(epoch, b + 1)
                    raise TrainingInterrupted(epoch, path, interrupt.signum)
                if periodic and every_s and b + 1 < n_batches \
                        and time.perf_counter() - saved["at"] >= every_s:
                    save_state(epoch, b + 1)  # time-based, mid-epoch
            if not nonfinite and not all(bool(torch.isfinite(p).all()) for p in params):
                nonfinite = True  # e.g. an L-BFGS line search that left the weights NaN/inf
            if nonfinite:
                stopped = {"reason": "non-finite training loss", "epoch": epoch + 1,
                           "restored_epoch": epoch, "cause": "non_finite"}
                logger.warning("training loss became NaN/inf in epoch %d; stopping and keeping "
                               "the weights of epoch %d (%s)", epoch + 1, epoch, DIVERGENCE_HINT)
                model.load_state_dict(last_good)
                break
            for handle in range_checks:  # the first epoch has shown the input ranges
                handle.remove()
            range_checks = []
            train_loss = acc_loss / max(acc_n, 1)
            acc_loss, acc_n = 0.0, 0
            perm = None
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            samples_per_s = seen / max(time.perf_counter() - t_epoch, 1e-9)
            if has_val:
                val = evaluate(model, bundle, "val", lname, metrics, device, dtype,
                               eval_batch, loss_fn=loss_fn, precision=precision,
                               forward=eval_forward)
                rec.update({f"val_{k}": v for k, v in val.items()})
                value = val.get(monitor)
            else:
                value = train_loss
            rec["seconds"] = time.perf_counter() - t_epoch  # training and validation
            if value is not None and math.isfinite(value):
                sign = 1.0 if higher_better else -1.0
                better = best_value is None or sign * (value - best_value) > 0
                significant = best_value is None or (
                    sign * (value - best_value) > cfg.tol * abs(best_value)
                )
                bad_epochs = 0 if significant else bad_epochs + 1
                if better:
                    best_value = value
                    if has_val:
                        best_state = _clone_state(model)
                        best = {"epoch": epoch + 1, "monitor": f"val_{monitor}", "value": value}
            history.append(rec)
            last_good = _clone_state(model)
            if lines is not None:
                lines.update(epoch + 1, train_loss, rec.get(f"val_{monitor}"), f"val_{monitor}",
                             samples_per_s)
            if bar is not None:
                post = {"loss": f"{train_loss:.3g}", "lr": f"{lr:.2g}",
                        "samples/s": f"{samples_per_s:.3g}"}
                if has_val:
                    post[f"val_{monitor}"] = f"{rec.get(f'val_{monitor}', float('nan')):.3g}"
                bar.set_postfix(post, refresh=False)
                if epoch + 1 < cfg.epochs:
                    bar.set_description(f"epoch {epoch + 2}/{cfg.epochs}", refresh=False)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, rec)
                mask_pairs[0] = masked_pairs(model)
            if cfg.early_stopping is not None and bad_epochs >= cfg.early_stopping:
                watched = f"val_{monitor}" if has_val else "train_loss"
                stopped = {"reason": f"early stopping (no {watched} improvement for "
                                     f"{cfg.early_stopping} epochs)", "epoch": epoch + 1,
                           "cause": "early_stopping"}
                logger.info("early stopping at epoch %d", epoch + 1)
                break
            if not D.all_agree(not interrupt):  # any rank asked to stop: all stop here
                path = save_state(epoch + 1, 0)
                raise TrainingInterrupted(epoch + 1, path, interrupt.signum)
            now = time.perf_counter()
            if (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0) or (
                    periodic and every_s and (now - saved["at"] >= every_s
                                              or now - t_epoch >= every_s)):
                save_state(epoch + 1, 0)
    finally:
        if bar is not None:
            bar.close()
        progress_logs.close()
    if periodic and saved["pos"] != (len(history), 0):
        # the end of training is a resumable state too: a crash while the results are
        # written then costs no epoch (stopped runs resume straight to the results)
        save_state(len(history), 0)
        for handle in range_checks:
            handle.remove()

    epochs_run = len(history)
    if not has_val or best_state is None:
        best = {"epoch": epochs_run, "monitor": None,
                "note": "no validation split: the best model is the final model"}
        best_state = None
    dev_args = (device, dtype, eval_batch)
    ev = {"loss_fn": loss_fn, "precision": precision, "forward": eval_forward}
    final = {s: evaluate(model, bundle, s, lname, metrics, *dev_args, **ev) for s in _SPLITS}
    if best_state is not None and _holds_state(model, best_state):
        best_metrics = copy.deepcopy(final)  # best == final (e.g. the last epoch was the best)
    elif best_state is not None:
        final_state = _clone_state(model)
        model.load_state_dict(best_state)
        best_metrics = {s: evaluate(model, bundle, s, lname, metrics, *dev_args, **ev)
                        for s in _SPLITS}
        if not restore_best:
            model.load_state_dict(final_state)
    else:
        best_metrics = copy.deepcopy(final)
    return FitResult(
        history=history,
        best=best,
        final=final,
        best_metrics=best_metrics,
        best_state=best_state,
        stopped=stopped,
        epochs_run=epochs_run,
        seconds=elapsed_before + time.perf_counter() - t_start,
        extra={"world_size": world.size, "global_batch_size": int(batch),
               "precision": precision, "compile": bool(cfg.compile)},
    )
