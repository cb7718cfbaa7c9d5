"""Dataset sources, registered by name in :data:`DATASETS`.

Every source is a small class whose constructor takes the dataset's own options
(checked by the registry, so an unknown option is an error naming the closest valid
one) and whose :meth:`load` returns a :class:`RawData`. Splitting, standardisation
and validation are shared (see :mod:`rpnkit.data`).
"""

from __future__ import annotations

import csv
import io
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError, did_you_mean
from ..registry import Registry
from .formula import Formula, parse_formula
from .mnist import DEFAULT_MIRROR, mnist_arrays
from .readers import check_fits_in_memory, csv_rows, label_text, read_text_file

__all__ = ["DATASETS", "RawData", "equation_table", "equation_ids", "FEYNMAN_PAPER_IDS"]

DATASETS = Registry("dataset")
MAX_SAMPLES = 10_000_000

# the 27 Feynman equations of the RPN paper's Table 4 (PAPER_RESULTS.md §1.4)
FEYNMAN_PAPER_IDS = [
    "I.6.2", "I.6.2b", "I.9.18", "I.12.11", "I.13.12", "I.15.3x", "I.16.6", "I.18.4",
    "I.26.2", "I.27.6", "I.29.16", "I.30.3", "I.30.5", "I.37.4", "I.40.1", "I.44.4",
    "I.50.26", "II.2.42", "II.6.15a", "II.11.17", "II.11.27", "II.35.18", "II.36.38",
    "II.38.3", "III.9.52", "III.10.19", "III.17.37",
]  # fmt: skip


@dataclass
class RawData:
    """Features ``x`` (N, m) float64 and targets ``y`` before splitting."""

    x: np.ndarray
    y: np.ndarray  # (N, k) float64 for regression, (N,) int64 class indices for classification
    task: str  # "regression" | "classification"
    feature_names: list[str]
    target_names: list[str]
    classes: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    formula: Formula | None = None
    ranges: list[tuple[float, float]] | None = None
    #: a split fixed by the source (standard graph splits, text with its own test file):
    #: row positions per split, used by load_data instead of a random split
    indices: dict[str, np.ndarray] | None = None


def _resource_text(*parts: str) -> str:
    node = resources.files("rpnkit").joinpath("resources", *parts)
    return node.read_text(encoding="utf-8")


# ----------------------------------------------------------------------------- functions
def _check_ranges(ranges: Any, k: int, what: str) -> list[tuple[float, float]]:
    if ranges is None:
        return [(0.0, 1.0)] * k
    if not isinstance(ranges, (list, tuple)) or len(ranges) != k:
        raise ConfigurationError(
            f"{what}: ranges must list one [low, high] pair per variable ({k}), got {ranges!r}"
        )
    out = []
    for i, r in enumerate(ranges):
        if (
            not isinstance(r, (list, tuple))
            or len(r) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in r)
        ):
            raise ConfigurationError(f"{what}: range {i} must be [low, high] numbers, got {r!r}")
        lo, hi = float(r[0]), float(r[1])
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise ConfigurationError(f"{what}: range {i} needs finite low < high, got {r!r}")
        out.append((lo, hi))
    return out


def _sample_function(formula: Formula, ranges, n_samples: int, noise: float, rng, name: str,
                     info: dict) -> RawData:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 2 <= n_samples <= MAX_SAMPLES:
        raise ConfigurationError(
            f"{name}: n_samples must be an integer from 2 to {MAX_SAMPLES:,}, got {n_samples!r}"
        )
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigurationError(f"{name}: noise must be a number >= 0, got {noise!r}")
    lo = np.array([r[0] for r in ranges])
    hi = np.array([r[1] for r in ranges])
    x = lo + (hi - lo) * rng.random((n_samples, len(ranges)))
    y = formula(x)
    if noise:
        y = y + noise * rng.standard_normal(y.shape)
    return RawData(
        x=x,
        y=y[:, None],
        task="regression",
        feature_names=list(formula.variables),
        target_names=["y"],
        info={**info, "expression": formula.text, "ranges": [list(r) for r in ranges]},
        formula=formula,
        ranges=list(ranges),
    )


