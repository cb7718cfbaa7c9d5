"""Batched seeds: S independent copies of one model trained as one batched model.

``train.seeds: S`` (or a list of seeds, or ``fit(..., seeds=S)``) trains S copies of the
model at once: their parameters are stacked (:func:`torch.func.stack_module_state`) and one
``torch.func.vmap`` of :func:`torch.func.functional_call` runs all copies in each step, so a
tiny model pays the Python and kernel-launch overhead of one step, not of S.

Every copy is trained exactly as :func:`rpnkit.training.fit` trains it alone with its seed:

* **its seed**: an int S means the run's ``seed`` followed by ``S - 1`` seeds derived from it
  (``derive_seed(seed, i) mod 2**32``, independent streams, never ``seed + i``); a list means
  those seeds. Seed ``s`` draws its model's initialisation (in a run folder: the model built
  after seeding with ``s``) and its minibatch order (the engine's generator of seed ``s``). The
  data (sampling and split) are those of the run's ``seed``, shared by every copy;
* **its optimizer math**: the loss is the sum of the per-seed losses, so each copy's slice of
  the stacked gradient is its own gradient; Adam / AdamW / SGD (and their fused / foreach
  kernels) are elementwise, with the same step count, learning-rate schedule and weight decay
  for every copy that is still training; gradient clipping uses each copy's own norm;
* **its selection**: per-seed early stopping (a stopped copy is frozen while the others go
  on), per-seed best-on-validation epoch, per-seed stop on a non-finite loss (its last good
  weights are restored).

So seed ``s`` of a batched run follows the trajectory of a single run with seed ``s`` up to
floating-point rounding of the batched kernels (``tests/training/test_batched_seeds.py``
checks 1e-6 relative in float64). Runs are resumable: the checkpoint holds the stacked state.

Not batched (refused with :class:`~rpnkit.errors.ConfigurationError`): L-BFGS, polish, grid
updates, the sparsity regulariser, mixed precision, compile, streamed data and process
groups; models that draw random numbers in ``forward`` (dropout) or update buffers there
(batch norm) cannot be vmapped and are refused when the first step runs.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..budget import eval_rows
from ..config import TrainConfig, seeds_conflicts
from ..errors import ConfigurationError
from ..seeding import derive_seed
from . import distributed as D
from .checkpoint import (
    CheckpointError,
    _check_records,
    _fail,
    _is_int,
    _short,
    atomic_torch_save,
    check_optimizer_state,
    check_scheduler_state,
    check_state_dict,
)
from .components import (
    HIGHER_IS_BETTER,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    check_metrics,
    default_metrics,
)

__all__ = ["fit_seeds", "seed_list", "SeedsResult", "SEEDS_STATE_FORMAT", "check_seeds_state",
           "summarise_seeds"]

#: the format tag of a batched-seeds training state (``checkpoint.pt``)
SEEDS_STATE_FORMAT = "rpnkit-seeds-state-1"
_SPLITS = ("train", "val", "test")


def seed_list(seed: int, seeds: int | Sequence[int]) -> list[int]:
    """The seeds of a batched run: ``seeds`` itself when it is a list, else the run's ``seed``
    followed by ``seeds - 1`` independent seeds ``derive_seed(seed, i) mod 2**32``.

    Raises:
        ConfigurationError: ``seeds`` is not a count from 1 or a list of distinct seeds.
    """
    from ..config import MAX_SEEDS

    if isinstance(seeds, bool) or not isinstance(seeds, (int, list, tuple)):
        raise ConfigurationError(f"seeds must be a number of seeds or a list of seeds, got "
                                 f"{_short(seeds)}")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ConfigurationError(f"seeds must be from 1 to {MAX_SEEDS}, got {seeds}")
        out = [int(seed)] + [derive_seed(int(seed), i) % 2**32 for i in range(1, seeds)]
    else:
        out = list(seeds)
        if not out or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32
                          for s in out):
            raise ConfigurationError(f"seeds must list integers 0 to 2**32-1, got {_short(out)}")
    if len(set(out)) != len(out):
        raise ConfigurationError(f"seeds must be distinct, got {_short(out)}")
    return out


@dataclass
class SeedsResult:
    """The result of a batched run: one :class:`~rpnkit.training.FitResult` per seed
    (``runs``, in the order of ``seeds``) and what they share. ``final`` / ``best`` /
    ``history`` ... are those of the first seed, so code reading one run reads this too."""

    seeds: list[int]
    runs: list[Any]
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)  # the batched epochs
    extra: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # final, best, best_state, ... of the first seed
        if name in ("final", "best", "best_metrics", "best_state", "stopped", "epochs_run"):
            return getattr(self.runs[0], name)
        raise AttributeError(name)

    def metrics_json(self) -> dict[str, Any]:
        """``metrics.json``: the first seed's run (``final``, ``best``, ``history`` ...), a
        ``seeds`` list (``seed``, ``final``, ``best``, ``epochs_run``, ``stopped`` of each) and
        the ``mean``, ``std`` (sample, ddof 1; 0 for one seed) and ``median`` over the seeds
        of every final and best metric."""
        out = self.runs[0].metrics_json()
        out["seconds"] = round(self.seconds, 3)
        out["seeds"] = [{"seed": s, "final": r.final, "best": {**r.best, **r.best_metrics},
                         "epochs_run": r.epochs_run, **({"stopped": r.stopped} if r.stopped else {})}
                        for s, r in zip(self.seeds, self.runs)]
        out.update(summarise_seeds(self.runs))
        out.update(self.extra)
        return out


def summarise_seeds(runs: Sequence[Any]) -> dict[str, Any]:
    """``{"mean" | "std" | "median": {"final" | "best": {split: {metric: value}}}}`` over the
    runs (metrics every run has; NaN where one is not finite)."""
    stats: dict[str, Any] = {"mean": {}, "std": {}, "median": {}}
    for which in ("final", "best"):
        tables = [r.final if which == "final" else r.best_metrics for r in runs]
        for split in _SPLITS:
            names = [k for k in (tables[0].get(split) or {}) if all(k in (t.get(split) or {})
                                                                     for t in tables)]
            if not names:
                continue
            for key in stats:
                stats[key].setdefault(which, {})[split] = {}
            for name in names:
                vals = [float(t[split][name]) for t in tables]
                finite = all(math.isfinite(v) for v in vals)
                nan = float("nan")
                stats["mean"][which][split][name] = statistics.fmean(vals) if finite else nan
                stats["std"][which][split][name] = (statistics.stdev(vals) if len(vals) > 1
                                                    else 0.0) if finite else nan
                stats["median"][which][split][name] = statistics.median(vals) if finite else nan
    return stats


def _refuse(cfg: TrainConfig, bundle: Any) -> None:
    clash = seeds_conflicts(cfg)
    if clash:
        raise ConfigurationError(f"train.seeds (batched seeds) cannot be combined with {clash}; "
                                 "train the seeds as separate runs instead")
    if getattr(bundle, "streaming", False):
        raise ConfigurationError("train.seeds (batched seeds) needs the training data in memory "
                                 "(not data.stream: true)")
    if D.world().distributed:
        raise ConfigurationError("train.seeds (batched seeds) trains in one process; run it "
                                 "without torchrun")


def _reinit(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` re-initialised under ``torch.manual_seed(seed)`` by the
    ``reset_parameters()`` of every submodule that holds parameters itself."""
    twin = copy.deepcopy(model)
    torch.manual_seed(seed)
    if callable(getattr(twin, "reset_parameters", None)):
        twin.reset_parameters()
        return twin
    for name, mod in twin.named_modules():
        if not any(True for _ in mod.parameters(recurse=False)):
            continue
        if not callable(getattr(mod, "reset_parameters", None)):
            raise ConfigurationError(
                f"seeds: cannot re-initialise {type(mod).__name__} {name or '(model)'} (it has "
                "no reset_parameters()); pass a list of models (one per seed) or a callable "
                "seed -> model instead of one model")
        mod.reset_parameters()
    return twin


