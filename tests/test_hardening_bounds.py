"""Sizes are bounded before anything is allocated (issue 22, item 3): composite expansion
counts and widths, layer counts, Kronecker divisor hints, graph/chain/grid sizes and
Planetoid files all end in one ConfigurationError naming the figure, at once."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import torch

from rpnkit.data.structured import MAX_GRAPH_FILE_BYTES, load_graph
from rpnkit.errors import ConfigurationError
from rpnkit.expansion.composite import MAX_COMPOSITE_D, MAX_EXTENDED, MAX_NESTED
from rpnkit.interdependence.graph import MAX_HOPS
from rpnkit.interdependence.sequence import MAX_CHAIN_LENGTH
from rpnkit.model import MAX_LAYERS
from rpnkit.models import build_model
from rpnkit.reconciliation.kronecker import _divisor_hint
from rpnkit.registry import EXPANSIONS, INTERDEPENDENCES


# ----------------------------------------------------------------------------- composites
@pytest.mark.parametrize(("name", "limit"), [("nested", MAX_NESTED), ("extended", MAX_EXTENDED)])
def test_composite_expansion_count_is_capped(name, limit):
    with pytest.raises(ConfigurationError, match=rf"lists {limit + 1:,} expansions; at most {limit}"):
        EXPANSIONS.build(name, expansions=["identity"] * (limit + 1))
    with pytest.raises(ConfigurationError, match="lists 10,000 expansions"):
        EXPANSIONS.build(name, expansions=["identity"] * 10_000)
    EXPANSIONS.build(name, expansions=["identity"] * limit)  # the limit itself is fine


def test_nested_width_is_capped_before_it_explodes():
    """Nested Taylor expansions square the width at every step: the 200-step chain used to
    spin on ever larger exact integers; now the first width above 2**53 is refused."""
    e = EXPANSIONS.build("nested", expansions=[{"name": "taylor", "d": 2}] * MAX_NESTED)
    with pytest.raises(ConfigurationError, match=r"width after expansion \d+ \(taylor\) is .*2\*\*53"):
        e.calculate_D(2)
    with pytest.raises(ConfigurationError, match="above the limit"):
        build_model("rpn", dims=[2, 1], expansion={"name": "nested",
                                                   "expansions": [{"name": "taylor", "d": 3}] * 30})
    # small chains keep their exact D: m -> m + m^2 -> ...
    e = EXPANSIONS.build("nested", expansions=[{"name": "taylor", "d": 2}] * 3)
    assert e.calculate_D(2) == 1806


def test_extended_width_is_capped():
    big = {"name": "taylor", "d": 60}
    e = EXPANSIONS.build("extended", expansions=["identity", big])
    with pytest.raises(ConfigurationError, match=r"Extended: D of expansion 1 \(taylor\)"):
        e.calculate_D(3)
    e = EXPANSIONS.build("extended", expansions=["identity", {"name": "taylor", "d": 2}])
    assert e.calculate_D(3) == 3 + 3 + 9
    assert MAX_COMPOSITE_D == 2**53


# ----------------------------------------------------------------------------- layers
def test_layer_count_is_capped_before_any_layer_is_built():
    with pytest.raises(ConfigurationError, match=r"5,000 layers; at most 1,000"):
        build_model("rpn", dims=[2] * 5000 + [1])
    for name in ("mlp", "kan"):
        with pytest.raises(ConfigurationError, match=r"layers; at most 1,000"):
            build_model(name, dims=[2] * (MAX_LAYERS + 1) + [1])
    assert len(build_model("rpn", dims=[2, 3, 1]).layers) == 2


# ----------------------------------------------------------------------------- divisors
def test_divisor_hint_is_instant_for_huge_sizes():
    n = 2**61 - 1  # prime: an O(sqrt n) listing would take ~1.5e9 steps
    hint = _divisor_hint("p", "n", n)
    assert hint == f"p must be a divisor of n={n}; its divisors up to 1,000: [1]"
    hint = _divisor_hint("q", "D", 10**40)
    assert "[1, 2, 4, 5, 8, 10, 16, 20, 25" in hint


@pytest.mark.parametrize("k", [1, 12, 97, 360, 9_999_991 * 2])
def test_divisor_hint_lists_all_divisors_of_moderate_sizes(k):
    brute = [d for d in range(1, k + 1) if k % d == 0]
    shown = brute if len(brute) <= 40 else brute[:20] + brute[-20:]
    assert _divisor_hint("p", "n", k) == f"valid p for n={k}: {shown}"


def test_hm_with_a_huge_prime_output_is_refused_at_once():
    with pytest.raises(ConfigurationError, match=r"HM: p=2 must divide n=2305843009213693951; "
                                                 r"p must be a divisor"):
        build_model("rpn", dims=[2, 2**61 - 1, 1], reconciliation="hm")


# ----------------------------------------------------------------------------- interdependence
@pytest.mark.parametrize("name", ["graph", "graph_pagerank"])
def test_graph_sizes_are_bounded(name):
    with pytest.raises(ConfigurationError, match=r"num_nodes=10,000,000,000 is above the limit"):
        INTERDEPENDENCES.build(name, num_nodes=10**10)
    with pytest.raises(ConfigurationError, match=rf"hops=1,000,000,000 is above the limit of "
                                                 rf"{MAX_HOPS:,}"):
        INTERDEPENDENCES.build(name, num_nodes=3, hops=10**9)
    g = INTERDEPENDENCES.build(name, num_nodes=3, edges=[[0, 1]], hops=MAX_HOPS)
    assert g.hops == MAX_HOPS


def test_graph_edge_tables_are_checked_against_the_memory_budget(monkeypatch):
    monkeypatch.setenv("RPNKIT_MEMORY_BUDGET", "1MB")
    with pytest.raises(ConfigurationError, match=r"100,000 nodes and 0 edges needs about 6\.4 MB"):
        INTERDEPENDENCES.build("graph", num_nodes=100_000)
    INTERDEPENDENCES.build("graph", num_nodes=1000)


def test_chain_length_is_bounded_and_huge_hops_mean_the_whole_chain():
    with pytest.raises(ConfigurationError, match=r"length=1,000,000,000 is above the limit"):
        INTERDEPENDENCES.build("chain", length=10**9)
    with pytest.raises(ConfigurationError, match="above the limit"):
        INTERDEPENDENCES.build("chain", length=MAX_CHAIN_LENGTH + 1)
    for direction in ("forward", "backward", "both"):
        wide = INTERDEPENDENCES.build("chain", length=6, hops=10**30, direction=direction, decay=0.5)
        full = INTERDEPENDENCES.build("chain", length=6, hops=None, direction=direction, decay=0.5)
        torch.testing.assert_close(wide.matrix(), full.matrix(), rtol=0, atol=0)


def test_grid_patch_size_is_bounded():
    with pytest.raises(ConfigurationError, match=r"patch of 100,000 channels .* above the limit"):
        INTERDEPENDENCES.build("grid", channels=10**5, height=10**4, width=10**4, kernel=10**4)


# ----------------------------------------------------------------------------- Planetoid files
def _npz(**overrides) -> bytes:
    """A valid 4-node Planetoid file, with members replaced by ``overrides``."""
    arrays = {
        "feat_shape": np.array([4, 3]), "feat_indptr": np.array([0, 1, 2, 3, 4]),
        "feat_indices": np.array([0, 1, 2, 0]), "feat_data": np.ones(4, dtype=np.float32),
        "labels": np.array([0, 1, 0, 1]), "edges": np.array([[0, 1], [2, 3]]),
        "train_idx": np.array([0, 1]), "val_idx": np.array([2]), "test_idx": np.array([3]),
    }
    arrays.update(overrides)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _graph(tmp_path, data: bytes):
    p = tmp_path / f"g{len(list(tmp_path.iterdir()))}.npz"
    p.write_bytes(data)
    return load_graph("cora", str(p))


def test_planetoid_valid_file_reads_exactly(tmp_path):
    g = _graph(tmp_path, _npz())
    np.testing.assert_array_equal(g.features, np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=np.float32))
    assert g.num_classes == 2
    assert g.edges.tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize(("overrides", "match"), [
    ({"feat_shape": np.array([10**6, 10**6])}, r"1,000,000 x 1,000,000 feature matrix needs"),
    ({"feat_indices": np.array([0, 1, 2, 3])}, r"feat_indices \(feature columns\) holds 3 at "
                                               r"position 3, outside \[0, 2\]"),
    ({"feat_indices": np.array([0, 1, -1, 0])}, r"holds -1 at position 2"),
    ({"edges": np.array([[0, 9]])}, r"edges \(node ids\) holds 9"),
    ({"feat_indptr": np.array([0, 2, 1, 3, 4])}, "feat_indptr must rise"),
    ({"labels": np.array([0, 10**12, 0, 1])}, r"labels holds 1000000000000"),
    ({"feat_shape": np.array([4])}, "feat_shape must be two positive integers"),
    ({"feat_data": np.array([1, np.nan, 1, 1])}, "NaN or inf"),
    ({"labels": np.array(["a", "b", "c", "d"])}, r"array 'labels' holds <U1, not numbers"),
])
def test_planetoid_bad_files_are_refused_with_one_line(tmp_path, overrides, match):
    with pytest.raises(ConfigurationError, match=match):
        _graph(tmp_path, _npz(**overrides))


def test_planetoid_not_a_zip_or_missing_member(tmp_path):
    with pytest.raises(ConfigurationError, match=r"not a Planetoid .npz file \(not a zip archive\)"):
        _graph(tmp_path, b"this is not a zip file at all")
    with pytest.raises(ConfigurationError, match="not a zip archive"):
        _graph(tmp_path, b"PK\x03\x04" + b"\x00" * 40)  # a zip header and nothing behind it
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    with pytest.raises(ConfigurationError, match="not a zip archive"):
        _graph(tmp_path, buf.getvalue())  # a plain .npy
    data = _npz()
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != "edges.npy":
                dst.writestr(info, src.read(info))
    with pytest.raises(ConfigurationError, match=r"no array 'edges'"):
        _graph(tmp_path, out.getvalue())


def test_planetoid_member_declaring_a_huge_array_is_refused_before_reading(tmp_path):
    """A member whose .npy header claims 10**12 values is refused from its header."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(_npz())) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            if info.filename == "feat_data.npy":
                body = b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\x00" * 16
            dst.writestr(info.filename, body)
    with pytest.raises(ConfigurationError, match=rf"declares shape \(1000000000000,\).* limit of "
                                                 rf"{MAX_GRAPH_FILE_BYTES:,}"):
        _graph(tmp_path, out.getvalue())
