"""Streaming datasets: data larger than memory, read block by block.

:func:`open_stream` opens a source by name (see :data:`STREAM_SOURCES`) and returns a
:class:`StreamingBundle`, the streaming counterpart of :class:`rpnkit.data.DataBundle`:
the same descriptive attributes, but the rows stay on disk (or are generated on
demand) and are served by :meth:`StreamingBundle.batches`. Peak memory is
O(block + batch) plus small per-block index arrays (a few int64 per block).

Blocks
    Every source is cut into *blocks* of consecutive rows, the unit of reading:
    ``block_rows`` rows (default 4096) for ``npy``, ``csv`` and ``function``, one row
    group for ``parquet`` (write parquet files with row groups of a few thousand rows;
    a block is held in memory whole while it is being served).

Row-to-split assignment (deterministic from ``seed``, the split fractions and the blocks)
    The split sizes are those of :func:`rpnkit.data.load_data`: ``n_val = round(f_val N)``,
    ``n_test = round(f_test N)``, ``n_train = N - n_val - n_test`` (integer counts are
    accepted as there). Block ``i`` holding global rows ``[s, e)`` receives
    ``T(e) - T(s)`` non-training rows with ``T(r) = floor(r (n_val + n_test) / N)``;
    numbering the non-training rows ``q = 0, 1, ...`` in block order, the first
    ``V(T(e)) - V(T(s))`` of the block's go to val with ``V(q) = floor(q n_val / (n_val +
    n_test))`` and the others to test. Which rows of the block those are is a permutation
    drawn from ``default_rng([seed, 2, i])``. So every row is in exactly one split, the
    sizes are exact and every split is spread evenly over the file. Changing
    ``block_rows`` changes the assignment.

Epoch order (``batches``)
    For ``(seed, epoch)`` with ``shuffle`` the blocks holding rows of the split are
    permuted (``default_rng([seed, epoch, 3, split])``) and the split's rows inside each
    block are permuted as the block is read (``default_rng([seed, epoch, 4, split,
    block])``); without ``shuffle`` the order is the natural row order. Global batch ``b``
    is ``order[b B : (b + 1) B]``; rank ``r`` of ``world`` receives the rows at positions
    ``r, r + world, ...`` of it. The output does not depend on ``num_workers``.

Validation
    File sources are scanned once at open time (``validate: true``, the default; the
    scan is also needed for class labels and for standardisation), so missing files,
    bad columns, non-numbers and NaN/inf values are reported before training, with the
    row (0-based array/row-group row, or the CSV file line). Every block is checked
    again as it is read. The ``function`` source checks its first block at open time.

Class labels (``task: classification``)
    Kept exactly, never converted through float. Text labels (CSV, parquet strings)
    follow the rule of :mod:`rpnkit.data.sources`: integers in digits or non-numeric
    text; empty, ``nan``/``inf``, ``1.5`` and ``1.0`` are refused, as are two spellings
    of one integer (``7``, ``007``). Numeric arrays: integers as they are (uint64 above
    the int64 range refused); floats must hold whole numbers below 2**53 (float64; the
    type's exact-integer limit in general). Fewer than two classes are refused.

``npy`` files are read with positional reads of the rows needed (the header is taken
from a memory map of the file); reading a whole file through a memory map would count
every touched page in the process's resident set.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..errors import ConfigurationError, did_you_mean
from ..registry import Registry
from .formula import Formula, parse_formula
from .readers import check_bom, check_unique_names, csv_error, decode_text, label_text
from .scaling import Standardised
from .sources import (
    _check_ranges,
    check_label_spellings,
    check_text_labels,
    float_column,
    sort_labels,
)

__all__ = [
    "STREAM_SOURCES",
    "STREAMS",
    "MissingPackageError",
    "StreamingBundle",
    "open_stream",
    "split_block_counts",
]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
DEFAULT_BLOCK_ROWS = 4096
MAX_BLOCK_ROWS = 10_000_000
MAX_CLASSES = 10_000
MAX_FUNCTION_ROWS = 10**10
TASKS = ("regression", "classification")

STREAMS = Registry("stream source")


class MissingPackageError(ConfigurationError, ImportError):
    """An optional package needed by the requested feature is not installed."""


# ----------------------------------------------------------------------------- helpers
def _muldiv(a: np.ndarray, p: int, q: int) -> np.ndarray:
    """Exact ``floor(a * p / q)`` for non-negative int64 ``a`` (Python ints on overflow)."""
    a = np.asarray(a, dtype=np.int64)
    if q == 0 or p == 0 or a.size == 0:
        return np.zeros_like(a)
    if int(a.max()) * p < 2**62:
        return (a * p) // q
    return np.array([v * p // q for v in a.tolist()], dtype=np.int64)


def split_block_counts(block_sizes: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Rows of each block per split, shape (3, n_blocks), for split sizes (train, val, test).

    See the module docstring for the rule; columns sum to the block sizes and rows to
    ``sizes``.
    """
    block_sizes = np.asarray(block_sizes, dtype=np.int64)
    n_train, n_val, n_test = (int(v) for v in sizes)
    n = int(block_sizes.sum())
    if n_train + n_val + n_test != n:
        raise ConfigurationError(f"split sizes {tuple(sizes)} do not add up to {n} rows")
    offsets = np.zeros(len(block_sizes) + 1, dtype=np.int64)
    np.cumsum(block_sizes, out=offsets[1:])
    nontrain = n_val + n_test
    t = _muldiv(offsets, nontrain, n)
    v = _muldiv(t, n_val, nontrain)
    out = np.empty((3, len(block_sizes)), dtype=np.int64)
    out[1] = np.diff(v)
    out[2] = np.diff(t) - out[1]
    out[0] = block_sizes - np.diff(t)
    return out


