"""Package-level conveniences: lazy submodules, rpnkit.fit, optional dependencies."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

import rpnkit


def test_submodules_are_reachable_from_the_package():
    assert callable(rpnkit.models.build_model)
    assert callable(rpnkit.training.fit)
    assert rpnkit.data.load_data is not None


def test_fit_on_numpy_arrays():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(128, 2))  # noqa: N806
    y = X[:, 0] * X[:, 1]
    import torch

    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([2, 1], expansion="taylor")
    res = rpnkit.fit(model, X, y, {"epochs": 200, "optimizer": {"name": "adam", "lr": 0.05}})
    assert res.final["train"]["r2"] > 0.99


def test_core_import_needs_no_optional_package():
    code = (
        "import sys\n"
        "for name in ('sklearn', 'sympy', 'matplotlib', 'scipy', 'pyarrow'):\n"
        "    sys.modules[name] = None  # import fails as if not installed\n"
        "import rpnkit, torch\n"
        "m = rpnkit.RPN.from_dims([2, 3, 1], expansion='taylor', reconciliation='lorr')\n"
        "m(torch.rand(4, 2))\n"
        "from rpnkit.training import fit\n"
        "try:\n"
        "    import rpnkit.sklearn\n"
        "except ImportError as e:\n"
        "    print(e)\n"
        "try:\n"
        "    import rpnkit.symbolic\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "rpnkit[sklearn]" in out.stdout
    assert "rpnkit[symbolic]" in out.stdout
