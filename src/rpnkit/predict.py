"""Using a trained run: :func:`load_run`, predictions on raw data, and export.

A run folder is a self-contained artefact: ``model.pt`` (and ``best.pt``) hold the weights
*and* what is needed to use them on new raw data – the fitted preprocessing (feature and
target standardisation), the class labels, the feature names, the task and the loss – next to
``config.yaml``. ::

    run = rpnkit.load_run("runs/iris")
    run.predict(X_raw)          # class labels (as in the training data) or regression values
    run.predict_proba(X_raw)    # classification: (N, classes) probabilities
    run.model                   # the trained nn.Module (eval mode)

``rpnkit predict RUN INPUT.csv|.npy|.parquet [--out preds.csv] [--proba]`` does the same from
the command line; ``rpnkit export RUN [--format pt2|onnx|torchscript]`` writes a deployable
model that takes raw features (:func:`export_run`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigurationError

logger = logging.getLogger(__name__)

__all__ = ["LoadedRun", "load_run", "read_table", "iter_predictions", "write_predictions",
           "prediction_header", "atomic_text", "export_run", "preprocessing_of",
           "class_labels", "label_metadata", "RawModel", "export_metadata",
           "read_export_metadata", "EXPORT_FORMATS"]

_FILES = {"final": "model.pt", "best": "best.pt"}
_INT64 = np.iinfo(np.int64)


# ----------------------------------------------------------------------------- class labels
# Class labels keep their type from the training data to every prediction: a run saves
# them as JSON-able values ("classes") with their numpy dtype ("class_dtype", e.g. "<i8",
# "<U6", "|b1"). Labels read as text are integers when every label is an integer written
# plainly (7, -3; not 007 or +7, which stay text as written) and fits int64, else strings;
# in-memory targets (rpnkit.fit) keep their array's dtype. A model file written before the
# dtype was saved gives its labels back as strings, as it always did.
def _plain_int(text: str) -> bool:
    try:
        v = int(text)
    except (TypeError, ValueError):
        return False
    return str(v) == text and _INT64.min <= v <= _INT64.max


def class_labels(classes: Sequence[Any] | None, class_dtype: Any = None) -> np.ndarray | None:
    """The class labels ``classes`` (text as stored in a bundle or a model file) as a numpy
    array of their dtype: ``class_dtype`` when given (``"int64"``, ``"<U3"``, ``"bool"``
    ...), else int64 when every label is a plain integer and str otherwise."""
    if classes is None:
        return None
    vals = list(classes)
    try:
        dt = None if class_dtype is None else np.dtype(class_dtype)
    except TypeError:  # not a numpy dtype (e.g. torch's bfloat16): as text
        dt = None
    if dt is None:
        if vals and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                        for v in vals):
            return np.asarray(vals, dtype=np.int64)
        text = [str(v) for v in vals]
        if text and all(_plain_int(v) for v in text):
            return np.asarray([int(v) for v in text], dtype=np.int64)
        return np.asarray(text, dtype=str)
    if dt.kind == "b":
        return np.asarray([v if isinstance(v, (bool, np.bool_)) else str(v) in ("True", "1")
                           for v in vals], dtype=dt)
    if dt.kind in "iu":
        return np.asarray([int(v) for v in vals], dtype=dt)
    if dt.kind == "f":
        return np.asarray([float(v) for v in vals], dtype=dt)
    if dt.kind == "U":
        return np.asarray([str(v) for v in vals], dtype=dt)
    return np.asarray(vals, dtype=object)


def label_metadata(labels: np.ndarray | None) -> dict[str, Any]:
    """``{"classes": [...], "class_dtype": "<i8"}``: typed labels in a JSON-able form (what
    model files and exports store; :func:`class_labels` reads it back)."""
    if labels is None:
        return {"classes": None, "class_dtype": None}
    labels = np.asarray(labels)
    dt = labels.dtype if labels.dtype.kind in "biufU" else np.dtype(str)
    return {"classes": labels.tolist() if dt.kind != "U" else [str(v) for v in labels],
            "class_dtype": dt.str}


def _bundle_labels(bundle: Any) -> np.ndarray | None:
    return class_labels(bundle.classes, getattr(bundle, "class_dtype", None))


def preprocessing_of(bundle: Any, loss: str) -> dict[str, Any]:
    """What a run needs to map raw inputs to model inputs and outputs back (saved with the
    weights): standardisation statistics, class labels, names, task and loss."""

    def arr(a):
        return None if a is None else np.asarray(a, dtype=np.float64).reshape(-1).tolist()

    return {
        "task": bundle.task,
        "loss": loss,
        "feature_names": list(bundle.feature_names),
        "target_names": list(bundle.target_names),
        **label_metadata(_bundle_labels(bundle)),  # "classes" with their "class_dtype"
        "x_mean": arr(bundle.x_mean),
        "x_std": arr(bundle.x_std),
        "y_mean": arr(bundle.y_mean),
        "y_std": arr(bundle.y_std),
    }


@dataclass
class LoadedRun:
    """A trained model with its preprocessing, ready for raw data."""

    model: nn.Module
    preprocessing: dict[str, Any]
    config: Any
    path: Path
    checkpoint: str = "model.pt"
    dtype: torch.dtype = torch.float32
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def task(self) -> str:
        return self.preprocessing["task"]

    @property
    def classes(self) -> np.ndarray | None:
        """The class labels as in the training data (a numpy array of their dtype, like
        scikit-learn's ``classes_``; strings for a model file without the dtype)."""
        p = self.preprocessing
        if p.get("classes") is None:
            return None
        if p.get("class_dtype") is None:  # written before the labels' dtype was saved
            return np.asarray([str(c) for c in p["classes"]], dtype=object)
        return class_labels(p["classes"], p["class_dtype"])

    @property
    def feature_names(self) -> list[str]:
        return list(self.preprocessing.get("feature_names") or [])

    def _inputs(self, X: Any) -> torch.Tensor:  # noqa: N803
        x = np.asarray(X.detach().cpu() if isinstance(X, torch.Tensor) else X, dtype=np.float64)
        if x.ndim == 1:
            x = x.reshape(1, -1)
        m = len(self.feature_names) or x.shape[1]
        if x.ndim != 2 or x.shape[1] != m:
            raise ConfigurationError(
                f"the run's model takes {m} features ({', '.join(self.feature_names[:8])}"
                f"{', ...' if m > 8 else ''}), got input of shape {x.shape}"
            )
        if not np.isfinite(x).all():
            row = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
            raise ConfigurationError(f"input row {row} holds NaN or inf")
        p = self.preprocessing
        if p.get("x_mean") is not None:
            with np.errstate(all="ignore"):  # overflow is refused below, without a warning
                x = (x - np.asarray(p["x_mean"])) / np.asarray(p["x_std"])
            if not np.isfinite(x).all():
                row = int(np.nonzero(~np.isfinite(x).all(axis=1))[0][0])
                raise ConfigurationError(
                    f"input row {row} holds values too large to standardise with the run's "
                    "feature statistics (they overflow float64)")
        return torch.as_tensor(x, dtype=self.dtype, device=self.device)

    @torch.no_grad()
    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        """Raw model outputs (logits for classification, scaled values for regression)."""
        self.model.eval()
        return self.model(self._inputs(X)).double().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Regression: (N, k) values in the targets' original scale (k = 1: (N,)).
        Classification: the class labels as in the training data (their dtype: integers
        stay integers, text stays text)."""
        out = self.decision_function(X)
        p = self.preprocessing
        if self.task == "regression":
            if p.get("y_mean") is not None:
                out = out * np.asarray(p["y_std"]) + np.asarray(p["y_mean"])
            return out[:, 0] if out.shape[1] == 1 else out
        idx = (out[:, 0] > 0).astype(int) if p.get("loss") == "bce" else out.argmax(axis=1)
        return self.classes[idx]

    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        """Classification: (N, classes) probabilities (softmax, or sigmoid for ``bce``)."""
        if self.task != "classification":
            raise ConfigurationError("predict_proba needs a classification run")
        out = torch.as_tensor(self.decision_function(X))
        if self.preprocessing.get("loss") == "bce":
            p1 = torch.sigmoid(out[:, 0])
            return torch.stack([1 - p1, p1], dim=1).numpy()
        return torch.softmax(out, dim=1).numpy()

    __call__ = predict


def load_run(run: str | Path, which: str = "final", device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run folder's model (``which``: ``"final"`` → model.pt, ``"best"`` → best.pt).

    ``config.yaml`` is read only when it is a regular file of at most 1 MiB; the model file
    must carry its checksum and pass the structural checks of
    :func:`rpnkit.training.checkpoint.check_model_file` (epoch, weights' keys, shapes, dtypes
    and finite values, preprocessing with positive scales); a refusal is a
    :class:`ConfigurationError` naming the file and the field.
    """
    from .models import build_model
    from .training.run import load_model_file, read_run_config

    run = Path(run)
    if which not in _FILES:
        raise ConfigurationError(f"which must be 'final' or 'best', got {which!r}")
    cfg_path, ckpt = run / "config.yaml", run / _FILES[which]
    if not cfg_path.is_file():
        raise ConfigurationError(f"{run} is not a run folder (no config.yaml)")
    if not ckpt.is_file():
        raise ConfigurationError(f"{run} has no {ckpt.name} (an unfinished run? resume it first)")
    cfg = read_run_config(cfg_path)  # the 1 MiB guard before anything is read
    try:
        model = build_model(cfg.model.name, **cfg.model.build_kwargs())
    except TypeError as exc:
        raise ConfigurationError(f"model {cfg.model.name!r}: {exc}") from None
    dtype = torch.float64 if cfg.train.dtype == "float64" else torch.float32
    device = torch.device(device)
    model.to(device=device, dtype=dtype)
    payload = load_model_file(ckpt, model, cfg=cfg)  # checksum, format and every field
    pre = payload.get("preprocessing")
    if pre is None:  # a run written before preprocessing was saved: fit it again from the data
        from .training.engine import loss_name
        from .training.run import load_bundle

        bundle = load_bundle(cfg)
        pre = preprocessing_of(bundle, loss_name(cfg.train, bundle.task))
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ConfigurationError(f"{ckpt}: the weights do not fit the config's model: "
                                 f"{str(exc).splitlines()[0]}") from None
    model.eval()
    return LoadedRun(model, pre, cfg, run, ckpt.name, dtype, device)


def read_table(path: str | Path, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Features of a .csv/.tsv/.txt (header optional), .npy or .parquet file as a float64
    (N, m) array: :func:`rpnkit.data.readers.read_features`, the reader training uses too
    (one-line refusals for bad encodings, oversized fields, 0-d/structured/complex arrays,
    corrupt or non-numeric parquet, empty input and duplicated columns).

    With ``feature_names`` (the run's), CSV/parquet columns are matched by name (order and
    extra columns, e.g. the target, do not matter); otherwise all columns are used.
    """
    from .data.readers import read_features

    return read_features(path, feature_names)


def prediction_header(run: LoadedRun, proba: bool = False) -> list[str]:
    """The columns of a predictions CSV: ``p(label)`` per class with ``proba``, else the
    run's target names (regression) or ``prediction``."""
    if proba:
        if run.task != "classification":
            raise ConfigurationError("predict_proba needs a classification run")
        return [f"p({c})" for c in run.classes]
    k = 1
    if run.task == "regression":
        dims = getattr(getattr(run.config, "model", None), "dims", None)
        k = int(dims[-1]) if dims else len(run.preprocessing.get("y_mean") or []) or 1
    header = list(run.preprocessing.get("target_names") or ["prediction"])
    if run.task != "regression" or len(header) != k:
        header = ["prediction"] if k == 1 else [f"y{i}" for i in range(k)]
    return header


def iter_predictions(run: LoadedRun, path: str | Path, proba: bool = False,
                     chunk_rows: int | None = None) -> Iterator[np.ndarray]:
    """Predictions for the rows of the file ``path`` (csv/npy/parquet, see
    :func:`read_table`), chunk by chunk: 2-D arrays of :meth:`LoadedRun.predict` values (one
    column per target; class labels in one column) or, with ``proba``, of
    :meth:`LoadedRun.predict_proba`. The file is read with bounded memory
    (:func:`rpnkit.data.readers.iter_features`); ``chunk_rows`` defaults to the model's
    evaluation chunk under the memory budget (:func:`rpnkit.budget.eval_rows`). A NaN or
    inf value is refused naming its row (0-based, in the whole file)."""
    from .budget import eval_rows
    from .data.readers import iter_features

    if chunk_rows is None:
        chunk_rows = eval_rows(run.model, run.dtype, run.device)
    pre = run.preprocessing
    if pre.get("x_mean") is not None:
        mean, std = np.asarray(pre["x_mean"]), np.asarray(pre["x_std"])
    done = 0
    for x in iter_features(path, run.feature_names, chunk_rows):
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise ConfigurationError(f"input row {done + int(np.flatnonzero(bad)[0])} holds NaN "
                                     "or inf")
        if pre.get("x_mean") is not None:  # row numbers of the whole file, not the chunk
            with np.errstate(all="ignore"):
                bad = ~np.isfinite((x - mean) / std).all(axis=1)
            if bad.any():
                raise ConfigurationError(
                    f"input row {done + int(np.flatnonzero(bad)[0])} holds values too large to "
                    "standardise with the run's feature statistics (they overflow float64)")
        if proba:
            yield run.predict_proba(x)
        else:
            values = run.predict(x)
            yield values.reshape(len(x), -1) if run.task == "regression" else \
                values.reshape(-1, 1)
        done += len(x)


def write_predictions(run: LoadedRun, path: str | Path, stream: Any, proba: bool = False,
                      chunk_rows: int | None = None) -> int:
    """Write the predictions for the file ``path`` as CSV to the text ``stream`` (header
    :func:`prediction_header`, then one row per input row, chunk by chunk: memory stays
    bounded); returns the number of rows. Class labels are written as in the training data
    (7, not 7.0), values as Python floats (``repr``)."""
    import csv

    writer = csv.writer(stream)
    writer.writerow(prediction_header(run, proba))
    n = 0
    for values in iter_predictions(run, path, proba, chunk_rows):
        for row in values:
            writer.writerow([v if isinstance(v, str) else str(v) if isinstance(
                v, (int, np.integer, np.bool_)) else repr(float(v)) for v in row])
        n += len(values)
    return n


@contextlib.contextmanager
def atomic_text(path: str | Path):
    """An open UTF-8 text file (csv newlines) whose content appears at ``path`` only when
    the block ends without an exception: it is written to a temporary file in ``path``'s
    folder, then renamed (a link at ``path`` is replaced, never followed). An error or an
    interrupt removes the temporary file and leaves ``path`` as it was."""
    from .training.checkpoint import file_mode, fsync_dir

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp",
                                   dir=path.parent)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot write {_shown(path)}: {why}") from None
    try:
        with open(fd, "w", newline="", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


EXPORT_FORMATS = {"pt2": "model.pt2", "onnx": "model.onnx", "torchscript": "model.ts"}
EXPORT_METADATA = "rpnkit.json"  # the metadata's name in every export (see export_run)
EXPORT_FORMAT_TAG = "rpnkit-export/1"


class RawModel(nn.Module):
    """A run's model with its preprocessing folded in: **raw** float64 features ``(N, m)`` in,
    raw predictions out – regression ``(N, k)`` values in the targets' units, classification
    ``(N, classes)`` probabilities (softmax, or ``[1 - p, p]`` for a ``bce`` run) in the
    order of the run's class labels. The standardisation statistics are float64 buffers; the
    model runs in its own dtype, exactly as :meth:`LoadedRun.predict` /
    :meth:`LoadedRun.predict_proba` compute it (this is what :func:`export_run` exports)."""

    def __init__(self, model: nn.Module, preprocessing: dict[str, Any], dtype: torch.dtype,
                 width: int) -> None:
        super().__init__()
        p = preprocessing
        self.model = model
        self.dtype = dtype
        self.task = p["task"]
        self.bce = p.get("loss") == "bce"

        def stat(key: str, n: int, fill: float) -> torch.Tensor:
            if p.get(key) is None:
                return torch.full((n,), fill, dtype=torch.float64)
            return torch.as_tensor(p[key], dtype=torch.float64).reshape(-1)

        self.register_buffer("x_mean", stat("x_mean", width, 0.0))
        self.register_buffer("x_std", stat("x_std", width, 1.0))
        k = len(p.get("y_mean") or []) or 1
        self.register_buffer("y_mean", stat("y_mean", k, 0.0))
        self.register_buffer("y_std", stat("y_std", k, 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x.to(torch.float64) - self.x_mean) / self.x_std).to(self.dtype)
        out = self.model(z).to(torch.float64)
        if self.task == "regression":
            return out * self.y_std + self.y_mean
        if self.bce:
            p1 = torch.sigmoid(out[:, :1])
            return torch.cat([1 - p1, p1], dim=1)
        return torch.softmax(out, dim=1)


def export_metadata(run: LoadedRun) -> dict[str, Any]:
    """What an export stores next to its graph (JSON, under the name ``rpnkit.json``): the
    task, feature names (the input's columns, in order), target names, class labels with
    their numpy dtype (:func:`label_metadata`; read them back with :func:`class_labels`),
    the input dtype and what the output holds."""
    p = run.preprocessing
    m = len(run.feature_names) or int(run.config.model.dims[0])
    return {
        "format": EXPORT_FORMAT_TAG,
        "rpnkit_version": _version(),
        "task": run.task,
        "loss": p.get("loss"),
        "feature_names": run.feature_names or [f"x{i}" for i in range(m)],
        "target_names": list(p.get("target_names") or []),
        **label_metadata(run.classes),
        "input": {"dtype": "float64", "shape": ["batch", m], "raw": True},
        "output": ("probabilities of the classes, in the order of 'classes'"
                   if run.task == "classification" else "values in the targets' units"),
        "checkpoint": run.checkpoint,
    }


def _version() -> str:
    from . import __version__

    return __version__


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of an export written by :func:`export_run` (``.pt2``, ``.onnx`` or
    ``.ts``). Without rpnkit it reads the same way::

        extra = {"rpnkit.json": ""}
        program = torch.export.load("model.pt2", extra_files=extra)
        meta = json.loads(extra["rpnkit.json"])
        # ONNX: {p.key: p.value for p in onnx.load(f).metadata_props}["rpnkit.json"]
        # TorchScript: torch.jit.load(f, _extra_files=extra)
    """
    import json

    path = Path(path)
    suffix = path.suffix.lower()
    extra = {EXPORT_METADATA: ""}
    try:
        if suffix == ".onnx":
            import onnx

            props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                     .metadata_props}
            text = props.get(EXPORT_METADATA, "")
        elif suffix == ".ts":
            torch.jit.load(str(path), _extra_files=extra)
            text = extra[EXPORT_METADATA]
        else:
            torch.export.load(str(path), extra_files=extra)
            text = extra[EXPORT_METADATA]
        text = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(text)
    except ImportError as exc:
        raise ConfigurationError(f"reading {_shown(path)} needs {exc.name or 'onnx'}: "
                                 "pip install 'rpnkit[onnx]'") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigurationError(f"{_shown(path)} is not an rpnkit export: "
                                 f"{' '.join(str(exc).split())[:160]}") from None


def export_run(run: str | Path, fmt: str | None = None, out: str | Path | None = None,
               which: str = "final") -> Path:
    """Write the run's model, preprocessing included, for deployment; returns the path.

    The exported graph is :class:`RawModel`: **raw** float64 features ``(batch, m)`` (the
    columns of ``feature_names``) in, raw predictions out – regression values in the targets'
    units, class probabilities for classification – the same numbers as
    :meth:`LoadedRun.predict` / ``predict_proba``. ``fmt``:

    ``None`` (default): the format of ``out``'s suffix (``.pt2``, ``.onnx``, ``.ts``), else
    ``"pt2"``.

    ``"pt2"`` (``RUN/model.pt2``)
        a :func:`torch.export` program with a dynamic batch size;
        ``torch.export.load(path).module()(x)`` runs it without rpnkit.
    ``"onnx"`` (``RUN/model.onnx``)
        the same graph as ONNX (``pip install 'rpnkit[onnx]'``), checked with onnxruntime
        when it is installed.
    ``"torchscript"`` (``RUN/model.ts``)
        a traced module (TorchScript is deprecated in PyTorch; only where tracing gives the
        same numbers).

    Every format stores :func:`export_metadata` as JSON under the name ``rpnkit.json``
    (``extra_files`` of ``.pt2`` and ``.ts``, ``metadata_props`` of ``.onnx``):
    :func:`read_export_metadata` reads it. Each export is checked against the eager model on
    raw inputs before it is written. The file is written to a temporary file in the target
    folder and renamed (a link at ``out`` is replaced, never followed); a run's own files
    (``model.pt``, ``best.pt``, ``checkpoint.pt`` ...) are never replaced. A model that
    cannot be exported is a ConfigurationError naming the component; an ``out`` that cannot
    be written one naming the path (missing or read-only folder).
    """
    import json

    if fmt is None:
        suffix = Path(str(out)).suffix.lower() if out else ""
        fmt = {".pt2": "pt2", ".onnx": "onnx", ".ts": "torchscript"}.get(suffix, "pt2")
    fmt = str(fmt).lower()
    if fmt not in EXPORT_FORMATS:
        raise ConfigurationError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, "
                                 f"got {fmt[:40]!r}")
    path = export_target(run, out, EXPORT_FORMATS[fmt])
    loaded = load_run(run, which)
    m = len(loaded.feature_names) or int(loaded.config.model.dims[0])
    raw = RawModel(loaded.model, loaded.preprocessing, loaded.dtype, m).eval()
    meta = json.dumps(export_metadata(loaded), ensure_ascii=False)
    samples = _raw_samples(raw, m)
    with torch.no_grad():
        want = [raw(x) for x in samples]
    if fmt == "pt2":
        program = _torch_export(raw, samples[0], "pt2")
        _check_export(fmt, lambda x: program.module()(x), samples, want, raw)
        buffer = io.BytesIO()  # torch.export.save wants a .pt2 name or a buffer
        torch.export.save(program, buffer, extra_files={EXPORT_METADATA: meta})
        write_output(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    elif fmt == "torchscript":
        try:
            with warnings.catch_warnings():  # shape checks become constants: that is intended
                warnings.simplefilter("ignore")
                traced = torch.jit.trace(raw, samples[0], check_trace=False)
        except Exception as exc:
            raise ConfigurationError(f"torchscript export failed: {_blame(raw, exc)}; use the "
                                     "default format (torch.export) instead") from None
        _check_export(fmt, traced, samples, want, raw)
        buffer = io.BytesIO()
        try:
            with warnings.catch_warnings():  # torch.jit.save's deprecation: the user chose it
                warnings.simplefilter("ignore", DeprecationWarning)
                torch.jit.save(traced, buffer, _extra_files={EXPORT_METADATA: meta})
        except Exception as exc:  # e.g. a custom autograd Function in the traced graph
            raise ConfigurationError(f"torchscript export failed: {_blame_traced(raw, traced, exc)}"
                                     "; use the default format (torch.export) instead") from None
        write_output(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))
    else:
        data = _onnx_bytes(raw, samples, want, meta)
        write_output(path, lambda tmp: Path(tmp).write_bytes(data))
    return path


def _raw_samples(raw: RawModel, m: int) -> list[torch.Tensor]:
    """Raw inputs for checking an export: batches of 5 and 1 around the training data's
    statistics (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    mean, std = raw.x_mean.detach().cpu(), raw.x_std.detach().cpu()
    return [mean + std * torch.randn(n, m, generator=g, dtype=torch.float64) for n in (5, 1)]


def _torch_export(raw: RawModel, example: torch.Tensor, fmt: str):
    batch = torch.export.Dim("batch", min=1, max=2**31 - 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(raw, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:
        raise ConfigurationError(f"{fmt} export (torch.export) failed: {_blame(raw, exc)}"
                                 ) from None


def _check_export(fmt: str, run_export: Callable[[torch.Tensor], Any],
                  samples: list[torch.Tensor], want: list[torch.Tensor], raw: RawModel) -> None:
    """The export gives the eager model's numbers on ``samples`` (float rounding aside)."""
    tol = 1e-9 if raw.dtype == torch.float64 else 2e-4
    for x, w in zip(samples, want):
        try:
            with torch.no_grad():
                got = torch.as_tensor(np.asarray(run_export(x)), dtype=torch.float64)
        except Exception as exc:
            raise ConfigurationError(f"{fmt} export does not run: {_blame(raw, exc)}") from None
        scale = float(w.abs().max()) if w.numel() else 0.0
        if got.shape != w.shape or not torch.allclose(got, w, rtol=tol, atol=tol * max(scale, 1.0)):
            diff = (got - w).abs().max().item() if got.shape == w.shape else "a shape"
            raise ConfigurationError(
                f"{fmt} export of this model does not reproduce it (difference {diff} on a "
                f"batch of {x.shape[0]}){_component_hint(raw)}; use another --format")


def _component_hint(raw: RawModel) -> str:
    names = sorted({f"{mod.registry_name}" for _, mod in raw.named_modules()
                    if getattr(mod, "registry_name", None)})
    return f" [components: {', '.join(names[:6])}]" if names else ""


def _onnx_bytes(raw: RawModel, samples: list[torch.Tensor], want: list[torch.Tensor],
                meta: str) -> bytes:
    """The ONNX model (weights inline, metadata ``rpnkit.json``), checked with onnxruntime
    when it is installed."""
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ConfigurationError(f"onnx export needs the {exc.name or 'onnx'} package: "
                                 "pip install 'rpnkit[onnx]'") from None
    batch = torch.export.Dim("batch", min=1, max=2**31 - 2)
    try:
        with warnings.catch_warnings(), _quiet_loggers("torch.onnx", "onnxscript"), \
                contextlib.redirect_stdout(_Null()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(raw, (samples[0],), None, input_names=["x"],
                                        output_names=["y"], dynamic_shapes=({0: batch},),
                                        dynamo=True, verbose=False)
            proto = program.model_proto
    except Exception as exc:
        raise ConfigurationError(f"onnx export failed: {_blame(raw, exc)}") from None
    prop = proto.metadata_props.add()
    prop.key, prop.value = EXPORT_METADATA, meta
    data = proto.SerializeToString()
    try:
        import onnxruntime as ort
    except ImportError:  # written unchecked
        logger.warning("onnxruntime is not installed: the ONNX export was not run")
        return data
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    _check_export("onnx", lambda x: session.run(None, {"x": x.numpy()})[0], samples, want, raw)
    return data


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    import logging

    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in old.items():
            logging.getLogger(n).setLevel(level)


def _shown(path: Any) -> str:
    text = repr(str(path))
    return text if len(text) <= 160 else text[:100] + "..." + text[-40:]


def export_target(run: str | Path, out: str | Path | None, default: str) -> Path:
    """The checked output path of an export: ``out`` (or ``RUN/default``) in an existing
    folder, not a folder itself, and not one of the run folder's own files."""
    from .training.rundir import RUN_FILES

    if out is not None and "\0" in str(out):
        raise ConfigurationError(f"--out {_shown(out)} contains a NUL character")
    path = Path(out) if out else Path(run) / default
    try:
        folder = path.parent.resolve()
        own = {Path(run).resolve() / name for name in RUN_FILES}
        if folder / path.name in own:
            raise ConfigurationError(
                f"--out {_shown(path)} is the run's own {path.name}; an export never replaces "
                "it: choose another file (default: RUN/model.pt2, .onnx or .ts)")
        if not folder.is_dir():
            raise ConfigurationError(f"--out {_shown(path)}: folder {_shown(path.parent)} does "
                                     "not exist")
        if path.is_dir():
            raise ConfigurationError(f"--out {_shown(path)} is a folder, not a file")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigurationError(f"--out {_shown(path)}: folder {_shown(path.parent)} is "
                                     "not writable")
    except OSError as exc:  # a name too long, a loop of links ...
        raise ConfigurationError(f"--out {_shown(path)} cannot be used: "
                                 f"{exc.strerror or type(exc).__name__}") from None
    return path


def write_output(path: Path, write: Callable[[str], None]) -> None:
    """Write an output file (a prediction CSV, an export) atomically: ``write(tmp)`` fills a
    temporary file in ``path``'s folder, which is then renamed to ``path`` with the usual
    permissions; an interrupted or failed write leaves no partial ``path``. A folder where
    the temporary file cannot be created is a ConfigurationError naming it."""
    from .training.checkpoint import file_mode, fsync_dir

    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp",
                                   dir=path.parent)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigurationError(f"cannot write {_shown(path)}: {why}") from None
    os.close(fd)
    try:
        try:
            write(tmp)
        except RuntimeError as exc:  # torch reports a failed write as "[enforce fail ...]"
            raise ConfigurationError(f"cannot write {_shown(path)}: "
                                     f"{' '.join(str(exc).split())[:160]}") from None
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def _blame(model: nn.Module, exc: BaseException) -> str:
    """The first line of ``exc`` with the rpnkit component that raised it: the innermost
    registered component (expansion, reconciliation, remainder ...) among the frames of the
    traceback, else one whose class name the message mentions."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text[:200]
    where = {id(mod): name for name, mod in model.named_modules()}
    found = None
    tb = exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and getattr(obj, "registry_name", None) \
                and id(obj) in where:
            found = obj
        tb = tb.tb_next
    if found is None:
        for mod in model.modules():
            if getattr(mod, "registry_name", None) and type(mod).__name__.lower() in text.lower():
                found = mod
                break
    if found is None:
        return text
    name = where[id(found)].removeprefix("model.") or "model"
    return f"{text} [component: {name} ({found.registry_name}, {type(found).__name__})]"


def _blame_traced(raw: RawModel, traced: Any, exc: BaseException) -> str:
    """The first line of ``exc`` and the component behind the Python function (a custom
    autograd Function) that TorchScript cannot save, found through the traced graph's scopes."""
    import sys

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = text.split(". ")[0][:200]  # "Could not export Python function call 'X'"
    try:
        nodes = [n for n in traced.inlined_graph.nodes() if n.kind() == "prim::PythonOp"]
    except Exception:  # pragma: no cover - graph not readable: the message alone
        return _blame(raw, exc)
    if not nodes:
        return _blame(raw, exc)
    node = nodes[0]
    fname = node.pyname()
    scope = node.scopeName().split("/")[-1].removeprefix("__module.").removeprefix("__module")
    owner = raw.get_submodule(scope) if scope else raw
    home = next((m.__name__ for m in list(sys.modules.values())
                 if getattr(m, "__name__", "").startswith("rpnkit")
                 and isinstance(getattr(m, fname, None), type)), None)
    found = None
    for name, mod in owner.named_modules():
        if not getattr(mod, "registry_name", None):
            continue
        space = vars(sys.modules.get(type(mod).__module__, object()))
        if home and any(getattr(v, "__module__", None) == home for v in space.values()):
            found = (name, mod)
            break
    if found is None:
        where = scope.removeprefix("model.") or "model"
        return f"{text} [component: {where}, Python function {fname}]"
    path = ".".join(p for p in (scope, found[0]) if p).removeprefix("model.")
    return (f"{text} [component: {path} ({found[1].registry_name}, "
            f"{type(found[1]).__name__}), Python function {fname}]")
