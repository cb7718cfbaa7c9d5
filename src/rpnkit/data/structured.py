"""Structured datasets for RPN 2: citation graphs, images and token sequences.

* ``cora`` / ``citeseer`` – the Planetoid citation graphs with the standard split of
  Yang et al. (2016) (train 140 / 120, validation 500, test 1,000), shipped with rpnkit
  (``resources/datasets/planetoid_*.npz``, MIT, see ``resources/LICENSES.md``); ``path``
  reads another file of the same layout. ``view: features`` gives each labelled node's
  bag-of-words row (for MLPs and RPN 1); ``view: nodes`` gives node ids (one column), for
  graph models that hold the graph (:func:`load_graph`) and look nodes up – the bundle
  then declares the feature width as its input width.
* ``mnist_images`` – MNIST as 28×28 grids flattened row-major (784 columns), from the IDX
  files in ``root`` (default: the shared dataset folder, see :func:`shared_dataset_dir`).
* ``sst2`` – GLUE SST-2 ``train.tsv`` / ``dev.tsv``: test = dev, validation = a seeded
  part of train; ``ag_news`` – ``test.csv`` (and ``train.csv`` when present) of AG News,
  split seeded and stratified when only the test file exists. Both give token ids
  (0 = padding, 1 = unknown) of ``max_len`` tokens; the vocabulary is built from the
  training split only.

Nothing is downloaded.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import zipfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .mnist import mnist_arrays
from .sources import DATASETS, RawData

__all__ = ["GraphData", "load_graph", "shared_dataset_dir", "tokenize", "Vocabulary",
           "PLANETOID"]

PLANETOID = ("cora", "citeseer")
PAD, UNK = 0, 1


def shared_dataset_dir() -> Path | None:
    """The folder of offline datasets: ``$RPNKIT_DATASETS``, else ``../shared/datasets``
    from the working directory or from the source checkout; ``None`` when none exists."""
    env = os.environ.get("RPNKIT_DATASETS")
    cands = [Path(env)] if env else []
    cands += [Path.cwd() / ".." / "shared" / "datasets",
              Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets"]
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


def _root(root: str, sub: str, what: str) -> Path:
    if root:
        p = Path(root).expanduser()
    else:
        base = shared_dataset_dir()
        if base is None:
            raise ConfigurationError(
                f"{what}: no root given and no shared dataset folder found; pass root: DIR "
                f"(the folder holding the files) or set RPNKIT_DATASETS"
            )
        p = base / sub
    if not p.is_dir():
        raise ConfigurationError(f"{what}: root {str(p)!r} is not a directory")
    return p


# ----------------------------------------------------------------------------- graphs
@dataclass(frozen=True)
class GraphData:
    """A node-classification graph: features (N, F) float32, edges (E, 2), labels (N,)
    (-1 = unlabelled) and the standard split's node ids."""

    name: str
    features: np.ndarray
    edges: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray

    @property
    def num_nodes(self) -> int:
        return int(self.features.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


#: a Planetoid file (and every array in it, uncompressed) may be at most this large
MAX_GRAPH_FILE_BYTES = 2**31
#: most classes a graph's labels may name (labels are 0 .. classes-1, -1 = unlabelled)
MAX_GRAPH_CLASSES = 10_000
_PLANETOID_KEYS = ("feat_shape", "feat_indptr", "feat_indices", "feat_data", "labels", "edges",
                   "train_idx", "val_idx", "test_idx")


def _planetoid_bytes(name: str, path: str) -> tuple[bytes, str]:
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise ConfigurationError(f"{name}: path {str(p)!r} is not a file")
        size = p.stat().st_size
        if size > MAX_GRAPH_FILE_BYTES:
            raise ConfigurationError(f"{name}: {str(p)!r} is {size:,} bytes, above the limit of "
                                     f"{MAX_GRAPH_FILE_BYTES:,} for a Planetoid .npz file")
        try:
            return p.read_bytes(), str(p)
        except OSError as exc:
            raise ConfigurationError(f"{name}: cannot read {str(p)!r}: {exc.strerror or exc}"
                                     ) from None
    node = resources.files("rpnkit").joinpath("resources", "datasets", f"planetoid_{name}.npz")
    return node.read_bytes(), f"planetoid_{name}.npz (shipped)"


def _npz_arrays(data: bytes, name: str, where: str) -> dict[str, np.ndarray]:
    """The Planetoid arrays of an .npz file, every member's header checked (real numbers,
    declared size within :data:`MAX_GRAPH_FILE_BYTES`) before it is read."""
    bad = f"{name}: {where} is not a Planetoid .npz file"
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ConfigurationError(f"{bad} (not a zip archive)") from None
    out: dict[str, np.ndarray] = {}
    with zf:
        for key in _PLANETOID_KEYS:
            try:
                info = zf.getinfo(f"{key}.npy")
            except KeyError:
                raise ConfigurationError(f"{bad} (no array {key!r})") from None
            if info.file_size > MAX_GRAPH_FILE_BYTES:
                raise ConfigurationError(f"{bad} (array {key!r} unpacks to {info.file_size:,} "
                                         f"bytes, above the limit of {MAX_GRAPH_FILE_BYTES:,})")
            try:
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.kind not in "biuf" or dtype.fields is not None:
                    raise ConfigurationError(f"{bad} (array {key!r} holds {dtype}, not numbers)")
                declared = math.prod(shape) * dtype.itemsize
                if declared > MAX_GRAPH_FILE_BYTES:
                    raise ConfigurationError(
                        f"{bad} (array {key!r} declares shape {shape}: {declared:,} bytes, above "
                        f"the limit of {MAX_GRAPH_FILE_BYTES:,})")
                with zf.open(info) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            except ConfigurationError:
                raise
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError) as exc:
                msg = " ".join(str(exc).split())[:200]
                raise ConfigurationError(f"{bad} (array {key!r}: {msg})") from None
    return out