def _models(model: Any, seeds: list[int]) -> list[nn.Module]:
    """One module per seed: the given list, a factory's ``model(seed)``, or ``model`` itself
    for the first seed and copies re-initialised under the others (:func:`_reinit`)."""
    if isinstance(model, nn.Module):
        models = [model] + [_reinit(model, s) for s in seeds[1:]]
    elif isinstance(model, (list, tuple)):
        models = list(model)
        if len(models) != len(seeds) or not all(isinstance(m, nn.Module) for m in models):
            raise ConfigurationError(f"seeds: {len(seeds)} seeds need {len(seeds)} models (one "
                                     f"per seed), got {len(models)} items")
    elif callable(model):
        models = []
        for s in seeds:
            m = model(s)
            if not isinstance(m, nn.Module):
                raise ConfigurationError(f"seeds: the model factory returned "
                                         f"{type(m).__name__} for seed {s}, not an nn.Module")
            models.append(m)
    else:
        raise ConfigurationError(f"seeds: model must be an nn.Module, a list of them or a "
                                 f"callable seed -> module, got {type(model).__name__}")
    ref = {k: (tuple(v.shape), v.dtype) for k, v in models[0].state_dict().items()}
    for i, m in enumerate(models[1:], 1):
        got = {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}
        if got != ref or type(m) is not type(models[0]):
            raise ConfigurationError(f"seeds: the model of seed {seeds[i]} differs in structure "
                                     f"from that of seed {seeds[0]}; batched seeds need one "
                                     "architecture")
    return models


