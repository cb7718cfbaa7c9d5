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

import csv
import io
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, short

__all__ = ["MAX_FIELD_CHARS", "read_text_file", "decode_text", "csv_rows", "csv_error", "check_bom",
           "read_features",
           "label_text", "check_unique_names"]

#: longest csv field (characters): Python's csv module's own limit, kept (a longer field
#: is almost always a wrong delimiter or an unclosed quote)
MAX_FIELD_CHARS = csv.field_size_limit()

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


def decode_text(data: bytes, what: str, first_line: int = 1) -> str:
    """``data`` as UTF-8 text (a leading BOM dropped), or one ConfigurationError saying
    what the bytes are and at which line the first bad one is."""
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
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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


def _read_npy(path: Path, feature_names: Sequence[str] | None) -> np.ndarray:
    what = f"{path}"
    try:
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ConfigurationError(f"{what}: not a readable .npy array ({msg})") from None
    if not isinstance(mm, np.ndarray):
        raise ConfigurationError(f"{what}: not a .npy array file")
    dt = mm.dtype
    if dt.fields is not None:
        raise ConfigurationError(
            f"{what}: a structured array (fields {', '.join(list(dt.names or ())[:8])}); save "
            "a plain (N, features) array of numbers"
        )
    if dt.kind == "c":
        raise ConfigurationError(
            f"{what}: holds complex numbers ({dt}); the model takes real features (save the "
            "real and imaginary parts as separate columns)"
        )
    if dt.kind not in "biuf":
        raise ConfigurationError(f"{what}: holds {dt}, not real numbers")
    if mm.ndim == 0:
        raise ConfigurationError(f"{what}: a 0-d array (one number); save an (N, features) array")
    if mm.ndim > 2:
        raise ConfigurationError(
            f"{what}: an array of shape {mm.shape}; save an (N, features) array"
        )
    if mm.shape[0] == 0 or (mm.ndim == 2 and mm.shape[1] == 0):
        raise ConfigurationError(f"{what}: the array of shape {mm.shape} holds no values")
    x = mm.reshape(-1, 1) if mm.ndim == 1 else mm
    if feature_names and x.shape[1] == len(feature_names) + 1:
        x = x[:, : len(feature_names)]  # a trailing target column
    try:
        return np.array(x, dtype=np.float64)
    except (ValueError, OSError) as exc:  # e.g. a file truncated after its header
        raise ConfigurationError(f"{what}: not a readable .npy array ({exc})") from None


def _parquet_column(col: Any, name: str, what: str) -> np.ndarray:
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
        k = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        raise ConfigurationError(f"{what}: missing value in column {short(name, 80)} at row "
                                 f"{k} (0-based)")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float64)


def _read_parquet(path: Path, feature_names: Sequence[str] | None) -> np.ndarray:
    what = f"{path}"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError("reading .parquet needs pyarrow: pip install 'rpnkit[parquet]'"
                                 ) from None
    try:
        pf = pq.ParquetFile(path)
        names = list(pf.schema_arrow.names)
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ConfigurationError(f"{what}: not a readable parquet file ({msg})") from None
    if not names:
        raise ConfigurationError(f"{what}: the parquet file has no columns")
    check_unique_names(names, what, "the parquet schema")
    cols = _match(names, feature_names, what)
    if pf.metadata.num_rows == 0:
        raise ConfigurationError(f"{what}: the parquet file holds no rows")
    try:
        table = pf.read(columns=[names[i] for i in cols])
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ConfigurationError(f"{what}: not a readable parquet file ({msg})") from None
    out = [_parquet_column(table.column(j), names[i], what) for j, i in enumerate(cols)]
    return np.column_stack(out)


def _read_csv(path: Path, feature_names: Sequence[str] | None) -> np.ndarray:
    what = f"{path}"
    text = read_text_file(path, what)
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    records = list(csv_rows(text, what, delimiter))
    if not records:
        raise ConfigurationError(f"{what} is empty (no rows)")
    first = records[0][0]
    header_is_names = any(not _is_number(c) for c in first)
    names = [c.strip() for c in first] if header_is_names else None
    body = records[1:] if header_is_names else records
    if names is not None:
        check_unique_names(names, what)
    if not body:
        raise ConfigurationError(f"{what} has a header but no data rows")
    width = len(names) if names is not None else len(body[0][0])
    for r, line in body:
        if len(r) != width:
            raise ConfigurationError(f"{what}: line {line} has {len(r)} fields, expected {width}")
    cols = _match(names, feature_names, what) if names is not None else list(range(width))
    if names is None and feature_names and width == len(feature_names) + 1:
        cols = list(range(len(feature_names)))  # a trailing target column
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


def read_features(path: str | Path, feature_names: Sequence[str] | None = None) -> np.ndarray:
    """Features of a .csv/.tsv/.txt (header optional), .npy or .parquet file as a float64
    (N, m) array, N >= 1.

    With ``feature_names`` (a run's), CSV/parquet columns are matched by name (order and
    extra columns, e.g. the target, do not matter; names compare in NFC form); a file
    without a header (or a .npy array) with one column more than the features has its
    last column (a target) dropped. Values are not checked for NaN/inf here.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigurationError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _read_npy(path, feature_names)
    if suffix == ".parquet":
        return _read_parquet(path, feature_names)
    if suffix in (".csv", ".txt", ".tsv"):
        return _read_csv(path, feature_names)
    raise ConfigurationError(f"{path}: input must be .csv, .tsv, .txt, .npy or .parquet")