def _as_int(a: np.ndarray, key: str, bad: str) -> np.ndarray:
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or np.any(a != np.round(a)) or (
                a.size and np.abs(a).max() >= 2**53):
            raise ConfigurationError(f"{bad}: {key} must hold integers")
    elif a.dtype.kind == "u" and a.size and a.max() > np.iinfo(np.int64).max:
        raise ConfigurationError(f"{bad}: {key} holds values above the int64 range")
    return a.astype(np.int64)


def _check_range(a: np.ndarray, key: str, lo: int, hi: int, bad: str) -> None:
    """Refuse values of ``a`` outside ``[lo, hi)``, naming the first."""
    out = (a < lo) | (a >= hi)
    if out.any():
        j = int(np.flatnonzero(out.reshape(-1))[0])
        raise ConfigurationError(
            f"{bad}: {key} holds {int(a.reshape(-1)[j])} at position {j}, outside [{lo}, {hi - 1}]"
        )


@cache
def _load_graph_cached(name: str, path: str) -> GraphData:
    from ..budget import format_bytes, memory_budget

    data, where = _planetoid_bytes(name, path)
    z = _npz_arrays(data, name, where)
    bad = f"{name}: {where}"
    shape_arr = _as_int(z["feat_shape"].reshape(-1), "feat_shape", bad)
    if shape_arr.shape != (2,) or shape_arr.min() < 1:
        raise ConfigurationError(f"{bad}: feat_shape must be two positive integers (nodes, "
                                 f"features), got {shape_arr.tolist()}")
    shape = (int(shape_arr[0]), int(shape_arr[1]))
    n = shape[0]
    # the features are held densely (float32) and read as float64 rows: bound them first
    need = shape[0] * shape[1] * (4 + 8)
    budget, source = memory_budget()
    if need > MAX_GRAPH_FILE_BYTES * 8 or (budget is not None and need > budget):
        limit = min(MAX_GRAPH_FILE_BYTES * 8, budget or MAX_GRAPH_FILE_BYTES * 8)
        raise ConfigurationError(
            f"{bad}: a {shape[0]:,} x {shape[1]:,} feature matrix needs about "
            f"{format_bytes(need)} held densely, above the limit of {format_bytes(limit)}"
            + (f" (memory budget: {source})" if budget is not None and need > budget else ""))
    indptr = _as_int(z["feat_indptr"].reshape(-1), "feat_indptr", bad)
    indices = _as_int(z["feat_indices"].reshape(-1), "feat_indices", bad)
    vals = z["feat_data"].reshape(-1)
    labels = _as_int(z["labels"].reshape(-1), "labels", bad)
    edges = _as_int(z["edges"], "edges", bad)
    split = [_as_int(z[k].reshape(-1), k, bad) for k in ("train_idx", "val_idx", "test_idx")]
    if len(indptr) != n + 1 or len(labels) != n:
        raise ConfigurationError(f"{bad}: inconsistent shapes (features {shape}, "
                                 f"{len(indptr) - 1} rows, {len(labels)} labels)")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices) or len(
            vals) != len(indices):
        raise ConfigurationError(
            f"{bad}: feat_indptr must rise from 0 to the number of stored values "
            f"({len(indices)} indices, {len(vals)} values)")
    _check_range(indices, "feat_indices (feature columns)", 0, shape[1], bad)
    if not np.isfinite(vals).all():
        raise ConfigurationError(f"{bad}: feat_data holds NaN or inf")
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ConfigurationError(f"{bad}: edges must be an (E, 2) array, got shape {edges.shape}")
    _check_range(edges, "edges (node ids)", 0, n, bad)
    _check_range(labels, "labels", -1, MAX_GRAPH_CLASSES, bad)
    if not (labels >= 0).any():
        raise ConfigurationError(f"{bad}: no node is labelled")
    feats = np.zeros(shape, dtype=np.float32)
    rows = np.repeat(np.arange(shape[0]), np.diff(indptr))
    feats[rows, indices] = vals
    for k, idx in zip(("train", "val", "test"), split):
        if idx.size and (idx.min() < 0 or idx.max() >= n or np.any(labels[idx] < 0)):
            raise ConfigurationError(f"{name}: {where}: the {k} split names unlabelled or "
                                     f"missing nodes")
    for a in (feats, edges, labels, *split):
        a.setflags(write=False)
    return GraphData(name, feats, edges, labels, *split)


