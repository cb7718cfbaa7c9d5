"""Structured datasets: Planetoid graphs (shipped), MNIST images, SST-2 and AG News tokens."""

from __future__ import annotations

import numpy as np
import pytest

from rpnkit.data import DATASETS, load_data
from rpnkit.data.structured import Vocabulary, load_graph, shared_dataset_dir, tokenize
from rpnkit.errors import ConfigurationError

SHARED = shared_dataset_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="no shared dataset folder")


def test_registered_names():
    for name in ("cora", "citeseer", "mnist_images", "sst2", "ag_news"):
        assert name in DATASETS


@pytest.mark.parametrize(("name", "n", "f", "c", "train"), [("cora", 2708, 1433, 7, 140),
                                              ("citeseer", 3327, 3703, 6, 120)])
def test_planetoid_standard_split(name, n, f, c, train):
    g = load_graph(name)
    assert (g.num_nodes, g.num_features, g.num_classes) == (n, f, c)
    assert (len(g.train_idx), len(g.val_idx), len(g.test_idx)) == (train, 500, 1000)
    assert not set(g.train_idx) & set(g.test_idx)
    b = load_data(name)
    assert b.size("train") == train
    assert b.size("val") == 500
    assert b.size("test") == 1000
    assert b.n_features == f
    assert b.n_classes == c
    nodes = load_data(name, {"view": "nodes"})
    assert nodes.x["train"].shape == (train, 1)
    assert nodes.n_features == f
    np.testing.assert_array_equal(nodes.x["test"][:, 0], g.test_idx)
    np.testing.assert_array_equal(b.x["test"], g.features[g.test_idx])
    np.testing.assert_array_equal(b.y["test"], g.labels[g.test_idx])


def test_planetoid_errors(tmp_path):
    with pytest.raises(ConfigurationError, match="view must be 'features'"):
        load_data("cora", {"view": "graph"})
    bad = tmp_path / "x.npz"
    np.savez(bad, labels=np.zeros(3))
    with pytest.raises(ConfigurationError, match="not a Planetoid .npz file"):
        load_data("cora", {"path": str(bad)})


def test_tokenizer_and_vocabulary_from_training_texts_only():
    assert tokenize("It's a GREAT film, isn't it?!") == ["it's", "a", "great", "film", "isn't",
                                                         "it", "?", "!"]
    v = Vocabulary([["a", "b", "a"], ["c"]], max_size=4)
    assert v.words == ["<pad>", "<unk>", "a", "b"]
    np.testing.assert_array_equal(v.encode([["a", "zzz", "c"], []], 4),
                                  [[2, 1, 1, 0], [0, 0, 0, 0]])


def _write_sst2(root, train, dev):
    root.mkdir()
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        (root / name).write_text("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in rows))


def test_sst2_parsing_split_and_train_only_vocabulary(tmp_path):
    train = [(f"good film {i}", 1) for i in range(6)] + [(f"bad film {i}", 0) for i in range(6)]
    dev = [("unseenword good", 1), ("bad", 0)]
    _write_sst2(tmp_path / "s", train, dev)
    b = load_data("sst2", {"root": str(tmp_path / "s"), "max_len": 4, "val_size": 2})
    assert (b.size("train"), b.size("val"), b.size("test")) == (10, 2, 2)
    assert b.x["test"][0, 0] == 1  # "unseenword" is unknown: the vocabulary saw train only
    assert b.x["test"].shape == (2, 4)
    assert b.x["test"][1, 1] == 0
    (tmp_path / "s" / "dev.tsv").write_text("sentence\tlabel\nfoo\t2\n")
    with pytest.raises(ConfigurationError, match="dev.tsv line 2"):
        load_data("sst2", {"root": str(tmp_path / "s"), "val_size": 2})


def test_ag_news_parsing_and_stratified_split(tmp_path):
    root = tmp_path / "ag"
    root.mkdir()
    rows = [f'"{c}","Title {i}","word{c} text\\nmore"' for i in range(10) for c in (1, 2, 3, 4)]
    (root / "test.csv").write_text("\n".join(rows) + "\n")
    b = load_data("ag_news", {"root": str(root), "max_len": 6})
    assert (b.size("train"), b.size("val"), b.size("test")) == (28, 4, 8)
    assert sorted(np.bincount(b.y["test"])) == [2, 2, 2, 2]
    (root / "test.csv").write_text('"5","x","y"\n')
    with pytest.raises(ConfigurationError, match="line 1: expected 'class \\(1-4\\)"):
        load_data("ag_news", {"root": str(root)})


@needs_shared
def test_shared_text_and_image_files():
    sst = load_data("sst2", {"max_len": 16, "train_limit": 2000})
    assert sst.size("test") == 872
    assert sst.size("val") == 872
    assert sst.size("train") == 2000
    assert sst.info["vocabulary_from"] == "training split only"
    ag = load_data("ag_news", {"max_len": 16})
    assert (ag.size("train"), ag.size("val"), ag.size("test")) == (5320, 760, 1520)
    img = load_data("mnist_images", {"limit": 500}, {"train": 400, "val": 50, "test": 50})
    assert img.x["train"].shape == (400, 784)
    assert img.info["image_shape"] == [1, 28, 28]
    assert img.x["train"].min() >= 0.0
    assert img.x["train"].max() <= 1.0


def test_missing_root_is_named(tmp_path):
    with pytest.raises(ConfigurationError, match="is not a directory"):
        load_data("sst2", {"root": str(tmp_path / "nope")})
