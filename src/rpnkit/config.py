"""Run configuration: a YAML file validated with pydantic.

Configs are plain data read with PyYAML's safe loader (the C ``CSafeLoader`` where
available; YAML tags such as ``!!python/object`` are rejected), within limits:
:data:`MAX_CONFIG_BYTES` of text, :data:`MAX_YAML_DEPTH` levels of nesting,
:data:`MAX_YAML_NODES` values after expanding aliases (checked on the parser's events,
before any Python object is built) and no duplicate mapping keys. Components, models,
datasets, optimizers, schedulers and losses are chosen by registry name only; a config
never names a Python path. Unknown keys are errors that name the key and the closest valid one.

Example::

    seed: 3
    data: {name: function, expression: "exp(sin(3*x0)) * x1", ranges: [[0, 1], [0, 1]],
           n_samples: 2000, split: {train: 0.5, val: 0.0, test: 0.5}}
    model: {dims: [2, 3, 1], expansion: {name: taylor, d: 2}, reconciliation: {name: lorr, r: 1}}
    train: {epochs: 300, optimizer: {name: adamw, lr: 0.003}, loss: mse}
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from .errors import ConfigurationError, UnknownNameError, clip, did_you_mean, short
from .spec import HEAD_FIELDS, LAYER_FIELDS, head_defaults

__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
    "read_yaml",
    "read_config_text",
    "apply_overrides",
    "dump_config",
    "resolve_paths",
]


def _check_keys(cls: type[BaseModel], data: Any, extra_ok: bool = False) -> Any:
    if isinstance(data, Mapping) and not extra_ok:
        valid = list(cls.model_fields)
        for key in data:
            if key not in cls.model_fields:
                raise ValueError(
                    f"unknown key {short(key, 60)}{did_you_mean(str(key), valid)}; valid keys: {', '.join(valid)}"
                )
    return data


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        return _check_keys(cls, data)


def _named(value: Any, what: str) -> Any:
    """Accept ``"name"`` as shorthand for ``{"name": "name"}``."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping):
        if "name" not in value:
            raise ValueError(f"a {what} mapping needs a 'name' key, got keys {short(list(value))}")
        return dict(value)
    return value


class _NamedParams(BaseModel):
    """``{name: <registry name>, **options}``; options are checked against the registry."""

    model_config = ConfigDict(extra="allow")
    name: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _check_registry_params(registry, name: str, params: Mapping[str, Any], fixed=()) -> None:
    if name not in registry:
        raise UnknownNameError(
            f"unknown {registry.kind} {short(name, 60)}{did_you_mean(name, registry.names())}; "
            f"valid: {', '.join(registry.names())}"
        )
    valid = list(registry.parameters(name))
    for key in params:
        if key not in valid:
            choices = valid + list(fixed)
            raise ConfigurationError(
                f"unknown option {short(key, 60)} for {registry.kind} {short(name, 60)}{did_you_mean(key, choices)}; "
                f"valid options: {', '.join(choices) or '(none)'}"
            )


