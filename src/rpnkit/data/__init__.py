"""Datasets for training: function samples, equation lists, tabular sets, MNIST, CSV.

Data larger than memory: :func:`open_stream` (see :mod:`rpnkit.data.streaming`).

``load_data(name, params, split, seed, standardize)`` returns a :class:`DataBundle`
with seeded train/val/test splits, validated (no NaN/inf, no empty split, at least two
classes in the data and in the training split) and optionally standardised with
statistics fitted on the training split only. Class labels read as text are kept
exactly as written (see :mod:`rpnkit.data.sources`, "class labels").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .formula import CONSTANTS, FUNCTIONS, Formula, parse_formula
from .scaling import Standardised
from .sources import DATASETS, FEYNMAN_PAPER_IDS, RawData, equation_ids, equation_table
from .streaming import STREAM_SOURCES, StreamingBundle, open_stream
from .structured import PLANETOID as _PLANETOID  # noqa: F401  registers cora, citeseer, sst2, ...

__all__ = [
    "DATASETS",
    "FUNCTIONS",
    "CONSTANTS",
    "FEYNMAN_PAPER_IDS",
    "DataBundle",
    "Formula",
    "RawData",
    "STREAM_SOURCES",
    "StreamingBundle",
    "equation_ids",
    "equation_table",
    "load_raw",
    "load_data",
    "open_stream",
    "split_indices",
    "parse_formula",
    "validate_finite",
]


@dataclass
class DataBundle(Standardised):
    """Split, validated data. Regression targets are (N, k) float; class targets (N,) int."""

    name: str
    task: str
    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    feature_names: list[str]
    target_names: list[str]
    classes: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    x_mean: np.ndarray | None = None
    x_std: np.ndarray | None = None
    y_mean: np.ndarray | None = None
    y_std: np.ndarray | None = None
    formula: Formula | None = None
    ranges: list[tuple[float, float]] | None = None
    #: numpy dtype of the class labels as given (in-memory targets); None: labels read as
    #: text, integers when all are plain integers (rpnkit.predict.class_labels)
    class_dtype: str | None = None

    @property
    def n_features(self) -> int:
        # a source may declare the model's input width (graph nodes given by id carry the
        # graph's feature width: rpnkit.data.structured)
        return int(self.info.get("input_width", self.x["train"].shape[1]))

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def n_targets(self) -> int:
        return int(self.y["train"].shape[1]) if self.task == "regression" else 1

    def size(self, split: str) -> int:
        return int(self.x[split].shape[0])



def validate_finite(x: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.nonzero(bad.reshape(bad.shape[0], -1).any(axis=1))[0]
        kind = "NaN" if np.isnan(x[bad]).any() else "inf"
        raise ConfigurationError(
            f"{what} contain {kind} values in {len(rows)} row(s) (first at row {int(rows[0])}); "
            "clean the data or change the formula/ranges"
        )


def load_raw(name: str, params: Mapping[str, Any] | None = None, seed: int = 0) -> RawData:
    """Build source ``name`` with ``params`` (checked) and load its unsplit data."""
    source = DATASETS.build(name, **dict(params or {}))
    raw = source.load(np.random.default_rng([seed, 1]))
    what = f"dataset {name!r}"
    if raw.x.ndim != 2 or raw.x.shape[0] == 0 or raw.x.shape[1] == 0:
        raise ConfigurationError(f"{what} is empty (features of shape {raw.x.shape})")
    if raw.y.shape[0] != raw.x.shape[0]:
        raise ConfigurationError(f"{what}: {raw.x.shape[0]} feature rows but {raw.y.shape[0]} targets")
    validate_finite(raw.x, f"{what} features")
    if raw.task == "regression":
        validate_finite(raw.y, f"{what} targets")
    else:
        _check_two_classes(raw.y, raw.classes, what)
    return raw


def _check_two_classes(y: np.ndarray, classes: list[str] | None, what: str) -> None:
    present = np.unique(y)
    if len(present) < 2:
        name = (classes[int(present[0])] if classes is not None and len(present)
                and 0 <= int(present[0]) < len(classes) else None)
        held = f" ({name!r})" if name is not None else ""
        raise ConfigurationError(
            f"{what} holds only one class{held}; classification needs at least two"
        )


def _counts(split: Mapping[str, float], n: int) -> tuple[int, int, int]:
    keys = ("train", "val", "test")
    vals = [split.get(k, 0) for k in keys]
    if all(isinstance(v, int) and not isinstance(v, bool) for v in vals) and sum(vals) > 1:
        if sum(vals) > n:
            raise ConfigurationError(f"split sizes {dict(zip(keys, vals))} need {sum(vals)} samples, have {n}")
        return tuple(vals)  # type: ignore[return-value]
    total = float(sum(vals))
    if any(v < 0 for v in vals) or abs(total - 1.0) > 1e-6:
        raise ConfigurationError(
            f"split fractions must be >= 0 and sum to 1, got {dict(zip(keys, vals))}"
        )
    n_val = int(round(vals[1] * n))
    n_test = int(round(vals[2] * n))
    return n - n_val - n_test, n_val, n_test


def split_indices(n: int, split: Mapping[str, float], seed: int,
                  stratify: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Seeded train/val/test index split (stratified by ``stratify`` labels when given)."""
    n_train, n_val, n_test = _counts(split, n)
    rng = np.random.default_rng([seed, 2])
    if stratify is None:
        perm = rng.permutation(n)
        out = {
            "train": perm[:n_train],
            "val": perm[n_train : n_train + n_val],
            "test": perm[n_train + n_val : n_train + n_val + n_test],
        }
    else:
        # allocate each class proportionally, then fix rounding on the largest classes
        out_l: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": [], "spare": []}
        labels = np.asarray(stratify)
        classes = np.unique(labels)
        whole = n_train + n_val + n_test == n  # fractions: train takes the rest, as always
        want = {"val": n_val, "test": n_test}
        for c in classes:
            idx = rng.permutation(np.nonzero(labels == c)[0])
            nc = len(idx)
            nv = int(round(nc * n_val / n))
            nt = int(round(nc * n_test / n))
            nr = nc - nv - nt if whole else min(int(round(nc * n_train / n)), nc - nv - nt)
            out_l["val"].append(idx[:nv])
            out_l["test"].append(idx[nv : nv + nt])
            out_l["train"].append(idx[nv + nt : nv + nt + nr])
            out_l["spare"].append(idx[nv + nt + nr :])  # rows no split asked for (counts)
        out = {k: np.concatenate(v) if v else np.array([], dtype=int) for k, v in out_l.items()}
        spare = out.pop("spare")
        if whole:
            for k in ("val", "test"):  # exact requested sizes: move samples from/to train
                diff = want[k] - len(out[k])
                if diff > 0:
                    out[k] = np.concatenate([out[k], out["train"][:diff]])
                    out["train"] = out["train"][diff:]
                elif diff < 0:
                    out["train"] = np.concatenate([out["train"], out[k][diff:]])
                    out[k] = out[k][:diff]
        else:  # counts: exact sizes of every split, the rest stays unused
            want["train"] = n_train
            for k in ("val", "test", "train"):  # give back what rounding made too big
                extra = len(out[k]) - want[k]
                if extra > 0:
                    spare = np.concatenate([spare, out[k][-extra:]])
                    out[k] = out[k][:-extra]
            spare = rng.permutation(spare)
            for k in ("val", "test", "train"):  # then fill what is short
                short = want[k] - len(out[k])
                if short > 0:
                    out[k] = np.concatenate([out[k], spare[:short]])
                    spare = spare[short:]
        out = {k: rng.permutation(v) for k, v in out.items()}
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def load_data(
    name: str,
    params: Mapping[str, Any] | None = None,
    split: Mapping[str, float] | None = None,
    seed: int = 0,
    standardize: bool = False,
    standardize_target: bool = False,
    stratify: bool = True,
    raw: RawData | None = None,
    indices: Mapping[str, np.ndarray] | None = None,
    labels_as_targets: bool = False,
) -> DataBundle:
    """Load, split, validate and (optionally) standardise a dataset.

    ``raw``/``indices`` may be given to reuse loaded data or fixed folds (cross-validation).
    ``labels_as_targets``: a classification dataset's class indices (0, 1, ... in the order
    of ``classes``) become one float regression target, to be fitted with a regression loss
    (the reference toolkit fits iris, Pima and banknote labels with MSE); the split is still
    stratified by class.
    """
    raw = raw if raw is not None else load_raw(name, params, seed)
    n = raw.x.shape[0]
    if indices is None and raw.indices is not None:  # the source's own split (e.g. Planetoid)
        indices = raw.indices
    if indices is None:
        split = dict(split or {"train": 0.8, "val": 0.0, "test": 0.2})
        strat = raw.y if (stratify and raw.task == "classification") else None
        indices = split_indices(n, split, seed, strat)
    if labels_as_targets:
        raw = _labels_as_targets(raw, name)
    x = {k: raw.x[v] for k, v in indices.items()}
    y = {k: raw.y[v] for k, v in indices.items()}
    if x["train"].shape[0] == 0:
        raise ConfigurationError(f"dataset {name!r}: the training split is empty")
    if x["test"].shape[0] == 0:
        raise ConfigurationError(f"dataset {name!r}: the test split is empty")
    if raw.task == "classification":
        _check_two_classes(y["train"], raw.classes, f"dataset {name!r}: the training split")
    bundle = DataBundle(
        name=name,
        task=raw.task,
        x=x,
        y=y,
        feature_names=raw.feature_names,
        target_names=raw.target_names,
        classes=raw.classes,
        info=dict(raw.info),
        formula=raw.formula,
        ranges=raw.ranges,
    )
    if standardize:
        mean, std, bundle.x = _standardise(x, raw.feature_names, f"dataset {name!r}: feature")
        bundle.x_mean, bundle.x_std = mean, std
    if standardize_target:
        if raw.task != "regression":
            raise ConfigurationError("standardize_target applies to regression data only")
        mean, std, bundle.y = _standardise(y, raw.target_names, f"dataset {name!r}: target")
        bundle.y_mean, bundle.y_std = mean, std
    return bundle


