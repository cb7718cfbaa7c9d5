"""Optimizers, schedulers, losses and metrics, chosen by registry name.

Each entry is a small factory class; its constructor takes the options a config may
set (so unknown options are rejected with the closest valid name).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigurationError, UnknownNameError, did_you_mean
from ..registry import Registry

__all__ = ["OPTIMIZERS", "SCHEDULERS", "LOSSES", "METRICS", "compute_metrics", "default_metrics"]

OPTIMIZERS = Registry("optimizer")
SCHEDULERS = Registry("scheduler")
LOSSES = Registry("loss")


def _pos(name: str, value, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- optimizers
def _impl_flags(fused, foreach) -> dict:
    """Checked ``fused`` / ``foreach`` options (None: choose per device, see :func:`_impl`)."""
    for name, value in (("fused", fused), ("foreach", foreach)):
        if value is not None and not isinstance(value, bool):
            raise ConfigurationError(f"optimizer option {name} must be true, false or null, "
                                     f"got {value!r}")
    if fused and foreach:
        raise ConfigurationError("optimizer options fused and foreach exclude each other; "
                                 "set one of them (fused is the faster where supported)")
    return {"fused": fused, "foreach": foreach}


def _impl(params, flags: dict) -> tuple[list, dict]:
    """(params as a list, implementation kwargs): by default the fused kernel where PyTorch has
    one for every parameter's device and dtype (CPU and CUDA floats), else the multi-tensor
    ``foreach`` kernel where the device has it, else PyTorch's per-parameter loop."""
    from torch.optim.optimizer import _get_fused_kernels_supported_devices
    from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

    params = list(params)
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused, foreach = flags["fused"], flags["foreach"]
    if fused is None and foreach is None:
        devices = {p.device.type for p in tensors}
        floating = all(p.is_floating_point() and not p.is_sparse for p in tensors)
        if tensors and floating and devices <= set(_get_fused_kernels_supported_devices()):
            return params, {"fused": True}
        if tensors and devices <= set(_get_foreach_kernels_supported_devices()):
            return params, {"foreach": True}
        return params, {}
    return params, {k: v for k, v in flags.items() if v is not None}


def _make(cls, params, kw: dict, flags: dict) -> torch.optim.Optimizer:
    params, impl = _impl(params, flags)
    try:
        return cls(params, **kw, **impl)
    except RuntimeError as exc:  # e.g. fused: true on a device or dtype without the kernel
        raise ConfigurationError(f"{cls.__name__} with {impl}: {exc}; set fused: null (the "
                                 f"default chooses what the device supports)") from None


@OPTIMIZERS.register("adam")
class Adam:
    """Adam (Kingma & Ba 2015).

    ``fused`` / ``foreach``: PyTorch's single-kernel or multi-tensor implementations; by
    default (null) the fused kernel is used wherever PyTorch has one (CPU and CUDA floats),
    else foreach where the device has it. ``false`` forces the per-parameter loop.
    """

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, fused: bool | None = None,
                 foreach: bool | None = None) -> None:
        if (
            not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)
        ):
            raise ConfigurationError(f"betas must be two numbers in [0, 1), got {betas!r}")
        self.kw = {"lr": _pos("lr", lr), "betas": tuple(betas), "eps": _pos("eps", eps),
                   "weight_decay": _pos("weight_decay", weight_decay, True), "amsgrad": bool(amsgrad)}
        self.impl = _impl_flags(fused, foreach)

    def __call__(self, params) -> torch.optim.Optimizer:
        return _make(torch.optim.Adam, params, self.kw, self.impl)


