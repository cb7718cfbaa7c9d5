"""MNIST IDX reading and checksum-verified downloads from a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import http.server
import threading

import numpy as np
import pytest

from rpnkit.data import load_data
from rpnkit.data.mnist import MNIST_FILES, read_idx
from rpnkit.errors import ConfigurationError


def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def _write_fixture(folder, n=60, part="test"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = np.arange(n) % 10
    folder.mkdir(parents=True, exist_ok=True)
    names = MNIST_FILES[part]
    (folder / names[0]).write_bytes(_idx(images))
    (folder / names[1]).write_bytes(_idx(labels))
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in names}


@contextlib.contextmanager
def _serve(folder):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_read_local_idx(tmp_path):
    _write_fixture(tmp_path)
    b = load_data("mnist", {"root": str(tmp_path), "part": "test"}, {"train": 40, "val": 10, "test": 10})
    assert b.x["train"].shape == (40, 784)
    assert b.n_classes == 10
    assert b.x["train"].max() <= 1.0
    images = read_idx(tmp_path / MNIST_FILES["test"][0])
    assert images.shape == (60, 28, 28)


def test_truncated_idx_is_rejected(tmp_path):
    (tmp_path / "bad.gz").write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"abc"))
    with pytest.raises(ConfigurationError, match="header says"):
        read_idx(tmp_path / "bad.gz")


def test_missing_files_without_download(tmp_path):
    with pytest.raises(ConfigurationError, match="download: true"):
        load_data("mnist", {"root": str(tmp_path), "part": "test"})


def test_download_from_local_server_verified(tmp_path):
    served = tmp_path / "served"
    sums = _write_fixture(served)
    root = tmp_path / "root"
    with _serve(served) as url:
        b = load_data("mnist", {"root": str(root), "part": "test", "download": True, "url": url,
                                "checksums": sums}, {"train": 50, "val": 0, "test": 10})
    assert b.size("train") == 50
    assert sorted(p.name for p in root.iterdir()) == sorted(MNIST_FILES["test"])


def test_download_with_bad_checksum_is_rejected(tmp_path):
    served = tmp_path / "served"
    sums = _write_fixture(served)
    sums[MNIST_FILES["test"][0]] = "0" * 64
    root = tmp_path / "root"
    with _serve(served) as url, pytest.raises(ConfigurationError, match="checksum mismatch"):
        load_data("mnist", {"root": str(root), "part": "test", "download": True, "url": url,
                            "checksums": sums})
    assert not root.exists() or list(root.iterdir()) == []  # nothing half-written left behind


def test_download_refuses_other_schemes(tmp_path):
    with pytest.raises(ConfigurationError, match="http"):
        load_data("mnist", {"root": str(tmp_path), "part": "test", "download": True,
                            "url": "file:///etc/"})
