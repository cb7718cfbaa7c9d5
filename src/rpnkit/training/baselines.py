"""Re-export of :class:`rpnkit.models.baselines.TorchMLP` (model ``torch_mlp``).

The class lives in :mod:`rpnkit.models`, which registers it; this module is kept so that
``from rpnkit.training.baselines import TorchMLP`` keeps working.
"""

from __future__ import annotations

from ..models.baselines import TorchMLP

__all__ = ["TorchMLP"]
