"""Standardisation shared by in-memory and streamed datasets."""

from __future__ import annotations

import numpy as np

__all__ = ["Standardised"]


class Standardised:
    """Mixin: ``x_mean``/``x_std`` and ``y_mean``/``y_std`` fitted on the training split (or
    None) and the two maps between raw and model scale."""

    x_mean: np.ndarray | None
    x_std: np.ndarray | None
    y_mean: np.ndarray | None
    y_std: np.ndarray | None

    def transform_x(self, x: np.ndarray) -> np.ndarray:
        """Apply the training-split feature standardisation (if any) to raw features."""
        if self.x_mean is None:
            return x
        return (x - self.x_mean) / self.x_std

    def inverse_y(self, y: np.ndarray) -> np.ndarray:
        """Model-scale regression targets back to the data's scale (if they were scaled)."""
        if self.y_mean is None:
            return y
        return y * self.y_std + self.y_mean