@OPTIMIZERS.register("adamw")
class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter 2019)."""

    def __init__(self, lr: float = 1e-3, betas: tuple = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, fused: bool | None = None,
                 foreach: bool | None = None) -> None:
        super().__init__(lr, betas, eps, weight_decay, amsgrad, fused, foreach)

    def __call__(self, params) -> torch.optim.Optimizer:
        return _make(torch.optim.AdamW, params, self.kw, self.impl)


@OPTIMIZERS.register("sgd")
class SGD:
    """Stochastic gradient descent with optional (Nesterov) momentum (``fused`` / ``foreach`` as
    for :class:`Adam`)."""

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False, dampening: float = 0.0, fused: bool | None = None,
                 foreach: bool | None = None) -> None:
        self.kw = {"lr": _pos("lr", lr), "momentum": _pos("momentum", momentum, True),
                   "weight_decay": _pos("weight_decay", weight_decay, True),
                   "nesterov": bool(nesterov), "dampening": _pos("dampening", dampening, True)}
        self.impl = _impl_flags(fused, foreach)

    def __call__(self, params) -> torch.optim.Optimizer:
        return _make(torch.optim.SGD, params, self.kw, self.impl)


class _L2LBFGS(torch.optim.LBFGS):
    """torch's L-BFGS minimising ``loss + weight_decay/2·‖θ‖²`` (an L2 penalty)."""

    def __init__(self, params, weight_decay: float = 0.0, **kw) -> None:
        super().__init__(params, **kw)
        self.weight_decay = float(weight_decay)

    def step(self, closure):  # type: ignore[override]
        wd = self.weight_decay
        if not wd:
            return super().step(closure)
        params = [p for group in self.param_groups for p in group["params"]]

        def penalised():
            loss = closure()
            if not torch.isfinite(loss):
                return loss
            with torch.no_grad():
                penalty = sum((p * p).sum() for p in params)
                for p in params:
                    if p.grad is None:
                        p.grad = wd * p.detach().clone()
                    else:
                        p.grad.add_(p, alpha=wd)
            return loss + 0.5 * wd * penalty

        return super().step(penalised)


@OPTIMIZERS.register("lbfgs")
class LBFGS:
    """L-BFGS (full batch; one optimizer step per epoch, with strong-Wolfe line search).

    ``weight_decay`` adds the L2 penalty ``weight_decay/2·‖θ‖²`` to the minimised loss.
    """

    def __init__(self, lr: float = 1.0, max_iter: int = 20, history_size: int = 100,
                 line_search: str | None = "strong_wolfe", tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, weight_decay: float = 0.0) -> None:
        if line_search not in (None, "strong_wolfe"):
            raise ConfigurationError(f"lbfgs line_search must be null or 'strong_wolfe', got {line_search!r}")
        self.kw = {"lr": _pos("lr", lr), "max_iter": int(max_iter),
                   "history_size": int(history_size), "line_search_fn": line_search,
                   "tolerance_grad": _pos("tolerance_grad", tolerance_grad, True),
                   "tolerance_change": _pos("tolerance_change", tolerance_change, True),
                   "weight_decay": _pos("weight_decay", weight_decay, True)}

    def __call__(self, params) -> torch.optim.Optimizer:
        return _L2LBFGS(params, **self.kw)


# ----------------------------------------------------------------------------- schedulers
@SCHEDULERS.register("none")
class NoSchedule:
    """Constant learning rate."""

    def __init__(self) -> None:
        pass

    def __call__(self, opt, epochs: int):
        return None


@SCHEDULERS.register("exponential")
class Exponential:
    """lr ← lr·gamma after every epoch."""

    def __init__(self, gamma: float = 0.99) -> None:
        self.gamma = _pos("gamma", gamma)

    def __call__(self, opt, epochs: int):
        return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.gamma)


@SCHEDULERS.register("cosine")
class Cosine:
    """Cosine annealing from lr to eta_min over the run's epochs (or t_max)."""

    def __init__(self, eta_min: float = 0.0, t_max: int | None = None) -> None:
        self.eta_min = _pos("eta_min", eta_min, True)
        self.t_max = t_max

    def __call__(self, opt, epochs: int):
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(1, int(self.t_max or epochs)), eta_min=self.eta_min
        )


