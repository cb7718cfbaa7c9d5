"""Memory budget: sizes are estimated before anything is allocated.

A head knows, before it binds its components, how many features κ gives (D), how many
numbers ψ learns (l), how much fixed state ψ keeps (masks, random matrices, hypernets), how
big its index tables are and roughly what a training step holds per batch. :func:`check`
compares the training estimate with the **memory budget** and raises a
:class:`~rpnkit.errors.ConfigurationError` naming the figure and cheaper choices instead of
letting the allocation fail (or the machine swap) later.

The budget is, by default, half of this machine's physical memory (of the GPU's for a head
built on a CUDA device). Change it with :func:`set_memory_budget` or the environment variable
``RPNKIT_MEMORY_BUDGET`` (``"16GB"``, ``"512MiB"``, a number of bytes; ``0`` or ``"none"``
turns the check off).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch

from .errors import ConfigurationError

__all__ = ["Estimate", "memory_budget", "set_memory_budget", "check", "format_bytes", "eval_rows",
           "parse_bytes", "NOMINAL_BATCH"]

#: batch size the per-step activation estimate is made for
NOMINAL_BATCH = 64
#: learnable numbers are held ~4 times while training with Adam (value, gradient, 2 moments)
TRAINING_COPIES = 4

_budget_override: int | None | str = "unset"


def parse_bytes(text: str | int | float) -> int | None:
    """``"16GB"``, ``"512 MiB"``, ``"1e9"``, ``1024`` → bytes; ``0`` / ``"none"`` → None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return None if text <= 0 else int(text)
    s = str(text).strip().lower()
    if s in ("", "0", "none", "off", "unlimited"):
        return None
    match = re.fullmatch(r"([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?i?b?)?", s)
    if not match:
        raise ConfigurationError(
            f"memory budget must be a size such as '16GB' or '512MiB', got {str(text)[:40]!r}"
        )
    value = float(match.group(1))
    unit = (match.group(2) or "b").rstrip("b")
    power = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}[unit[:1]]
    base = 1024 if unit.endswith("i") or unit == "" else 1000
    return None if value <= 0 else int(value * base**power)


def format_count(n: int) -> str:
    """``n`` with thousands separators, or ``1.0e+99`` style above 10**15 (a 99-digit width
    stays a short word in a message)."""
    return f"{n:,}" if abs(n) < 10**15 else f"{float(n):.2e}" if abs(n) < 10**308 \
        else f"a {len(str(abs(n)))}-digit number"


def format_bytes(n: float) -> str:
    if n >= 1e15:
        return f"{format_count(int(n))} B"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _machine_memory(device: torch.device | None) -> int | None:
    if device is not None and device.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def set_memory_budget(budget: int | str | None) -> None:
    """Set the budget for heads built from now on (bytes, ``"16GB"``; None: no check)."""
    global _budget_override
    _budget_override = parse_bytes(budget) if budget is not None else None


def memory_budget(device: torch.device | None = None) -> tuple[int | None, str]:
    """(budget in bytes or None for no limit, where it comes from)."""
    if _budget_override != "unset":
        return _budget_override, "set_memory_budget()"  # type: ignore[return-value]
    env = os.environ.get("RPNKIT_MEMORY_BUDGET")
    if env is not None:
        return parse_bytes(env), "RPNKIT_MEMORY_BUDGET"
    total = _machine_memory(device)
    if total is None:
        return None, "unknown machine memory"
    where = "GPU" if device is not None and device.type == "cuda" else "machine"
    return total // 2, f"half of this {where}'s {format_bytes(total)}"


@dataclass
class Estimate:
    """Bytes a head needs: to exist (``build``) and for one training step (``train``)."""

    D: int  # noqa: N815
    l: int  # noqa: E741
    channels: int
    param_bytes: int
    state_bytes: int
    table_bytes: int
    activation_bytes: int

    @property
    def build(self) -> int:
        return self.param_bytes + self.state_bytes + self.table_bytes

    @property
    def train(self) -> int:
        return (self.param_bytes * TRAINING_COPIES + self.state_bytes + self.table_bytes
                + 3 * self.activation_bytes)


def check(est: Estimate, what: str, cheaper: list[str], device: torch.device | None = None) -> None:
    """Raise when training ``est`` would not fit the memory budget."""
    budget, source = memory_budget(device)
    if budget is None or est.train <= budget:
        return
    hint = "; ".join(cheaper) if cheaper else "fewer features or a factorised reconciliation"
    raise ConfigurationError(
        f"{what}: D={format_count(est.D)} features and l={format_count(est.l)} learnable numbers per channel need about "
        f"{format_bytes(est.build)} to build and {format_bytes(est.train)} to train (parameters, "
        f"gradients, optimizer state and a batch of {NOMINAL_BATCH}), above the memory budget of "
        f"{format_bytes(budget)} ({source}; set RPNKIT_MEMORY_BUDGET to change it). Cheaper: "
        f"{hint}"
    )


#: bytes an evaluation chunk may hold in activations (further capped by a quarter of the
#: memory budget); rows per chunk follow from what the model's heads declare per row. Much
#: smaller chunks re-read large weights once per chunk (the identity model on 10,000 rows:
#: 437-row chunks were ~25% slower than 8192-row ones, 870-row chunks ~15%, at a quarter of
#: the memory)
EVAL_CHUNK_BYTES = 512 * 2**20
#: rows per evaluation chunk are kept within these bounds
EVAL_ROWS = (64, 8192)


def eval_rows(model, dtype=None, device=None) -> int:
    """Rows per evaluation chunk for ``model`` under the memory budget.

    Each RPN head's plan declares the numbers its forward pass holds per row
    (:func:`rpnkit.contract.plan_sizes`); the largest, times three (the activation, one
    temporary of its size and the output chain), sets the bytes per row, and the chunk holds
    at most ``EVAL_CHUNK_BYTES`` (or a quarter of the budget when that is smaller). A model
    without RPN heads gets the largest chunk, ``EVAL_ROWS[1]``.
    """
    from .contract import plan_sizes
    from .reconciliation.forms import form_of

    per_row = 0
    for mod in model.modules():
        if hasattr(mod, "contraction") and hasattr(mod, "expansion") and hasattr(mod, "m"):
            try:
                _tables, act = plan_sizes(mod.expansion.layout(mod.m),
                                          form_of(mod.reconciliation), mod.n, 1)
                per_row = max(per_row, int(act) + int(mod.m) + int(mod.n))
            except (AttributeError, TypeError, ValueError, NotImplementedError):
                continue  # a head-like module of another kind: no estimate from it
    lo, hi = EVAL_ROWS
    if per_row == 0:
        return hi
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
    elem = torch.empty((), dtype=dtype).element_size()
    budget, _source = memory_budget(torch.device(device) if device is not None else None)
    target = EVAL_CHUNK_BYTES if budget is None else min(EVAL_CHUNK_BYTES, budget // 4)
    return int(max(lo, min(hi, target // (3 * per_row * elem))))
