"""Readers of users' files that answer every bad file with one clear line.

* :func:`read_text_file` – a text file as str: UTF-8 (a BOM is dropped); UTF-16/32
  text, binary files (NUL bytes) and other encodings (Latin-1 ...) are refused naming
  the file and the line of the first bad byte.
* :func:`csv_rows` – csv records with their file lines; csv errors (a field above
  :data:`MAX_FIELD_CHARS`, a NUL character) are refused naming the line.
* :func:`read_features` – the feature matrix of a ``.csv``/``.tsv``/``.txt``, ``.npy`` or
  ``.parquet`` file (what ``rpnkit predict`` reads): 0-d, structured, complex and
  object arrays, corrupt or empty files, non-numeric columns (text, lists, timestamps:
  refused, never cast), missing values, empty inputs and a header naming one column
  twice are each refused with one :class:`~rpnkit.errors.ConfigurationError`.

Every error is a ConfigurationError (the command line turns it into one line, exit 2).
"""

from __future__ import annotations

import contextlib
import csv
import io
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, short

__all__ = ["MAX_FIELD_CHARS", "read_text_file", "decode_text", "csv_rows", "csv_records",
           "text_lines", "csv_error", "check_bom", "iter_features", "memory_estimate",
           "check_fits_in_memory",
           "read_features",
           "label_text", "check_unique_names"]

#: longest csv field (characters): Python's csv module's own limit, kept (a longer field
#: is almost always a wrong delimiter or an unclosed quote)
MAX_FIELD_CHARS = csv.field_size_limit()
#: longest line of a text file read in pieces (:func:`text_lines`)
MAX_LINE_BYTES = 64 * 2**20
#: numbers (rows x columns) in one chunk of :func:`iter_features`
CHUNK_VALUES = 2**20
#: rows in one chunk of :func:`iter_features` at most
CHUNK_ROWS = 65536

