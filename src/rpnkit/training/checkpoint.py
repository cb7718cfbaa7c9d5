"""Checkpoint files: atomic, checksummed writes and validated reads.

Every ``.pt`` file of a run folder (``checkpoint.pt``, ``model.pt``, ``best.pt``) is a plain
``torch.save`` dict that ``torch.load(path, weights_only=True)`` reads, with two extra
entries:

* ``"format"`` – ``"rpnkit-train-state-2"`` (training state) or ``"rpnkit-model-2"``
  (final / best model);
* ``"sha256"`` – the SHA-256 of the dict's content (every other entry, in order: tensors by
  dtype, shape and raw bytes; numbers, strings, lists and dicts by value; see
  :func:`content_digest`).

:func:`load_checked` reads such a file and refuses it – with a
:class:`CheckpointError` that names the file – when it is empty, truncated or unreadable,
when its content no longer matches its checksum (a flipped bit, an edited field), or when
it has no checksum and is not a legacy (``-1``) file. :func:`check_train_state` and
:func:`check_model_file` then validate the fields against the model and the config.

Writes go through :func:`atomic_write`: a temporary file in the same folder, flushed and
``fsync``-ed, given the usual permissions (``0666`` less the umask; ``mkstemp`` would leave
``0600``), renamed over the target and the folder ``fsync``-ed. A crash at any moment
leaves either the old file or the new one, never a partial one; a failed write (a full
disk) raises :class:`OSError` and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor

from ..errors import ConfigurationError

__all__ = [
    "CheckpointError",
    "TRAIN_STATE_FORMAT",
    "MODEL_FORMAT",
    "CHECKSUM_KEY",
    "content_digest",
    "atomic_write",
    "atomic_torch_save",
    "load_checked",
    "check_train_state",
    "check_model_file",
    "check_state_dict",
    "file_mode",
]

TRAIN_STATE_FORMAT = "rpnkit-train-state-2"
MODEL_FORMAT = "rpnkit-model-2"
CHECKSUM_KEY = "sha256"
_TRAIN_FORMATS = ("rpnkit-train-state-1", TRAIN_STATE_FORMAT)
_MODEL_FORMATS = ("rpnkit-model-1", MODEL_FORMAT)
_LEGACY = ("rpnkit-train-state-1", "rpnkit-model-1")  # written before checksums: fields only


class CheckpointError(ConfigurationError):
    """A checkpoint or model file is empty, truncated, corrupt, modified or inconsistent."""


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError), \
            open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    old = os.umask(0o022)  # no /proc: read it by setting it (and put it back at once)
    os.umask(old)
    return old


def file_mode() -> int:
    """The mode a newly created file gets (``0666`` less the umask, usually ``0644``)."""
    return 0o666 & ~_umask()


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in ``folder`` durable (no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


class _Sink:
    """A file wrapper that keeps the first OSError of ``write`` (torch.save reports a failed
    write as an opaque RuntimeError; this recovers the real cause, e.g. ENOSPC)."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.error: OSError | None = None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.f.flush()


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write ``path`` through ``write(file)`` atomically and durably (see the module doc)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    sink = None
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _Sink(f)
            try:
                write(sink)
            except RuntimeError:
                if sink.error is not None:
                    raise sink.error from None
                raise
            if sink.error is not None:
                raise sink.error
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            raise OSError(exc.errno, exc.strerror, str(path)) from None  # name the target
        raise
    fsync_dir(path.parent)


def atomic_torch_save(obj: Any, path: Path, checksum: bool = True) -> None:
    """``torch.save(obj)`` to ``path`` atomically; a dict gets a ``"sha256"`` entry (its
    :func:`content_digest`) unless ``checksum`` is false."""
    if checksum and isinstance(obj, Mapping):
        body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        obj = {**body, CHECKSUM_KEY: content_digest(body)}
    atomic_write(path, lambda f: torch.save(obj, f))


# --------------------------------------------------------------------------- checksum