@SCHEDULERS.register("step")
class Step:
    """lr ← lr·gamma every step_size epochs."""

    def __init__(self, step_size: int = 30, gamma: float = 0.1) -> None:
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ConfigurationError(f"step scheduler: step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = step_size, _pos("gamma", gamma)

    def __call__(self, opt, epochs: int):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=self.step_size, gamma=self.gamma)


# ----------------------------------------------------------------------------- losses
@LOSSES.register("mse")
class MSELoss:
    """Mean squared error (regression)."""

    task = "regression"

    def __init__(self) -> None:
        pass

    def __call__(self) -> nn.Module:
        return nn.MSELoss()


@LOSSES.register("mae")
class MAELoss(MSELoss):
    """Mean absolute error (regression)."""

    def __call__(self) -> nn.Module:
        return nn.L1Loss()


@LOSSES.register("cross_entropy")
class CrossEntropy:
    """Softmax cross-entropy on logits (classification; output width = number of classes)."""

    task = "classification"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = _pos("label_smoothing", label_smoothing, True)

    def __call__(self) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=self.label_smoothing)


@LOSSES.register("hinge")
class Hinge:
    """Multi-class hinge loss on one score per class (the SVM objective; the summed
    Weston-Watkins margins of ``torch.nn.MultiMarginLoss``)."""

    task = "classification"

    def __init__(self, margin: float = 1.0) -> None:
        self.margin = _pos("margin", margin)

    def __call__(self) -> nn.Module:
        return nn.MultiMarginLoss(margin=self.margin)


class _BCE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.BCEWithLogitsLoss()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.inner(logits.reshape(-1), target.to(logits.dtype).reshape(-1))


@LOSSES.register("bce")
class BCE:
    """Binary cross-entropy on one logit (binary classification; output width 1)."""

    task = "classification"

    def __init__(self) -> None:
        pass

    def __call__(self) -> nn.Module:
        return _BCE()