#: elementwise losses whose mean reduction is computed per copy without ``torch.func.vmap``
#: (a vmapped loss costs about as much as a tiny model's forward)
_ELEMENTWISE = {nn.MSELoss: torch.nn.functional.mse_loss, nn.L1Loss: torch.nn.functional.l1_loss}


def _per_copy_losses(loss_fn) -> tuple[Callable, Callable]:
    """(loss of (S, B, ...) outputs against (S, B, ...) targets, against one shared (B, ...)
    target), each returning the S per-copy losses: the mean over each copy's elements for
    MSE / L1 with the mean reduction, ``torch.func.vmap`` of the loss for anything else."""
    elementwise = _ELEMENTWISE.get(type(loss_fn))
    if elementwise is None or loss_fn.reduction != "mean":
        return (torch.func.vmap(loss_fn, in_dims=(0, 0)),
                torch.func.vmap(loss_fn, in_dims=(0, None)))

    def per_copy(out: Tensor, y: Tensor) -> Tensor:
        return elementwise(out, y.expand_as(out), reduction="none").flatten(1).mean(1)

    return per_copy, per_copy


class _Stack:
    """The S copies as one batched model: stacked parameters (leaves the optimizer steps),
    stacked buffers where the copies differ (others are shared), and a shell module whose
    tensors :func:`torch.func.functional_call` swaps for one copy's slice under ``vmap``."""

    def __init__(self, models: list[nn.Module]) -> None:
        from torch.func import stack_module_state

        self.S = len(models)
        self.base = copy.deepcopy(models[0])
        params, _ = stack_module_state(models)
        self.params = params
        self.trainable = [p for p in params.values() if p.requires_grad]
        self.buffers: dict[str, Tensor] = {}
        bufs = [dict(m.named_buffers()) for m in models]
        for name, b0 in bufs[0].items():
            if not all(torch.equal(b[name], b0) for b in bufs[1:]):
                self.buffers[name] = torch.stack([b[name] for b in bufs]).detach()
        self.keys = list(models[0].state_dict())
        self._fwd = {}
        # untying shared parameters walks every module on every call: only when there are some
        m0 = models[0]
        self._tied = sum(1 for _ in m0.named_parameters(remove_duplicate=False)) + sum(
            1 for _ in m0.named_buffers(remove_duplicate=False)) != len(params) + len(bufs[0])
        base_sd = self.base.state_dict()
        self._shared = {k: base_sd[k] for k in self.keys
                        if k not in self.params and k not in self.buffers}
        # the native stacked forward (no torch.func): decided on the first call, by checking
        # it against the vmapped model on that batch (None: not checked yet)
        self.native: bool | None = None if (
            hasattr(self.base, "forward_stacked") and not self.buffers and not self._tied) \
            else False
        self._slots = []
        for name in self.params:
            owner, _, attr = name.rpartition(".")
            self._slots.append((self.base.get_submodule(owner), attr, name))

    def _forward_native(self, x: Tensor) -> Tensor:
        """``base.forward_stacked`` with the stacked parameters swapped into the shell."""
        saved = [(mod, attr, mod._parameters[attr]) for mod, attr, _ in self._slots]
        try:
            for mod, attr, name in self._slots:
                mod._parameters[attr] = self.params[name]
            return self.base.forward_stacked(x)
        finally:
            for mod, attr, p in saved:
                mod._parameters[attr] = p

    def _check_native(self, x: Tensor, shared: bool) -> bool:
        """Whether the native stacked forward runs this model and agrees with the vmapped
        one on this batch (every copy, to rounding); else vmap is kept for the run."""
        from ..fused_stacked import NotStackable

        try:
            with torch.no_grad():
                got = self._forward_native(x)
                want = self._forward_vmap(x, shared)
        except NotStackable:
            return False
        if got.shape != want.shape or got.dtype != want.dtype:
            return False
        tol = 1e-10 if want.dtype == torch.float64 else 1e-4
        scale = want.abs().amax().clamp_min(1.0)
        return bool(((got - want).abs() <= tol * scale).all())

    def _forward_vmap(self, x: Tensor, shared: bool) -> Tensor:
        fwd = self._fwd.get(shared)
        if fwd is None:
            from torch.func import functional_call, vmap

            base, tied = self.base, self._tied

            def one(p, b, xx):
                return functional_call(base, (p, b), (xx,), tie_weights=tied)

            fwd = self._fwd[shared] = vmap(one, in_dims=(0, 0, None if shared else 0))
        return fwd(self.params, self.buffers, x)

    def forward(self, x: Tensor, shared: bool) -> Tensor:
        """Outputs ``(S, B, ...)`` for inputs ``(S, B, ...)`` or, ``shared``, one ``(B, ...)``."""
        if self.native is None:
            self.native = self._check_native(x, shared)
        if self.native:
            from ..fused_stacked import NotStackable

            try:
                return self._forward_native(x)
            except NotStackable:  # a head left its fused product (e.g. knots moved)
                self.native = False
        return self._forward_vmap(x, shared)

    def state(self, k: int) -> dict[str, Tensor]:
        """Copy ``k``'s state dict (detached clones)."""
        out = {}
        for key in self.keys:
            src = self.params.get(key)
            if src is None:
                src = self.buffers.get(key)
            out[key] = (src[k] if src is not None else self._shared[key]).detach().clone()
        return out

    def finite(self) -> list[bool]:
        """Per copy: whether all its trainable parameters are finite."""
        if not self.trainable:
            return [True] * self.S
        ok = torch.stack([p.detach().flatten(1).isfinite().all(1) for p in self.trainable])
        return ok.all(0).tolist()

    @torch.no_grad()
    def load(self, k: int, state: Mapping[str, Tensor]) -> None:
        """Write ``state`` into copy ``k``'s slice."""
        for key, v in state.items():
            dst = self.params.get(key)
            if dst is None:
                dst = self.buffers.get(key)
            if dst is not None:
                dst[k].copy_(v)

    def equals(self, k: int, state: Mapping[str, Tensor]) -> bool:
        cur = self.state(k)
        return cur.keys() == state.keys() and all(torch.equal(cur[n], state[n]) for n in cur)


