"""Geometric patch pooling: max / mean over the windows of a (C, H, W) grid."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from ..errors import ConfigurationError
from ..expansion.base import check_positive_int
from ..registry import COMPRESSIONS
from .base import Compression

__all__ = ["Pooling", "MaxPooling", "MeanPooling"]


class Pooling(Compression):
    """Pooling over the kernel×kernel windows (stride, zero padding) of each channel of a grid.

    The input row is the (C, H, W) grid flattened row-major (the layout of the grid models);
    the output is (C, H', W') flattened, H' = ⌊(H + 2·padding - kernel)/stride⌋ + 1, so
    D = C·H'·W' <= m. The reference toolkit's cuboid patch of radius r with centre distance
    c is ``kernel = 2r + 1, padding = r, stride = c``.
    """

    def __init__(self, height: int = 28, width: int = 28, channels: int = 1, kernel: int = 2,
                 stride: int | None = None, padding: int = 0, preprocess: Any = None,
                 postprocess: Any = None) -> None:
        super().__init__(preprocess, postprocess)
        owner = type(self).__name__
        self.height = check_positive_int("height", height, owner)
        self.width = check_positive_int("width", width, owner)
        self.channels = check_positive_int("channels", channels, owner)
        self.kernel = check_positive_int("kernel", kernel, owner)
        self.stride = self.kernel if stride is None else check_positive_int("stride", stride, owner)
        self.padding = check_positive_int("padding", padding, owner, minimum=0)
        if 2 * self.padding > self.kernel:
            raise ConfigurationError(
                f"{owner}: padding must be at most kernel/2 = {self.kernel // 2}, got {padding}")
        self.out_height = (self.height + 2 * self.padding - self.kernel) // self.stride + 1
        self.out_width = (self.width + 2 * self.padding - self.kernel) // self.stride + 1
        if self.out_height < 1 or self.out_width < 1:
            raise ConfigurationError(
                f"{owner}: a {self.kernel}×{self.kernel} window does not fit a "
                f"{self.height}×{self.width} grid with padding {self.padding}")

    def hparams(self) -> dict[str, Any]:
        return {"height": self.height, "width": self.width, "channels": self.channels,
                "kernel": self.kernel, "stride": self.stride, "padding": self.padding}

    def calculate_D(self, m: int) -> int:  # noqa: N802
        grid = self.channels * self.height * self.width
        if int(m) != grid:
            raise ConfigurationError(
                f"{type(self).__name__}: the input width m={m} must equal channels·height·width "
                f"= {self.channels}·{self.height}·{self.width} = {grid}")
        return self.check_width(int(m), self.channels * self.out_height * self.out_width)

    def grid(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], self.channels, self.height, self.width)

    def _columns(self, m: int) -> list[frozenset]:
        """Each output column depends on the inputs of its window (padding excluded)."""
        self.calculate_D(m)
        ids = torch.arange(1, m + 1, dtype=torch.float64).reshape(
            self.channels, 1, self.height, self.width)
        win = F.unfold(ids, self.kernel, padding=self.padding, stride=self.stride)  # (C, k², L)
        win = win.transpose(1, 2).reshape(-1, self.kernel * self.kernel).long() - 1
        return [frozenset(int(i) for i in row if i >= 0) for row in win.tolist()]


@COMPRESSIONS.register("max_pooling")
class MaxPooling(Pooling):
    """Max over each kernel×kernel window of a (C, H, W) grid (= F.max_pool2d, flattened)."""

    def expand(self, x: Tensor) -> Tensor:
        return F.max_pool2d(self.grid(x), self.kernel, self.stride, self.padding).flatten(1)


@COMPRESSIONS.register("mean_pooling")
class MeanPooling(Pooling):
    """Mean over each kernel×kernel window of a (C, H, W) grid, padding not counted (linear)."""

    def expand(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.grid(x), self.kernel, self.stride, self.padding,
                            count_include_pad=False).flatten(1)

    def _is_linear(self) -> bool:
        return True