# ----------------------------------------------------------------------------- metrics
# Every metric equals scikit-learn's (sklearn.metrics, default arguments unless named):
# mse / mae: mean_squared_error / mean_absolute_error (multi-output: uniform_average),
# r2: r2_score (multi-output: uniform_average, the mean of the per-output R^2; an output
# with constant targets scores 1 when predicted exactly, else 0; nan below two samples),
# accuracy: accuracy_score, f1 / f1_macro / f1_micro / f1_weighted: f1_score with that
# average over the labels present in the targets or the predictions (f1 is macro),
# log_loss: log_loss with labels 0..k-1 (probabilities clipped to [eps, 1 - eps]).
def _r2(y: np.ndarray, p: np.ndarray) -> float:
    """R^2 per output (columns), averaged uniformly (scikit-learn's ``r2_score``)."""
    y = y.reshape(y.shape[0], -1)
    p = p.reshape(y.shape)
    if y.shape[0] < 2:
        return math.nan  # scikit-learn: not well-defined with less than two samples
    ss_res = ((y - p) ** 2).sum(axis=0)
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    ok = ss_tot != 0
    scores = np.where(ss_res == 0, 1.0, 0.0)  # constant target column
    scores[ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return float(scores.mean())


def _f1(y: np.ndarray, pred: np.ndarray, average: str) -> float:
    """F1 over the labels present in ``y`` or ``pred`` (scikit-learn's ``f1_score``;
    a label never predicted and never true does not count)."""
    labels = np.union1d(y, pred)
    if labels.size == 0:
        return 0.0
    yi = np.searchsorted(labels, y)
    pi = np.searchsorted(labels, pred)
    k = labels.size
    tp = np.bincount(yi[yi == pi], minlength=k).astype(np.float64)
    support = np.bincount(yi, minlength=k).astype(np.float64)  # tp + fn
    predicted = np.bincount(pi, minlength=k).astype(np.float64)  # tp + fp
    if average == "micro":
        denom = support.sum() + predicted.sum()
        return float(2 * tp.sum() / denom) if denom > 0 else 0.0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    if average == "weighted":
        return float((f1 * support).sum() / support.sum()) if support.sum() > 0 else 0.0
    return float(f1.mean())


REGRESSION_METRICS = ("mse", "mae", "r2")
CLASSIFICATION_METRICS = ("accuracy", "f1", "log_loss")
#: every metric a config may name (the defaults above, plus the F1 averages)
METRICS = {
    "mse": "mean squared error (multi-output: mean over outputs)",
    "mae": "mean absolute error (multi-output: mean over outputs)",
    "r2": "coefficient of determination (multi-output: mean of the per-output R^2)",
    "accuracy": "fraction of correct class predictions",
    "f1": "macro-averaged F1 score (the same as f1_macro)",
    "f1_macro": "F1 score, unweighted mean over the classes",
    "f1_micro": "F1 score from the total true/false positives and negatives",
    "f1_weighted": "F1 score, mean over the classes weighted by their support",
    "log_loss": "mean negative log-likelihood of the true class",
}
_TASK_OF_METRIC = {**dict.fromkeys(REGRESSION_METRICS, "regression"),
                   **dict.fromkeys((*CLASSIFICATION_METRICS, "f1_macro", "f1_micro",
                                    "f1_weighted"), "classification")}
#: metrics where a larger value is better (the rest: lower is better)
HIGHER_IS_BETTER = frozenset({"r2", "accuracy", "f1", "f1_macro", "f1_micro", "f1_weighted"})
_F1_AVERAGE = {"f1": "macro", "f1_macro": "macro", "f1_micro": "micro",
               "f1_weighted": "weighted"}


def default_metrics(task: str) -> list[str]:
    return list(REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS)


def check_metrics(names, task: str) -> list[str]:
    valid = [m for m, kind in _TASK_OF_METRIC.items() if kind == task]
    out = []
    for name in names:
        if name not in METRICS:
            raise UnknownNameError(
                f"unknown metric {name!r}{did_you_mean(name, METRICS)}; valid: {', '.join(METRICS)}"
            )
        if name not in valid:
            raise ConfigurationError(
                f"metric {name!r} does not apply to {task} data; use one of {', '.join(valid)}"
            )
        out.append(name)
    return out


def compute_metrics(names, task: str, output: Tensor, target: Tensor, n_classes: int | None) -> dict[str, float]:
    """Metrics of a full split's model output (logits for classification), equal to
    scikit-learn's (see "metrics" above); ``n_classes`` is not needed (kept for callers)."""
    out: dict[str, float] = {}
    if task == "regression":
        p = output.detach().double().cpu().numpy()
        y = target.detach().double().cpu().numpy().reshape(p.shape)
        for name in names:
            if name == "mse":
                out[name] = float(((p - y) ** 2).mean())
            elif name == "mae":
                out[name] = float(np.abs(p - y).mean())
            elif name == "r2":
                out[name] = _r2(y, p)
        return out
    logits = output.detach().double().cpu()
    y = target.detach().long().cpu()
    if logits.dim() == 1 or logits.shape[1] == 1:  # one logit: binary
        z = logits.reshape(-1)
        logp = torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], 1)
    else:
        logp = torch.log_softmax(logits, dim=1)
    pred = logp.argmax(dim=1).numpy()
    yn = y.numpy()
    for name in names:
        if name == "accuracy":
            out[name] = float((pred == yn).mean())
        elif name in _F1_AVERAGE:
            out[name] = _f1(yn, pred, _F1_AVERAGE[name])
        elif name == "log_loss":
            eps = float(np.finfo(np.float64).eps)  # scikit-learn clips p to [eps, 1 - eps]
            lp = logp[torch.arange(len(y)), y].clamp(math.log(eps), math.log1p(-eps))
            out[name] = float(-lp.mean())
    return out
