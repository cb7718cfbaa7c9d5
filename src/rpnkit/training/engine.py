"""The training loop: seeded, resumable, with validation-only model selection.

:func:`fit` trains a model on a :class:`~rpnkit.data.DataBundle`. It selects the best
epoch and applies early stopping on the **validation** split only (the test split is
evaluated once, at the end). A non-finite training loss stops the run and restores
the last good weights. When an interrupt flag is raised (SIGINT/SIGTERM, see
:func:`handle_signals`) the complete training state is saved and
:class:`TrainingInterrupted` is raised; :func:`fit` with ``resume=`` continues
bit-for-bit on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from ..data import DataBundle
from ..errors import ConfigurationError
from .components import (
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
    """Route SIGINT/SIGTERM to ``flag`` while training (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {}

    def handler(signum, frame):
        flag.set(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
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


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file in the same folder, then rename into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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


def _tensors(bundle: DataBundle, split: str, device, dtype, loss: str):
    x = torch.as_tensor(bundle.x[split], dtype=dtype, device=device)
    y_np = bundle.y[split]
    if bundle.task == "regression" or loss == "bce":
        y = torch.as_tensor(y_np, dtype=dtype, device=device)
    else:
        y = torch.as_tensor(y_np, dtype=torch.long, device=device)
    return x, y


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor, batch: int) -> Tensor:
    outs = [model(x[i : i + batch]) for i in range(0, x.shape[0], batch)]
    return torch.cat(outs) if outs else x.new_zeros((0, 1))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    bundle: DataBundle,
    split: str,
    loss: str = "mse",
    metrics: list[str] | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    batch_size: int = 8192,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on one split (in the targets' original scale)."""
    if bundle.size(split) == 0:
        return {}
    was_training = model.training
    model.eval()
    try:
        x, y = _tensors(bundle, split, torch.device(device), dtype, loss)
        out = _outputs(model, x, batch_size)
        loss_fn = LOSSES.build(loss)()
        res = {"loss": float(loss_fn(out, y))}
        names = metrics or default_metrics(bundle.task)
        if bundle.task == "regression" and bundle.y_std is not None:
            std = torch.as_tensor(bundle.y_std, dtype=out.dtype, device=out.device)
            mean = torch.as_tensor(bundle.y_mean, dtype=out.dtype, device=out.device)
            out, y = out * std + mean, y * std + mean
        res.update(compute_metrics(names, bundle.task, out, y, bundle.n_classes))
        return res
    finally:
        model.train(was_training)


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _finite(v: float) -> bool:
    return v is not None and math.isfinite(v)


def fit(
    model: nn.Module,
    bundle: DataBundle,
    cfg: TrainConfig,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint_path: Path | None = None,
    resume: dict[str, Any] | None = None,
    interrupt: InterruptFlag | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``bundle`` following ``cfg``; see the module docstring."""
    t_start = time.perf_counter()
    device = torch.device(device) if not isinstance(device, torch.device) else device
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    lname = loss_name(cfg, bundle.task)
    loss_params = cfg.loss.params() if cfg.loss is not None else {}
    loss_fn = LOSSES.build(lname, **loss_params)()
    metrics = check_metrics(cfg.metrics, bundle.task) if cfg.metrics else default_metrics(bundle.task)
    monitor = cfg.monitor
    if monitor != "loss" and monitor not in metrics:
        raise ConfigurationError(
            f"train.monitor {monitor!r} is neither 'loss' nor one of the metrics {metrics}"
        )
    higher_better = monitor in ("r2", "accuracy", "f1")
    interrupt = interrupt if interrupt is not None else InterruptFlag()

    model.to(device=device, dtype=dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = OPTIMIZERS.build(cfg.optimizer.name, **cfg.optimizer.params())(params)
    scheduler = SCHEDULERS.build(cfg.scheduler.name, **cfg.scheduler.params())(optimizer, cfg.epochs)

    x_tr, y_tr = _tensors(bundle, "train", device, dtype, lname)
    n = x_tr.shape[0]
    has_val = bundle.size("val") > 0
    full_batch = (cfg.batch_size is None and n <= cfg.full_batch_max) or (
        cfg.batch_size is not None and cfg.batch_size >= n
    )
    batch = n if full_batch else (cfg.batch_size or 128)
    n_batches = 1 if full_batch else math.ceil(n / batch)
    gen = torch.Generator().manual_seed(int(seed) * 7919 + 17)

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
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler") is not None:
            scheduler.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        torch.set_rng_state(resume["torch_rng"])
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], device)
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

    def save_state(epoch: int, batch_idx: int) -> Path | None:
        if checkpoint_path is None:
            return None
        state = {
            "format": "rpnkit-train-state-1",
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
            "acc_loss": acc_loss,
            "acc_n": acc_n,
            "stopped": stopped,
            "seconds": elapsed_before + time.perf_counter() - t_start,
            **(checkpoint_extra or {}),
        }
        atomic_torch_save(state, checkpoint_path)
        return checkpoint_path

    def step(xb: Tensor, yb: Tensor) -> float:
        holder: dict[str, float] = {}

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            if "first" not in holder:
                holder["first"] = float(loss.detach())
            if not torch.isfinite(loss):
                return loss
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            return loss

        if isinstance(optimizer, torch.optim.LBFGS):
            optimizer.step(closure)
        else:
            loss = closure()
            if torch.isfinite(loss):
                optimizer.step()
        return holder["first"]

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.epochs, initial=start_epoch, desc="train", unit="ep", leave=False,
                   disable=None, mininterval=0.2,
                   dynamic_ncols=True)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            # --- one epoch of optimisation
            if not full_batch and (perm is None or start_batch == 0):
                perm = torch.randperm(n, generator=gen)
            b0 = start_batch
            start_batch = 0
            nonfinite = False
            for b in range(b0, n_batches):
                if full_batch:
                    xb, yb = x_tr, y_tr
                else:
                    idx = perm[b * batch : (b + 1) * batch].to(device)
                    xb, yb = x_tr[idx], y_tr[idx]
                bl = step(xb, yb)
                if not _finite(bl):
                    nonfinite = True
                    break
                acc_loss += bl * xb.shape[0]
                acc_n += xb.shape[0]
                if interrupt and b + 1 < n_batches:
                    path = save_state(epoch, b + 1)
                    raise TrainingInterrupted(epoch, path, interrupt.signum)
            if not nonfinite and not all(bool(torch.isfinite(p).all()) for p in params):
                nonfinite = True  # e.g. an L-BFGS line search that left the weights NaN/inf
            if nonfinite:
                stopped = {"reason": "non-finite training loss", "epoch": epoch + 1,
                           "restored_epoch": epoch}
                logger.warning("training loss became NaN/inf in epoch %d; stopping and keeping "
                               "the weights of epoch %d", epoch + 1, epoch)
                model.load_state_dict(last_good)
                break
            train_loss = acc_loss / max(acc_n, 1)
            acc_loss, acc_n = 0.0, 0
            perm = None
            lr = optimizer.param_groups[0]["lr"]
            if scheduler is not None:
                scheduler.step()
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            if has_val:
                val = evaluate(model, bundle, "val", lname, metrics, device, dtype, cfg.eval_batch_size)
                rec.update({f"val_{k}": v for k, v in val.items()})
                value = val.get(monitor)
                if value is not None and math.isfinite(value):
                    better = best_value is None or (
                        value > best_value if higher_better else value < best_value
                    )
                    if better:
                        best_value = value
                        best_state = _clone_state(model)
                        best = {"epoch": epoch + 1, "monitor": f"val_{monitor}", "value": value}
                        bad_epochs = 0
                    else:
                        bad_epochs += 1
            history.append(rec)
            last_good = _clone_state(model)
            if bar is not None:
                post = {"loss": f"{train_loss:.3g}", "lr": f"{lr:.2g}"}
                if has_val:
                    post[f"val_{monitor}"] = f"{rec.get(f'val_{monitor}', float('nan')):.3g}"
                bar.set_postfix(post, refresh=False)
                bar.update(1)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, rec)
            if cfg.early_stopping is not None and has_val and bad_epochs >= cfg.early_stopping:
                stopped = {"reason": f"early stopping (no val_{monitor} improvement for "
                                     f"{cfg.early_stopping} epochs)", "epoch": epoch + 1}
                logger.info("early stopping at epoch %d", epoch + 1)
                break
            if interrupt:
                path = save_state(epoch + 1, 0)
                raise TrainingInterrupted(epoch + 1, path, interrupt.signum)
            if cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0:
                save_state(epoch + 1, 0)
    finally:
        if bar is not None:
            bar.close()

    epochs_run = len(history)
    if not has_val or best_state is None:
        best = {"epoch": epochs_run, "monitor": None,
                "note": "no validation split: the best model is the final model"}
        best_state = None
    dev_args = (device, dtype, cfg.eval_batch_size)
    final = {s: evaluate(model, bundle, s, lname, metrics, *dev_args) for s in ("train", "val", "test")}
    if best_state is not None:
        final_state = _clone_state(model)
        model.load_state_dict(best_state)
        best_metrics = {s: evaluate(model, bundle, s, lname, metrics, *dev_args)
                        for s in ("train", "val", "test")}
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
    )
