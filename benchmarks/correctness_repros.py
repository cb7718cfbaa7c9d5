"""The review's repros of issue "Correct wherever PyTorch goes", through the public API.

    .venv/bin/python benchmarks/correctness_repros.py

Prints one line per repro: what was checked and the error against the definition (or the
message a refused case gives). Every line must say ``ok``.
"""

from __future__ import annotations

import io

import _venv  # noqa: F401
import numpy as np
import torch

import rpnkit
from rpnkit.interdependence import InterdependentHead

D64 = torch.float64
ROWS: list[tuple[str, str, str]] = []


def row(name: str, ok: bool, detail: str) -> None:
    ROWS.append((name, "ok" if ok else "FAIL", detail))


def rel(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def definition(head, x):
    k = head.expansion(x)
    ws = head.reconciled_weights()
    y = sum(k @ ws[c].T for c in range(ws.shape[0]))
    if head.bias is not None:
        y = y + head.bias
    return y + head.remainder(x)


def postprocessed_identity_with_a_graph() -> None:
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [1, 3]])
    for post in (["tanh"], ["layer_norm"]):
        torch.manual_seed(0)
        head = InterdependentHead(3, 2, "graph", {"edges": edges, "num_nodes": 4}, dtype=D64,
                                  expansion="identity", expansion_params={"postprocess": post})
        x = torch.randn(4, 3, dtype=D64)
        inner = head.inner[0]
        ref = inner.expansion(head.xi(x)) @ inner.reconciled_weights().sum(0).T
        e = rel(head(x), ref)
        row(f"identity postprocess {post} + graph", e < 1e-12, f"rel err {e:.1e}")


def meta_init() -> None:
    for exp, ep, rec in (("taylor", {"d": 2, "symmetric": True}, "lorr"),
                         ("bspline", {}, "identity"), ("gaussian_rbf", {}, "identity")):
        torch.manual_seed(0)
        ref = rpnkit.RPNHead(300 if exp == "taylor" else 20, 4, expansion=exp,
                             expansion_params=ep, reconciliation=rec)
        with torch.device("meta"):
            meta = rpnkit.RPNHead(ref.m, 4, expansion=exp, expansion_params=ep,
                                  reconciliation=rec)
        meta.to_empty(device="cpu")
        meta.reset_parameters()
        meta.load_state_dict(ref.state_dict())
        x = torch.rand(8, ref.m) * 1.6 - 0.8
        e = rel(meta(x), ref(x))
        row(f"meta -> to_empty -> load ({exp}, {rec}, m={ref.m})", e < 1e-6, f"rel err {e:.1e}")