def load_graph(name: str = "cora", path: str = "") -> GraphData:
    """The ``cora`` or ``citeseer`` graph (shipped), or a Planetoid-layout ``.npz`` at ``path``."""
    if name not in PLANETOID:
        raise ConfigurationError(f"unknown graph {name!r}; valid: {', '.join(PLANETOID)}")
    return _load_graph_cached(name, str(path or ""))


class _Planetoid:
    graph_name = "cora"

    def __init__(self, view: str = "features", path: str = "", normalize_features: bool = False) -> None:
        if view not in ("features", "nodes"):
            raise ConfigurationError(
                f"{self.graph_name}: view must be 'features' (node feature rows) or 'nodes' "
                f"(node ids for graph models); got {view!r}"
            )
        self.view, self.path, self.normalize = view, path, bool(normalize_features)

    def load(self, rng: np.random.Generator) -> RawData:
        g = load_graph(self.graph_name, self.path)
        nodes = np.concatenate([g.train_idx, g.val_idx, g.test_idx])
        sizes = np.cumsum([0, len(g.train_idx), len(g.val_idx), len(g.test_idx)])
        indices = {k: np.arange(sizes[i], sizes[i + 1]) for i, k in enumerate(("train", "val", "test"))}
        info: dict[str, Any] = {"source": f"Planetoid {self.graph_name} (standard split)",
                                "num_nodes": g.num_nodes, "view": self.view}
        if self.view == "nodes":
            x = nodes[:, None].astype(np.float64)
            names = ["node"]
            info["input_width"] = g.num_features
        else:
            x = g.features[nodes].astype(np.float64)
            if self.normalize:
                x = x / np.maximum(x.sum(1, keepdims=True), 1.0)
            names = [f"w{i}" for i in range(g.num_features)]
        k = g.num_classes
        return RawData(x=x, y=g.labels[nodes].astype(np.int64), task="classification",
                       feature_names=names, target_names=["class"],
                       classes=[str(i) for i in range(k)], info=info, indices=indices)


@DATASETS.register("cora")
class CoraData(_Planetoid):
    """Cora citation graph, 2,708 nodes, 1,433 features, 7 classes, standard split (shipped)."""

    graph_name = "cora"


@DATASETS.register("citeseer")
class CiteseerData(_Planetoid):
    """Citeseer citation graph, 3,327 nodes, 3,703 features, 6 classes, standard split (shipped)."""

    graph_name = "citeseer"