def _stacked_state(stack: _Stack) -> dict[str, Tensor]:
    return {**{f"params.{k}": v.detach().clone() for k, v in stack.params.items()},
            **{f"buffers.{k}": v.detach().clone() for k, v in stack.buffers.items()}}


def check_seeds_state(state: Any, stack_state: Mapping[str, Tensor], seed_state: Mapping[str, Tensor],
                      seeds: list[int], epochs: int, *, optimizer=None, scheduler=None,
                      path: Path | None = None) -> None:
    """Validate a batched-seeds training state before it is resumed: the format tag, the seeds,
    the stacked weights (keys, shapes, dtypes, finite values), per-seed records and weights,
    the generators, the permutations and (when given) the optimizer and scheduler states.
    Raises :class:`~rpnkit.training.checkpoint.CheckpointError` naming the field."""
    pre = f"checkpoint {path}: " if path is not None else "resume state: "
    if not isinstance(state, Mapping) or state.get("format") != SEEDS_STATE_FORMAT:
        got = state.get("format") if isinstance(state, Mapping) else type(state).__name__
        raise _fail(pre, f"format {_short(got)} is not a batched-seeds training state "
                         f"({SEEDS_STATE_FORMAT})")
    if state.get("seeds") != seeds:
        raise _fail(pre, f"seeds {_short(state.get('seeds'))} differ from the configured {seeds}")
    epoch, batch = state.get("epoch"), state.get("batch")
    if not _is_int(epoch) or not 0 <= epoch <= epochs:
        raise _fail(pre, f"epoch must be an integer in [0, {epochs}], got {_short(epoch)}")
    if not _is_int(batch) or batch < 0 or (epoch == epochs and batch != 0):
        raise _fail(pre, f"batch must be an integer >= 0 (0 after the last epoch), got "
                         f"{_short(batch)}")
    check_state_dict(state.get("stacked"), stack_state, f"{pre}stacked weights")
    S = len(seeds)
    per = state.get("per_seed")
    if not isinstance(per, list) or len(per) != S:
        raise _fail(pre, f"per_seed must hold one record per seed ({S})")
    gen_size = torch.Generator().get_state().numel()
    for i, r in enumerate(per):
        at = f"{pre}per_seed[{i}]"
        if not isinstance(r, Mapping):
            raise _fail(at, " is not a dict")
        hist = r.get("history")
        if not isinstance(hist, list) or len(hist) > epoch:
            raise _fail(at, f" history is not a list of at most {epoch} records")
        for j, h in enumerate(hist):
            _check_records(h, f"{at} history[{j}]")
        _check_records(r.get("best"), f"{at} best", {"epoch", "monitor", "value", "note"})
        if r.get("stopped") is not None:
            _check_records(r["stopped"], f"{at} stopped",
                           {"reason", "epoch", "restored_epoch", "cause"})
        for key in ("bad_epochs", "acc_n"):
            if not _is_int(r.get(key)) or r[key] < 0:
                raise _fail(at, f" {key} must be an integer >= 0, got {_short(r.get(key))}")
        for key in ("acc_loss", "best_value"):
            v = r.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or math.isnan(v)):
                raise _fail(at, f" {key} must be a number or null, got {_short(v)}")
        for key in ("best_state", "last_good"):
            if r.get(key) is not None:
                check_state_dict(r[key], seed_state, f"{at} {key}")
        g = r.get("generator")
        if not isinstance(g, Tensor) or g.dtype != torch.uint8 or tuple(g.shape) != (gen_size,):
            raise _fail(at, f" generator is not a random-generator state ({gen_size} bytes)")
        if not isinstance(r.get("dead"), bool):
            raise _fail(at, " dead must be true or false")
    perms = state.get("perms")
    if perms is not None:
        if not isinstance(perms, Tensor) or perms.dim() != 2 or perms.shape[0] != S \
                or perms.dtype != torch.int64:
            raise _fail(pre, f"perms is not an (S={S}, n) int64 tensor")
        ar = torch.arange(perms.shape[1]).expand_as(perms)
        if not torch.equal(torch.sort(perms, dim=1).values, ar):
            raise _fail(pre, "perms are not permutations")
    if optimizer is not None:
        check_optimizer_state(state.get("optimizer"), optimizer, f"{pre}optimizer")
        check_scheduler_state(state.get("scheduler"), scheduler, f"{pre}scheduler")