@DATASETS.register("function")
class FunctionData:
    """Samples of a formula over a box, e.g. ``exp(sin(3*x0)) * x1`` (safe parser)."""

    def __init__(self, expression: str = "", ranges: list | None = None, n_samples: int = 2000,
                 noise: float = 0.0, variables: list[str] | None = None) -> None:
        if variables is not None and (
            not isinstance(variables, list) or not all(isinstance(v, str) for v in variables)
        ):
            raise ConfigurationError(f"function: variables must be a list of names, got {variables!r}")
        n_vars = None
        if variables is None:  # x0..x{k-1}: k = the larger of the used variables and the ranges
            used = parse_formula(expression).n_vars
            n_vars = max(used, len(ranges) if isinstance(ranges, (list, tuple)) else 0)
        self.formula = parse_formula(expression, variables=variables, n_vars=n_vars)
        self.ranges = _check_ranges(ranges, self.formula.n_vars, "function")
        self.n_samples = n_samples
        self.noise = noise

    def load(self, rng: np.random.Generator) -> RawData:
        return _sample_function(self.formula, self.ranges, self.n_samples, self.noise, rng,
                                "function", {})


@cache
def equation_table(kind: str) -> dict[str, dict[str, Any]]:
    """Equations shipped with rpnkit: ``kind`` in elementary, composite, feynman,
    feynman_dimensionless. Returns ``{id: {"formula", "variables", "ranges", "output"}}``."""
    text = _resource_text("equations", f"{kind}.csv")
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    table: dict[str, dict[str, Any]] = {}
    for row in body:
        if not row or not row[0].strip():
            continue
        rec = dict(zip(header, row))
        if "output" in header:  # feynman: id, output, formula, n_vars, v{i}_name/low/high
            start = 4
            output = rec["output"]
        else:  # id, formula, n_vars, var/low/high repeated
            start = 3
            output = "f"
        n_vars = int(row[header.index("n_vars")])
        formula = row[header.index("formula")]
        triples = row[start : start + 3 * n_vars]
        # a few rows overstate n_vars and leave the extra triples empty
        n_vars = sum(1 for i in range(0, len(triples) - 2, 3) if triples[i].strip())
        variables = [triples[3 * i].strip() for i in range(n_vars)]
        ranges = [(float(triples[3 * i + 1]), float(triples[3 * i + 2])) for i in range(n_vars)]
        table[row[0]] = {"formula": formula, "variables": variables, "ranges": ranges,
                         "output": output}
    return table


def equation_ids(kind: str) -> list[str]:
    return list(equation_table(kind))


class _EquationData:
    kind = ""

    def __init__(self, equation: str = "", n_samples: int = 2000, noise: float = 0.0,
                 ranges: list | None = None) -> None:
        table = equation_table(self.kind)
        if equation not in table:
            raise ConfigurationError(
                f"unknown {self.kind} equation {equation!r}{did_you_mean(str(equation), table)}; "
                f"valid ids: {', '.join(table)}"
            )
        rec = table[equation]
        self.equation = equation
        self.formula = parse_formula(rec["formula"], variables=rec["variables"])
        self.ranges = (
            _check_ranges(ranges, len(rec["variables"]), self.kind) if ranges is not None
            else rec["ranges"]
        )
        self.n_samples = n_samples
        self.noise = noise

    def load(self, rng: np.random.Generator) -> RawData:
        return _sample_function(self.formula, self.ranges, self.n_samples, self.noise, rng,
                                self.kind, {"equation": self.equation})


@DATASETS.register("elementary")
class ElementaryData(_EquationData):
    """The paper's 17 elementary functions E.0-E.16 of x+y, by ``equation:`` id."""

    kind = "elementary"


@DATASETS.register("composite")
class CompositeData(_EquationData):
    """The paper's 17 composite functions C.0-C.16 of x+y, by ``equation:`` id."""

    kind = "composite"