def _labels_as_targets(raw: RawData, name: str) -> RawData:
    """``raw`` with its class indices as one float64 regression target column."""
    if raw.task != "classification":
        raise ConfigurationError(
            f"data.labels_as_targets applies to classification data, but dataset {name!r} is "
            f"{raw.task}; remove labels_as_targets")
    return dataclasses.replace(raw, y=raw.y.astype(np.float64)[:, None], task="regression",
                               classes=None, target_names=list(raw.target_names[:1]) or ["class"])


def _standardise(arrays: Mapping[str, np.ndarray], names: list[str], what: str):
    """Training-split mean and std (std 1 for constant columns) and the standardised
    splits. Values too large for their mean, std or standardised values to be finite
    float64 numbers are refused naming the column (no numpy warning escapes)."""
    train = arrays["train"]
    with np.errstate(all="ignore"):
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0)
        out = {k: (v - mean) / std for k, v in arrays.items()}
    bad = ~np.isfinite(mean) | ~np.isfinite(std)
    for v in out.values():
        if v.size:
            bad = bad | ~(np.isfinite(v).reshape(-1, *bad.shape).all(axis=0))
    if bad.any():
        c = int(np.flatnonzero(bad.reshape(-1))[0])
        col = names[c] if c < len(names) else f"column {c}"
        peak = float(np.abs(train.reshape(len(train), -1)[:, c]).max()) if len(train) else 0.0
        raise ConfigurationError(
            f"{what} {col!r} holds values too large to standardise in float64 (|value| up to "
            f"{peak:.3g}); rescale that column (e.g. divide it by a power of ten)"
        )
    return mean, std, out