def _clip(grads: list[Tensor], max_norm: float) -> None:
    """``clip_grad_norm_`` per copy: each copy's gradients scaled by its own total norm."""
    if not grads:
        return
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads])  # (P, S)
    total = norms.norm(dim=0)
    coef = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))


def fit_seeds(
    model: nn.Module | Sequence[nn.Module] | Callable[[int], nn.Module],
    bundle: Any,
    cfg: TrainConfig | Mapping[str, Any] | None,
    seeds: list[int],
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    checkpoint_path: Path | None = None,
    resume: dict[str, Any] | None = None,
    interrupt: Any = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    restore_best: bool = False,
    task: str | None = None,
) -> SeedsResult:
    """Train one copy of ``model`` per seed in ``seeds`` as one batched model (module doc).

    ``model`` is a list of modules (one per seed), a callable ``seed -> module``, or one module
    (then it is the first seed's copy and the others are copies re-initialised by
    ``reset_parameters()`` under ``torch.manual_seed(seed)``). Each module ends with its seed's
    final weights (best-on-validation with ``restore_best``). ``on_epoch_end`` gets one record
    per batched epoch: the mean over the seeds still training of the training loss and of the
    validation values, and ``seeds_training``. Other arguments as :func:`rpnkit.training.fit`.
    """
    from .engine import (
        DIVERGENCE_HINT,
        FitResult,
        InterruptFlag,
        TrainingInterrupted,
        _tensors,
        as_bundle,
        logger,
        loss_name,
        score,
        train_config,
    )

    t_start = time.perf_counter()
    cfg = train_config(cfg)
    _refuse(cfg, bundle)
    bundle = as_bundle(bundle, task)
    seeds = list(seeds)
    S = len(seeds)
    device = torch.device(device)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    lname = loss_name(cfg, bundle.task)
    loss_fn = LOSSES.build(lname, **(cfg.loss.params() if cfg.loss is not None else {}))()
    loss_task = getattr(LOSSES.get(lname), "task", "regression")
    if loss_task != bundle.task:
        raise ConfigurationError(f"loss {lname!r} is for {loss_task} but the data is {bundle.task}")
    metrics = check_metrics(cfg.metrics, bundle.task) if cfg.metrics else default_metrics(bundle.task)
    monitor = cfg.monitor
    if monitor != "loss" and monitor not in metrics:
        raise ConfigurationError(
            f"train.monitor {monitor!r} is neither 'loss' nor one of the metrics {metrics}")
    has_val = bundle.size("val") > 0
    higher_better = has_val and monitor in HIGHER_IS_BETTER
    interrupt = interrupt if interrupt is not None else InterruptFlag()

    models = _models(model, seeds)
    for m in models:
        m.to(device=device, dtype=dtype)
        m.train()
    stack = _Stack(models)
    stack.base.train()
    optimizer = OPTIMIZERS.build(cfg.optimizer.name, **cfg.optimizer.params())(stack.trainable)
    scheduler = SCHEDULERS.build(cfg.scheduler.name, **cfg.scheduler.params())(optimizer, cfg.epochs)
    batched_loss, shared_loss = _per_copy_losses(loss_fn)

    x_tr, y_tr = _tensors(bundle, "train", device, dtype, lname)
    n = x_tr.shape[0]
    full_batch = (cfg.batch_size is None and n <= cfg.full_batch_max) or (
        cfg.batch_size is not None and cfg.batch_size >= n)
    batch = n if full_batch else (cfg.batch_size or 128)
    n_batches = 1 if full_batch else math.ceil(n / batch)
    eval_batch = cfg.eval_batch_size or max(1, eval_rows(models[0], dtype, device) // S)
    gens = [torch.Generator().manual_seed(int(s) * 7919 + 17) for s in seeds]

    # per-seed training records, as the engine keeps them for one run
    per = [{"history": [], "best": {"epoch": 0, "monitor": f"val_{monitor}" if has_val else None},
            "best_value": None, "best_state": None, "bad_epochs": 0, "stopped": None,
            "acc_loss": 0.0, "acc_n": 0, "dead": False, "last_good": stack.state(k)}
           for k in range(S)]
    history: list[dict[str, Any]] = []  # one record per batched epoch (on_epoch_end)
    start_epoch, start_batch = 0, 0
    perms: Tensor | None = None
    elapsed_before = 0.0
    if resume is not None:
        check_seeds_state(resume, _stacked_state(stack), per[0]["last_good"], seeds, cfg.epochs,
                          optimizer=optimizer, scheduler=scheduler)
        rb, rperms = int(resume["batch"]), resume.get("perms")
        if rb > 0 and (rb >= n_batches or (not full_batch and (
                rperms is None or tuple(rperms.shape) != (S, n)))):
            raise CheckpointError(f"resume state: batch {rb} / permutations do not fit the "
                                  f"{n_batches} batches of {n} training rows")
        try:
            with torch.no_grad():
                for key, v in resume["stacked"].items():
                    kind, name = key.split(".", 1)
                    (stack.params if kind == "params" else stack.buffers)[name].copy_(v)
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume.get("scheduler") is not None:
                scheduler.load_state_dict(resume["scheduler"])
            torch.set_rng_state(resume["torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as exc:
            reason = " ".join(str(exc).split())[:160]
            raise CheckpointError(f"resume state does not fit this model/optimizer: {reason}") \
                from None
        for k, r in enumerate(resume["per_seed"]):
            gens[k].set_state(r["generator"])
            per[k].update({key: r[key] for key in per[k] if key in r})
            per[k]["history"] = list(r["history"])
            if per[k]["last_good"] is None:
                per[k]["last_good"] = stack.state(k)
        history = list(resume.get("history") or [])
        start_epoch, start_batch = int(resume["epoch"]), int(resume["batch"])
        perms = rperms
        elapsed_before = float(resume.get("seconds", 0.0))

    def training() -> list[int]:
        return [k for k in range(S) if per[k]["stopped"] is None and not per[k]["dead"]]

    # frozen copies (stopped or dead): their slices are written back after every step
    hold: dict[str, Any] = {"idx": None, "values": None}

    def freeze() -> None:
        idle = [k for k in range(S) if k not in training()]
        if not idle or len(idle) == S:
            hold["idx"] = None
            return
        idx = torch.tensor(idle, device=device)
        hold["idx"] = idx
        hold["values"] = [p.detach()[idx].clone() for p in stack.trainable]

    freeze()
    every_s = float(cfg.checkpoint_seconds or 0)
    periodic = checkpoint_path is not None and bool(cfg.checkpoint_every or every_s > 0)
    saved = {"at": time.perf_counter(), "pos": None if resume is None else (start_epoch,
                                                                            start_batch)}

    def save_state(epoch: int, batch_idx: int) -> Path | None:
        saved["at"], saved["pos"] = time.perf_counter(), (epoch, batch_idx)
        if checkpoint_path is None:
            return None
        recs = []
        for k in range(S):
            r = {key: v for key, v in per[k].items() if key != "last_good"}
            r["last_good"] = per[k]["last_good"] if batch_idx > 0 else None
            r["generator"] = gens[k].get_state()
            recs.append(r)
        state = {"format": SEEDS_STATE_FORMAT, "seeds": seeds, "stacked": _stacked_state(stack),
                 "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict() if scheduler is not None else None,
                 "torch_rng": torch.get_rng_state(), "per_seed": recs, "history": history,
                 "epoch": epoch, "batch": batch_idx,
                 "perms": perms if batch_idx > 0 else None,
                 "seconds": elapsed_before + time.perf_counter() - t_start,
                 **(checkpoint_extra or {})}
        atomic_torch_save(state, checkpoint_path)
        return checkpoint_path

    def step(xb: Tensor, yb: Tensor, shared: bool, live: list[bool]) -> list[float]:
        """One optimizer step of every copy still training; returns the per-copy losses."""
        optimizer.zero_grad(set_to_none=True)
        out = stack.forward(xb, shared)
        losses = (shared_loss if shared else batched_loss)(out, yb)
        values = losses.detach().tolist()
        ok = [a and math.isfinite(v) for a, v in zip(live, values)]
        if all(ok):  # the usual case: every copy steps
            total = losses.sum()
        else:  # copies that stopped or whose loss is not finite get no gradient
            keep = torch.tensor(ok, device=losses.device)
            total = torch.where(keep, losses, torch.zeros_like(losses)).sum()
        if any(ok):
            total.backward()
            if cfg.grad_clip is not None:
                _clip([p.grad for p in stack.trainable if p.grad is not None], cfg.grad_clip)
            optimizer.step()
        if hold["idx"] is not None:
            with torch.no_grad():
                for p, v in zip(stack.trainable, hold["values"]):
                    p.index_copy_(0, hold["idx"], v)
        return values

    @torch.no_grad()
    def outputs(split: str) -> tuple[Tensor, Tensor]:
        x, y = _tensors(bundle, split, device, dtype, lname)
        stack.base.eval()
        try:
            chunks = [stack.forward(x[i : i + eval_batch], True)
                      for i in range(0, x.shape[0], eval_batch)]
        finally:
            stack.base.train()
        return torch.cat(chunks, dim=1).to(dtype), y

    def evaluate_all(split: str, which: list[int]) -> dict[int, dict[str, float]]:
        if bundle.size(split) == 0 or not which:
            return {k: {} for k in which}
        out, y = outputs(split)
        return {k: score(out[k], y, bundle, loss_fn, metrics) for k in which}

    for epoch in range(start_epoch, cfg.epochs):
        active = training()
        if not active:
            break
        if not full_batch and (perms is None or start_batch == 0):
            perms = torch.stack([torch.randperm(n, generator=g) for g in gens])
        b0, start_batch = start_batch, 0
        t_epoch = time.perf_counter()
        live = [k in active for k in range(S)]
        for b in range(b0, n_batches):
            if full_batch:
                values = step(x_tr, y_tr, True, live)
                global_n = n
            else:
                idx = perms[:, b * batch : (b + 1) * batch].to(device)
                global_n = idx.shape[1]
                values = step(x_tr[idx], y_tr[idx], False, live)
            died = False
            for k in active:
                if per[k]["dead"]:
                    continue
                if not math.isfinite(values[k]):
                    per[k]["dead"], died = True, True
                    live[k] = False
                else:
                    per[k]["acc_loss"] += values[k] * global_n
                    per[k]["acc_n"] += global_n
            if died:
                freeze()
            if interrupt and b + 1 < n_batches:
                path = save_state(epoch, b + 1)
                raise TrainingInterrupted(epoch, path, interrupt.signum)
            if periodic and every_s and b + 1 < n_batches \
                    and time.perf_counter() - saved["at"] >= every_s:
                save_state(epoch, b + 1)
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        perms = None
        finished = []
        finite = stack.finite()
        for k in active:  # divergence, as the engine stops a single run
            r = per[k]
            r["dead"] = r["dead"] or not finite[k]
            if r["dead"]:
                r["stopped"] = {"reason": "non-finite training loss", "epoch": epoch + 1,
                                "restored_epoch": epoch, "cause": "non_finite"}
                logger.warning("seed %d: training loss became NaN/inf in epoch %d; keeping "
                               "the weights of epoch %d (%s)", seeds[k], epoch + 1, epoch,
                               DIVERGENCE_HINT)
                stack.load(k, r["last_good"])
                r["dead"] = False
            else:
                finished.append(k)
        vals = evaluate_all("val", finished) if has_val else {}
        seconds = time.perf_counter() - t_epoch
        for k in finished:
            r = per[k]
            train_loss = r["acc_loss"] / max(r["acc_n"], 1)
            r["acc_loss"], r["acc_n"] = 0.0, 0
            rec: dict[str, Any] = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
            if has_val:
                rec.update({f"val_{key}": v for key, v in vals[k].items()})
                value = vals[k].get(monitor)
            else:
                value = train_loss
            rec["seconds"] = seconds
            if value is not None and math.isfinite(value):
                sign = 1.0 if higher_better else -1.0
                bv = r["best_value"]
                better = bv is None or sign * (value - bv) > 0
                significant = bv is None or sign * (value - bv) > cfg.tol * abs(bv)
                r["bad_epochs"] = 0 if significant else r["bad_epochs"] + 1
                if better:
                    r["best_value"] = value
                    if has_val:
                        r["best_state"] = stack.state(k)
                        r["best"] = {"epoch": epoch + 1, "monitor": f"val_{monitor}",
                                     "value": value}
            r["history"].append(rec)
            r["last_good"] = stack.state(k)
            if cfg.early_stopping is not None and r["bad_epochs"] >= cfg.early_stopping:
                watched = f"val_{monitor}" if has_val else "train_loss"
                r["stopped"] = {"reason": f"early stopping (no {watched} improvement for "
                                          f"{cfg.early_stopping} epochs)",
                                "epoch": epoch + 1, "cause": "early_stopping"}
        freeze()
        recs = [per[k]["history"][-1] for k in finished]
        summary: dict[str, Any] = {"epoch": epoch + 1, "lr": lr,
                                   "seeds_training": len(recs)}
        for key in (recs[0] if recs else {}):
            if key not in ("epoch", "lr", "seconds"):
                summary[key] = statistics.fmean(float(r[key]) for r in recs)
        summary["seconds"] = seconds
        history.append(summary)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, summary)
        if interrupt:
            path = save_state(epoch + 1, 0)
            raise TrainingInterrupted(epoch + 1, path, interrupt.signum)
        now = time.perf_counter()
        if (cfg.checkpoint_every and (epoch + 1) % cfg.checkpoint_every == 0) or (
                periodic and every_s and (now - saved["at"] >= every_s
                                          or now - t_epoch >= every_s)):
            save_state(epoch + 1, 0)
    if periodic and saved["pos"] != (len(history), 0):
        save_state(len(history), 0)

    # final and best metrics of every copy: one batched evaluation per split
    finals = {s: evaluate_all(s, list(range(S))) for s in _SPLITS}
    final_states = [stack.state(k) for k in range(S)]
    differ = [k for k in range(S) if per[k]["best_state"] is not None
              and not stack.equals(k, per[k]["best_state"])]
    bests: dict[str, dict[int, dict[str, float]]] = {s: {} for s in _SPLITS}
    if differ:
        for k in differ:
            stack.load(k, per[k]["best_state"])
        bests = {s: evaluate_all(s, differ) for s in _SPLITS}
    runs = []
    for k in range(S):
        r = per[k]
        epochs_run = len(r["history"])
        best, best_state = r["best"], r["best_state"]
        if not has_val or best_state is None:
            best = {"epoch": epochs_run, "monitor": None,
                    "note": "no validation split: the best model is the final model"}
            best_state = None
        final = {s: finals[s][k] for s in _SPLITS}
        best_metrics = ({s: bests[s][k] for s in _SPLITS} if k in differ
                        else copy.deepcopy(final))
        keep = best_state if (restore_best and best_state is not None) else final_states[k]
        stack.load(k, keep)
        models[k].load_state_dict(keep)
        runs.append(FitResult(history=r["history"], best=best, final=final,
                              best_metrics=best_metrics, best_state=best_state,
                              stopped=r["stopped"], epochs_run=epochs_run,
                              seconds=elapsed_before + time.perf_counter() - t_start,
                              extra={"seed": seeds[k]}))
    return SeedsResult(seeds=seeds, runs=runs, history=history,
                       seconds=elapsed_before + time.perf_counter() - t_start,
                       extra={"world_size": 1, "global_batch_size": int(batch),
                              "precision": cfg.precision, "compile": False,
                              "batched_seeds": S})
