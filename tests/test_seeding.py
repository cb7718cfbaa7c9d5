"""Independent random streams per (seed, layer, head, channel): rpnkit.seeding.derive_seed."""

from __future__ import annotations

import hashlib

import pytest
import torch

from rpnkit import RPN, RPNLayer
from rpnkit.errors import ConfigurationError
from rpnkit.interdependence import InterdependentLayer
from rpnkit.seeding import derive_seed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_derive_seed_paths_are_distinct_and_chain():
    assert derive_seed(0, 0, 1) != derive_seed(0, 1, 0)
    assert derive_seed(0, 1) != derive_seed(1, 0)
    assert derive_seed(7) == 7
    assert derive_seed(derive_seed(5, 2), 3) == derive_seed(5, 2, 3)  # step by step = at once
    # the definition: blake2b (8 bytes, little endian) of "rpnkit-seed:<seed>:<index>", mod 2^63
    want = int.from_bytes(hashlib.blake2b(b"rpnkit-seed:3:4", digest_size=8).digest(),
                          "little") % 2**63
    assert derive_seed(3, 4) == want
    seeds = {derive_seed(0, layer, head, ch) for layer in range(4) for head in range(4)
             for ch in range(4)}
    assert len(seeds) == 64
    assert all(0 <= s < 2**63 for s in seeds)
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ConfigurationError, match="non-negative integer"):
            derive_seed(bad, 0)
        with pytest.raises(ConfigurationError, match=r"path\[1\]"):
            derive_seed(0, 0, bad)


def _masks(layer):
    return [h.reconciliation.mask for h in layer.heads]


def test_heads_of_a_layer_and_layers_of_a_model_draw_their_own_masks():
    layer = RPNLayer(3, 2, num_heads=3, reconciliation="masking", seed=11)
    m = _masks(layer)
    assert not torch.equal(m[0], m[1])
    assert not torch.equal(m[1], m[2])
    assert [h.seed for h in layer.heads] == [derive_seed(11, i) for i in range(3)]
    again = RPNLayer(3, 2, num_heads=3, reconciliation="masking", seed=11)
    assert all(torch.equal(a, b) for a, b in zip(m, _masks(again)))  # reproducible
    # model: layer i's heads from derive_seed(seed, i, h)
    model = RPN.from_dims([3, 3, 3], heads=3, reconciliation="masking", seed=11)
    seeds = [h.seed for layer in model.layers for h in layer.heads]
    assert seeds == [derive_seed(11, i, h) for i in range(2) for h in range(3)]
    assert len(set(seeds)) == 6


def test_head_0_channel_1_and_head_1_channel_0_differ():
    """Before: head i had seed + i and its channel c seed + i + c, so head 0 channel 1 and
    head 1 channel 0 drew the same masking mask."""
    layer = InterdependentLayer(3, 2, num_heads=2, interdependence="identity",
                                reconciliation="masking", channels=2, channel_fusion="max",
                                seed=0)
    # one head type: a head's C channels share its ψ (SPEC: reconciled by the same ψ), so
    # random state is per head, drawn from head i's own stream
    h0, h1 = layer.heads
    assert h0.seed == derive_seed(0, 0)
    assert h1.seed == derive_seed(0, 1)
    assert not torch.equal(h0.reconciliation.mask, h1.reconciliation.mask)
