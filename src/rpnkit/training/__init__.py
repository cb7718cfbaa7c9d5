"""Training engine, run folders and the registries of optimizers, schedulers, losses, metrics.

:func:`fit` is the one training loop (run folders and the scikit-learn estimators use it);
it also trains on in-memory arrays or tensors (:func:`as_bundle`)."""

from __future__ import annotations

from . import baselines
from .components import LOSSES, METRICS, OPTIMIZERS, SCHEDULERS, compute_metrics, default_metrics
from .engine import (
    FitResult,
    InterruptFlag,
    TrainingInterrupted,
    as_bundle,
    evaluate,
    fit,
    handle_signals,
    resolve_device,
    seed_everything,
)
from .run import Prepared, build_from_config, count_params, eval_run, prepare, train_run

__all__ = [
    "LOSSES",
    "METRICS",
    "OPTIMIZERS",
    "SCHEDULERS",
    "FitResult",
    "InterruptFlag",
    "Prepared",
    "TrainingInterrupted",
    "as_bundle",
    "baselines",
    "build_from_config",
    "compute_metrics",
    "count_params",
    "default_metrics",
    "eval_run",
    "evaluate",
    "fit",
    "handle_signals",
    "prepare",
    "resolve_device",
    "seed_everything",
    "train_run",
]
