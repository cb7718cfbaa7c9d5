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
the command line; ``rpnkit export RUN --format torchscript|onnx`` writes a deployable model.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import ConfigurationError

__all__ = ["LoadedRun", "load_run", "read_table", "export_run", "preprocessing_of",
           "class_labels", "label_metadata"]

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
            x = (x - np.asarray(p["x_mean"])) / np.asarray(p["x_std"])
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


def export_run(run: str | Path, fmt: str = "torchscript", out: str | Path | None = None,
               which: str = "final") -> Path:
    """Write the run's model as TorchScript (``model.ts``) or ONNX (``model.onnx``).

    The exported graph maps *standardised* inputs to raw outputs (as ``run.model`` does); the
    preprocessing is in ``model.pt`` / :func:`load_run`. The file is written to a temporary
    file in the target folder and renamed (a link at ``out`` is replaced, never followed); a
    run's own files (``model.pt``, ``best.pt``, ``checkpoint.pt`` ...) are never replaced.
    Raises a ConfigurationError naming the component when a model cannot be exported, and
    naming the path when ``out`` cannot be written (missing or read-only folder).
    """
    fmt = str(fmt).lower()
    if fmt not in ("torchscript", "onnx"):
        raise ConfigurationError(f"export format must be 'torchscript' or 'onnx', got {fmt[:40]!r}")
    path = export_target(run, out, "model.ts" if fmt == "torchscript" else "model.onnx")
    loaded = load_run(run, which)
    m = len(loaded.feature_names) or loaded.config.model.dims[0]
    example = torch.zeros(2, m, dtype=loaded.dtype)
    if fmt == "torchscript":
        try:
            with warnings.catch_warnings():  # shape checks become constants: that is intended
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                scripted = torch.jit.trace(loaded.model, example, check_trace=False)
        except Exception as exc:
            raise ConfigurationError(f"torchscript export failed: {_blame(loaded.model, exc)}"
                                     ) from None
        write_output(path, lambda tmp: scripted.save(tmp))
        return path

    def onnx(tmp: str) -> None:
        try:
            torch.onnx.export(loaded.model, (example,), tmp, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"},
                                                                "y": {0: "batch"}})
        except ImportError as exc:
            raise ConfigurationError(f"onnx export needs the onnx package ({exc}); "
                                     "pip install onnx onnxscript") from None
        except OSError:
            raise
        except Exception as exc:
            raise ConfigurationError(f"onnx export failed: {_blame(loaded.model, exc)}") from None

    write_output(path, onnx)
    return path


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
                "it: choose another file (default: RUN/model.ts or RUN/model.onnx)")
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


def _blame(model: nn.Module, exc: Exception) -> str:
    """The first line of ``exc`` with the rpnkit component that raised it, when known."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    names = []
    for name, mod in model.named_modules():
        reg = getattr(mod, "registry_name", None)
        if reg and type(mod).__name__.lower() in text.lower():
            names.append(f"{name} ({reg})")
    return text + (f" [component: {names[0]}]" if names else "")