_BOMS = (
    (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"),
)


def label_text(value: str) -> str:
    """A class label read as text: stripped and in Unicode normal form NFC, so that the
    composed and decomposed spellings of one label (``é`` / ``e`` + accent) are one class."""
    return unicodedata.normalize("NFC", value.strip())


def check_bom(head: bytes, what: str) -> None:
    """Refuse text that starts with a UTF-16 or UTF-32 byte order mark."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            raise ConfigurationError(
                f"{what} is {name} text; save it as UTF-8 (rpnkit reads UTF-8 text only)"
            )


def decode_text(data: bytes, what: str, first_line: int = 1, start: bool = True) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped), or one ConfigurationError saying
    what the bytes are and at which line the first bad one is. ``start=False``: ``data``
    is a later piece of a file (no byte order mark is looked for)."""
    if start:
        check_bom(data, what)
        if data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
    nul = data.find(b"\x00")
    if nul >= 0:
        line = first_line + data.count(b"\n", 0, nul)
        raise ConfigurationError(
            f"{what} holds a NUL byte at line {line}: a binary file, not text (UTF-16 text "
            "without a BOM reads this way too; save it as UTF-8)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise ConfigurationError(
            f"{what} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line} "
            f"({exc.reason}); save the file as UTF-8 (e.g. from Latin-1: iconv -f latin1 "
            "-t utf-8)"
        ) from None


def read_text_file(path: str | Path, what: str) -> str:
    """The text of ``path`` (UTF-8), bad encodings and binary files refused (see
    :func:`decode_text`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what}: {exc.strerror or exc}") from None
    return decode_text(data, what)


def csv_error(exc: csv.Error, what: str, line: int) -> ConfigurationError:
    """The ConfigurationError for a csv module error at file line ``line``."""
    msg = str(exc)
    if "field larger than field limit" in msg:
        return ConfigurationError(
            f"{what}: line {line} holds a field longer than {MAX_FIELD_CHARS:,} characters (a "
            "wrong delimiter or an unclosed quote?)"
        )
    return ConfigurationError(f"{what}: line {line} is not valid csv ({msg})")


def csv_rows(text: str, what: str, delimiter: str = ",", first_line: int = 1,
             skip_blank: bool = True) -> Iterator[tuple[list[str], int]]:
    """``(record, line)`` for every csv record of ``text`` (``line``: the file line where
    the record starts); blank records skipped. csv errors are ConfigurationErrors naming
    the line."""
    return csv_records(io.StringIO(text, newline=""), what, delimiter, first_line, skip_blank)


def text_lines(path: str | Path, what: str, block_bytes: int = 1 << 18) -> Iterator[str]:
    """The lines of the UTF-8 text file ``path`` (line ends kept, split as by
    ``open(newline="")``), read ``block_bytes`` at a time: memory stays O(block + longest
    line). The checks of :func:`decode_text` (byte order marks, NUL bytes, bad UTF-8 naming
    the line) apply; a line above :data:`MAX_LINE_BYTES` is refused."""
    line = 1
    rest = b""
    first = True
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below, generator
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what}: {exc.strerror or exc}") from None
    with f:
        while True:
            data = f.read(block_bytes)
            buf = rest + data if rest else data
            if not data:
                cut = len(buf)
            else:  # up to the last line end (a final \r may be half of \r\n: kept back)
                cut = max(buf.rfind(b"\n"), buf.rfind(b"\r", 0, len(buf) - 1)) + 1
                if cut == 0:
                    if len(buf) > MAX_LINE_BYTES:
                        raise ConfigurationError(
                            f"{what}: line {line} is longer than {MAX_LINE_BYTES // 2**20} MiB "
                            "(no line breaks? rpnkit reads text with one record per line)")
                    rest = buf
                    continue
            piece, rest = buf[:cut], buf[cut:]
            if piece:
                text = decode_text(piece, what, line, start=first)
                first = False
                line += piece.count(b"\n")
                yield from io.StringIO(text, newline="")
            if not data:
                return


def csv_records(lines: Iterable[str], what: str, delimiter: str = ",", first_line: int = 1,
                skip_blank: bool = True) -> Iterator[tuple[list[str], int]]:
    """:func:`csv_rows` over an iterable of lines (e.g. :func:`text_lines`)."""
    reader = csv.reader(lines, delimiter=delimiter)
    prev = 0
    while True:
        try:
            r = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise csv_error(exc, what, first_line + reader.line_num - 1) from None
        start, prev = first_line + prev, reader.line_num
        if skip_blank and (not r or not any(c.strip() for c in r)):
            continue
        yield r, start


def check_unique_names(names: Sequence[str], what: str, where: str = "the header") -> None:
    """Refuse a column name given twice (NFC-normalised, stripped)."""
    seen: dict[str, int] = {}
    for i, c in enumerate(names):
        key = unicodedata.normalize("NFC", str(c).strip())
        if key in seen:
            raise ConfigurationError(
                f"{what}: column {short(str(c), 80)} appears twice in {where} (columns "
                f"{seen[key] + 1} and {i + 1}); give every column its own name"
            )
        seen[key] = i


# ----------------------------------------------------------------------------- features
def _match(names: list[str], wanted: Sequence[str] | None, what: str) -> list[int]:
    if not wanted:
        return list(range(len(names)))
    norm = [unicodedata.normalize("NFC", n) for n in names]
    missing = [w for w in wanted if unicodedata.normalize("NFC", w) not in norm]
    if missing:
        shown = ", ".join(short(n, 40) for n in names[:10]) + (", ..." if len(names) > 10 else "")
        lost = ", ".join(short(m, 40) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ConfigurationError(
            f"{what}: the run's features {lost} are not columns of the file (columns: {shown})"
        )
    return [norm.index(unicodedata.normalize("NFC", w)) for w in wanted]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _npy_header(path: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Shape, Fortran order, dtype and data offset of a .npy file, from its header only
    (nothing is mapped or allocated: a file larger than memory is fine)."""
    from numpy.lib import format as npy_format

    try:
        with open(path, "rb") as f:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            offset = f.tell()
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ConfigurationError(f"{what}: not a readable .npy array ({msg})") from None
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), offset


