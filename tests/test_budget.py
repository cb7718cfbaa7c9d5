"""Sizes are estimated before anything is allocated; over-budget heads are refused early."""

from __future__ import annotations

import time

import pytest

import rpnkit
from rpnkit import budget
from rpnkit.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _reset_budget(monkeypatch):
    monkeypatch.delenv("RPNKIT_MEMORY_BUDGET", raising=False)
    yield
    budget._budget_override = "unset"


def test_huge_taylor_head_is_refused_instantly_with_cheaper_choices(monkeypatch):
    monkeypatch.setenv("RPNKIT_MEMORY_BUDGET", "16GB")
    t0 = time.perf_counter()
    with pytest.raises(ConfigurationError) as err:
        rpnkit.RPNHead(784, 64, expansion="taylor", expansion_params={"d": 3})
    assert time.perf_counter() - t0 < 10.0  # refused before allocating (a hang guard, not a speed target)
    msg = str(err.value)
    assert "D=482,505,744" in msg
    assert "123.5 GB to build" in msg
    assert "16.0 GB" in msg
    assert "RPNKIT_MEMORY_BUDGET" in msg
    assert "taylor d=3 symmetric=True (D=80,931,144)" in msg
    assert "taylor d=2 (D=615,440)" in msg
    assert "lorr r=2" in msg


def test_combinatorial_and_layers_name_the_layer_and_head(monkeypatch):
    monkeypatch.setenv("RPNKIT_MEMORY_BUDGET", "4GB")
    with pytest.raises(ConfigurationError, match=r"combinatorial d=2 \(D=307,720\)"):
        rpnkit.RPN.from_dims([784, 10], expansion="combinatorial", expansion_params={"d": 3})


def test_budget_can_be_set_and_disabled():
    budget.set_memory_budget("1MB")
    with pytest.raises(ConfigurationError, match="above the memory budget of 1.0 MB"):
        rpnkit.RPNHead(1000, 500)
    budget.set_memory_budget(None)
    rpnkit.RPNHead(1000, 500)  # no limit
    assert budget.parse_bytes("512MiB") == 512 * 2**20
    assert budget.parse_bytes("2.5GB") == 2_500_000_000
    assert budget.parse_bytes("0") is None
    with pytest.raises(ConfigurationError, match="16GB"):
        budget.parse_bytes("lots")


def test_estimate_is_close_to_what_is_built():
    budget.set_memory_budget(None)
    for kw in ({"expansion": "taylor", "reconciliation": "masking"},
               {"expansion": {"name": "taylor", "d": 3, "symmetric": True},
                "reconciliation": "lorr"},
               {"expansion": "bspline", "reconciliation": "hypernet",
                "reconciliation_params": {"l": 8, "hidden": 16}}):
        head = rpnkit.RPNHead(30, 8, channels=2, **kw)
        real = sum(t.numel() * t.element_size() for t in head.parameters())
        real += sum(t.numel() * t.element_size() for t in head.buffers())
        layout = head.expansion.layout(30)
        tables, _ = rpnkit.contract.plan_sizes(layout, head.contraction.form, 8, 64)
        est = (head.w.numel() * 4 + head.reconciliation.state_numel(8, head.D) * 4
               + (tables + head.expansion.table_numel(30)) * 8)
        assert 0.5 * real <= est <= 2.5 * real + 4096, (kw, real, est)


def test_counts_and_seeds_have_ranges():
    with pytest.raises(ConfigurationError, match="at most 4,096"):
        rpnkit.RPNLayer(3, 2, num_heads=10**9)
    with pytest.raises(ConfigurationError, match="at most 4,096"):
        rpnkit.RPNHead(3, 2, channels=10**6)
    with pytest.raises(ConfigurationError, match=r"seed must be an integer in \[0, 2\*\*63\)"):
        rpnkit.RPNHead(3, 2, seed=-1)


def test_divisor_hints_are_fast_for_large_primes():
    t0 = time.perf_counter()
    with pytest.raises(ConfigurationError, match=r"valid q for D=1000000007: \[1, 1000000007\]"):
        rpnkit.RPNHead(1_000_000_007, 2, reconciliation="hm", device="meta")
    assert time.perf_counter() - t0 < 20.0  # O(√n) divisors: the old trial division took 80 s
    from rpnkit.reconciliation.base import divisors

    assert divisors(36) == [1, 2, 3, 4, 6, 9, 12, 18, 36]
    assert len(divisors(2**40)) == 40


def test_meta_device_builds_without_allocating():
    budget.set_memory_budget(None)
    head = rpnkit.RPNHead(784, 64, expansion="taylor", device="meta")
    assert head.w.is_meta