def content_digest(obj: Any) -> str:
    """SHA-256 of ``obj``'s content: tensors by dtype, shape and bytes, containers in order,
    scalars by exact value (floats by ``float.hex``). Equal after a save/load round trip."""
    h = hashlib.sha256(b"rpnkit-content-digest-1\0")
    _feed(h, obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"T" if obj else b"F")
    elif isinstance(obj, int):
        h.update(b"i%d;" % obj)
    elif isinstance(obj, float):
        h.update(b"f" + float(obj).hex().encode() + b";")
    elif isinstance(obj, str):
        b = obj.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(b))
        h.update(b)
    elif isinstance(obj, (bytes, bytearray)):
        h.update(b"b%d:" % len(obj))
        h.update(bytes(obj))
    elif isinstance(obj, Tensor):
        _feed_tensor(h, obj)
    elif isinstance(obj, Mapping):
        h.update(b"d%d:" % len(obj))
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update((b"l" if isinstance(obj, list) else b"t") + b"%d:" % len(obj))
        for v in obj:
            _feed(h, v)
    else:  # torch.dtype, torch.device, ...: by type and repr
        text = f"{type(obj).__module__}.{type(obj).__qualname__}:{obj!r}".encode()
        h.update(b"o%d:" % len(text))
        h.update(text)


def _feed_tensor(h, t: Tensor) -> None:
    t = t.detach()
    head = f"{t.dtype}|{tuple(t.shape)}|{t.layout}".encode()
    h.update(b"x%d:" % len(head))
    h.update(head)
    if t.layout != torch.strided or t.is_quantized:
        _feed(h, repr(t.cpu()))
        return
    flat = t.cpu().resolve_conj().resolve_neg().contiguous().reshape(-1)
    if flat.numel():
        h.update(memoryview(flat.view(torch.uint8).numpy()))


# --------------------------------------------------------------------------- reading


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    text = text.split(". ")[0]  # torch's messages go on with advice that does not apply here
    return text if len(text) <= 120 else text[:117] + "..."


def load_checked(path: Path, what: str = "checkpoint") -> dict[str, Any]:
    """Read ``path`` (``weights_only``) and verify its checksum; returns the dict without it.

    Raises :class:`CheckpointError` (one line, naming the file) for a missing, empty,
    truncated, unreadable, corrupt or modified file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if size == 0:
        raise CheckpointError(f"{what} {path} is empty (0 bytes): refusing it")
    try:
        with warnings.catch_warnings():  # a damaged file makes torch warn before it fails
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch reports damage as RuntimeError, UnpicklingError, ...
        raise CheckpointError(
            f"{what} {path} is truncated or corrupt and cannot be read ({_reason(exc)})"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path} is not an rpnkit file (it holds a "
                              f"{type(obj).__name__}, not a dict)")
    if CHECKSUM_KEY in obj:
        body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
        try:
            ok = isinstance(obj[CHECKSUM_KEY], str) and content_digest(body) == obj[CHECKSUM_KEY]
        except Exception:  # content the digest cannot walk: not what rpnkit wrote
            ok = False
        if not ok:
            raise CheckpointError(f"{what} {path} fails its sha256 check (the file is corrupt or "
                                  "was modified): refusing it")
        return body
    if obj.get("format") in _LEGACY:
        return obj
    raise CheckpointError(f"{what} {path} has no checksum and format "
                          f"{obj.get('format')!r}: not an rpnkit checkpoint, refusing it")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_state_dict(sd: Any, expected: Mapping[str, Tensor], where: str) -> None:
    """``sd`` has exactly ``expected``'s keys, each a tensor of the same shape."""
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{where} is not a state dict")
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {extra[:3]}{' ...' if len(extra) > 3 else ''}")
        raise CheckpointError(f"{where} does not match the model: {', '.join(parts)} keys")
    for k, ref in expected.items():
        v = sd[k]
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{where}[{k!r}] is not a tensor")
        if tuple(v.shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}[{k!r}] has shape {tuple(v.shape)}, the model "
                                  f"needs {tuple(ref.shape)}")


def _fail(prefix: str, text: str) -> CheckpointError:
    return CheckpointError(f"{prefix}{text}")