class SplitConfig(_Strict):
    """Fractions (summing to 1) or sample counts of the train / val / test splits."""

    train: float = 0.8
    val: float = 0.0
    test: float = 0.2

    @model_validator(mode="after")
    def _sum(self) -> SplitConfig:
        vals = (self.train, self.val, self.test)
        if any(v < 0 for v in vals):
            raise ValueError(f"split values must be >= 0, got {vals}")
        counts = all(float(v).is_integer() for v in vals) and sum(vals) > 1
        if not counts and abs(sum(vals) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got train+val+test = {sum(vals):g}")
        if self.train <= 0 or self.test <= 0:
            raise ValueError("split: train and test must be > 0")
        return self

    def as_dict(self) -> dict[str, float]:
        vals = {"train": self.train, "val": self.val, "test": self.test}
        if all(float(v).is_integer() for v in vals.values()) and sum(vals.values()) > 1:
            return {k: int(v) for k, v in vals.items()}
        return vals


_DATA_FIXED = ("name", "split", "standardize", "standardize_target", "stratify", "stream",
               "labels_as_targets")


class DataConfig(BaseModel):
    """``data:`` – a dataset by registry name plus its own options (e.g. ``expression``).

    ``stream: true`` reads a streaming source (``npy``, ``csv``, ``parquet``, ``function``;
    :mod:`rpnkit.data.streaming`) block by block instead of loading the data into memory.
    ``labels_as_targets: true`` fits a classification dataset's class indices as one
    regression target (:func:`rpnkit.data.load_data`; in-memory data only).
    """

    model_config = ConfigDict(extra="allow")
    name: str
    split: SplitConfig = Field(default_factory=SplitConfig)
    standardize: bool = False
    standardize_target: bool = False
    stratify: bool = True
    stream: bool = False
    labels_as_targets: bool = False

    @model_validator(mode="after")
    def _params(self) -> DataConfig:
        if self.stream and self.labels_as_targets:
            raise ValueError("labels_as_targets applies to in-memory data, not to stream: true "
                             "(a streaming source declares its own task)")
        if self.stream:
            from .data.streaming import STREAMS

            _check_registry_params(STREAMS, self.name, self.params(), _DATA_FIXED)
            return self
        from .data import DATASETS

        _check_registry_params(DATASETS, self.name, self.params(), _DATA_FIXED)
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


#: Keys of an RPN ``model:`` section besides ``name`` / ``dims`` / ``label``: every head
#: option (:data:`rpnkit.spec.HEAD_FIELDS`), every layer option
#: (:data:`rpnkit.spec.LAYER_FIELDS`), the activation between layers and the per-layer
#: overrides. A new head option is added in :mod:`rpnkit.spec` only.
_RPN_FIELDS: tuple[str, ...] = tuple(dict.fromkeys((*HEAD_FIELDS, *LAYER_FIELDS, "activation", "layers")))
_HEAD_DEFAULTS = head_defaults()


class _ModelConfigBase(BaseModel):
    """Fields of ``model:`` that need validation; :data:`ModelConfig` adds the remaining
    :data:`_RPN_FIELDS` (defaults from :func:`rpnkit.spec.head_defaults`)."""

    model_config = ConfigDict(extra="allow")
    name: str = "rpn"
    dims: list[int]
    expansion: Any = _HEAD_DEFAULTS["expansion"]
    reconciliation: Any = _HEAD_DEFAULTS["reconciliation"]
    remainder: Any = _HEAD_DEFAULTS["remainder"]
    expansion_params: dict[str, Any] = Field(default_factory=dict)
    reconciliation_params: dict[str, Any] = Field(default_factory=dict)
    remainder_params: dict[str, Any] = Field(default_factory=dict)
    heads: int = Field(1, ge=1)
    channels: int = Field(_HEAD_DEFAULTS["channels"], ge=1)
    head_fusion: Any = "sum"
    bias: bool = _HEAD_DEFAULTS["bias"]
    seed: int | None = _HEAD_DEFAULTS["seed"]
    activation: Any = None
    layers: list[dict[str, Any] | None] = Field(default_factory=list)
    label: str | None = None
    #: ξ of RPN 2 (``rpnkit.spec.LAYER_FIELDS``); None: plain RPN layers
    interdependence: Any = None

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(d < 1 for d in v):
            raise ValueError(f"dims must list at least two positive widths, got {short(v)}")
        return v

    @field_validator("expansion", "reconciliation", "remainder", "interdependence", "head_fusion")
    @classmethod
    def _component(cls, v: Any, info: ValidationInfo) -> Any:
        if v is None and info.field_name == "interdependence":
            return v
        if isinstance(v, str):
            return v
        if isinstance(v, Mapping) and isinstance(v.get("name"), str):
            return dict(v)
        raise ValueError(
            f"a component must be a registry name or a mapping with a 'name' key, got {short(v)}"
        )

    @model_validator(mode="after")
    def _extra(self) -> _ModelConfigBase:
        from .models import MODELS

        if self.name not in MODELS:
            raise UnknownNameError(
                f"unknown model {short(self.name, 60)}{did_you_mean(self.name, MODELS.names())}; "
                f"valid: {', '.join(MODELS.names())}"
            )
        if self.name == "rpn" and self.model_extra:
            key = next(iter(self.model_extra))
            valid = list(type(self).model_fields)
            raise ValueError(
                f"unknown key {short(key, 60)}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
            )
        return self

    def build_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(self.name, **kwargs)``.

        For ``rpn`` the options that differ from their defaults (which are
        ``RPN.from_dims``'s own); for other models the options that were given.
        """
        if self.name == "rpn":
            fields = type(self).model_fields
            kw = {}
            for k in _RPN_FIELDS:
                value = getattr(self, k)
                if value != fields[k].get_default(call_default_factory=True):
                    kw[k] = copy.deepcopy(value)
            return {"dims": list(self.dims), **kw}
        kw = {k: copy.deepcopy(getattr(self, k)) for k in _RPN_FIELDS if k in self.model_fields_set}
        kw.update(copy.deepcopy(self.model_extra or {}))
        return {"dims": list(self.dims), **kw}

    def to_dict(self) -> dict[str, Any]:
        """Plain data; for models other than ``rpn`` only the options that were given."""
        dumped = self.model_dump(mode="json")
        order = ("name", "dims", *_RPN_FIELDS)
        out = {k: dumped.pop(k) for k in order if k in dumped}
        out.update(dumped)
        if self.name != "rpn":
            for key in _RPN_FIELDS:
                if key not in self.model_fields_set:
                    out.pop(key, None)
        return out

    def title(self) -> str:
        if self.label:
            return self.label
        if self.name != "rpn":
            return f"{self.name} {self.dims}"

        def nm(c):
            return c if isinstance(c, str) else c["name"]

        title = f"RPN {self.dims} {nm(self.expansion)}/{nm(self.reconciliation)}/{nm(self.remainder)}"
        return title if self.interdependence is None else f"{title} ξ={nm(self.interdependence)}"


ModelConfig = create_model(
    "ModelConfig",
    __base__=_ModelConfigBase,
    __module__=__name__,
    **{k: (Any, _HEAD_DEFAULTS.get(k)) for k in _RPN_FIELDS if k not in _ModelConfigBase.model_fields},
)
ModelConfig.__doc__ = """``model:`` – an RPN (``name: rpn``, the default) or another registered model.

Besides ``name``, ``dims`` and ``label`` it accepts the keys :data:`_RPN_FIELDS`, i.e. the
head and layer options of :mod:`rpnkit.spec` plus ``activation`` and ``layers``.
"""


class OptimizerConfig(_NamedParams):
    @model_validator(mode="after")
    def _params(self) -> OptimizerConfig:
        from .training.components import OPTIMIZERS

        _check_registry_params(OPTIMIZERS, self.name, self.params())
        OPTIMIZERS.build(self.name, **self.params())  # option values (lr, fused, …) checked now
        return self


class SchedulerConfig(_NamedParams):
    @model_validator(mode="after")
    def _params(self) -> SchedulerConfig:
        from .training.components import SCHEDULERS

        _check_registry_params(SCHEDULERS, self.name, self.params())
        return self


class LossConfig(_NamedParams):
    @model_validator(mode="after")
    def _params(self) -> LossConfig:
        from .training.components import LOSSES

        _check_registry_params(LOSSES, self.name, self.params())
        return self


#: most seeds one batched run trains
MAX_SEEDS = 1024


def seeds_conflicts(t: TrainConfig) -> str | None:
    """What in ``t`` batched seeds cannot train (None: nothing): the options whose state is
    not per seed or not elementwise (L-BFGS's line search, polish, grid updates, the
    regulariser, loss scaling, compile)."""
    found = [name for name, bad in (
        ("optimizer lbfgs", t.optimizer.name == "lbfgs"), ("polish", t.polish > 0),
        ("grid_update_every", t.grid_update_every > 0),
        ("reg_l1 / reg_entropy", t.reg_l1 > 0 or t.reg_entropy > 0),
        (f"precision {t.precision!r}", t.precision != "fp32"), ("compile", t.compile)) if bad]
    return ", ".join(found) or None


class TrainConfig(_Strict):
    """``train:`` – optimisation protocol.

    Defaults: 300 epochs, Adam (lr 0.01) with cosine decay, full batch when the training
    split has at most ``full_batch_max`` samples, loss by task (mse / cross_entropy).
    ``early_stopping: k`` stops after ``k`` epochs without an improvement of the monitored
    validation value by more than ``tol`` (relative; 0: any improvement counts).
    """

    epochs: int = Field(300, ge=0, le=10_000_000)  # more would outlast any machine
    batch_size: int | None = Field(None, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="adam", lr=0.01))
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig(name="cosine"))
    loss: LossConfig | None = None
    metrics: list[str] | None = None
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: int | None = Field(None, ge=1)
    tol: float = Field(0.0, ge=0)
    monitor: str = "loss"
    # rows per evaluation chunk; null: sized from the model's plan and the memory budget
    eval_batch_size: int | None = Field(None, ge=1)
    full_batch_max: int = Field(4096, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    # seconds between checkpoints of a run folder (mid-epoch too); 0 disables
    checkpoint_seconds: float = Field(60.0, ge=0, allow_inf_nan=False)
    dtype: str = "float32"
    threads: int | None = Field(None, ge=1)
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = Field(0, ge=0, le=64)
    logging: str | None = None
    # epochs of full-batch L-BFGS after the main schedule, from its best-on-validation weights
    polish: int = Field(0, ge=0, le=100_000)
    # move spline grids to the training data every k epochs (rpnkit.grid.update_grid); 0: off
    grid_update_every: int = Field(0, ge=0)
    # sparsity: L1 and entropy penalties on edge magnitudes (rpnkit.pruning.Regularizer)
    reg_l1: float = Field(0.0, ge=0, allow_inf_nan=False)
    reg_entropy: float = Field(0.0, ge=0, allow_inf_nan=False)
    # batched seeds (rpnkit.training.seeds): S independent copies trained as one batched
    # model; an int S (the run's seed, then S-1 seeds derived from it) or a list of seeds
    seeds: int | list[int] | None = None

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, v: Any) -> Any:
        if v is None:
            return v
        if isinstance(v, bool) or not isinstance(v, (int, list, tuple)):
            raise ValueError(f"seeds must be a number of seeds (1 to {MAX_SEEDS}) or a list of "
                             f"distinct seeds (integers 0 to 2**32-1), got {short(v)}")
        if isinstance(v, int):
            if not 1 <= v <= MAX_SEEDS:
                raise ValueError(f"seeds must be from 1 to {MAX_SEEDS} (or a list of seeds), "
                                 f"got {short(v)}")
            return v
        v = list(v)
        bad = [x for x in v if isinstance(x, bool) or not isinstance(x, int)
               or not 0 <= x <= 2**32 - 1]
        if not v or len(v) > MAX_SEEDS or bad:
            what = f"holds {short(bad[0])}" if bad else f"has {len(v)} entries"
            raise ValueError(f"seeds must list 1 to {MAX_SEEDS} seeds, each an integer 0 to "
                             f"2**32-1; the list {what}")
        if len(set(v)) != len(v):
            dup = next(x for x in v if v.count(x) > 1)
            raise ValueError(f"seeds must be distinct, {dup} appears twice")
        return v

    @field_validator("optimizer", "scheduler", "loss", mode="before")
    @classmethod
    def _shorthand(cls, v: Any, info) -> Any:
        if v is None:
            return {"name": "none"} if info.field_name == "scheduler" else v
        return _named(v, info.field_name)

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, v: str) -> str:
        if v not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {short(v)}")
        return v

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | None) -> int | None:
        most = 4 * (os.cpu_count() or 1)  # far more threads than cores crash or hang torch
        if v is not None and v > most:
            raise ValueError(f"threads must be from 1 to {most} (4 x this machine's "
                             f"{os.cpu_count() or 1} CPU cores), got {short(v)}")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {short(v)}")
        return v

    @field_validator("logging")
    @classmethod
    def _logging(cls, v: str | None) -> str | None:
        if v not in (None, "tensorboard"):
            raise ValueError(f"logging must be 'tensorboard' or absent, got {short(v)}")
        return v

    @model_validator(mode="after")
    def _precision_dtype(self) -> TrainConfig:
        if self.precision != "fp32" and self.dtype == "float64":
            raise ValueError(
                f"precision {self.precision!r} (mixed precision) needs dtype float32, not float64"
            )
        if self.precision == "fp16" and self.optimizer.name == "lbfgs":
            raise ValueError("precision 'fp16' needs loss scaling, which lbfgs does not support; "
                             "use bf16 or another optimizer")
        if self.seeds is not None:
            clash = seeds_conflicts(self)
            if clash:
                raise ValueError(f"seeds (batched seeds) cannot be combined with {clash}; "
                                 "train the seeds as separate runs instead")
        return self


class RunConfig(_Strict):
    """A whole run: seed, device, data, model, training protocol (and baselines for ``rpnkit run``)."""

    seed: int = Field(0, ge=0, le=2**32 - 1)
    device: str = "auto"
    title: str | None = None
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    baselines: list[ModelConfig] = Field(default_factory=list)
    plots: bool = True
    # `rpnkit search`: optional overrides of the searched space (rpnkit.search.DEFAULT_SPACE keys)
    search: dict[str, Any] | None = None

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {short(v)}")
        return v

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["model"] = self.model.to_dict()
        out["baselines"] = [b.to_dict() for b in self.baselines]
        return out


# ----------------------------------------------------------------------------- loading
def _format_error(exc: ValidationError) -> str:
    parts = []
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    for err in errors[:3]:
        loc = ".".join(clip(x, 40) for x in err.get("loc", ()) if x != "__root__")
        msg = clip(err.get("msg", ""), 300)
        typ = err.get("type", "")
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if typ == "missing":
            msg = "required key is missing"
        elif typ == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")


#: largest config file / YAML text read, in bytes (characters for text)
MAX_CONFIG_BYTES = 1 << 20
#: deepest nesting of YAML mappings and lists
MAX_YAML_DEPTH = 50
#: most YAML values (scalars, lists, mappings) in one text, every use of an alias counted
#: with the whole value it names
MAX_YAML_NODES = 100_000
#: longest ``--set KEY=VALUE`` item, in characters
MAX_SET_LENGTH = 65_536
#: most decimal digits of a YAML integer (hex / octal / binary ones: the same magnitude)
MAX_YAML_INT_DIGITS = 100

_SafeLoader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
_MERGE_TAGS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")


class _BadScalar(Exception):
    """A YAML value whose constructor raised (e.g. an int of 5000 digits, 2001-13-45)."""

    def __init__(self, node: yaml.Node, exc: Exception) -> None:
        super().__init__(str(exc))
        self.node, self.exc = node, exc


def _make_loader(base: type) -> type:
    """``base`` (a safe loader class) whose constructors' errors carry their node, with
    :data:`MAX_YAML_INT_DIGITS` applied to integers."""

    class Loader(base):  # type: ignore[misc, valid-type]
        def construct_object(self, node, deep=False):
            try:
                return super().construct_object(node, deep=deep)
            except yaml.YAMLError:
                raise
            except (ValueError, OverflowError, TypeError, IndexError, KeyError, AttributeError) as exc:
                # a safe constructor choking on its text, e.g. ``!!int ''``, ``!!timestamp x``,
                # an int of 5000 digits or the date 2001-13-45
                raise _BadScalar(node, exc) from None

        def construct_yaml_int(self, node):
            too_big = ValueError(f"integers are limited to {MAX_YAML_INT_DIGITS} digits")
            if len(node.value) > 4 * MAX_YAML_INT_DIGITS:  # longer than 10**100 even in binary
                raise too_big
            value = super().construct_yaml_int(node)
            if abs(value) >= 10**MAX_YAML_INT_DIGITS:  # e.g. 0xfff... in fewer characters
                raise too_big
            return value

    Loader.add_constructor("tag:yaml.org,2002:int", Loader.construct_yaml_int)
    Loader.__name__ = Loader.__qualname__ = f"_Capped{base.__name__}"
    return Loader


_Loader = _make_loader(_SafeLoader)


def _line(mark: Any) -> str:
    return f"line {mark.line + 1}" if mark is not None else "an unknown line"


def _check_events(text: str, source: str) -> None:
    """Check depth and expanded size on the event stream, before a node graph exists.

    Every value counts 1, and an alias counts the size of the value its anchor names,
    each time it is used, so a "billion laughs" text fails after a few hundred events.
    An alias used inside the value its anchor names (a recursive structure) is refused.
    """
    loader = _Loader(text)
    try:
        opened: list[tuple[str | None, int]] = []  # (anchor, total before) per open collection
        sizes: dict[str, int] = {}
        total = 0
        while loader.check_event():
            ev = loader.get_event()
            if isinstance(ev, yaml.DocumentStartEvent):
                sizes.clear()
                continue
            if isinstance(ev, yaml.CollectionEndEvent):
                anchor, before = opened.pop()
                if anchor is not None:
                    sizes[anchor] = total - before
                continue
            if isinstance(ev, yaml.AliasEvent):
                if any(anchor == ev.anchor for anchor, _ in opened):
                    raise ConfigurationError(
                        f"{source}: the alias *{clip(ev.anchor, 40)} at {_line(ev.start_mark)} is "
                        "used inside the value it names; recursive YAML structures are not allowed"
                    )
                total += sizes.get(ev.anchor, 1)
            elif isinstance(ev, yaml.CollectionStartEvent):
                if len(opened) >= MAX_YAML_DEPTH:
                    raise ConfigurationError(
                        f"{source}: YAML nested deeper than {MAX_YAML_DEPTH} levels "
                        f"(at {_line(ev.start_mark)})"
                    )
                opened.append((ev.anchor, total))
                total += 1
            elif isinstance(ev, yaml.ScalarEvent):
                total += 1
                if ev.anchor is not None:
                    sizes[ev.anchor] = 1
            else:
                continue
            if total > MAX_YAML_NODES:
                raise ConfigurationError(
                    f"{source}: YAML has more than {MAX_YAML_NODES:,} values (at "
                    f"{_line(ev.start_mark)}; each use of an alias counts the whole value it names)"
                )
    finally:
        loader.dispose()


def _check_duplicate_keys(loader: Any, root: yaml.Node, source: str) -> None:
    """Refuse a mapping that repeats a key (merge keys ``<<`` aside); every node once."""
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, int] = {}
            for key_node, value_node in node.value:
                stack.append(key_node)
                stack.append(value_node)
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag in _MERGE_TAGS:
                    continue
                key = loader.construct_object(key_node)
                try:
                    line = first.get(key)
                except TypeError:  # unhashable: the constructor reports it
                    continue
                if line is not None:
                    raise ConfigurationError(
                        f"{source}: duplicate key {short(key, 60)} at {_line(key_node.start_mark)} "
                        f"(first at line {line}); each key may appear once per mapping"
                    )
                first[key] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def read_yaml(text: str, source: str = "config") -> Any:
    """Safe-load YAML ``text`` with readable errors and the limits of this module.

    Tags such as ``!!python/object`` are refused, as are texts longer than
    :data:`MAX_CONFIG_BYTES`, nested deeper than :data:`MAX_YAML_DEPTH`, expanding to more
    than :data:`MAX_YAML_NODES` values, with recursive aliases or with duplicate keys.
    """
    if not isinstance(text, str):
        raise ConfigurationError(f"{source}: YAML must be text, got {type(text).__name__}")
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigurationError(
            f"{source}: YAML text is longer than {MAX_CONFIG_BYTES:,} characters ({len(text):,})"
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate (an argument in a wrong encoding)
        raise ConfigurationError(
            f"{source}: the text holds {text[exc.start]!r} at position {exc.start}, which is not "
            "a Unicode character (a lone surrogate: bytes in another encoding than UTF-8?)"
        ) from None
    try:
        _check_events(text, source)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _check_duplicate_keys(loader, root, source)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except _BadScalar as exc:
        value = exc.node.value
        shown = f" {short(value, 40)}" if isinstance(value, str) else ""
        raise ConfigurationError(
            f"{source}: invalid YAML value{shown} at {_line(exc.node.start_mark)} "
            f"({clip(exc.exc, 100)})"
        ) from None
    except yaml.constructor.ConstructorError as exc:
        tag = clip(getattr(exc, "problem", "") or str(exc), 160)
        if "tag" in tag:
            raise ConfigurationError(
                f"{source}: YAML tags that build Python objects are not allowed ({tag})"
            ) from None
        mark = getattr(exc, "problem_mark", None)
        raise ConfigurationError(f"{source}: invalid YAML at {_line(mark)}: {tag}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "malformed YAML"
        raise ConfigurationError(f"{source}: invalid YAML{where}: {clip(problem, 160)}") from None
    except RecursionError:  # not expected within MAX_YAML_DEPTH; never a traceback
        raise ConfigurationError(f"{source}: YAML nested too deeply") from None


def read_config_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a config file of at most :data:`MAX_CONFIG_BYTES`.

    Only regular files are read (``/dev/zero``, FIFOs and directories are refused
    without reading or blocking), and never more than ``MAX_CONFIG_BYTES + 1`` bytes.
    """
    shown = short(str(path), 200)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ConfigurationError(f"config file {shown} not found") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {shown}: {clip(exc.strerror or exc, 100)}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigurationError(f"config file {shown} is a directory, not a YAML file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(
                f"config file {shown} is not a regular file (a device, pipe or socket); "
                "give the path of a YAML file"
            )
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigurationError(
                f"config file {shown} is larger than {MAX_CONFIG_BYTES:,} bytes ({st.st_size:,})"
            )
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read config file {shown}: {clip(exc.strerror or exc, 100)}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:  # grew while being read
        raise ConfigurationError(f"config file {shown} is larger than {MAX_CONFIG_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"cannot read config file {shown}: it is not UTF-8 text (byte 0x{data[exc.start]:02x} "
            f"at position {exc.start})"
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _list_index(key: str, length: int) -> int | None:
    """``int(key)`` when ``key`` is a plain ASCII index into a list of ``length``; else None."""
    if not (key.isascii() and key.isdigit()) or len(key) > 18:
        return None
    i = int(key)
    return i if i < length else None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML with :func:`read_yaml`'s
    limits; an item is at most :data:`MAX_SET_LENGTH` characters and its key path at most
    :data:`MAX_YAML_DEPTH` keys deep)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if not isinstance(item, str):
            raise ConfigurationError(f"--set expects key.path=value text, got {type(item).__name__}")
        if len(item) > MAX_SET_LENGTH:
            raise ConfigurationError(
                f"--set {clip(item[:200].split('=', 1)[0], 60)}: the item is longer than "
                f"{MAX_SET_LENGTH:,} characters ({len(item):,}); put large values in the config file"
            )
        if "=" not in item:
            raise ConfigurationError(f"--set expects key.path=value, got {short(item)}")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not path.strip() or any(not k for k in keys):
            raise ConfigurationError(f"--set: bad key path {short(path, 60)} (expected key.path=value)")
        if len(keys) > MAX_YAML_DEPTH:
            raise ConfigurationError(
                f"--set {clip(path, 60)}: the key path is deeper than {MAX_YAML_DEPTH} levels"
            )
        shown = clip(path, 80)
        value = read_yaml(text, f"--set {shown}") if text.strip() else ""
        node: Any = raw
        for k in keys[:-1]:
            if isinstance(node, list):
                i = _list_index(k, len(node))
                if i is None:
                    raise ConfigurationError(
                        f"--set {shown}: {short(k, 40)} is not an index of a {len(node)}-item list"
                    )
                node = node[i]
            elif isinstance(node, dict):
                if node.get(k) is None or isinstance(node.get(k), str):
                    node[k] = {} if node.get(k) is None else {"name": node[k]}
                node = node[k]
            else:
                raise ConfigurationError(f"--set {shown}: cannot descend into {type(node).__name__}")
        last = keys[-1]
        if isinstance(node, list):
            i = _list_index(last, len(node))
            if i is None:
                raise ConfigurationError(f"--set {shown}: {short(last, 40)} is not an index of the list")
            node[i] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigurationError(f"--set {shown}: cannot set a key inside {type(node).__name__}")
    return raw


def parse_config(raw: Any, source: str = "config") -> RunConfig:
    """Validate a plain-data config (already loaded) into a :class:`RunConfig`."""
    if not isinstance(raw, Mapping):
        raise ConfigurationError(
            f"{source}: a config must be a mapping with data/model/train sections, got "
            f"{type(raw).__name__}"
        )
    try:
        return RunConfig.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigurationError(f"{source}: {_format_error(exc)}") from None


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> RunConfig:
    """Read, override and validate a YAML config file."""
    path = Path(path)
    text = read_config_text(path)
    raw = read_yaml(text, path.name)
    if raw is None:
        raise ConfigurationError(f"{path.name}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path.name}: a config must be a mapping, got {type(raw).__name__}")
    _resolve_raw_paths(raw, path.resolve().parent)  # the file's paths: against its folder
    cfg = parse_config(apply_overrides(raw, overrides), path.name)
    return resolve_paths(cfg)  # paths given with --set: against the working directory


#: data options that name files (resolved against the config file's folder)
_PATH_KEYS = ("root", "path", "x", "y")


def _resolve_raw_paths(raw: Any, folder: Path) -> None:
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):
        return
    for key in _PATH_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            data[key] = os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


def resolve_paths(cfg: RunConfig, base: str | os.PathLike | None = None) -> RunConfig:
    """Make the data's file paths (``root``, ``path``) absolute, relative to ``base`` (the cwd),
    so that the resolved config saved in a run folder works from anywhere."""
    extra = cfg.data.model_extra or {}
    for key in _PATH_KEYS if cfg.data.stream else ("root", "path"):
        value = extra.get(key)
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            extra[key] = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(value)))
    return cfg


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