# ----------------------------------------------------------------------------- images
@DATASETS.register("mnist_images")
class MnistImages:
    """MNIST as 28×28 grids (784 columns, row-major, scaled to [0, 1]) for grid models;
    ``root`` defaults to the shared dataset folder's ``mnist``; ``limit`` keeps the first rows."""

    def __init__(self, root: str = "", part: str = "auto", limit: int | None = None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigurationError(f"mnist_images: limit must be a positive integer, got {limit!r}")
        self.root, self.part, self.limit = root, part, limit

    def load(self, rng: np.random.Generator) -> RawData:
        root = _root(self.root, "mnist", "mnist_images")
        x, y, part = mnist_arrays(str(root), self.part, False)
        if self.limit is not None:
            x, y = x[: self.limit], y[: self.limit]
        x = x.reshape(len(x), -1).astype(np.float64) / 255.0
        return RawData(x=x, y=np.asarray(y, dtype=np.int64), task="classification",
                       feature_names=[f"px{i}" for i in range(x.shape[1])], target_names=["digit"],
                       classes=[str(i) for i in range(10)],
                       info={"part": part, "image_shape": [1, 28, 28]})


# ----------------------------------------------------------------------------- text
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters/digits, with an apostrophe suffix) and ! / ?."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Token → id (0 = padding, 1 = unknown), built from training texts only."""

    def __init__(self, texts: Sequence[list[str]], max_size: int = 20000, min_count: int = 1) -> None:
        counts = Counter(t for toks in texts for t in toks)
        kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        self.words = ["<pad>", "<unk>", *kept[: max(0, max_size - 2)]]
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, texts: Sequence[list[str]], max_len: int) -> np.ndarray:
        out = np.zeros((len(texts), max_len), dtype=np.float64)
        for i, toks in enumerate(texts):  # parsing (numpy side), not model code
            ids = [self.index.get(t, UNK) for t in toks[:max_len]]
            out[i, : len(ids)] = ids
        return out


