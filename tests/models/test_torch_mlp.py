"""torch_mlp is registered by rpnkit.models itself (no rpnkit.training import needed)."""

from __future__ import annotations

import subprocess
import sys


def test_torch_mlp_registered_by_models_alone():
    code = (
        "import sys\n"
        "from rpnkit.models import build_model\n"
        "m = build_model('torch_mlp', dims=[2, 3, 1])\n"
        "assert 'rpnkit.training' not in sys.modules, 'rpnkit.training was imported'\n"
        "print(type(m).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "TorchMLP"


def test_training_baselines_reexports_torch_mlp():
    from rpnkit.models import MODELS, TorchMLP
    from rpnkit.training.baselines import TorchMLP as Reexported

    assert Reexported is TorchMLP
    assert MODELS.get("torch_mlp") is TorchMLP
