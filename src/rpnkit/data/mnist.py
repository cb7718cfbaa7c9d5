"""MNIST from IDX files, with an optional checksum-verified download."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

from ..errors import ConfigurationError

__all__ = ["MNIST_FILES", "MNIST_MD5", "DEFAULT_MIRROR", "read_idx", "download_file", "mnist_arrays"]

logger = logging.getLogger(__name__)

DEFAULT_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# the official MD5 checksums (as published with the dataset mirrors used by torchvision)
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_MAX_BYTES = 200 * 2**20


def _digest(path: Path, expected: str) -> str:
    algo = "sha256" if len(expected) == 64 else "md5"
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, dest: Path, checksum: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying an MD5 (32 hex) or SHA-256 (64 hex).

    The data is written to a temporary file in the destination folder and renamed into
    place only after the checksum matched; on any failure nothing is left behind.
    """
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https"):
        raise ConfigurationError(f"download URL must be http(s), got {url!r}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = 0
                    while True:
                        chunk = resp.read(1 << 16)
                        if not chunk:
                            break
                        total += len(chunk)
                        if total > _MAX_BYTES:
                            raise ConfigurationError(f"download of {url} exceeds {_MAX_BYTES} bytes")
                        out.write(chunk)
            except OSError as exc:
                raise ConfigurationError(f"could not download {url}: {exc}") from None
        got = _digest(Path(tmp), checksum)
        if got != checksum.lower():
            raise ConfigurationError(
                f"checksum mismatch for {url}: expected {checksum.lower()}, got {got}; "
                "the file was discarded"
            )
        os.replace(tmp, dest)
        logger.info("downloaded %s -> %s", url, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_idx(path: Path) -> np.ndarray:
    """Read a (possibly gzipped) IDX file into a uint8 array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:
        raise ConfigurationError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 8:
        raise ConfigurationError(f"{path} is too short to be an IDX file")
    magic = int.from_bytes(data[:4], "big")
    if magic >> 8 != 0x08:  # unsigned byte data
        raise ConfigurationError(f"{path} is not an unsigned-byte IDX file (magic {magic})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(shape)) if shape else 0
    if len(data) != header + count:
        raise ConfigurationError(
            f"{path}: header says shape {shape} ({count} bytes) but the file holds "
            f"{len(data) - header} data bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _find(root: Path, name: str) -> Path | None:
    for cand in (root / name, root / name[:-3]):
        if cand.exists():
            return cand
    return None


def mnist_arrays(
    root: str | os.PathLike,
    part: str = "auto",
    download: bool = False,
    url: str = DEFAULT_MIRROR,
    checksums: dict[str, str] | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Load MNIST images (N, 784) uint8 and labels (N,) from ``root``.

    ``part``: ``train``, ``test``, ``all`` (train then test) or ``auto`` (``all`` when the
    training files are present or downloadable, else ``test``).
    """
    root = Path(root).expanduser()
    sums = dict(MNIST_MD5)
    sums.update(checksums or {})
    if part not in ("train", "test", "all", "auto"):
        raise ConfigurationError(f"mnist part must be train, test, all or auto, got {part!r}")
    if part == "auto":
        have_train = all(_find(root, f) for f in MNIST_FILES["train"])
        part = "all" if (have_train or download) else "test"
    parts = ["train", "test"] if part == "all" else [part]
    xs, ys = [], []
    for p in parts:
        arrays = []
        for fname in MNIST_FILES[p]:
            path = _find(root, fname)
            if path is None:
                if not download:
                    raise ConfigurationError(
                        f"MNIST file {fname} not found in {root}; set download: true to fetch it "
                        "or point root: at a folder with the IDX files"
                    )
                path = download_file(url.rstrip("/") + "/" + fname, root / fname, sums[fname])
            arrays.append(read_idx(path))
        images, labels = arrays
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise ConfigurationError(
                f"MNIST {p} files disagree: images {images.shape}, labels {labels.shape}"
            )
        xs.append(images.reshape(images.shape[0], -1))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys), part
