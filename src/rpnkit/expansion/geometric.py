"""Geometric patch expansions: every centre of a grid together with the patch around it.

A sample is a grid of ``channels`` × h × w × d cells flattened row-major (channel outermost,
depth innermost: cell (c, i, j, k) is attribute ``c·h·w·d + i·w·d + j·d + k``; a (C, H, W)
image is ``h=H, w=W, d=1``). The centres are the cells (i, j, k) with i = 0, cd_h, 2·cd_h,
... < h (likewise j with cd_w, k with cd_d), P of them in row-major order; the patch is a
fixed set of S integer offsets (Δi, Δj, Δk), in lexicographic order:

* ``cuboid``: -p_h <= Δi <= p_h', -p_w <= Δj <= p_w', -p_d <= Δk <= p_d';
* ``cylinder``: Δi² + Δj² <= p_r² (a disc in the h×w plane), -p_d <= Δk <= p_d';
* ``sphere``: Δi² + Δj² + Δk² <= p_r².

κ(x) holds, for each channel c, offset s and centre p, the value of cell (c, centre_p +
offset_s), or 0 where that cell is outside the grid (zero padding), at column
``(c·S + s)·P + p`` (D = C·S·P): the layout of the reference toolkit's
``*_patch_based_geometric_expansion`` (tinybig 0.2), whose weights therefore carry over
unchanged. κ is a fixed selection of its inputs, so it is linear, each column depends on
one input (or none: a padding column), and it is finite for every finite input.

The centre distances come from ``cd_h`` / ``cd_w`` / ``cd_d`` or, where one is not given,
from ``packing_strategy`` (the reference's per-shape tables, e.g. ``complete_square``: cuboid
centres 2·p apart); no strategy means every cell is a centre (``densest_packing``).

``h`` left out is inferred from the input width, h = m / (channels·w·d): with the defaults
(w = d = channels = 1) the grid is the input row itself, a 1-D sequence. The index table
(D entries, one gather per forward) is built when the width binds, i.e. with the head.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import EXPANSIONS
from .base import Expansion, check_positive_int

__all__ = ["CuboidPatch", "CylinderPatch", "SpherePatch", "patch_offsets"]

#: most offsets one patch may have, and most columns (C·S·P) one expansion may have
MAX_PATCH_CELLS = 2**20
MAX_COLUMNS = 2**28

_S2, _S3, _S6 = math.sqrt(2), math.sqrt(3), math.sqrt(6)
#: centre distances of the reference's packing strategies, per patch shape, as functions of
#: the patch extents (cuboid: p_h, p_w, p_d; cylinder: p_r, p_d; sphere: p_r); each distance
#: is truncated to an integer >= 1, as the reference does
PACKINGS: dict[str, dict[str, Any]] = {
    "cuboid": {
        "sparse_square": lambda h, w, d: (3 * h, 3 * w, 3 * d),
        "complete_square": lambda h, w, d: (2 * h, 2 * w, 2 * d),
        "dense_square": lambda h, w, d: (h, w, d),
        "densest_packing": lambda h, w, d: (1, 1, 1),
    },
    "cylinder": {
        "sparse_square": lambda r, d: (2 * r, 2 * r, 2 * d),
        "complete_square": lambda r, d: (_S2 * r, _S2 * r, 2 * d),
        "sparse_hexagonal": lambda r, d: (_S3 * r, 2 * r, 2 * d),
        "complete_hexagonal": lambda r, d: (1.5 * r, _S3 * r, 2 * d),
        "dense_hexagonal": lambda r, d: (0.5 * _S6 * r, _S2 * r, d),
        "denser_hexagonal": lambda r, d: (0.5 * _S3 * r, r, d),
        "densest_packing": lambda r, d: (1, 1, 1),
    },
    "sphere": {
        "sparse_simple_cubic": lambda r: (2 * r, 2 * r, 2 * r),
        "complete_simple_cubic": lambda r: (0.6667 * _S3 * r,) * 3,
        "dense_simple_cubic": lambda r: (r, r, r),
        "sparse_face_centered_cubic": lambda r: (2 * r, _S3 * r, 0.6667 * _S6 * r),
        "complete_face_centered_cubic": lambda r: (_S2 * r, 0.6667 * _S6 * r, 1.3333 * r),
        "dense_face_centered_cubic": lambda r: (r, r, r),
        "sparse_hexagonal": lambda r: (2 * r, 2 * r, _S6 * r),
        "complete_hexagonal": lambda r: (0.6667 * _S3 * r, 0.6667 * _S3 * r, r),
        "dense_hexagonal": lambda r: (r, r, r),
        "densest_packing": lambda r: (1, 1, 1),
    },
}


def _bounding_box(shape: str, extents: tuple[int, ...]) -> tuple[int, int, int]:
    if shape == "cuboid":
        return (extents[0] + extents[1] + 1, extents[2] + extents[3] + 1,
                extents[4] + extents[5] + 1)
    side = 2 * extents[0] + 1
    return (side, side, extents[1] + extents[2] + 1 if shape == "cylinder" else side)


def patch_offsets(shape: str, extents: tuple[int, ...]) -> Tensor:
    """The (S, 3) integer offsets (Δi, Δj, Δk) of a patch, in lexicographic order.

    ``extents``: cuboid (p_h, p_h', p_w, p_w', p_d, p_d'); cylinder (p_r, p_d, p_d');
    sphere (p_r,).
    """
    if shape == "cuboid":
        lo_h, hi_h, lo_w, hi_w, lo_d, hi_d = extents
        axes = (torch.arange(-lo_h, hi_h + 1), torch.arange(-lo_w, hi_w + 1),
                torch.arange(-lo_d, hi_d + 1))
        keep = None
    elif shape == "cylinder":
        r, lo_d, hi_d = extents
        axes = (torch.arange(-r, r + 1), torch.arange(-r, r + 1), torch.arange(-lo_d, hi_d + 1))
        keep = lambda i, j, k: i * i + j * j <= r * r  # noqa: E731
    else:
        (r,) = extents
        axes = (torch.arange(-r, r + 1),) * 3
        keep = lambda i, j, k: i * i + j * j + k * k <= r * r  # noqa: E731
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    if keep is not None:
        grid = grid[keep(grid[:, 0], grid[:, 1], grid[:, 2])]
    return grid


class _PatchExpansion(Expansion):
    """Patches of a channels × h × w × d grid around its packed centres (see the module)."""

    shape = ""

    def __init__(self, extents: tuple[int, ...], packing: tuple[float, ...], h: int | None,
                 w: int, d: int, channels: int, packing_strategy: str | None,
                 cd_h: int | None, cd_w: int | None, cd_d: int | None, preprocess: Any,
                 postprocess: Any) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.h = None if h is None else check_positive_int("h", h, owner)
        self.w = check_positive_int("w", w, owner)
        self.d = check_positive_int("d", d, owner)
        self.channels = check_positive_int("channels", channels, owner)
        table = PACKINGS[self.shape]
        if packing_strategy is not None and packing_strategy not in table:
            raise ConfigurationError(
                f"{owner}: unknown packing_strategy {packing_strategy!r} for a {self.shape} "
                f"patch; valid: {', '.join(table)} (or give cd_h, cd_w, cd_d)")
        self.packing_strategy = packing_strategy
        base = table[packing_strategy or "densest_packing"](*packing)
        given = {"cd_h": cd_h, "cd_w": cd_w, "cd_d": cd_d}
        self.cd_h, self.cd_w, self.cd_d = (
            max(int(b), 1) if v is None else check_positive_int(k, v, owner)
            for (k, v), b in zip(given.items(), base))
        box = _bounding_box(self.shape, extents)
        if math.prod(box) > MAX_PATCH_CELLS:  # checked before any offset is listed
            raise ConfigurationError(
                f"{owner}: a patch spanning {box[0]:,}×{box[1]:,}×{box[2]:,} = "
                f"{math.prod(box):,} cells is above the limit of {MAX_PATCH_CELLS:,}; use "
                "smaller extents")
        offsets = patch_offsets(self.shape, extents)
        self.patch_size = int(offsets.shape[0])
        self._offsets = offsets.tolist()  # plain data: the table is built from it at bind
        if self.h is not None:
            self.calculate_D(self.in_width)  # refuse a too large expansion now

    # -- sizes ----------------------------------------------------------------------------
    @property
    def in_width(self) -> int | None:
        """channels·h·w·d, the input width (None while h is inferred)."""
        return None if self.h is None else self.channels * self.h * self.w * self.d

    def grid_height(self, m: int) -> int:
        """h for input width m (checked against a given h, inferred otherwise)."""
        m = int(m)
        owner = type(self).__name__
        cell = self.channels * self.w * self.d
        if self.h is not None:
            if m != self.in_width:
                raise ConfigurationError(
                    f"{owner} over a grid of channels={self.channels} × h={self.h} × w={self.w} "
                    f"× d={self.d} needs m = {self.in_width} attributes, got m = {m}")
            return self.h
        if m < 1 or m % cell:
            raise ConfigurationError(
                f"{owner}: the input width m = {m} is not a multiple of channels·w·d = "
                f"{self.channels}·{self.w}·{self.d} = {cell}; set h, w, d, channels so that "
                "channels·h·w·d = m")
        return m // cell

    def centres(self, m: int) -> tuple[int, int, int]:
        """Centres along h, w and d for input width m."""
        h = self.grid_height(m)
        return (len(range(0, h, self.cd_h)), len(range(0, self.w, self.cd_w)),
                len(range(0, self.d, self.cd_d)))

    def calculate_D(self, m: int) -> int:  # noqa: N802
        ph, pw, pd = self.centres(m)
        D = self.channels * self.patch_size * ph * pw * pd  # noqa: N806
        if D > MAX_COLUMNS:
            raise ConfigurationError(
                f"{type(self).__name__}: {self.channels} channels × {self.patch_size:,} patch "
                f"cells × {ph * pw * pd:,} centres = {D:,} columns, above the limit of "
                f"{MAX_COLUMNS:,}; use a sparser packing_strategy or larger cd_h/cd_w/cd_d")
        return D

    def table_numel(self, m: int) -> int:
        return self.calculate_D(m)

    def patch_index(self, m: int) -> Tensor:
        """(D,) int64: the input each column reads, m for a padding column (the zero)."""
        h = self.grid_height(m)
        ci, cj, ck = (torch.arange(0, n, s) for n, s in
                      ((h, self.cd_h), (self.w, self.cd_w), (self.d, self.cd_d)))
        centres = torch.stack(torch.meshgrid(ci, cj, ck, indexing="ij"), -1).reshape(-1, 1, 3)
        off = torch.tensor(self._offsets, dtype=torch.int64).reshape(1, -1, 3)
        cell = (centres + off).transpose(0, 1)  # (S, P, 3): offset outer, centre inner
        size = torch.tensor([h, self.w, self.d])
        inside = ((cell >= 0) & (cell < size)).all(-1)
        flat = (cell[..., 0] * self.w + cell[..., 1]) * self.d + cell[..., 2]
        per_channel = h * self.w * self.d
        chan = torch.arange(self.channels).reshape(-1, 1, 1) * per_channel
        idx = torch.where(inside, flat + chan, torch.full_like(flat, m))  # (C, S, P)
        return idx.reshape(-1).contiguous()

    def bind_tables(self, m: int) -> None:
        self.register_buffer("patch_table", self.patch_index(m), persistent=False)

    # -- evaluation ---------------------------------------------------------------------
    def check_input(self, x: Tensor) -> Tensor:
        x = super().check_input(x)
        want = self.m if self.m is not None else self.in_width
        if want is not None and x.shape[1] != want:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (batch, {want}) (channels="
                f"{self.channels} × h={self.h or self.grid_height(want)} × w={self.w} × "
                f"d={self.d}), got {tuple(x.shape)}")
        return x

    def expand(self, x: Tensor) -> Tensor:
        m = x.shape[1]
        idx = self.table("patch_table", m, self.patch_index).to(x.device)
        return F.pad(x, (0, 1)).index_select(1, idx)  # column m is the padding zero

    # -- structure ----------------------------------------------------------------------
    def _is_linear(self) -> bool:
        return True

    def _columns(self, m: int) -> list[frozenset]:
        return [frozenset() if i == m else frozenset((i,)) for i in self.patch_index(m).tolist()]

    def _sympy(self, xs: list[Any]) -> list[Any]:
        import sympy

        m = len(xs)
        return [sympy.Integer(0) if i == m else xs[i] for i in self.patch_index(m).tolist()]

    def hparams(self) -> dict[str, Any]:
        out = {"h": self.h, "w": self.w, "d": self.d, "channels": self.channels,
               **self.patch_params(), "cd_h": self.cd_h, "cd_w": self.cd_w, "cd_d": self.cd_d}
        if self.packing_strategy is not None:
            out["packing_strategy"] = self.packing_strategy
        return out

    def patch_params(self) -> dict[str, Any]:
        raise NotImplementedError


def _extent(name: str, value: Any, owner: str) -> int:
    return check_positive_int(name, value, owner, minimum=0)


@EXPANSIONS.register("cuboid_patch_expansion")
class CuboidPatch(_PatchExpansion):
    """Cuboid patches around the centres of a channels×h×w×d grid (D = C·S·P, zero padded).

    The patch spans (p_h + p_h' + 1) × (p_w + p_w' + 1) × (p_d + p_d' + 1) cells (the
    reference's ``cuboid_patch_based_geometric_expansion``)."""

    shape = "cuboid"

    def __init__(self, p_h: int = 1, p_w: int = 0, p_d: int = 0, p_h_prime: int | None = None,
                 p_w_prime: int | None = None, p_d_prime: int | None = None,
                 h: int | None = None, w: int = 1, d: int = 1, channels: int = 1,
                 packing_strategy: str | None = None, cd_h: int | None = None,
                 cd_w: int | None = None, cd_d: int | None = None, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        owner = type(self).__name__
        self.p_h, self.p_w, self.p_d = (_extent(k, v, owner) for k, v in
                                        (("p_h", p_h), ("p_w", p_w), ("p_d", p_d)))
        self.p_h_prime, self.p_w_prime, self.p_d_prime = (
            lo if v is None else _extent(k, v, owner) for k, v, lo in
            (("p_h_prime", p_h_prime, self.p_h), ("p_w_prime", p_w_prime, self.p_w),
             ("p_d_prime", p_d_prime, self.p_d)))
        extents = (self.p_h, self.p_h_prime, self.p_w, self.p_w_prime, self.p_d, self.p_d_prime)
        super().__init__(extents, (self.p_h, self.p_w, self.p_d), h, w, d, channels,
                         packing_strategy, cd_h, cd_w, cd_d, preprocess, postprocess)

    def patch_params(self) -> dict[str, Any]:
        return {"p_h": self.p_h, "p_w": self.p_w, "p_d": self.p_d, "p_h_prime": self.p_h_prime,
                "p_w_prime": self.p_w_prime, "p_d_prime": self.p_d_prime}


@EXPANSIONS.register("cylinder_patch_expansion")
class CylinderPatch(_PatchExpansion):
    """Cylinder patches around the centres of a channels×h×w×d grid (D = C·S·P, zero padded).

    The patch is a disc of radius p_r in the h×w plane, depth -p_d..p_d' (the reference's
    ``cylinder_patch_based_geometric_expansion``)."""

    shape = "cylinder"

    def __init__(self, p_r: int = 1, p_d: int = 0, p_d_prime: int | None = None,
                 h: int | None = None, w: int = 1, d: int = 1, channels: int = 1,
                 packing_strategy: str | None = None, cd_h: int | None = None,
                 cd_w: int | None = None, cd_d: int | None = None, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        owner = type(self).__name__
        self.p_r = _extent("p_r", p_r, owner)
        self.p_d = _extent("p_d", p_d, owner)
        self.p_d_prime = self.p_d if p_d_prime is None else _extent("p_d_prime", p_d_prime, owner)
        super().__init__((self.p_r, self.p_d, self.p_d_prime), (self.p_r, self.p_d), h, w, d,
                         channels, packing_strategy, cd_h, cd_w, cd_d, preprocess, postprocess)

    def patch_params(self) -> dict[str, Any]:
        return {"p_r": self.p_r, "p_d": self.p_d, "p_d_prime": self.p_d_prime}


@EXPANSIONS.register("sphere_patch_expansion")
class SpherePatch(_PatchExpansion):
    """Sphere patches around the centres of a channels×h×w×d grid (D = C·S·P, zero padded).

    The patch is the cells within distance p_r, Δi² + Δj² + Δk² <= p_r² (the reference's
    ``sphere_patch_based_geometric_expansion``)."""

    shape = "sphere"

    def __init__(self, p_r: int = 1, h: int | None = None, w: int = 1, d: int = 1,
                 channels: int = 1, packing_strategy: str | None = None,
                 cd_h: int | None = None, cd_w: int | None = None, cd_d: int | None = None,
                 preprocess: Any = None, postprocess: Any = None) -> None:
        self.p_r = _extent("p_r", p_r, type(self).__name__)
        super().__init__((self.p_r,), (self.p_r,), h, w, d, channels, packing_strategy,
                         cd_h, cd_w, cd_d, preprocess, postprocess)

    def patch_params(self) -> dict[str, Any]:
        return {"p_r": self.p_r}