def _check_int(value: Any, what: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
        high is not None and value > high
    ):
        bound = f"from {low:,} to {high:,}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{what} must be an integer {bound}, got {value!r}")
    return int(value)


def _existing_file(path: Any, what: str) -> Path:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigurationError(f"{what} needs a file path, got {path!r}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigurationError(f"{what} file {str(path)!r} does not exist")
    return p


def _check_task(task: Any, what: str) -> str:
    if task not in TASKS:
        raise ConfigurationError(f"{what}: task must be regression or classification, got {task!r}")
    return str(task)


def _check_finite(a: np.ndarray, what: str, columns: Sequence[str],
                  where: Callable[[int], str]) -> None:
    """Raise naming the first row (``where(j)``) and column holding NaN or inf."""
    bad = ~np.isfinite(a)
    if not bad.any():
        return
    bad2 = bad.reshape(len(a), -1)
    j = int(np.flatnonzero(bad2.any(axis=1))[0])
    c = int(np.flatnonzero(bad2[j])[0])
    value = a.reshape(len(a), -1)[j, c]
    kind = "NaN" if np.isnan(value) else "inf"
    raise ConfigurationError(
        f"{what}: {kind} value in column {columns[c]!r} at {where(j)}; clean the data "
        "(streamed data must be finite)"
    )


def _resolve_column(key: Any, names: list[str], what: str) -> int:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise ConfigurationError(f"{what}: a column is a name or an index, got {key!r}")
    if isinstance(key, int):
        if not -len(names) <= key < len(names):
            raise ConfigurationError(
                f"{what}: column index {key} out of range (0..{len(names) - 1})"
            )
        return key % len(names)
    if key not in names:
        raise ConfigurationError(
            f"{what}: no column {key!r}{did_you_mean(key, names)}; columns: {', '.join(names)}"
        )
    return names.index(key)


def _resolve_columns(target: Any, features: Any, names: list[str], what: str) -> tuple[int, list[int]]:
    tcol = _resolve_column(-1 if target is None else target, names, what)
    if features is None:
        fcols = [i for i in range(len(names)) if i != tcol]
    else:
        if not isinstance(features, (list, tuple)) or not features:
            raise ConfigurationError(f"{what}: features must be a non-empty list of columns")
        fcols = [_resolve_column(f, names, what) for f in features]
        if tcol in fcols:
            raise ConfigurationError(f"{what}: the target column {names[tcol]!r} is also a feature")
        if len(set(fcols)) != len(fcols):
            raise ConfigurationError(f"{what}: a feature column is listed twice")
    if not fcols:
        raise ConfigurationError(f"{what}: no feature columns")
    return tcol, fcols


_sorted_labels = sort_labels  # class labels in order (see rpnkit.data.sources)


_float_column = float_column  # shared with the in-memory CSV reader


# ----------------------------------------------------------------------------- sources
class _Source:
    """A row source cut into blocks. Subclasses set the attributes and implement ``_read``."""

    task = "regression"
    feature_names: list[str]
    target_names: list[str]
    block_sizes: np.ndarray
    formula: Formula | None = None
    ranges: list[tuple[float, float]] | None = None
    validate = True
    seed = 0

    @property
    def n_rows(self) -> int:
        return int(self.block_sizes.sum())

    @property
    def offsets(self) -> np.ndarray:
        out = np.zeros(len(self.block_sizes) + 1, dtype=np.int64)
        np.cumsum(self.block_sizes, out=out[1:])
        return out

    def info(self) -> dict[str, Any]:
        return {}

    def locate(self, i: int, j: int) -> str:
        """Where row ``j`` of block ``i`` is, for messages."""
        return f"row {int(self.offsets[i]) + j} (0-based)"

    def read(self, i: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Block ``i`` (only ``rows`` of it when given): features (n, m) float64, finite;
        targets (n, k) float64, finite, or raw class labels (n,) (int64 or str objects)."""
        raise NotImplementedError


def _labels_from_numbers(y: np.ndarray, what: str, where: Callable[[int], str]) -> np.ndarray:
    """Exact int64 class labels from a numeric array.

    Integers are kept as they are (uint64 values above the int64 range are refused);
    floats must hold whole numbers below the float type's exact-integer limit (2**53
    for float64): a larger float may be a rounded label (10**18 + 1 reads as 10**18),
    so it is refused rather than guessed.
    """
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind in "iu":
        if y.dtype.kind == "u" and y.dtype.itemsize >= 8 and len(y):
            big = y > np.iinfo(np.int64).max
            if big.any():
                j = int(np.flatnonzero(big)[0])
                raise ConfigurationError(
                    f"{what}: class label {int(y[j])} at {where(j)} is too large (above "
                    "2**63 - 1); store class labels as int64"
                )
        return y.astype(np.int64)
    limit = 2.0 ** (np.finfo(y.dtype).nmant + 1)
    with np.errstate(invalid="ignore"):
        fractional = ~np.isfinite(y) | (y != np.round(y))
        large = ~fractional & (np.abs(y) >= limit)
    bad = fractional | large
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        if fractional[j]:
            raise ConfigurationError(
                f"{what}: class label {y[j]!r} at {where(j)} is not an integer (classification "
                "labels in numeric data must be whole numbers)"
            )
        raise ConfigurationError(
            f"{what}: class label {y[j]!r} at {where(j)} is too large to be an exact integer "
            f"in a {y.dtype} array (from {limit:.0f} on, neighbouring integers share one "
            "value); store class labels as integers"
        )
    return y.astype(np.int64)


class _NpyFile:
    """A .npy file read by row ranges (positional reads; Fortran order via a memory map)."""

    def __init__(self, path: Any, what: str) -> None:
        self.path = _existing_file(path, what)
        try:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ConfigurationError(f"{what} {str(path)!r} is not a readable .npy array: {exc}") from None
        if not isinstance(mm, np.memmap):
            raise ConfigurationError(f"{what} {str(path)!r} is not a .npy array file")
        if mm.dtype.kind not in "biuf" or mm.dtype.fields is not None:
            raise ConfigurationError(
                f"{what} {str(path)!r} holds dtype {mm.dtype}, not real numbers"
            )
        self.shape = tuple(int(s) for s in mm.shape)
        self.dtype = mm.dtype
        self.offset = int(mm.offset)
        self.fortran = bool(mm.flags.f_contiguous and not mm.flags.c_contiguous)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._mm: np.memmap | None = None
        self._pid = -1
        del mm

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_mm"], state["_pid"] = None, -1
        return state

    def rows(self, a: int, b: int) -> np.ndarray:
        """Rows ``a:b`` in the file's dtype (a fresh array; the file is not kept open)."""
        n = max(b - a, 0)
        if self.fortran:
            if self._mm is None or self._pid != os.getpid():
                self._mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
                self._pid = os.getpid()
            return np.array(self._mm[a:b])
        out = np.empty((n, *self.shape[1:]), dtype=self.dtype)
        if n:
            buf = out.reshape(-1).view(np.uint8)
            with open(self.path, "rb") as f:
                f.seek(self.offset + a * self.row_bytes)
                got = f.readinto(buf)
            if got != buf.nbytes:
                raise ConfigurationError(f"npy file {str(self.path)!r} is truncated")
        return out


@STREAMS.register("npy")
class NpyStream(_Source):
    """Arrays in .npy files: ``x`` (N, m) and ``y`` (N,) or (N, k), or one ``path`` (N, m+1) with a ``target`` column."""

    def __init__(self, x: str | None = None, y: str | None = None, path: str | None = None,
                 target: int | None = None, task: str = "regression",
                 block_rows: int = DEFAULT_BLOCK_ROWS, validate: bool = True) -> None:
        self.task = _check_task(task, "npy")
        self.block_rows = _check_int(block_rows, "npy: block_rows", 1, MAX_BLOCK_ROWS)
        self.validate = bool(validate)
        if path is not None:
            if x is not None or y is not None:
                raise ConfigurationError("npy: give either path (one array) or x and y, not both")
            self.xfile = _NpyFile(path, "npy path")
            self.yfile = None
            if len(self.xfile.shape) != 2 or self.xfile.shape[1] < 2:
                raise ConfigurationError(
                    f"npy: path must hold an (N, m+1) array with at least 2 columns, got shape "
                    f"{self.xfile.shape}"
                )
            names = [f"c{i}" for i in range(self.xfile.shape[1])]
            if isinstance(target, str):
                raise ConfigurationError(f"npy: target must be a column index, got {target!r}")
            self.tcol = _resolve_column(-1 if target is None else target, names, "npy")
            self.fcols = [i for i in range(len(names)) if i != self.tcol]
            self.feature_names = [f"x{i}" for i in range(len(self.fcols))]
            self.target_names = ["y"]
        else:
            if x is None or y is None:
                raise ConfigurationError("npy needs x and y (two .npy files) or path (one array)")
            if target is not None:
                raise ConfigurationError("npy: target applies to path (one array), not to x/y files")
            self.xfile = _NpyFile(x, "npy x")
            self.yfile = _NpyFile(y, "npy y")
            if len(self.xfile.shape) != 2 or self.xfile.shape[1] == 0:
                raise ConfigurationError(f"npy: x must be an (N, m) array, got shape {self.xfile.shape}")
            ys = self.yfile.shape
            if len(ys) not in (1, 2) or (len(ys) == 2 and ys[1] == 0):
                raise ConfigurationError(f"npy: y must be an (N,) or (N, k) array, got shape {ys}")
            if ys[0] != self.xfile.shape[0]:
                raise ConfigurationError(
                    f"npy: x has {self.xfile.shape[0]} rows but y has {ys[0]}"
                )
            k = 1 if len(ys) == 1 else ys[1]
            if self.task == "classification" and k != 1:
                raise ConfigurationError(f"npy: classification needs one label per row, y has shape {ys}")
            self.feature_names = [f"x{i}" for i in range(self.xfile.shape[1])]
            self.target_names = ["y"] if k == 1 else [f"y{i}" for i in range(k)]
        n = self.xfile.shape[0]
        self.block_sizes = _uniform_blocks(n, self.block_rows)
        self.what = f"npy {(self.yfile or self.xfile).path}"

    def info(self) -> dict[str, Any]:
        out = {"path": str(self.xfile.path)}
        if self.yfile is not None:
            out["y_path"] = str(self.yfile.path)
        return out

    def read(self, i: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        a = i * self.block_rows
        b = min(a + self.block_rows, self.xfile.shape[0])
        raw = self.xfile.rows(a, b)
        if rows is not None:
            raw = raw[rows]
        base = np.arange(a, b) if rows is None else a + np.asarray(rows)

        def where(j: int) -> str:
            return f"row {int(base[j])} (0-based)"

        if self.yfile is None:
            x = raw[:, self.fcols].astype(np.float64)
            y = raw[:, self.tcol]
        else:
            x = raw.astype(np.float64)
            y = self.yfile.rows(a, b)
            if rows is not None:
                y = y[rows]
        src = str(self.xfile.path)
        _check_finite(x, f"npy {src}", self.feature_names, where)
        if self.task == "classification":
            return x, _labels_from_numbers(y.reshape(len(y)), f"{self.what} labels", where)
        y = y.astype(np.float64).reshape(len(y), -1)
        _check_finite(y, f"npy {src} targets", self.target_names, where)
        return x, y


def _uniform_blocks(n: int, block_rows: int) -> np.ndarray:
    n_blocks = -(-n // block_rows)
    sizes = np.full(n_blocks, block_rows, dtype=np.int64)
    if n_blocks:
        sizes[-1] = n - (n_blocks - 1) * block_rows
    return sizes


@STREAMS.register("csv")
class CsvStream(_Source):
    """A CSV file read in blocks of rows (byte offsets indexed at open): ``path``, ``target``, ``features``, ``header``, ``delimiter``, ``task``."""

    def __init__(self, path: str = "", target: str | int | None = None, features: list | None = None,
                 header: bool = True, delimiter: str = ",", task: str = "regression",
                 block_rows: int = DEFAULT_BLOCK_ROWS, validate: bool = True) -> None:
        self.path = _existing_file(path, "csv")
        self.task = _check_task(task, "csv")
        self.block_rows = _check_int(block_rows, "csv: block_rows", 1, MAX_BLOCK_ROWS)
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
            raise ConfigurationError(f"csv: delimiter must be one character, got {delimiter!r}")
        if not isinstance(header, bool):
            raise ConfigurationError(f"csv: header must be true or false, got {header!r}")
        self.delimiter, self.header, self.validate = delimiter, header, bool(validate)
        self.what = f"csv {self.path}"
        names, offsets, lines = self._index()
        self.columns = names
        self.tcol, self.fcols = _resolve_columns(target, features, names, self.what)
        self.feature_names = [names[c] for c in self.fcols]
        self.target_names = [names[self.tcol]]
        self._offsets_bytes = np.asarray(offsets, dtype=np.int64)
        self._lines = np.asarray(lines, dtype=np.int64)

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def locate(self, i: int, j: int) -> str:
        a, b = int(self._offsets_bytes[i]), int(self._offsets_bytes[i + 1])
        with open(self.path, "rb") as f:
            f.seek(a)
            _, lines = self._parse(f.read(b - a), int(self._lines[i]))
        return f"line {lines[j]}"

    def _parse(self, data: bytes, first_line: int) -> tuple[list[list[str]], list[int]]:
        text = decode_text(data, self.what, first_line)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=self.delimiter)
        rows, lines = [], []
        while True:
            try:
                r = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                raise csv_error(exc, self.what, first_line + reader.line_num - 1) from None
            if not r or (len(r) == 1 and not r[0].strip()):
                continue
            rows.append(r)
            lines.append(first_line + reader.line_num - 1)
        return rows, lines

    def _index(self) -> tuple[list[str], list[int], list[int]]:
        """One pass over the file: column names, byte offset and line of every block start."""
        t0 = time.perf_counter()
        with open(self.path, "rb") as f:  # UTF-16/32 text and binary files: refused at once
            check_bom(f.read(4), self.what)
        offsets: list[int] = []
        lines: list[int] = []
        names: list[str] | None = None
        count = 0
        with open(self.path, "rb") as f:
            pos = 3 if f.read(3) == b"\xef\xbb\xbf" else 0
            f.seek(pos)
            line_no = 0
            in_quotes = False
            start = start_line = 0
            header_pending = self.header
            while True:
                line = f.readline()
                if not line:
                    break
                line_no += 1
                if not in_quotes:
                    if not line.strip():
                        pos += len(line)
                        continue
                    start, start_line = pos, line_no
                if b'"' in line and line.count(b'"') % 2:
                    in_quotes = not in_quotes
                pos += len(line)
                if in_quotes:
                    continue
                if header_pending:  # the header record: column names
                    header_pending = False
                    f.seek(start)
                    rows, _ = self._parse(f.read(pos - start), start_line)
                    f.seek(pos)
                    names = [c.strip() for c in rows[0]]
                    norm = [unicodedata.normalize("NFC", c) for c in names]
                    dup = next((c for k, c in enumerate(names) if norm[k] in norm[:k]), None)
                    if dup is not None:
                        raise ConfigurationError(
                            f"{self.what}: column {dup!r} appears twice in the header (line "
                            f"{start_line}); give every column its own name"
                        )
                    continue
                if count % self.block_rows == 0:
                    offsets.append(start)
                    lines.append(start_line)
                    if names is None:  # no header: c0, c1, ... from the first record
                        f.seek(start)
                        rows, _ = self._parse(f.read(pos - start), start_line)
                        f.seek(pos)
                        names = [f"c{i}" for i in range(len(rows[0]))]
                count += 1
        if in_quotes:
            raise ConfigurationError(
                f"{self.what}: a quoted field starting at line {start_line} is never closed"
            )
        if names is None:
            raise ConfigurationError(f"{self.what} contains no rows")
        if count == 0:
            raise ConfigurationError(f"{self.what} has a header but no data rows")
        offsets.append(pos)
        self.block_sizes = _uniform_blocks(count, self.block_rows)
        logger.debug("indexed %s: %d rows, %d blocks in %.2fs", self.path, count,
                     len(self.block_sizes), time.perf_counter() - t0)
        return names, offsets, lines

    def read(self, i: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self._offsets_bytes[i]), int(self._offsets_bytes[i + 1])
        with open(self.path, "rb") as f:
            f.seek(a)
            data = f.read(b - a)
        records, lines = self._parse(data, int(self._lines[i]))
        if len(records) != self.block_sizes[i]:
            raise ConfigurationError(
                f"{self.what}: the rows from line {self._lines[i]} parse into {len(records)} "
                f"records, expected {self.block_sizes[i]} (unbalanced quotes?)"
            )
        ncol = len(self.columns)
        for r, ln in zip(records, lines):
            if len(r) != ncol:
                raise ConfigurationError(
                    f"{self.what}: line {ln} has {len(r)} fields, expected {ncol}"
                )
        if rows is not None:
            records = [records[j] for j in rows.tolist()]
            lines = [lines[j] for j in rows.tolist()]

        def where(j: int) -> str:
            return f"line {lines[j]}"

        x = np.empty((len(records), len(self.fcols)))
        for j, c in enumerate(self.fcols):
            x[:, j] = _float_column([r[c] for r in records], self.what, self.columns[c], where)
        _check_finite(x, self.what, self.feature_names, where)
        target = [r[self.tcol].strip() for r in records]
        if self.task == "classification":
            target = [label_text(v) for v in target]
            check_text_labels(target, self.what, self.target_names[0], where)
            return x, np.array(target, dtype=object)
        y = _float_column(target, self.what, self.target_names[0], where)[:, None]
        _check_finite(y, self.what, self.target_names, where)
        return x, y


def _require_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingPackageError(
            "the parquet stream source needs the optional package 'pyarrow', which is not "
            "installed: pip install 'pyarrow>=14'"
        ) from None
    return pq, pc


@STREAMS.register("parquet")
class ParquetStream(_Source):
    """A Parquet file read one row group at a time (pyarrow): ``path``, ``target``, ``features``, ``task``."""

    def __init__(self, path: str = "", target: str | int | None = None, features: list | None = None,
                 task: str = "regression", validate: bool = True) -> None:
        pq, _ = _require_pyarrow()
        self.path = _existing_file(path, "parquet")
        self.task = _check_task(task, "parquet")
        self.validate = bool(validate)
        self.what = f"parquet {self.path}"
        import pyarrow as pa

        try:
            pf = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as exc:
            raise ConfigurationError(f"{self.what} is not a readable parquet file: {exc}") from None
        schema = pf.schema_arrow
        names = list(schema.names)
        check_unique_names(names, self.what, "the parquet schema")
        tcol, fcols = _resolve_columns(target, features, names, self.what)
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean,
                   pa.types.is_decimal)
        check = fcols if self.task == "classification" else [*fcols, tcol]
        for c in check:
            t = schema.field(c).type
            if pa.types.is_dictionary(t):
                t = t.value_type
            if not any(f(t) for f in numeric):
                raise ConfigurationError(
                    f"{self.what}: column {names[c]!r} has type {t}, not numbers"
                    + (" (timestamps are refused, not cast: convert them explicitly)"
                       if pa.types.is_temporal(t) else "")
                )
        if self.task == "classification":  # labels: numbers or text, never cast from others
            t = schema.field(tcol).type
            if pa.types.is_dictionary(t):
                t = t.value_type
            if not (any(f(t) for f in numeric) or pa.types.is_string(t)
                    or pa.types.is_large_string(t)):
                raise ConfigurationError(
                    f"{self.what}: the class label column {names[tcol]!r} has type {t}; class "
                    "labels must be integers or text"
                )
        self.feature_names = [names[c] for c in fcols]
        self.target_names = [names[tcol]]
        md = pf.metadata
        self.block_sizes = np.array(
            [md.row_group(g).num_rows for g in range(md.num_row_groups)], dtype=np.int64
        )
        self._starts = self.offsets[:-1]
        self._pf = pf
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_pf"], state["_pid"] = None, -1
        return state

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "row_groups": len(self.block_sizes)}

    def locate(self, i: int, j: int) -> str:
        return f"row {int(self._starts[i]) + j} (0-based, row group {i})"

    def read(self, i: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pq, pc = _require_pyarrow()
        import pyarrow as pa

        if self._pf is None or self._pid != os.getpid():
            self._pf, self._pid = pq.ParquetFile(self.path), os.getpid()
        cols = [*self.feature_names, self.target_names[0]]
        try:
            table = self._pf.read_row_group(i, columns=cols)
        except (pa.ArrowException, OSError) as exc:
            msg = " ".join(str(exc).split())[:200]
            raise ConfigurationError(f"{self.what}: row group {i} cannot be read ({msg})"
                                     ) from None
        if rows is not None:
            table = table.take(pa.array(rows, type=pa.int64()))
        start = int(self._starts[i])
        base = np.arange(table.num_rows) + start if rows is None else start + np.asarray(rows)

        def where(j: int) -> str:
            return f"row {int(base[j])} (0-based, row group {i})"

        x = np.empty((table.num_rows, len(self.feature_names)))
        for j, name in enumerate(cols):
            col = table.column(name)
            if pa.types.is_dictionary(col.type):
                col = pc.cast(col, col.type.value_type)
            if col.null_count:
                k = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
                raise ConfigurationError(f"{self.what}: missing value in column {name!r} at {where(k)}")
            values = col.to_numpy()
            if j < len(self.feature_names):
                x[:, j] = np.asarray(values, dtype=np.float64)
            else:
                target = values
        _check_finite(x, self.what, self.feature_names, where)
        if self.task == "classification":
            if target.dtype.kind in "biuf":
                return x, _labels_from_numbers(target, self.what, where)
            labels = [label_text(str(v)) for v in target.tolist()]
            check_text_labels(labels, self.what, self.target_names[0], where)
            return x, np.array(labels, dtype=object)
        y = np.asarray(target, dtype=np.float64)[:, None]
        _check_finite(y, self.what, self.target_names, where)
        return x, y


@STREAMS.register("function")
class FunctionStream(_Source):
    """``n`` samples of a formula over a box, generated block by block on demand (never held)."""

    validate = False

    def __init__(self, expression: str = "", ranges: list | None = None, n: int = 0,
                 noise: float = 0.0, variables: list[str] | None = None,
                 block_rows: int = DEFAULT_BLOCK_ROWS) -> None:
        if variables is not None and (
            not isinstance(variables, list) or not all(isinstance(v, str) for v in variables)
        ):
            raise ConfigurationError(f"function: variables must be a list of names, got {variables!r}")
        self.n = _check_int(n, "function: n (the number of rows)", 2, MAX_FUNCTION_ROWS)
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0 or not math.isfinite(noise):
            raise ConfigurationError(f"function: noise must be a number >= 0, got {noise!r}")
        self.block_rows = _check_int(block_rows, "function: block_rows", 1, MAX_BLOCK_ROWS)
        self.expression, self.variables, self.noise = expression, variables, float(noise)
        self._parse(ranges)
        self.feature_names = list(self.formula.variables)
        self.target_names = ["y"]
        self.block_sizes = _uniform_blocks(self.n, self.block_rows)
        self._lo = np.array([r[0] for r in self.ranges])
        self._hi = np.array([r[1] for r in self.ranges])

    def _parse(self, ranges: Any) -> None:
        n_vars = None
        if self.variables is None:
            used = parse_formula(self.expression).n_vars
            n_vars = max(used, len(ranges) if isinstance(ranges, (list, tuple)) else 0)
        self.formula = parse_formula(self.expression, variables=self.variables, n_vars=n_vars)
        self.ranges = _check_ranges(ranges, self.formula.n_vars, "function")

    def __getstate__(self) -> dict:  # the compiled formula holds closures: re-parse instead
        state = dict(self.__dict__)
        state["formula"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._parse([list(r) for r in self.ranges])

    def info(self) -> dict[str, Any]:
        return {"expression": self.formula.text, "ranges": [list(r) for r in self.ranges],
                "noise": self.noise}

    def read(self, i: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        size = int(self.block_sizes[i])
        rng = np.random.default_rng([self.seed, 1, i])
        x = self._lo + (self._hi - self._lo) * rng.random((size, len(self.ranges)))
        y = self.formula(x)
        if self.noise:
            y = y + self.noise * rng.standard_normal(size)
        if rows is not None:
            x, y = x[rows], y[rows]
        base = i * self.block_rows + (np.arange(size) if rows is None else np.asarray(rows))

        def where(j: int) -> str:
            return f"row {int(base[j])} (x = {x[j].tolist()}); change the formula or ranges"

        y = y[:, None]
        _check_finite(y, f"function {self.formula.text!r}", self.target_names, where)
        return x, y


STREAM_SOURCES: tuple[str, ...] = tuple(STREAMS.names())


# ----------------------------------------------------------------------------- statistics
class _Moments:
    """Streaming mean and population variance (Chan et al.'s pairwise update)."""

    def __init__(self, width: int) -> None:
        self.n = 0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    def add(self, a: np.ndarray) -> None:
        nb = a.shape[0]
        if nb == 0:
            return
        with np.errstate(all="ignore"):  # overflow is reported by mean_std, by column
            mb = a.mean(axis=0)
            m2b = ((a - mb) ** 2).sum(axis=0)
            tot = self.n + nb
            delta = mb - self.mean
            self.mean = self.mean + delta * (nb / tot)
            self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / tot)
        self.n = tot

    def mean_std(self, names: Sequence[str] = (), what: str = "data") -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(all="ignore"):
            std = np.sqrt(self.m2 / self.n)
        bad = ~np.isfinite(self.mean) | ~np.isfinite(std)
        if bad.any():
            c = int(np.flatnonzero(bad)[0])
            col = names[c] if c < len(names) else f"column {c}"
            raise ConfigurationError(
                f"{what} {col!r} holds values too large to standardise in float64; rescale "
                "that column (e.g. divide it by a power of ten)"
            )
        return self.mean.copy(), np.where(std > 1e-12, std, 1.0)


# ----------------------------------------------------------------------------- bundle
def _keep(item: Any) -> Any:  # DataLoader conversion: keep the numpy arrays as they are
    return item


class _BatchStream(IterableDataset):
    """Global batches ``ids[w::W]`` for DataLoader worker ``w`` of ``W``."""

    def __init__(self, bundle: StreamingBundle, args: tuple, ids: range) -> None:
        self.bundle, self.args, self.ids = bundle, args, ids

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        info = get_worker_info()
        ids = self.ids if info is None else self.ids[info.id :: info.num_workers]
        return self.bundle._generate(*self.args, ids)


class StreamingBundle(Standardised):
    """Split, validated rows served in batches from disk (or generated); see the module doc.

    Descriptive attributes match :class:`rpnkit.data.DataBundle`; the standardisation
    statistics (when fitted) come from the training split only, in one pass.
    """

    streaming = True

    def __init__(self, name: str, source: _Source, sizes: Sequence[int], seed: int) -> None:
        self.name = name
        self.task = source.task
        self.feature_names = list(source.feature_names)
        self.target_names = list(source.target_names)
        self.classes: list[str] | None = None
        self.x_mean: np.ndarray | None = None
        self.x_std: np.ndarray | None = None
        self.y_mean: np.ndarray | None = None
        self.y_std: np.ndarray | None = None
        self.formula = source.formula
        self.ranges = source.ranges
        self.seed = seed
        self._source = source
        self._sizes = dict(zip(SPLITS, (int(v) for v in sizes)))
        self._counts = split_block_counts(source.block_sizes, sizes)
        self._class_index: dict | None = None
        self._class_values: np.ndarray | None = None
        self.info: dict[str, Any] = {
            "source": name,
            **source.info(),
            "rows": source.n_rows,
            "blocks": len(source.block_sizes),
            "streaming": True,
        }

    # -- DataBundle-like description
    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_classes(self) -> int | None:
        return len(self.classes) if self.classes is not None else None

    @property
    def n_targets(self) -> int:
        return len(self.target_names) if self.task == "regression" else 1

    @property
    def n_rows(self) -> int:
        return self._source.n_rows

    def size(self, split: str) -> int:
        """Rows in ``split`` ("train", "val" or "test")."""
        self._split_index(split)
        return self._sizes[split]

    def num_batches(self, split: str, batch_size: int) -> int:
        """``ceil(size(split) / batch_size)``."""
        b = _check_int(batch_size, "batch_size", 1)
        return -(-self.size(split) // b)


    def __getstate__(self) -> dict:  # picklable for spawned DataLoader workers
        state = dict(self.__dict__)
        state["formula"] = None  # compiled closures; the source re-parses its own
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.formula = self._source.formula

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={v:,}" for k, v in self._sizes.items())
        return (f"StreamingBundle({self.name!r}, {self.task}, {self.n_features} features, "
                f"{sizes})")

    # -- batches
    def batches(self, split: str, batch_size: int, *, epoch: int = 0, seed: int = 0,
                shuffle: bool = True, rank: int = 0, world: int = 1, start_batch: int = 0,
                num_workers: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's share of global batches ``start_batch .. num_batches - 1`` of ``split``.

        Yields ``(x, y)``: x (n, m) float64 (standardised if fitted); y (n, k) float64
        for regression (standardised if fitted) or (n,) int64 class indices. Share ``n``
        may be 0 for a short last batch; every rank yields the same number of batches.
        With ``num_workers > 0`` a DataLoader's workers produce the batches
        (worker ``w`` those at ``start_batch + w + j * num_workers``), same output.
        """
        s = self._split_index(split)
        nb = self.num_batches(split, batch_size)
        epoch = _check_int(epoch, "epoch", 0)
        seed = _check_int(seed, "seed", 0)
        world = _check_int(world, "world", 1)
        rank = _check_int(rank, "rank", 0, world - 1)
        start_batch = _check_int(start_batch, "start_batch", 0, nb)
        num_workers = _check_int(num_workers, "num_workers", 0)
        args = (s, int(batch_size), epoch, seed, bool(shuffle), rank, world)
        ids = range(start_batch, nb)
        if num_workers == 0 or len(ids) == 0:
            return self._generate(*args, ids)
        loader = DataLoader(_BatchStream(self, args, ids), batch_size=None, shuffle=False,
                            num_workers=min(num_workers, len(ids)), collate_fn=_keep)
        return iter(loader)

    def _split_index(self, split: str) -> int:
        if split not in SPLITS:
            raise ConfigurationError(
                f"unknown split {split!r}{did_you_mean(str(split), SPLITS)}; splits are train, val, test"
            )
        return SPLITS.index(split)

    def _epoch_blocks(self, s: int, epoch: int, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
        """Block order of split ``s`` for the epoch and the first position of each block."""
        counts = self._counts[s]
        blocks = np.flatnonzero(counts)
        if shuffle:
            blocks = np.random.default_rng([seed, epoch, 3, s]).permutation(blocks)
        cum = np.zeros(len(blocks) + 1, dtype=np.int64)
        np.cumsum(counts[blocks], out=cum[1:])
        return blocks, cum

    def _rows_of(self, i: int, s: int) -> np.ndarray | None:
        """In-block rows of block ``i`` that belong to split ``s`` (None: all of them)."""
        size = int(self._source.block_sizes[i])
        nv, nt = int(self._counts[1, i]), int(self._counts[2, i])
        if int(self._counts[s, i]) == size:
            return None
        perm = np.random.default_rng([self.seed, 2, i]).permutation(size)
        which = np.zeros(size, dtype=np.int8)
        which[perm[:nv]] = 1
        which[perm[nv : nv + nt]] = 2
        return np.flatnonzero(which == s)

    def _encode(self, labels: np.ndarray) -> np.ndarray:
        if self._class_values is not None and labels.dtype.kind in "iu":
            pos = np.searchsorted(self._class_values, labels)
            pos = np.minimum(pos, len(self._class_values) - 1)
            if np.array_equal(self._class_values[pos], labels):
                return pos.astype(np.int64)
        index = self._class_index
        assert index is not None
        try:
            return np.fromiter((index[v] for v in labels.tolist()), dtype=np.int64, count=len(labels))
        except KeyError as exc:
            raise ConfigurationError(
                f"dataset {self.name!r}: class label {exc.args[0]!r} was not seen when the data "
                "was opened (did the file change?)"
            ) from None

    def _block(self, s: int, i: int, epoch: int, seed: int, shuffle: bool) -> tuple[np.ndarray, np.ndarray]:
        rows = self._rows_of(i, s)
        if shuffle:
            n = int(self._counts[s, i])
            perm = np.random.default_rng([seed, epoch, 4, s, i]).permutation(n)
            rows = perm if rows is None else rows[perm]
        x, y = self._source.read(i, rows)
        if self.task == "classification":
            y = self._encode(y)
        return x, y

    def _empty(self) -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((0, self.n_features))
        if self.task == "classification":
            return x, np.empty(0, dtype=np.int64)
        return x, np.empty((0, self.n_targets))

    def _generate(self, s: int, batch_size: int, epoch: int, seed: int, shuffle: bool,
                  rank: int, world: int, ids: Sequence[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        blocks, cum = self._epoch_blocks(s, epoch, seed, shuffle)
        n = int(cum[-1])
        cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for b in ids:
            lo = b * batch_size
            hi = min(lo + batch_size, n)
            j = int(np.searchsorted(cum, lo, side="right")) - 1
            xs, ys = [], []
            while j < len(blocks) and cum[j] < hi:
                blk = int(blocks[j])
                if blk not in cache:
                    if len(cache) >= 2:
                        cache.pop(next(iter(cache)))
                    cache[blk] = self._block(s, blk, epoch, seed, shuffle)
                bx, by = cache[blk]
                c0 = int(cum[j])
                p0, p1 = max(lo, c0), min(hi, int(cum[j + 1]))
                first = p0 + (rank - (p0 - lo)) % world
                if first < p1:
                    sl = slice(first - c0, p1 - c0, world)
                    xs.append(bx[sl])
                    ys.append(by[sl])
                j += 1
            if xs:
                x, y = np.concatenate(xs), np.concatenate(ys)
            else:
                x, y = self._empty()
            if self.x_mean is not None:
                x = (x - self.x_mean) / self.x_std
            if self.y_mean is not None:
                y = (y - self.y_mean) / self.y_std
            yield x, y

    # -- the open-time pass
    def _scan(self, standardize: bool) -> None:
        """One pass over all blocks: validate, collect class labels, fit train statistics."""
        t0 = time.perf_counter()
        src = self._source
        labels: dict = {}  # label -> (block, row in block) of its first row
        xm = _Moments(self.n_features) if standardize else None
        ym = _Moments(self.n_targets) if standardize and self.task == "regression" else None
        for i in range(len(src.block_sizes)):
            x, y = src.read(i)
            if self.task == "classification":
                values, first = np.unique(y, return_index=True)
                for k in np.argsort(first, kind="stable").tolist():
                    labels.setdefault(values[k].item() if isinstance(values[k], np.generic)
                                      else values[k], (i, int(first[k])))
                if len(labels) > MAX_CLASSES:
                    raise ConfigurationError(
                        f"dataset {self.name!r}: more than {MAX_CLASSES:,} distinct class labels "
                        "(is the target continuous? use task: regression)"
                    )
            if xm is not None and self._counts[0, i]:
                rows = self._rows_of(i, 0)
                xt = x if rows is None else x[rows]
                xm.add(xt)
                if ym is not None:
                    ym.add(y if rows is None else y[rows])
        if self.task == "classification":
            what = getattr(src, "what", f"stream {self.name!r}")
            check_label_spellings(labels, what, self.target_names[0],
                                  lambda pos: src.locate(*pos))
            if len(labels) < 2:
                raise ConfigurationError(
                    f"{what}: column {self.target_names[0]!r} holds only one class "
                    f"({str(next(iter(labels), ''))!r}); classification needs at least two"
                )
            ordered = _sorted_labels(labels)
            self.classes = [str(v) for v in ordered]
            self._class_index = {v: k for k, v in enumerate(ordered)}
            if all(isinstance(v, int) for v in ordered):
                self._class_values = np.array(ordered, dtype=np.int64)
        if xm is not None:
            self.x_mean, self.x_std = xm.mean_std(self.feature_names,
                                                  f"stream {self.name!r}: feature")
        if ym is not None:
            self.y_mean, self.y_std = ym.mean_std(self.target_names,
                                                  f"stream {self.name!r}: target")
        logger.info("scanned %s: %s rows in %d blocks, %.2fs", self.name, f"{src.n_rows:,}",
                    len(src.block_sizes), time.perf_counter() - t0)


def open_stream(name: str, params: Mapping[str, Any] | None = None,
                split: Mapping[str, float] | None = None, seed: int = 0,
                standardize: bool = False) -> StreamingBundle:
    """Open streaming source ``name`` (one of :data:`STREAM_SOURCES`) with ``params``.

    ``split`` fractions (or counts) as for :func:`rpnkit.data.load_data` (default
    train 0.8 / test 0.2); ``seed`` fixes the row-to-split assignment (and the
    ``function`` source's values). ``standardize`` fits feature (and, for
    regression, target) mean/std on the training split in one pass.
    """
    from . import _counts

    seed = _check_int(seed, "seed", 0)
    source: _Source = STREAMS.build(name, **dict(params or {}))
    source.seed = seed
    n = source.n_rows
    if n == 0:
        raise ConfigurationError(f"stream {name!r} holds no rows")
    sizes = _counts(dict(split or {"train": 0.8, "val": 0.0, "test": 0.2}), n)
    if sizes[0] == 0:
        raise ConfigurationError(f"stream {name!r}: the training split is empty")
    if sizes[2] == 0:
        raise ConfigurationError(f"stream {name!r}: the test split is empty")
    bundle = StreamingBundle(name, source, sizes, seed)
    if source.task == "classification" or standardize or source.validate:
        bundle._scan(bool(standardize))
    elif len(source.block_sizes):
        source.read(0)  # fail early on a formula that is not finite on its ranges
    return bundle