def _iter_npy(path: Path, feature_names: Sequence[str] | None,
              chunk_rows: int) -> Iterator[np.ndarray]:
    what = f"{path}"
    shape, fortran, dt, offset = _npy_header(path, what)
    if dt.fields is not None:
        raise ConfigurationError(
            f"{what}: a structured array (fields {', '.join(list(dt.names or ())[:8])}); save "
            "a plain (N, features) array of numbers"
        )
    if dt.hasobject:
        raise ConfigurationError(f"{what}: not a readable .npy array (an object array: pickled "
                                 "Python objects are never loaded)")
    if dt.kind == "c":
        raise ConfigurationError(
            f"{what}: holds complex numbers ({dt}); the model takes real features (save the "
            "real and imaginary parts as separate columns)"
        )
    if dt.kind not in "biuf":
        raise ConfigurationError(f"{what}: holds {dt}, not real numbers")
    if len(shape) == 0:
        raise ConfigurationError(f"{what}: a 0-d array (one number); save an (N, features) array")
    if len(shape) > 2:
        raise ConfigurationError(f"{what}: an array of shape {shape}; save an (N, features) array")
    if shape[0] == 0 or (len(shape) == 2 and shape[1] == 0):
        raise ConfigurationError(f"{what}: the array of shape {shape} holds no values")
    n, width = shape[0], (shape[1] if len(shape) == 2 else 1)
    need = offset + n * width * dt.itemsize
    size = path.stat().st_size
    if size < need:
        raise ConfigurationError(f"{what}: not a readable .npy array (truncated: {size:,} bytes, "
                                 f"the header's shape {shape} needs {need:,})")
    cols = width
    if feature_names and width == len(feature_names) + 1:
        cols = len(feature_names)  # a trailing target column
    step = _chunk(chunk_rows, width)
    with open(path, "rb") as f:
        for a in range(0, n, step):
            b = min(n, a + step)
            if fortran and width > 1:  # column-major: one positional read per column
                out = np.empty((b - a, cols), dtype=np.float64)
                for j in range(cols):
                    f.seek(offset + (j * n + a) * dt.itemsize)
                    out[:, j] = np.frombuffer(f.read((b - a) * dt.itemsize), dtype=dt)
            else:
                f.seek(offset + a * width * dt.itemsize)
                raw = np.frombuffer(f.read((b - a) * width * dt.itemsize), dtype=dt)
                out = raw.reshape(b - a, width)[:, :cols].astype(np.float64)
            yield out