def _check_text_options(what: str, max_len: Any, vocab_size: Any, min_count: Any) -> None:
    for name, v, lo in (("max_len", max_len, 1), ("vocab_size", vocab_size, 3), ("min_count", min_count, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ConfigurationError(f"{what}: {name} must be an integer >= {lo}, got {v!r}")


def _text_raw(texts: list[list[str]], labels: np.ndarray, indices: dict[str, np.ndarray],
              classes: list[str], max_len: int, vocab_size: int, min_count: int, info: dict) -> RawData:
    vocab = Vocabulary([texts[i] for i in indices["train"]], vocab_size, min_count)
    x = vocab.encode(texts, max_len)
    info = {**info, "vocab_size": len(vocab), "max_len": max_len,
            "vocabulary_from": "training split only"}
    return RawData(x=x, y=labels.astype(np.int64), task="classification",
                   feature_names=[f"tok{i}" for i in range(max_len)], target_names=["label"],
                   classes=classes, info=info, indices=indices)


def _limit(idx: np.ndarray, limit: int | None, rng: np.random.Generator) -> np.ndarray:
    if limit is None or limit >= len(idx):
        return idx
    return np.sort(rng.choice(idx, size=limit, replace=False))


@DATASETS.register("sst2")
class Sst2Data:
    """GLUE SST-2 as token ids: test = dev.tsv (872), validation = ``val_size`` rows of
    train.tsv, the rest trains (``train_limit`` keeps a seeded subset); vocabulary from the
    training rows only."""

    def __init__(self, root: str = "", max_len: int = 48, vocab_size: int = 20000,
                 min_count: int = 1, val_size: int = 872, train_limit: int | None = None) -> None:
        _check_text_options("sst2", max_len, vocab_size, min_count)
        self.root, self.max_len, self.vocab_size, self.min_count = root, max_len, vocab_size, min_count
        self.val_size, self.train_limit = val_size, train_limit

    @staticmethod
    def _read(path: Path) -> tuple[list[str], list[int]]:
        if not path.is_file():
            raise ConfigurationError(f"sst2: {str(path)!r} not found (need train.tsv and dev.tsv)")
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].split("\t") != ["sentence", "label"]:
            raise ConfigurationError(f"sst2: {path.name} must start with the header 'sentence\\tlabel'")
        texts, labels = [], []
        for no, line in enumerate(lines[1:], start=2):
            parts = line.rsplit("\t", 1)
            if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
                raise ConfigurationError(f"sst2: {path.name} line {no}: expected 'sentence<TAB>0|1'")
            texts.append(parts[0])
            labels.append(int(parts[1]))
        return texts, labels

    def load(self, rng: np.random.Generator) -> RawData:
        root = _root(self.root, "sst2", "sst2")
        tr_t, tr_y = self._read(root / "train.tsv")
        te_t, te_y = self._read(root / "dev.tsv")
        n_tr = len(tr_t)
        if not 0 < self.val_size < n_tr:
            raise ConfigurationError(f"sst2: val_size must be in [1, {n_tr - 1}], got {self.val_size!r}")
        perm = rng.permutation(n_tr)
        val, train = np.sort(perm[: self.val_size]), np.sort(perm[self.val_size:])
        train = _limit(train, self.train_limit, rng)
        indices = {"train": train, "val": val, "test": np.arange(n_tr, n_tr + len(te_t))}
        texts = [tokenize(t) for t in tr_t + te_t]
        return _text_raw(texts, np.array(tr_y + te_y), indices, ["negative", "positive"],
                         self.max_len, self.vocab_size, self.min_count,
                         {"source": "GLUE SST-2", "test": "dev.tsv"})


@DATASETS.register("ag_news")
class AgNewsData:
    """AG News as token ids (title + description). With train.csv and test.csv in ``root``
    they are used as given (validation: ``val_fraction`` of train); with test.csv only, it is
    split seeded and stratified into ``fractions`` (train, val, test). ``train_limit`` keeps a
    seeded training subset. Vocabulary from the training rows only."""

    CLASSES = ["World", "Sports", "Business", "Sci/Tech"]

    def __init__(self, root: str = "", max_len: int = 64, vocab_size: int = 20000,
                 min_count: int = 1, fractions: list | None = None, val_fraction: float = 0.05,
                 train_limit: int | None = None) -> None:
        _check_text_options("ag_news", max_len, vocab_size, min_count)
        fr = list(fractions) if fractions is not None else [0.7, 0.1, 0.2]
        if len(fr) != 3 or any(not isinstance(f, (int, float)) or f <= 0 for f in fr) or abs(sum(fr) - 1) > 1e-6:
            raise ConfigurationError(f"ag_news: fractions must be three positive numbers summing to 1, got {fractions!r}")
        self.root, self.max_len, self.vocab_size, self.min_count = root, max_len, vocab_size, min_count
        self.fractions, self.val_fraction, self.train_limit = fr, float(val_fraction), train_limit

    @staticmethod
    def _read(path: Path) -> tuple[list[str], list[int]]:
        texts, labels = [], []
        with open(path, encoding="utf-8", newline="") as f:
            for no, row in enumerate(csv.reader(f), start=1):
                if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                    raise ConfigurationError(
                        f"ag_news: {path.name} line {no}: expected 'class (1-4), title, description'"
                    )
                text = (row[1] + " " + row[2]).replace("\\n", " ").replace("\\", " ")
                texts.append(text)
                labels.append(int(row[0]) - 1)
        return texts, labels

    def load(self, rng: np.random.Generator) -> RawData:
        root = _root(self.root, "ag_news", "ag_news")
        test_path, train_path = root / "test.csv", root / "train.csv"
        if not test_path.is_file():
            raise ConfigurationError(f"ag_news: {str(test_path)!r} not found")
        te_t, te_y = self._read(test_path)
        if train_path.is_file():
            tr_t, tr_y = self._read(train_path)
            perm = rng.permutation(len(tr_t))
            n_val = max(1, int(round(self.val_fraction * len(tr_t))))
            indices = {"train": np.sort(perm[n_val:]), "val": np.sort(perm[:n_val]),
                       "test": np.arange(len(tr_t), len(tr_t) + len(te_t))}
            texts, labels = tr_t + te_t, tr_y + te_y
        else:
            texts, labels = te_t, te_y
            y = np.array(labels)
            parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
            for c in range(4):
                idx = rng.permutation(np.nonzero(y == c)[0])
                a = int(round(self.fractions[0] * len(idx)))
                b = a + int(round(self.fractions[1] * len(idx)))
                parts["train"].append(idx[:a])
                parts["val"].append(idx[a:b])
                parts["test"].append(idx[b:])
            indices = {k: np.sort(np.concatenate(v)) for k, v in parts.items()}
        indices["train"] = _limit(indices["train"], self.train_limit, rng)
        return _text_raw([tokenize(t) for t in texts], np.array(labels), indices, self.CLASSES,
                         self.max_len, self.vocab_size, self.min_count,
                         {"source": "AG News", "files": "train+test" if train_path.is_file() else "test (split)"})
