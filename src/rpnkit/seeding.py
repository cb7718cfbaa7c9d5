"""Independent seeds for the random state of layers, heads and channels.

A model built with ``seed=s`` draws the random state of layer l, head h, channel c (masks,
fixed random matrices, hypernets) from ``derive_seed(s, l, h, c)``: a 63-bit integer hashed
from the whole path, so distinct paths give unrelated streams (``seed + i`` per head and
``seed + c`` per channel would give head 0 channel 1 and head 1 channel 0 the same one).

Deriving step by step equals deriving at once: ``derive_seed(derive_seed(s, l), h) ==
derive_seed(s, l, h)``, so a layer given ``derive_seed(s, l)`` and a head given the layer's
``derive_seed(seed, h)`` end up with the seed of the path (s, l, h).
"""

from __future__ import annotations

import hashlib
import numbers

from .errors import ConfigurationError

__all__ = ["derive_seed", "SEED_BOUND"]

#: derived seeds lie in [0, SEED_BOUND)
SEED_BOUND = 2**63


def _check(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ConfigurationError(f"derive_seed: {what} must be a non-negative integer, "
                                 f"got {value!r}")
    return int(value)


def _step(seed: int, index: int) -> int:
    data = f"rpnkit-seed:{seed}:{index}".encode()
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return int.from_bytes(digest, "little") % SEED_BOUND


def derive_seed(seed: int, *path: int) -> int:
    """The seed of the stream at ``path`` (layer, head, channel, ... indices) under ``seed``.

    ``derive_seed(s)`` is ``s``; each index hashes (blake2b) the seed so far with it. The
    result is an integer in [0, 2**63), the range ``RPNHead(seed=...)`` accepts.

    Raises:
        ConfigurationError: ``seed`` or an index is not a non-negative integer.
    """
    s = _check(seed, "seed")
    for k, index in enumerate(path):
        s = _step(s, _check(index, f"path[{k}]"))
    return s