def _chunk(chunk_rows: int, width: int) -> int:
    """Rows per chunk: ``chunk_rows``, at most :data:`CHUNK_VALUES` numbers, at least 1."""
    return max(1, min(int(chunk_rows), CHUNK_VALUES // max(width, 1)))


def _parquet_column(col: Any, name: str, what: str, first_row: int = 0) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    t = col.type
    if pa.types.is_dictionary(t):
        col = pc.cast(col, t.value_type)
        t = col.type
    numeric = (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
               or pa.types.is_decimal(t))
    if not numeric:
        kind = ("a timestamp/date column" if pa.types.is_temporal(t) else
                "a text column" if (pa.types.is_string(t) or pa.types.is_large_string(t)) else
                "a list column" if (pa.types.is_list(t) or pa.types.is_large_list(t)) else
                "not numbers")
        raise ConfigurationError(
            f"{what}: column {short(name, 80)} has type {t} ({kind}); features must be "
            "numbers (convert it explicitly before predicting)"
        )
    if col.null_count:
        k = first_row + int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        raise ConfigurationError(f"{what}: missing value in column {short(name, 80)} at row "
                                 f"{k} (0-based)")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _iter_parquet(path: Path, feature_names: Sequence[str] | None,
                  chunk_rows: int) -> Iterator[np.ndarray]:
    what = f"{path}"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError("reading .parquet needs pyarrow: pip install 'rpnkit[parquet]'"
                                 ) from None

    def unreadable(exc: BaseException) -> ConfigurationError:
        msg = " ".join(str(exc).split())[:200]
        return ConfigurationError(f"{what}: not a readable parquet file ({msg})")

    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(exc) from None
    if not names:
        raise ConfigurationError(f"{what}: the parquet file has no columns")
    check_unique_names(names, what, "the parquet schema")
    cols = _match(names, feature_names, what)
    if pf.metadata.num_rows == 0:
        raise ConfigurationError(f"{what}: the parquet file holds no rows")
    # row group by row group (iter_batches reads one row group's columns at a time)
    batches = pf.iter_batches(batch_size=_chunk(chunk_rows, len(cols)),
                              columns=[names[i] for i in cols])
    done = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise unreadable(exc) from None
        if batch.num_rows == 0:
            continue
        yield np.column_stack([_parquet_column(batch.column(j), names[i], what, done)
                               for j, i in enumerate(cols)])
        done += batch.num_rows


def _iter_csv(path: Path, feature_names: Sequence[str] | None,
              chunk_rows: int) -> Iterator[np.ndarray]:
    what = f"{path}"
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    records = csv_records(text_lines(path, what), what, delimiter)
    head = next(records, None)
    if head is None:
        raise ConfigurationError(f"{what} is empty (no rows)")
    first = head[0]
    header_is_names = any(not _is_number(c) for c in first)
    names = [c.strip() for c in first] if header_is_names else None
    if names is not None:
        check_unique_names(names, what)
    width = len(names) if names is not None else len(first)
    cols = _match(names, feature_names, what) if names is not None else list(range(width))
    if names is None and feature_names and width == len(feature_names) + 1:
        cols = list(range(len(feature_names)))  # a trailing target column
    step = _chunk(chunk_rows, width)
    body: list[tuple[list[str], int]] = [] if header_is_names else [head]
    seen = False
    for rec in records:
        body.append(rec)
        if len(body) >= step:
            yield _csv_block(body, cols, names, width, what)
            seen, body = True, []
    if body:
        yield _csv_block(body, cols, names, width, what)
    elif not seen:
        raise ConfigurationError(f"{what} has a header but no data rows")


def _csv_block(body: list[tuple[list[str], int]], cols: list[int], names: list[str] | None,
               width: int, what: str) -> np.ndarray:
    """The float64 features of csv records ``body`` (every record ``width`` fields)."""
    for r, line in body:
        if len(r) != width:
            raise ConfigurationError(f"{what}: line {line} has {len(r)} fields, expected {width}")
    out = np.empty((len(body), len(cols)), dtype=np.float64)
    for j, c in enumerate(cols):
        values = [r[c] for r, _ in body]
        try:
            out[:, j] = np.array(values, dtype=np.float64)
            continue
        except ValueError:
            pass
        for i, v in enumerate(values):
            try:
                float(v)
            except ValueError:
                col = short(names[c], 80) if names is not None else str(c + 1)
                raise ConfigurationError(
                    f"{what} line {body[i][1]}: column {col} holds {short(v, 40)}, which is "
                    "not a number"
                ) from None
    return out


def iter_features(path: str | Path, feature_names: Sequence[str] | None = None,
                  chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """:func:`read_features` in chunks: float64 ``(n_i, m)`` arrays of consecutive rows
    (``n_i <= chunk_rows``, and at most :data:`CHUNK_VALUES` numbers), read with bounded
    memory whatever the file's size – CSV text a block of bytes at a time, ``.npy`` by
    positional reads of row ranges, parquet a row group at a time. The checks and messages
    are those of :func:`read_features`; what can be checked from a header (a missing file,
    the suffix, npy dtype/shape, parquet schema, csv header) is checked when the first
    chunk is asked for, a bad value when its chunk is read."""
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"input file {str(path)!r} does not exist")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _iter_npy(path, feature_names, chunk_rows)
    if suffix == ".parquet":
        return _iter_parquet(path, feature_names, chunk_rows)
    if suffix in (".csv", ".txt", ".tsv"):
        return _iter_csv(path, feature_names, chunk_rows)
    raise ConfigurationError(f"{path}: input must be .csv, .tsv, .txt, .npy or .parquet")


def read_features(path: str | Path, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Features of a .csv/.tsv/.txt (header optional), .npy or .parquet file as a float64
    (N, m) array, N >= 1.

    With ``feature_names`` (a run's), CSV/parquet columns are matched by name (order and
    extra columns, e.g. the target, do not matter; names compare in NFC form); a file
    without a header (or a .npy array) with one column more than the features has its
    last column (a target) dropped. Values are not checked for NaN/inf here.
    """
    chunks = list(iter_features(path, feature_names))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


# ----------------------------------------------------------------------------- memory
#: bytes one csv field costs while a file is read into memory (a Python str and its list
#: slot, the float it becomes, the split copies), besides 4 bytes per byte of the file
#: (its bytes, its text, the fields' characters): tracemalloc measured 100-220 in all
CSV_FIELD_BYTES = 150


def available_memory() -> int | None:
    """Bytes this process can still allocate, as far as the system says: the smallest of
    the machine's available memory, the cgroup's remaining memory and the address-space and
    data limits (``ulimit -v`` / ``-d``) less what the process already uses; ``None`` when
    nothing is known."""
    found: list[int] = []
    status: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    with contextlib.suppress(OSError, ValueError, IndexError), \
            open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmSize", "VmData", "VmRSS"):
                    status[key] = int(value.split()[0]) * 1024
    with contextlib.suppress(OSError, ValueError, IndexError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            found.append(int(limit) - used)
    try:
        import resource
    except ImportError:  # pragma: no cover - not a POSIX system
        resource = None  # type: ignore[assignment]
    if resource is not None:
        for which, key in ((resource.RLIMIT_AS, "VmSize"), (resource.RLIMIT_DATA, "VmData")):
            soft = resource.getrlimit(which)[0]
            if soft != resource.RLIM_INFINITY and soft > 0:
                found.append(soft - status.get(key, 0))
    return max(min(found), 0) if found else None


def memory_estimate(path: str | Path, delimiter: str = ",", sample_bytes: int = 1 << 20) -> int:
    """Bytes that reading the csv file ``path`` whole into memory needs (an upper estimate
    from its size and the fields per byte of its first ``sample_bytes``; nothing else is
    read): :data:`CSV_FIELD_BYTES` per field plus four times the file's size."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(sample_bytes)
    if not head:
        return 0
    fields = head.count(delimiter.encode("utf-8", "replace")) + head.count(b"\n") + 1
    per_byte = fields / len(head)
    return int(size * per_byte * CSV_FIELD_BYTES + 4 * size)


def check_fits_in_memory(path: str | Path, what: str, delimiter: str = ",",
                         hint: str = "") -> None:
    """Refuse, before anything is read, a csv file whose in-memory reading would need more
    than :func:`available_memory` (one line with the figures and ``hint``: the streaming
    alternative)."""
    avail = available_memory()
    if avail is None:
        return
    need = memory_estimate(path, delimiter)
    if need <= avail:
        return
    size = Path(path).stat().st_size
    raise ConfigurationError(
        f"{what}: reading this {_fmt_bytes(size)} file into memory needs about "
        f"{_fmt_bytes(need)}, more than the {_fmt_bytes(avail)} available"
        + (f"; {hint}" if hint else "")
    )


def _fmt_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"