@DATASETS.register("feynman")
class FeynmanData(_EquationData):
    """AI-Feynman equations by ``equation:`` id (original ranges; ``dimensionless: true`` for the 27 dimensionless variants)."""

    def __init__(self, equation: str = "", n_samples: int = 2000, noise: float = 0.0,
                 ranges: list | None = None, dimensionless: bool = False) -> None:
        self.kind = "feynman_dimensionless" if dimensionless else "feynman"
        super().__init__(equation, n_samples, noise, ranges)


# ----------------------------------------------------------------------------- tables
def _classification(x, labels, feature_names, info, target_name="class") -> RawData:
    labels = np.asarray(labels)
    classes, y = np.unique(labels, return_inverse=True)
    return RawData(
        x=np.asarray(x, dtype=np.float64),
        y=y.astype(np.int64),
        task="classification",
        feature_names=[str(f) for f in feature_names],
        target_names=[target_name],
        classes=[str(c) for c in classes],
        info=info,
    )


class _Sklearn:
    loader = ""

    def __init__(self) -> None:
        pass

    def load(self, rng: np.random.Generator) -> RawData:
        try:
            import sklearn.datasets
        except ImportError:
            raise ConfigurationError(
                f"dataset {self.registry_name!r} is read from scikit-learn: pip install "
                "'rpnkit[sklearn]' (or scikit-learn)"
            ) from None

        bunch = getattr(sklearn.datasets, self.loader)()
        names = list(getattr(bunch, "feature_names", [f"x{i}" for i in range(bunch.data.shape[1])]))
        raw = _classification(bunch.data, bunch.target, names, {"source": f"sklearn.{self.loader}"})
        raw.classes = [str(c) for c in getattr(bunch, "target_names", raw.classes)]
        return raw


@DATASETS.register("iris")
class IrisData(_Sklearn):
    """Iris flowers, 150 samples, 4 features, 3 classes (scikit-learn's bundled copy)."""

    loader = "load_iris"


@DATASETS.register("wine")
class WineData(_Sklearn):
    """Wine recognition, 178 samples, 13 features, 3 classes (scikit-learn)."""

    loader = "load_wine"


@DATASETS.register("digits")
class DigitsData(_Sklearn):
    """8x8 handwritten digits, 1,797 samples, 64 features, 10 classes (scikit-learn)."""

    loader = "load_digits"


@DATASETS.register("breast_cancer")
class BreastCancerData(_Sklearn):
    """Breast cancer Wisconsin, 569 samples, 30 features, 2 classes (scikit-learn)."""

    loader = "load_breast_cancer"


def _parse_table(text: str, source: str, header: bool, delimiter: str):
    """Column names, records and the file line (1-based) where each record starts.

    Blank records are skipped; a header naming one column twice is refused."""
    rows: list[list[str]] = []
    lines: list[int] = []
    for r, start in csv_rows(text, source, delimiter):
        rows.append(r)
        lines.append(start)
    if not rows:
        raise ConfigurationError(f"{source} contains no rows")
    if header:
        names = [c.strip() for c in rows[0]]
        seen: set[str] = set()
        for c in names:
            c = unicodedata.normalize("NFC", c)
            if c in seen:
                raise ConfigurationError(
                    f"{source}: column {c!r} appears twice in the header (line {lines[0]}); "
                    "give every column its own name"
                )
            seen.add(c)
        rows, lines = rows[1:], lines[1:]
    else:
        names = [f"c{i}" for i in range(len(rows[0]))]
    if not rows:
        raise ConfigurationError(f"{source} has a header but no data rows")
    for r, ln in zip(rows, lines):
        if len(r) != len(names):
            raise ConfigurationError(
                f"{source}: line {ln} has {len(r)} fields, expected {len(names)}"
            )
    return names, rows, lines


