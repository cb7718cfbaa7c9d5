"""Geometric grid interdependence: patches of an image (convolution-like).

A sample is a (C, H, W) grid flattened to C·H·W attributes (row-major, as MNIST rows and
``torch.flatten`` give). ξ cuts it into the P = H'·W' patches a convolution with the same
kernel, stride and padding visits (``F.unfold``); each patch is one *site* with
m' = C·|shape| attributes. The patch shape is a mask over the k×k window, fixed at
construction (an index buffer): ``cuboid`` (the whole k×k×C box), ``cylinder`` (a disc of
radius k//2 in the image plane, every channel) or ``sphere`` (a ball of radius k//2 over
(channel, row, column), the channel axis centred). The (HW)×(HW) matrix is never formed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ..errors import ConfigurationError
from ..registry import INTERDEPENDENCES
from .base import Interdependence, check_choice, check_positive_int

__all__ = ["GridInterdependence"]

SHAPES = ("cuboid", "cylinder", "sphere")

#: most cells (channels × kernel²) one patch may have: its index tables are built from them
MAX_PATCH_CELLS = 2**22


@INTERDEPENDENCES.register("grid")
class GridInterdependence(Interdependence):
    """Patch ξ: (*, C·H·W) → (*, P, C·|shape|), the patches a k×k convolution visits."""

    level = "attribute"

    def __init__(self, channels: int = 1, height: int = 1, width: int = 1, kernel: int = 3,
                 stride: int = 1, padding: int = 0, shape: str = "cuboid") -> None:
        super().__init__()
        owner = "grid interdependence"
        self.channels = check_positive_int("channels", channels, owner)
        self.height = check_positive_int("height", height, owner)
        self.width = check_positive_int("width", width, owner)
        self.kernel = check_positive_int("kernel", kernel, owner)
        self.stride = check_positive_int("stride", stride, owner)
        self.padding = check_positive_int("padding", padding, owner, minimum=0)
        self.shape = check_choice("shape", shape, SHAPES, owner)
        self.out_height = (self.height + 2 * self.padding - self.kernel) // self.stride + 1
        self.out_width = (self.width + 2 * self.padding - self.kernel) // self.stride + 1
        if self.out_height < 1 or self.out_width < 1:
            raise ConfigurationError(
                f"{owner}: a {self.kernel}×{self.kernel} kernel with padding {self.padding} does "
                f"not fit a {self.height}×{self.width} grid; use kernel <= "
                f"{min(self.height, self.width) + 2 * self.padding}"
            )
        c, k = self.channels, self.kernel
        if c * k * k > MAX_PATCH_CELLS:
            raise ConfigurationError(
                f"{owner}: a patch of {c:,} channels × {k:,}×{k:,} cells has {c * k * k:,} "
                f"cells, above the limit of {MAX_PATCH_CELLS:,}; use a smaller kernel"
            )
        cc, rr, ww = torch.meshgrid(torch.arange(c), torch.arange(k), torch.arange(k), indexing="ij")
        r = k // 2
        centre = (k - 1) / 2
        d2 = (rr - centre) ** 2 + (ww - centre) ** 2
        if shape == "cylinder":
            keep = d2 <= r * r + 1e-9
        elif shape == "sphere":
            keep = d2 + (cc - (c - 1) / 2) ** 2 <= r * r + 1e-9
        else:
            keep = torch.ones_like(d2, dtype=torch.bool)
        self.full = bool(keep.all())
        self.register_buffer("keep", torch.nonzero(keep.flatten()).flatten(), persistent=False)

    @property
    def in_width(self) -> int:
        return self.channels * self.height * self.width

    def calculate_m(self, m: int) -> int:
        return int(self.keep.numel())

    def sites(self, m: int) -> int:
        return self.out_height * self.out_width

    def bind(self, m: int, **factory: Any) -> None:
        if m != self.in_width:
            raise ConfigurationError(
                f"grid interdependence over a {self.channels}×{self.height}×{self.width} grid "
                f"needs m = {self.in_width} attributes, got m = {m}"
            )
        super().bind(m)

    def form(self) -> str:
        return (f"patch (unfold {self.kernel}×{self.kernel}, stride {self.stride}, padding "
                f"{self.padding}, {self.shape}: {self.keep.numel()} of "
                f"{self.channels * self.kernel ** 2} cells)")

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_width:
            raise ValueError(f"grid interdependence expects input of shape (*, {self.in_width}), "
                             f"got {tuple(x.shape)}")
        lead = x.shape[:-1]
        u = F.unfold(x.reshape(-1, self.channels, self.height, self.width), self.kernel,
                     padding=self.padding, stride=self.stride)
        if not self.full:
            u = u.index_select(1, self.keep)
        return u.transpose(1, 2).reshape(*lead, u.shape[2], u.shape[1])

    def matrix(self, x: Tensor | None = None) -> Tensor:
        """Dense (P·m') × (C·H·W) selection matrix (ξ(x) = A x per sample; tests only)."""
        eye = torch.eye(self.in_width, dtype=torch.float64 if x is None else x.dtype)
        return self.forward(eye).reshape(self.in_width, -1).T

    def extra_repr(self) -> str:
        return (f"grid=({self.channels}, {self.height}, {self.width}), kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}, shape={self.shape!r}")