def check_train_state(state: Any, model: torch.nn.Module | None = None,
                      epochs: int | None = None, path: Path | None = None) -> None:
    """Validate a training state (``checkpoint.pt``) before it is resumed.

    Checks the format tag, the types of every field, ``0 <= epoch <= epochs``,
    ``batch >= 0`` (0 at the last epoch), one history record per finished epoch, and that
    the weights (and the best weights) have the model's keys and shapes.
    """
    pre = f"checkpoint {path}: " if path is not None else "resume state: "
    if not isinstance(state, Mapping):
        raise _fail(pre, "not a dict")
    if state.get("format") not in _TRAIN_FORMATS:
        raise _fail(pre, f"format {state.get('format')!r} is not an rpnkit training state")
    need = ("model", "optimizer", "generator", "torch_rng", "history", "best", "best_value",
            "best_state", "bad_epochs", "epoch", "batch", "acc_loss", "acc_n")
    absent = [k for k in need if k not in state]
    if absent:
        raise _fail(pre, f"fields {absent} are missing")
    epoch, batch = state["epoch"], state["batch"]
    if not _is_int(epoch) or epoch < 0:
        raise _fail(pre, f"epoch must be an integer >= 0, got {epoch!r}")
    if epochs is not None and epoch > epochs:
        raise _fail(pre, f"epoch {epoch} is past the configured {epochs} epochs")
    if not _is_int(batch) or batch < 0:
        raise _fail(pre, f"batch must be an integer >= 0, got {batch!r}")
    if epochs is not None and epoch == epochs and batch != 0:
        raise _fail(pre, f"batch {batch} after the last epoch")
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
        raise _fail(pre, "history is not a list of records")
    if len(history) != epoch:
        raise _fail(pre, f"history has {len(history)} records for epoch {epoch}")
    if any(h.get("epoch") != i + 1 for i, h in enumerate(history)):
        raise _fail(pre, "history records are not numbered 1, 2, ...")
    for key in ("bad_epochs", "acc_n"):
        if not _is_int(state[key]) or state[key] < 0:
            raise _fail(pre, f"{key} must be an integer >= 0, got {state[key]!r}")
    if not _is_num(state["acc_loss"]) or not math.isfinite(state["acc_loss"]):
        raise _fail(pre, f"acc_loss must be a finite number, got {state['acc_loss']!r}")
    if state["best_value"] is not None and not _is_num(state["best_value"]):
        raise _fail(pre, "best_value must be a number or null")
    if not isinstance(state["best"], Mapping):
        raise _fail(pre, "best is not a dict")
    if state.get("stopped") is not None and not isinstance(state["stopped"], Mapping):
        raise _fail(pre, "stopped is not a dict")
    seconds = state.get("seconds", 0.0)
    if not _is_num(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise _fail(pre, f"seconds must be a number >= 0, got {seconds!r}")
    for key in ("generator", "torch_rng"):
        t = state[key]
        if not isinstance(t, Tensor) or t.dtype != torch.uint8 or t.dim() != 1:
            raise _fail(pre, f"{key} is not a random-generator state")
    perm = state.get("perm")
    if perm is not None and (not isinstance(perm, Tensor) or perm.dim() != 1
                             or perm.dtype != torch.int64):
        raise _fail(pre, "perm is not a 1-D int64 permutation")
    opt = state["optimizer"]
    if not isinstance(opt, Mapping) or not isinstance(opt.get("state"), Mapping) \
            or not isinstance(opt.get("param_groups"), list):
        raise _fail(pre, "optimizer is not an optimizer state dict")
    if state.get("scheduler") is not None and not isinstance(state["scheduler"], Mapping):
        raise _fail(pre, "scheduler is not a scheduler state dict")
    if model is not None:
        expected = model.state_dict()
        check_state_dict(state["model"], expected, f"{pre}model weights")
        if state["best_state"] is not None:
            check_state_dict(state["best_state"], expected, f"{pre}best weights")
        if state.get("last_good") is not None:
            check_state_dict(state["last_good"], expected, f"{pre}last good weights")
        n_params = sum(1 for p in model.parameters() if p.requires_grad)
        n_saved = sum(len(g.get("params", ())) for g in opt["param_groups"]
                      if isinstance(g, Mapping))
        if n_saved != n_params:
            raise _fail(pre, f"the optimizer state is for {n_saved} parameters, the model "
                             f"has {n_params}")


def check_model_file(payload: Any, path: Path, model: torch.nn.Module | None = None,
                     epochs: int | None = None) -> None:
    """Validate a ``model.pt`` / ``best.pt`` payload (format, epoch, weights vs ``model``)."""
    pre = f"{path}: "
    if not isinstance(payload, Mapping) or payload.get("format") not in _MODEL_FORMATS:
        fmt = payload.get("format") if isinstance(payload, Mapping) else None
        raise _fail(pre, f"format {fmt!r} is not an rpnkit model file")
    epoch = payload.get("epoch")
    if not _is_int(epoch) or epoch < 0 or (epochs is not None and epoch > epochs):
        bound = f" and <= {epochs}" if epochs is not None else ""
        raise _fail(pre, f"epoch must be an integer >= 0{bound}, got {epoch!r}")
    if not isinstance(payload.get("config"), Mapping):
        raise _fail(pre, "config is missing")
    if model is not None:
        check_state_dict(payload.get("state_dict"), model.state_dict(), f"{pre}state_dict")
    elif not isinstance(payload.get("state_dict"), Mapping):
        raise _fail(pre, "state_dict is missing")