def gradient_penalty() -> None:
    for exp, ep, rec in (("taylor", {"d": 2, "symmetric": True}, "identity"),
                         ("bspline", {}, "identity"), ("gaussian_rbf", {}, "identity")):
        torch.manual_seed(0)
        head = rpnkit.RPNHead(30, 3, expansion=exp, expansion_params=ep, reconciliation=rec,
                              dtype=D64)
        x = (torch.rand(16, 30, dtype=D64) * 1.6 - 0.8).requires_grad_(True)

        def loss(y, x=x):
            (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
            return y.sum() + (dx ** 2).sum()

        (g,) = torch.autograd.grad(loss(head(x)), [head.w])
        (gr,) = torch.autograd.grad(loss(definition(head, x)), [head.w])
        e = rel(g, gr)
        row(f"gradient penalty dL/dw ({exp}, m=30)", e < 1e-8, f"rel err {e:.1e}")


def autocast() -> None:
    kan = rpnkit.models.KAN([4, 8, 2])
    ext = rpnkit.RPN.from_dims([2, 2, 1], expansion="extended",
                               expansion_params={"expansions": ["bspline", {"name": "taylor", "d": 2}]},
                               reconciliation="lorr", reconciliation_params={"r": 1})
    sym = rpnkit.RPNHead(30, 4, expansion="taylor", expansion_params={"d": 2, "symmetric": True})
    for name, model, m in (("KAN", kan, 4), ("RPN-Ext", ext, 2), ("sym Taylor m=30", sym, 30)):
        x = torch.rand(64, m) * 1.6 - 0.8
        ref = model(x).detach()
        for dt in (torch.bfloat16, torch.float16):
            try:
                with torch.autocast("cpu", dtype=dt):
                    y = model(x)
                y.float().sum().backward()
                e = rel(y.float(), ref)
                row(f"autocast {str(dt)[6:]} {name}", e < 0.05, f"rel err {e:.1e} (fwd+bwd)")
            except Exception as exc:
                row(f"autocast {str(dt)[6:]} {name}", False, str(exc).splitlines()[0][:80])


def export_splines() -> None:
    kan = rpnkit.models.KAN([2, 5, 1]).double()
    ext = rpnkit.RPN.from_dims([2, 2, 2, 1], expansion="extended",
                               expansion_params={"expansions": ["bspline", {"name": "taylor", "d": 2}]},
                               reconciliation="lorr", reconciliation_params={"r": 1}).double()
    for name, model in (("KAN", kan), ("RPN-Ext", ext)):
        x = torch.rand(10, 2, dtype=D64) * 1.6 - 0.8
        try:
            ep = torch.export.export(model, (x,))
            buf = io.BytesIO()
            torch.export.save(ep, buf)
            buf.seek(0)
            e = rel(torch.export.load(buf).module()(x), model(x))
            row(f"torch.export {name} (save/load)", e < 1e-12, f"rel err {e:.1e}")
        except Exception as exc:
            row(f"torch.export {name}", False, str(exc).splitlines()[0][:80])


def coupled_xi_on_2d() -> None:
    for xi, params in (("kernel", {}), ("attention", {"rank": 2})):
        head = InterdependentHead(3, 2, xi, params, dtype=D64)
        try:
            head(torch.randn(6, 3, dtype=D64))
            row(f"{xi} on a (6, 3) batch", False, "accepted: rows of the batch mixed")
        except ValueError as exc:
            row(f"{xi} on a (6, 3) batch", True, "refused: " + str(exc)[:60] + "…")
        x = torch.randn(6, 5, 3, dtype=D64)
        e = max(rel(head(x[i:i + 1]), head(x)[i:i + 1]) for i in range(6))
        row(f"{xi} on (6, 5, 3): sample alone = in batch", e < 1e-12, f"rel err {e:.1e}")


def update_grid_tanh() -> None:
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([2, 3, 1], expansion="extended", expansion_params={
        "expansions": ["bspline", {"name": "taylor", "d": 2}], "preprocess": ["tanh"]},
        reconciliation="identity").double()
    x = torch.randn(256, 2, dtype=D64) * 4
    before = model(x).detach()
    rpnkit.update_grid(model, x)
    e = rel(model(x), before)
    # the review saw 17%: knots fitted to [-14, 13] while the spline sees (-1, 1); what is
    # left is the least-squares refit onto the new (data-quantile) knots
    row("update_grid, extended + tanh preprocess", e < 1e-2, f"function change {e:.1e}")


def fit_float64() -> None:
    model = rpnkit.RPN.from_dims([2, 4, 1], expansion="taylor").double()
    x = np.random.default_rng(0).normal(size=(64, 2))
    y = x[:, :1] * x[:, 1:]
    rpnkit.fit(model, x, y, {"epochs": 2})
    dt = next(model.parameters()).dtype
    row("rpnkit.fit keeps a float64 model", dt == D64, f"dtype after fit {dt}")


def masks_across_heads_and_channels() -> None:
    from rpnkit.seeding import derive_seed

    a, b = derive_seed(0, 0, 1), derive_seed(0, 1, 0)
    row("seed streams (head 0, channel 1) vs (head 1, channel 0)", a != b, f"{a} vs {b}")
    layer = rpnkit.RPNLayer(6, 4, num_heads=2, channels=2, reconciliation="masking", seed=0) \
        if "channels" in rpnkit.RPNLayer.__init__.__code__.co_varnames else None
    if layer is not None:
        m = [h.reconciliation.mask for h in layer.heads]
        row("masking masks of two heads differ", not torch.equal(m[0], m[1]), "")


def main() -> None:
    for f in (postprocessed_identity_with_a_graph, meta_init, gradient_penalty, autocast,
              export_splines, coupled_xi_on_2d, update_grid_tanh, fit_float64,
              masks_across_heads_and_channels):
        try:
            f()
        except Exception as exc:
            row(f.__name__, False, f"{type(exc).__name__}: {str(exc)[:100]}")
    width = max(len(r[0]) for r in ROWS)
    for name, status, detail in ROWS:
        print(f"{name:{width}s}  {status:4s}  {detail}")
    bad = [r for r in ROWS if r[1] != "ok"]
    print(f"\n{len(ROWS) - len(bad)}/{len(ROWS)} ok")


if __name__ == "__main__":
    main()
