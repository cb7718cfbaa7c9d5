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
it has no checksum. The checksum only shows that a file is intact, not that its content is
sound: :func:`check_train_state` and :func:`check_model_file` then validate every field
structurally (types, ranges, finite values, every tensor's shape and dtype against the
model, the optimizer and the scheduler being restored), so that a crafted file with a
valid checksum is refused with one line naming the file and the field.

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
import stat
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
    "check_optimizer_state",
    "check_scheduler_state",
    "check_preprocessing",
    "file_mode",
]

TRAIN_STATE_FORMAT = "rpnkit-train-state-2"
MODEL_FORMAT = "rpnkit-model-2"
CHECKSUM_KEY = "sha256"
_TRAIN_FORMATS = (TRAIN_STATE_FORMAT,)
_MODEL_FORMATS = (MODEL_FORMAT,)


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


def load_checked(path: Path, what: str = "checkpoint",
                 formats: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Read ``path`` (``weights_only``) and verify its checksum; returns the dict without it.

    Raises :class:`CheckpointError` (one line, naming the file) for a missing, empty,
    truncated, unreadable, corrupt or modified file, for one that is not a regular file, and
    for one without a checksum (every file rpnkit writes has one: relabelling the format or
    dropping the ``sha256`` entry does not bypass it). With ``formats``, the ``format`` tag
    must be one of them.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block, a device never end
        raise CheckpointError(f"{what} {path} is not a regular file: refusing it")
    if st.st_size == 0:
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
    if CHECKSUM_KEY not in obj:
        raise CheckpointError(f"{what} {path} has no sha256 checksum (format "
                              f"{_short(obj.get('format'))}): not a file rpnkit wrote, refusing it")
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    try:
        ok = isinstance(obj[CHECKSUM_KEY], str) and content_digest(body) == obj[CHECKSUM_KEY]
    except Exception:  # content the digest cannot walk: not what rpnkit wrote
        ok = False
    if not ok:
        raise CheckpointError(f"{what} {path} fails its sha256 check (the file is corrupt or "
                              "was modified): refusing it")
    if formats is not None and body.get("format") not in formats:
        raise CheckpointError(f"{what} {path}: format {_short(body.get('format'))} is not "
                              f"{' or '.join(formats)}: refusing it")
    return body


def _short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite_num(v: Any) -> bool:
    return _is_num(v) and math.isfinite(v)


def _all_finite(t: Tensor) -> bool:
    return not t.is_floating_point() or t.is_meta or bool(torch.isfinite(t).all())


def _check_tensor(v: Any, ref: Tensor, where: str, dtype: torch.dtype | None = None,
                  needs: str = "the model needs") -> None:
    """``v`` is a dense tensor of ``ref``'s shape and dtype (``dtype`` for floating ``ref``
    when given) with finite values wherever ``ref`` is finite."""
    if not isinstance(v, Tensor):
        raise CheckpointError(f"{where} is not a tensor ({type(v).__name__})")
    if v.layout != torch.strided or v.is_quantized:
        raise CheckpointError(f"{where} is not a dense tensor ({v.layout})")
    if tuple(v.shape) != tuple(ref.shape):
        raise CheckpointError(f"{where} has shape {tuple(v.shape)}, {needs} {tuple(ref.shape)}")
    want = dtype if dtype is not None and ref.is_floating_point() else ref.dtype
    if v.dtype != want:
        raise CheckpointError(f"{where} has dtype {v.dtype}, {needs} {want}")
    if v.is_floating_point() and not _all_finite(v) and _all_finite(ref):
        raise CheckpointError(f"{where} holds NaN or inf values")


def check_state_dict(sd: Any, expected: Mapping[str, Tensor], where: str,
                     dtype: torch.dtype | None = None) -> None:
    """``sd`` has exactly ``expected``'s keys, each a dense tensor of the same shape and
    dtype (``dtype`` for the floating ones when given) and finite where ``expected`` is."""
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise CheckpointError(f"{where} is not a state dict")
    missing = [k for k in expected if k not in sd]
    extra = [k for k in sd if k not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if extra:
            parts.append(f"unexpected {[_short(k, 40) for k in extra[:3]]}"
                         f"{' ...' if len(extra) > 3 else ''}")
        raise CheckpointError(f"{where} does not match the model: {', '.join(parts)} keys")
    for k, ref in expected.items():
        _check_tensor(sd[k], ref, f"{where}[{k!r}]", dtype)


def _fail(prefix: str, text: str) -> CheckpointError:
    return CheckpointError(f"{prefix}{text}")


# --------------------------------------------------------------------------- optimizer state

# what each entry of an optimizer's per-parameter state holds
_PARAM, _PARAM_OR_NONE, _SCALAR, _FLAT, _FLATS, _SCALARS, _SCALARS_OR_NONE, _COUNT, _NUM = (
    "a tensor of the parameter's shape", "a tensor of the parameter's shape or null",
    "a finite number", "a flat tensor of all parameters", "a list of flat tensors",
    "a list of numbers", "a list of numbers or nulls", "an integer >= 0",
    "a finite number (not a tensor)")
_ADAM = {"step": _SCALAR, "exp_avg": _PARAM, "exp_avg_sq": _PARAM, "max_exp_avg_sq": _PARAM}
_OPTIMIZER_STATE: tuple[tuple[type, dict[str, str]], ...] = (
    (torch.optim.Adam, _ADAM),
    (torch.optim.AdamW, _ADAM),
    (torch.optim.SGD, {"momentum_buffer": _PARAM_OR_NONE}),
    (torch.optim.LBFGS, {"func_evals": _COUNT, "n_iter": _COUNT, "d": _FLAT, "t": _SCALAR,
                         "old_dirs": _FLATS, "old_stps": _FLATS, "ro": _SCALARS,
                         "H_diag": _SCALAR, "prev_flat_grad": _FLAT, "prev_loss": _NUM,
                         "al": _SCALARS_OR_NONE}),
)


def _state_kinds(optimizer: torch.optim.Optimizer) -> dict[str, str] | None:
    for cls, kinds in _OPTIMIZER_STATE:
        if isinstance(optimizer, cls):
            return kinds
    return None  # another optimizer: entries checked by a general rule


def _scalar_ok(v: Any) -> bool:
    if isinstance(v, Tensor):
        return (v.layout == torch.strided and v.dim() == 0 and v.is_floating_point()
                and _all_finite(v))
    return _finite_num(v)


def _check_entry(v: Any, kind: str | None, param: Tensor, flat: int, dtype: torch.dtype,
                 where: str, history: int | None) -> None:
    def tensor(x: Any, shape: tuple[int, ...], at: str) -> None:
        _check_tensor(x, torch.empty(shape, dtype=dtype, device="meta"), at, dtype,
                      "the optimizer needs")

    if kind is None:  # general rule: a number, or a finite tensor of the parameter's shape
        if v is None or isinstance(v, bool) or _scalar_ok(v):
            return
        tensor(v, tuple(param.shape), where)
    elif kind in (_PARAM, _PARAM_OR_NONE):
        if v is None and kind == _PARAM_OR_NONE:
            return
        tensor(v, tuple(param.shape), where)
    elif kind == _FLAT:
        tensor(v, (flat,), where)
    elif kind in (_SCALAR, _NUM):
        if not _scalar_ok(v) or (kind == _NUM and isinstance(v, Tensor)):
            raise CheckpointError(f"{where} must be {kind}, got {_short(v)}")
    elif kind == _COUNT:
        if not _is_int(v) or v < 0:
            raise CheckpointError(f"{where} must be {kind}, got {_short(v)}")
    else:  # lists
        if not isinstance(v, list) or (history is not None and len(v) > history):
            bound = f" of at most {history} entries" if history is not None else ""
            raise CheckpointError(f"{where} must be {kind}{bound}")
        for i, x in enumerate(v):
            if kind == _FLATS:
                tensor(x, (flat,), f"{where}[{i}]")
            elif not (_scalar_ok(x) or (x is None and kind == _SCALARS_OR_NONE)):
                raise CheckpointError(f"{where}[{i}] must be a finite number, got {_short(x)}")


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return False
    return type(a) is type(b) and a == b or (_is_num(a) and _is_num(b) and a == b)


def check_optimizer_state(saved: Any, optimizer: torch.optim.Optimizer, where: str,
                          dtype: torch.dtype | None = None) -> None:
    """``saved`` is a state dict of ``optimizer``: the same parameter groups (parameters,
    hyperparameters; only ``lr`` may differ, finite and >= 0) and, for every parameter, state
    entries of its shape and dtype with finite values (L-BFGS: flat vectors of all the
    group's parameters, at most ``history_size`` of them)."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("state"), Mapping) \
            or not isinstance(saved.get("param_groups"), list):
        raise CheckpointError(f"{where} is not an optimizer state dict")
    ref = optimizer.state_dict()
    groups, ref_groups = saved["param_groups"], ref["param_groups"]
    if len(groups) != len(ref_groups):
        raise CheckpointError(f"{where} has {len(groups)} parameter groups, the optimizer "
                              f"has {len(ref_groups)}")
    params: dict[int, tuple[Tensor, int, int | None]] = {}
    for gi, (g, rg) in enumerate(zip(groups, ref_groups)):
        at = f"{where} param_groups[{gi}]"
        if not isinstance(g, Mapping):
            raise CheckpointError(f"{at} is not a dict")
        if not isinstance(g.get("params"), list) or not all(_is_int(i) for i in g["params"]) \
                or g["params"] != rg["params"]:
            raise CheckpointError(f"{at} params is not the optimizer's parameters "
                                  f"{_short(rg['params'])}")
        for key, value in g.items():
            if key == "params":
                continue
            if key not in rg:
                raise CheckpointError(f"{at} has an unknown entry {_short(key, 40)}")
            if key == "lr":
                if not _finite_num(value) or value < 0:
                    raise CheckpointError(f"{at} lr must be a finite number >= 0, got "
                                          f"{_short(value)}")
            elif not _same_value(value, rg[key]):
                raise CheckpointError(f"{at} {key} is {_short(value)}, the configured "
                                      f"optimizer has {_short(rg[key])}")
        live = optimizer.param_groups[gi]["params"]
        flat = sum(p.numel() for p in live)
        history = optimizer.param_groups[gi].get("history_size")
        for pid, p in zip(rg["params"], live):
            params[pid] = (p, flat, history if _is_int(history) else None)
    kinds = _state_kinds(optimizer)
    for pid, entry in saved["state"].items():
        if not _is_int(pid) or pid not in params:
            raise CheckpointError(f"{where} state has an entry for {_short(pid, 40)}, which is "
                                  "not one of the optimizer's parameters")
        if not isinstance(entry, Mapping):
            raise CheckpointError(f"{where} state[{pid}] is not a dict")
        p, flat, history = params[pid]
        want = dtype if dtype is not None and p.is_floating_point() else p.dtype
        for key, value in entry.items():
            at = f"{where} state[{pid}][{_short(key, 40)}]"
            if kinds is not None and key not in kinds:
                raise CheckpointError(f"{at} is not an entry of "
                                      f"{type(optimizer).__name__}'s state")
            kind = None if kinds is None else kinds[key]
            if key == "step":  # a float32 counter whatever the parameters' dtype
                if not _scalar_ok(value) or value < 0:
                    raise CheckpointError(f"{at} must be a number >= 0, got {_short(value)}")
                continue
            _check_entry(value, kind, p, flat, want, at, history)


_SCHEDULER_PROGRESS = {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step",
                       "_is_initial", "verbose"}


def check_scheduler_state(saved: Any, scheduler: Any, where: str) -> None:
    """``saved`` is a state dict of ``scheduler``: its settings equal the configured ones, its
    progress (``last_epoch``, ``_step_count``, ``_last_lr`` ...) has sane types and ranges,
    and it has no other entries (they would become attributes of the scheduler)."""
    if scheduler is None:
        if saved is not None:
            raise CheckpointError(f"{where} is present but the config has no scheduler")
        return
    if not isinstance(saved, Mapping) or not all(isinstance(k, str) for k in saved):
        raise CheckpointError(f"{where} is not a scheduler state dict")
    ref = scheduler.state_dict()
    for key, value in saved.items():
        at = f"{where} {_short(key, 40)}"
        if key not in ref and key not in _SCHEDULER_PROGRESS:
            raise CheckpointError(f"{at} is not an entry of {type(scheduler).__name__}")
        if key in ("last_epoch", "_step_count"):
            if not _is_int(value) or not 0 <= value < 2**31:
                raise CheckpointError(f"{at} must be an integer >= 0, got {_short(value)}")
        elif key == "_last_lr":
            n = len(ref.get("_last_lr") or ref.get("base_lrs") or ())
            if not isinstance(value, list) or len(value) != n \
                    or not all(_finite_num(v) and v >= 0 for v in value):
                raise CheckpointError(f"{at} must be a list of {n} finite numbers >= 0")
        elif key in _SCHEDULER_PROGRESS:
            if not isinstance(value, bool):
                raise CheckpointError(f"{at} must be true or false, got {_short(value)}")
        elif not _same_value(value, ref[key]):
            raise CheckpointError(f"{at} is {_short(value)}, the configured scheduler has "
                                  f"{_short(ref[key])}")


# --------------------------------------------------------------------------- run files


def _check_records(value: Any, where: str, keys: set[str] | None = None) -> None:
    """``value`` is a dict of text keys (``keys`` only, when given) to numbers, text or null."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(f"{where} is not a record")
    unknown = [k for k in value if keys is not None and k not in keys]
    if unknown:
        raise CheckpointError(f"{where} has an unknown entry {_short(unknown[0], 40)}")
    for k, v in value.items():
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise CheckpointError(f"{where}[{k!r}] is not a number or text ({type(v).__name__})")


def check_train_state(state: Any, model: torch.nn.Module | None = None,
                      epochs: int | None = None, path: Path | None = None, *,
                      optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                      dtype: torch.dtype | None = None) -> None:
    """Validate a training state (``checkpoint.pt``) before it is resumed.

    Checks the format tag, the type and range of every field (``0 <= epoch <= epochs``,
    ``batch >= 0`` (0 at the last epoch), one history record per finished epoch, a finite
    ``acc_loss``, ``best_value`` a number (not NaN) or null, ``perm`` a permutation,
    random-generator states of the right size), that the weights (current, best, last good)
    have the model's keys, shapes and dtypes (``dtype`` for floating tensors when given) and
    finite values, and, with ``optimizer`` / ``scheduler``, that their saved states fit them
    (:func:`check_optimizer_state`, :func:`check_scheduler_state`).
    """
    pre = f"checkpoint {path}: " if path is not None else "resume state: "
    if not isinstance(state, Mapping):
        raise _fail(pre, "not a dict")
    if state.get("format") not in _TRAIN_FORMATS:
        raise _fail(pre, f"format {_short(state.get('format'))} is not an rpnkit training state")
    need = ("model", "optimizer", "generator", "torch_rng", "history", "best", "best_value",
            "best_state", "bad_epochs", "epoch", "batch", "acc_loss", "acc_n")
    absent = [k for k in need if k not in state]
    if absent:
        raise _fail(pre, f"fields {absent} are missing")
    epoch, batch = state["epoch"], state["batch"]
    if not _is_int(epoch) or epoch < 0:
        raise _fail(pre, f"epoch must be an integer >= 0, got {_short(epoch)}")
    if epochs is not None and epoch > epochs:
        raise _fail(pre, f"epoch {epoch} is past the configured {epochs} epochs")
    if not _is_int(batch) or batch < 0 or batch >= 2**62:
        raise _fail(pre, f"batch must be an integer >= 0, got {_short(batch)}")
    if epochs is not None and epoch == epochs and batch != 0:
        raise _fail(pre, f"batch {batch} after the last epoch")
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
        raise _fail(pre, "history is not a list of records")
    if len(history) != epoch:
        raise _fail(pre, f"history has {len(history)} records for epoch {epoch}")
    if any(not _is_int(h.get("epoch")) or h["epoch"] != i + 1 for i, h in enumerate(history)):
        raise _fail(pre, "history records are not numbered 1, 2, ...")
    for i, h in enumerate(history):
        _check_records(h, f"{pre}history[{i}]")
    for key in ("bad_epochs", "acc_n"):
        if not _is_int(state[key]) or state[key] < 0:
            raise _fail(pre, f"{key} must be an integer >= 0, got {_short(state[key])}")
    if not _finite_num(state["acc_loss"]):
        raise _fail(pre, f"acc_loss must be a finite number, got {_short(state['acc_loss'])}")
    bv = state["best_value"]
    if bv is not None and (not _is_num(bv) or math.isnan(bv)):
        raise _fail(pre, f"best_value must be a number (not NaN) or null, got {_short(bv)}")
    best = state["best"]
    _check_records(best, f"{pre}best", {"epoch", "monitor", "value", "note"})
    b_epoch = best.get("epoch", 0)
    if not _is_int(b_epoch) or not 0 <= b_epoch <= epoch:
        raise _fail(pre, f"best epoch must be an integer in [0, {epoch}], got {_short(b_epoch)}")
    if best.get("value") is not None and not _finite_num(best["value"]):
        raise _fail(pre, f"best value must be a finite number, got {_short(best['value'])}")
    for key in ("monitor", "note"):
        if best.get(key) is not None and not isinstance(best[key], str):
            raise _fail(pre, f"best {key} must be text, got {_short(best[key])}")
    stopped = state.get("stopped")
    if stopped is not None:
        _check_records(stopped, f"{pre}stopped", {"reason", "epoch", "restored_epoch", "cause"})
        if not isinstance(stopped.get("reason"), str) or not isinstance(stopped.get("cause", ""), str):
            raise _fail(pre, "stopped reason and cause must be text")
        for key in ("epoch", "restored_epoch"):
            v = stopped.get(key, 0)
            if not _is_int(v) or not 0 <= v <= epoch + 1:
                raise _fail(pre, f"stopped {key} must be an integer in [0, {epoch + 1}], got "
                                 f"{_short(v)}")
    seconds = state.get("seconds", 0.0)
    if not _finite_num(seconds) or seconds < 0:
        raise _fail(pre, f"seconds must be a number >= 0, got {_short(seconds)}")
    for key, size in (("generator", torch.Generator().get_state().numel()),
                      ("torch_rng", torch.get_rng_state().numel())):
        t = state[key]
        if not isinstance(t, Tensor) or t.dtype != torch.uint8 or tuple(t.shape) != (size,) \
                or t.layout != torch.strided:
            raise _fail(pre, f"{key} is not a random-generator state ({size} bytes)")
    cuda_rng = state.get("cuda_rng")
    if cuda_rng is not None and (not isinstance(cuda_rng, Tensor) or cuda_rng.dtype != torch.uint8
                                 or cuda_rng.dim() != 1 or cuda_rng.layout != torch.strided):
        raise _fail(pre, "cuda_rng is not a random-generator state")
    perm = state.get("perm")
    if perm is not None:
        if not isinstance(perm, Tensor) or perm.dim() != 1 or perm.dtype != torch.int64 \
                or perm.layout != torch.strided:
            raise _fail(pre, "perm is not a 1-D int64 permutation")
        if not torch.equal(torch.sort(perm).values, torch.arange(perm.numel())):
            raise _fail(pre, f"perm is not a permutation of 0 .. {perm.numel() - 1}")
    opt = state["optimizer"]
    if not isinstance(opt, Mapping) or not isinstance(opt.get("state"), Mapping) \
            or not isinstance(opt.get("param_groups"), list):
        raise _fail(pre, "optimizer is not an optimizer state dict")
    if state.get("scheduler") is not None and not isinstance(state["scheduler"], Mapping):
        raise _fail(pre, "scheduler is not a scheduler state dict")
    if model is not None:
        expected = model.state_dict()
        check_state_dict(state["model"], expected, f"{pre}model weights", dtype)
        if state["best_state"] is not None:
            check_state_dict(state["best_state"], expected, f"{pre}best weights", dtype)
        if state.get("last_good") is not None:
            check_state_dict(state["last_good"], expected, f"{pre}last good weights", dtype)
        n_params = sum(1 for p in model.parameters() if p.requires_grad)
        if not all(isinstance(g, Mapping) and isinstance(g.get("params"), list)
                   for g in opt["param_groups"]):
            raise _fail(pre, "optimizer param_groups are not parameter groups")
        n_saved = sum(len(g["params"]) for g in opt["param_groups"])
        if n_saved != n_params:
            raise _fail(pre, f"the optimizer state is for {n_saved} parameters, the model "
                             f"has {n_params}")
    if optimizer is not None:
        check_optimizer_state(opt, optimizer, f"{pre}optimizer", dtype)
        check_scheduler_state(state.get("scheduler"), scheduler, f"{pre}scheduler")


def check_preprocessing(pre: Any, where: str, inputs: int | None = None,
                        outputs: int | None = None) -> None:
    """A model file's ``preprocessing`` (see :func:`rpnkit.predict.preprocessing_of`): task,
    loss, names, class labels, and finite standardisation statistics with positive scales
    of the model's input / output widths."""
    if pre is None:  # written before preprocessing was saved: refitted from the data
        return
    if not isinstance(pre, Mapping):
        raise CheckpointError(f"{where} is not a dict")
    task = pre.get("task")
    if task not in ("regression", "classification"):
        raise CheckpointError(f"{where} task must be 'regression' or 'classification', got "
                              f"{_short(task)}")
    if not isinstance(pre.get("loss"), str):
        raise CheckpointError(f"{where} loss is not a name")
    for key in ("feature_names", "target_names"):
        v = pre.get(key)
        if v is not None and (not isinstance(v, list) or not all(isinstance(s, str) for s in v)):
            raise CheckpointError(f"{where} {key} is not a list of names")
    names = pre.get("feature_names") or []
    if names and inputs is not None and len(names) != inputs:
        raise CheckpointError(f"{where} feature_names has {len(names)} names, the model takes "
                              f"{inputs} features")
    classes = pre.get("classes")
    if task == "classification":
        if not isinstance(classes, list) or not classes or not all(
                isinstance(c, (str, bool, int)) or _finite_num(c) for c in classes):
            raise CheckpointError(f"{where} classes is not a list of class labels")
        need = 2 if pre.get("loss") == "bce" else outputs
        if need is not None and len(classes) < need:
            raise CheckpointError(f"{where} classes has {len(classes)} labels, the model has "
                                  f"{need} class outputs")
    if pre.get("class_dtype") is not None and not isinstance(pre["class_dtype"], str):
        raise CheckpointError(f"{where} class_dtype is not a dtype name")
    for mean, std, width in (("x_mean", "x_std", inputs), ("y_mean", "y_std",
                                                           outputs if task == "regression" else None)):
        m, s = pre.get(mean), pre.get(std)
        if m is None and s is None:
            continue
        for key, v in ((mean, m), (std, s)):
            if not isinstance(v, list) or not all(_finite_num(x) for x in v):
                raise CheckpointError(f"{where} {key} is not a list of finite numbers")
            if width is not None and len(v) != width:
                raise CheckpointError(f"{where} {key} has {len(v)} values, the model has {width}")
        if len(m) != len(s):
            raise CheckpointError(f"{where} {mean} and {std} differ in length")
        bad = [i for i, x in enumerate(s) if x <= 0]
        if bad:
            raise CheckpointError(f"{where} {std}[{bad[0]}] is {s[bad[0]]!r}: a scale must be > 0")


def check_model_file(payload: Any, path: Path, model: torch.nn.Module | None = None,
                     epochs: int | None = None, *, dtype: torch.dtype | None = None,
                     inputs: int | None = None, outputs: int | None = None) -> None:
    """Validate a ``model.pt`` / ``best.pt`` payload: format, kind, epoch (``<= epochs``),
    config, the weights against ``model`` (keys, shapes, dtypes, finite values) and the
    preprocessing (:func:`check_preprocessing`)."""
    pre = f"{path}: "
    if not isinstance(payload, Mapping) or payload.get("format") not in _MODEL_FORMATS:
        fmt = payload.get("format") if isinstance(payload, Mapping) else None
        raise _fail(pre, f"format {_short(fmt)} is not an rpnkit model file")
    if payload.get("kind", "final") not in ("final", "best"):
        raise _fail(pre, f"kind must be 'final' or 'best', got {_short(payload.get('kind'))}")
    epoch = payload.get("epoch")
    if not _is_int(epoch) or epoch < 0 or (epochs is not None and epoch > epochs):
        bound = f" and <= {epochs}" if epochs is not None else ""
        raise _fail(pre, f"epoch must be an integer >= 0{bound}, got {_short(epoch)}")
    if not isinstance(payload.get("config"), Mapping):
        raise _fail(pre, "config is missing")
    if model is not None:
        check_state_dict(payload.get("state_dict"), model.state_dict(), f"{pre}state_dict", dtype)
    elif not isinstance(payload.get("state_dict"), Mapping):
        raise _fail(pre, "state_dict is missing")
    check_preprocessing(payload.get("preprocessing"), f"{pre}preprocessing", inputs, outputs)
