"""Run configuration: a YAML file validated with pydantic.

Configs are plain data read with ``yaml.safe_load`` (YAML tags such as
``!!python/object`` are rejected). Components, models, datasets, optimizers,
schedulers and losses are chosen by registry name only; a config never names a
Python path. Unknown keys are errors that name the key and the closest valid one.

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .errors import ConfigurationError, UnknownNameError, did_you_mean
from .spec import HEAD_FIELDS, LAYER_FIELDS, head_defaults

__all__ = [
    "RunConfig",
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "parse_config",
    "read_yaml",
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
                    f"unknown key {key!r}{did_you_mean(str(key), valid)}; valid keys: {', '.join(valid)}"
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
            raise ValueError(f"a {what} mapping needs a 'name' key, got keys {sorted(value)}")
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
            f"unknown {registry.kind} {name!r}{did_you_mean(name, registry.names())}; "
            f"valid: {', '.join(registry.names())}"
        )
    valid = list(registry.parameters(name))
    for key in params:
        if key not in valid:
            choices = valid + list(fixed)
            raise ConfigurationError(
                f"unknown option {key!r} for {registry.kind} {name!r}{did_you_mean(key, choices)}; "
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


_DATA_FIXED = ("name", "split", "standardize", "standardize_target", "stratify", "stream")


class DataConfig(BaseModel):
    """``data:`` – a dataset by registry name plus its own options (e.g. ``expression``).

    ``stream: true`` reads a streaming source (``npy``, ``csv``, ``parquet``, ``function``;
    :mod:`rpnkit.data.streaming`) block by block instead of loading the data into memory.
    """

    model_config = ConfigDict(extra="allow")
    name: str
    split: SplitConfig = Field(default_factory=SplitConfig)
    standardize: bool = False
    standardize_target: bool = False
    stratify: bool = True
    stream: bool = False

    @model_validator(mode="after")
    def _params(self) -> DataConfig:
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
    head_fusion: str = "sum"
    bias: bool = _HEAD_DEFAULTS["bias"]
    seed: int | None = _HEAD_DEFAULTS["seed"]
    activation: Any = None
    layers: list[dict[str, Any] | None] = Field(default_factory=list)
    label: str | None = None

    @field_validator("dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(d < 1 for d in v):
            raise ValueError(f"dims must list at least two positive widths, got {v}")
        return v

    @field_validator("expansion", "reconciliation", "remainder")
    @classmethod
    def _component(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v
        if isinstance(v, Mapping) and isinstance(v.get("name"), str):
            return dict(v)
        raise ValueError(
            f"a component must be a registry name or a mapping with a 'name' key, got {v!r}"
        )

    @model_validator(mode="after")
    def _extra(self) -> _ModelConfigBase:
        from .models import MODELS

        if self.name not in MODELS:
            raise UnknownNameError(
                f"unknown model {self.name!r}{did_you_mean(self.name, MODELS.names())}; "
                f"valid: {', '.join(MODELS.names())}"
            )
        if self.name == "rpn" and self.model_extra:
            key = next(iter(self.model_extra))
            valid = list(type(self).model_fields)
            raise ValueError(
                f"unknown key {key!r}{did_you_mean(key, valid)}; valid keys: {', '.join(valid)}"
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

        return f"RPN {self.dims} {nm(self.expansion)}/{nm(self.reconciliation)}/{nm(self.remainder)}"


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


class TrainConfig(_Strict):
    """``train:`` – optimisation protocol.

    Defaults: 300 epochs, Adam (lr 0.01) with cosine decay, full batch when the training
    split has at most ``full_batch_max`` samples, loss by task (mse / cross_entropy).
    ``early_stopping: k`` stops after ``k`` epochs without an improvement of the monitored
    validation value by more than ``tol`` (relative; 0: any improvement counts).
    """

    epochs: int = Field(300, ge=0)
    batch_size: int | None = Field(None, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=lambda: OptimizerConfig(name="adam", lr=0.01))
    scheduler: SchedulerConfig = Field(default_factory=lambda: SchedulerConfig(name="cosine"))
    loss: LossConfig | None = None
    metrics: list[str] | None = None
    grad_clip: float | None = Field(None, gt=0)
    early_stopping: int | None = Field(None, ge=1)
    tol: float = Field(0.0, ge=0)
    monitor: str = "loss"
    eval_batch_size: int = Field(8192, ge=1)
    full_batch_max: int = Field(4096, ge=0)
    checkpoint_every: int = Field(0, ge=0)
    dtype: str = "float32"
    threads: int | None = Field(None, ge=1)
    precision: str = "fp32"
    compile: bool = False
    num_workers: int = Field(0, ge=0, le=64)
    logging: str | None = None

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
            raise ValueError(f"dtype must be float32 or float64, got {v!r}")
        return v

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: str) -> str:
        if v not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be fp32, bf16 or fp16, got {v!r}")
        return v

    @field_validator("logging")
    @classmethod
    def _logging(cls, v: str | None) -> str | None:
        if v not in (None, "tensorboard"):
            raise ValueError(f"logging must be 'tensorboard' or absent, got {v!r}")
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
        return self


class RunConfig(_Strict):
    """A whole run: seed, device, data, model, training protocol (and baselines for ``rpnkit run``)."""

    seed: int = 0
    device: str = "auto"
    title: str | None = None
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = Field(default_factory=TrainConfig)
    baselines: list[ModelConfig] = Field(default_factory=list)
    plots: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v

    def to_dict(self) -> dict[str, Any]:
        out = self.model_dump(mode="json")
        out["model"] = self.model.to_dict()
        out["baselines"] = [b.to_dict() for b in self.baselines]
        return out


# ----------------------------------------------------------------------------- loading
def _format_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "__root__")
        msg = str(err.get("msg", ""))
        typ = err.get("type", "")
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if typ == "missing":
            msg = "required key is missing"
        elif typ == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts[:3]) + (f" (and {len(parts) - 3} more)" if len(parts) > 3 else "")


def read_yaml(text: str, source: str = "config") -> Any:
    """``yaml.safe_load`` with readable errors (tags such as ``!!python/object`` are refused)."""
    try:
        return yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        tag = getattr(exc, "problem", "") or str(exc)
        raise ConfigurationError(
            f"{source}: YAML tags that build Python objects are not allowed ({tag.strip()})"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigurationError(f"{source}: invalid YAML{where}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML scalars/lists)."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigurationError(f"--set expects key.path=value, got {item!r}")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not path.strip() or any(not k for k in keys):
            raise ConfigurationError(f"--set: bad key path {path!r}")
        value = read_yaml(text, f"--set {path}") if text.strip() else ""
        node: Any = raw
        for k in keys[:-1]:
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    raise ConfigurationError(f"--set {path}: {k!r} is not an index of a {len(node)}-item list")
                node = node[int(k)]
            elif isinstance(node, dict):
                if node.get(k) is None or isinstance(node.get(k), str):
                    node[k] = {} if node.get(k) is None else {"name": node[k]}
                node = node[k]
            else:
                raise ConfigurationError(f"--set {path}: cannot descend into {type(node).__name__}")
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise ConfigurationError(f"--set {path}: {last!r} is not an index of the list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigurationError(f"--set {path}: cannot set a key inside {type(node).__name__}")
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
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read config file {str(path)!r}: {exc}") from None
    raw = read_yaml(text, path.name)
    if raw is None:
        raise ConfigurationError(f"{path.name}: the config file is empty")
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{path.name}: a config must be a mapping, got {type(raw).__name__}")
    cfg = parse_config(apply_overrides(raw, overrides), path.name)
    return resolve_paths(cfg)


def resolve_paths(cfg: RunConfig, base: str | os.PathLike | None = None) -> RunConfig:
    """Make the data's file paths (``root``, ``path``) absolute, relative to ``base`` (the cwd),
    so that the resolved config saved in a run folder works from anywhere."""
    extra = cfg.data.model_extra or {}
    for key in ("root", "path"):
        value = extra.get(key)
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            extra[key] = os.path.abspath(os.path.join(base or os.getcwd(), os.path.expanduser(value)))
    return cfg


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)