def float_column(values: Sequence[str], what: str, column: str, where) -> np.ndarray:
    """Text values as float64; the first non-number is refused naming ``where(index)``."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        pass
    out = np.empty(len(values))
    for j, v in enumerate(values):
        try:
            out[j] = float(v)
        except ValueError:
            raise ConfigurationError(
                f"{what}: column {column!r} at {where(j)} holds {v!r}, which is not a number"
            ) from None
    return out


def _to_float(rows, col: int, name: str, source: str, lines: Sequence[int]) -> np.ndarray:
    """Column ``col`` as float64; a non-number or NaN/inf is refused naming its line."""
    values = [r[col] for r in rows]
    out = float_column(values, source, name, lambda i: f"line {lines[i]}")
    bad = ~np.isfinite(out)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        kind = "NaN" if np.isnan(out[i]) else "inf"
        raise ConfigurationError(
            f"{source}: column {name!r} at line {lines[i]} holds {values[i]!r}, which is not a "
            f"finite number ({kind}); clean the data"
        )
    return out


# ----------------------------------------------------------------------------- class labels
# Class labels read as text (CSV files, string columns) are kept exactly as written, never
# converted through float: a label is its text without surrounding spaces and must be an
# integer written in digits ("7", "-3", "1000000000000000001") or text that is not a number
# ("cat"). Refused, naming the file and line: empty labels, "nan"/"inf", non-integral
# numbers ("1.5") and integer-valued number text ("1.0", "1e3": write "1", "1000"); two
# spellings of one integer ("7" and "007"). ``classes`` holds the labels as written,
# integer labels ordered by value, otherwise in text order.
_INT_TEXT = re.compile(r"[+-]?[0-9]+")


def _label_problem(text: str) -> str | None:
    """Why the (stripped) text ``text`` cannot be a class label, or None."""
    if not text:
        return "empty"
    if _INT_TEXT.fullmatch(text):
        return None
    try:
        value = float(text)
    except ValueError:
        return None  # ordinary text
    return "is not a finite number" if not math.isfinite(value) else "is not an integer"


def check_text_labels(labels: Sequence[str], what: str, column: str,
                      where: Callable[[int], str]) -> None:
    """Refuse the first label of ``labels`` (stripped text) that cannot be a class label."""
    bad = {v for v in set(labels) if _label_problem(v) is not None}
    if not bad:
        return
    j = next(j for j, v in enumerate(labels) if v in bad)
    problem = _label_problem(labels[j])
    if problem == "empty":
        raise ConfigurationError(f"{what}: empty class label in column {column!r} at {where(j)}")
    hint = (
        "; class labels are integers written in digits (2, not 2.0 or 2e0) or text that is "
        "not a number (use task: regression for a numeric target)"
        if problem == "is not an integer" else " (a missing value?)"
    )
    raise ConfigurationError(
        f"{what}: class label {labels[j]!r} in column {column!r} at {where(j)} {problem}{hint}"
    )


def check_label_spellings(firsts: Mapping[Any, Any], what: str, column: str,
                          where: Callable[[Any], str]) -> None:
    """Refuse two spellings of one integer (``7``, ``007``) among the distinct labels
    ``firsts`` (label -> position of its first row, in row order)."""
    seen: dict[int, Any] = {}
    for label in firsts:
        if not isinstance(label, str) or not _INT_TEXT.fullmatch(label):
            continue
        value = int(label)
        if value in seen:
            other = seen[value]
            raise ConfigurationError(
                f"{what}: class labels {label!r} at {where(firsts[label])} and {other!r} at "
                f"{where(firsts[other])} in column {column!r} are the same integer written two "
                "ways; write each class label one way"
            )
        seen[value] = label


def sort_labels(values: Iterable) -> list:
    """Class labels in order: integers by value, all-integer text by value, else text order."""
    vals = list(values)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals):
        return sorted(vals)
    if all(isinstance(v, str) for v in vals):
        if all(_INT_TEXT.fullmatch(v) for v in vals):
            return sorted(vals, key=lambda v: (int(v), v))
        return sorted(vals)
    return sorted(vals, key=str)


def _text_classes(labels: Sequence[str], what: str, column: str,
                  where: Callable[[int], str]) -> tuple[list[str], np.ndarray]:
    """Checked text labels -> (classes as written, int64 class index per row). Labels are
    compared in Unicode normal form NFC (one class for the composed and decomposed
    spellings of a label)."""
    labels = [label_text(v) for v in labels]
    check_text_labels(labels, what, column, where)
    firsts: dict[str, int] = {}
    for j, v in enumerate(labels):
        firsts.setdefault(v, j)
    check_label_spellings(firsts, what, column, where)
    if len(firsts) < 2:
        raise ConfigurationError(
            f"{what}: column {column!r} holds only one class ({next(iter(firsts))!r}); "
            "classification needs at least two"
        )
    ordered = sort_labels(firsts)
    index = {v: k for k, v in enumerate(ordered)}
    y = np.fromiter((index[v] for v in labels), dtype=np.int64, count=len(labels))
    return ordered, y


def _table_classification(rows, lines, names, tcol: int, source: str, info: dict,
                          target_name: str = "class") -> RawData:
    """Features (all other columns, float, finite) and exact text class labels of a table."""
    fcols = [i for i in range(len(names)) if i != tcol]
    x = np.stack([_to_float(rows, c, names[c], source, lines) for c in fcols], axis=1)
    classes, y = _text_classes([r[tcol].strip() for r in rows], source, names[tcol],
                               lambda j: f"line {lines[j]}")
    return RawData(x=x, y=y, task="classification", feature_names=[names[c] for c in fcols],
                   target_names=[target_name], classes=classes, info=info)


@DATASETS.register("banknote")
class BanknoteData:
    """UCI banknote authentication, 1,372 samples, 4 features, 2 classes (shipped, CC BY 4.0)."""

    def __init__(self) -> None:
        pass

    def load(self, rng: np.random.Generator) -> RawData:
        names = ["variance", "skewness", "curtosis", "entropy", "class"]
        _, rows, lines = _parse_table(_resource_text("datasets", "banknote.csv"), "banknote",
                                      False, ",")
        return _table_classification(rows, lines, names, 4, "banknote",
                                     {"source": "UCI banknote authentication"})


@DATASETS.register("pima")
class PimaData:
    """Pima Indians diabetes, 768 samples, 8 features, 2 classes (shipped; zeros = missing, kept)."""

    def __init__(self) -> None:
        pass

    def load(self, rng: np.random.Generator) -> RawData:
        names, rows, lines = _parse_table(_resource_text("datasets", "pima.csv"), "pima", True, ",")
        return _table_classification(rows, lines, names, 8, "pima",
                                     {"source": "Pima Indians diabetes"})


@DATASETS.register("mnist")
class MnistData:
    """MNIST digits from IDX files in ``root`` (``download: true`` fetches them, checksum-verified)."""

    def __init__(self, root: str = "", part: str = "auto", download: bool = False,
                 url: str = DEFAULT_MIRROR, checksums: dict | None = None, scale: bool = True,
                 limit: int | None = None) -> None:
        if not isinstance(root, str) or not root:
            raise ConfigurationError("mnist needs root: a folder holding (or receiving) the IDX files")
        if not isinstance(download, bool):
            raise ConfigurationError(f"mnist: download must be true or false, got {download!r}")
        if checksums is not None and not (
            isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())
        ):
            raise ConfigurationError("mnist: checksums must map file names to hex digests")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigurationError(f"mnist: limit must be a positive integer, got {limit!r}")
        if not download and not Path(root).expanduser().is_dir():
            raise ConfigurationError(f"mnist root {root!r} is not a directory")
        self.root, self.part, self.download = root, part, download
        self.url, self.checksums, self.scale, self.limit = url, checksums, scale, limit

    def load(self, rng: np.random.Generator) -> RawData:
        x, y, part = mnist_arrays(self.root, self.part, self.download, self.url, self.checksums)
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        x = x.astype(np.float64)
        if self.scale:
            x /= 255.0
        raw = _classification(x, y, [f"px{i}" for i in range(x.shape[1])], {"part": part})
        return raw


#: what a csv file too large for memory should do instead (rpnkit.data.streaming's csv)
STREAM_HINT = ("stream it instead: set data.stream: true (rows read block by block; set "
               "data.task: regression or classification)")


@DATASETS.register("csv")
class CsvData:
    """A user's own CSV file: ``path``, ``target`` column, optional ``features``/``header``/``delimiter``/``task``.

    Class labels are kept exactly as written (see "class labels" above): integers in
    digits or non-numeric text; ``1.5``, ``1.0``, ``nan``, empty labels, two spellings
    of one integer and a single class are refused naming the line. Feature values must
    be finite numbers. A header naming a column twice is refused. Errors name the file
    and its line (1-based, the header included).
    """

    def __init__(self, path: str = "", target: str | int | None = None, features: list | None = None,
                 header: bool = True, delimiter: str = ",", task: str = "auto") -> None:
        if not isinstance(path, str) or not path:
            raise ConfigurationError("csv needs path: the file to read")
        if not Path(path).expanduser().is_file():
            raise ConfigurationError(f"csv file {path!r} does not exist")
        if task not in ("auto", "regression", "classification"):
            raise ConfigurationError(
                f"csv: task must be auto, regression or classification, got {task!r}"
            )
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise ConfigurationError(f"csv: delimiter must be one character, got {delimiter!r}")
        self.path, self.target, self.features = Path(path).expanduser(), target, features
        self.header, self.delimiter, self.task = bool(header), delimiter, task

    def _column(self, key: Any, names: list[str]) -> int:
        if isinstance(key, bool):
            raise ConfigurationError(f"csv: bad column {key!r}")
        if isinstance(key, int):
            if not -len(names) <= key < len(names):
                raise ConfigurationError(f"csv: column index {key} out of range (0..{len(names) - 1})")
            return key % len(names)
        if key not in names:
            raise ConfigurationError(
                f"csv {self.path.name}: no column {key!r}{did_you_mean(str(key), names)}; "
                f"columns: {', '.join(names)}"
            )
        return names.index(key)

    def load(self, rng: np.random.Generator) -> RawData:
        src = f"csv {self.path}"
        check_fits_in_memory(self.path, src, self.delimiter, STREAM_HINT)  # before reading it
        text = read_text_file(self.path, src)
        names, rows, lines = _parse_table(text, src, self.header, self.delimiter)
        tcol = self._column(self.target if self.target is not None else -1, names)
        if self.features is None:
            fcols = [i for i in range(len(names)) if i != tcol]
        else:
            if not isinstance(self.features, list) or not self.features:
                raise ConfigurationError("csv: features must be a non-empty list of columns")
            fcols = [self._column(f, names) for f in self.features]
            if tcol in fcols:
                raise ConfigurationError(f"csv: the target column {names[tcol]!r} is also a feature")
        if not fcols:
            raise ConfigurationError("csv: no feature columns")
        x = np.stack([_to_float(rows, c, names[c], src, lines) for c in fcols], axis=1)
        raw_target = [r[tcol].strip() for r in rows]
        task = self.task
        if task == "auto":
            task = self._auto_task(raw_target)
        feature_names = [names[c] for c in fcols]
        info = {"path": str(self.path)}
        if task == "classification":
            classes, y = _text_classes(raw_target, src, names[tcol], lambda j: f"line {lines[j]}")
            return RawData(x=x, y=y, task="classification", feature_names=feature_names,
                           target_names=[names[tcol]], classes=classes, info=info)
        yf = _to_float([[v] for v in raw_target], 0, names[tcol], src, lines)
        return RawData(x=x, y=yf[:, None], task="regression", feature_names=feature_names,
                       target_names=[names[tcol]], info=info)

    @staticmethod
    def _auto_task(raw_target: list[str]) -> str:
        """``task: auto``: classification for text labels and for at most 20 distinct
        whole numbers, else regression. Only chooses the task: the labels are then
        checked exactly (``2.0`` as a class label is refused, not rounded)."""
        distinct = set(raw_target)
        if all(_INT_TEXT.fullmatch(v) for v in distinct):
            return "classification" if len(distinct) <= 20 else "regression"
        try:
            values = np.array([float(v) for v in distinct])
        except ValueError:
            return "classification"  # text labels
        if not np.isfinite(values).all():
            return "regression"  # refused there, naming the line
        integral = bool(np.all(values == np.round(values)))
        return "classification" if integral and len(np.unique(values)) <= 20 else "regression"
