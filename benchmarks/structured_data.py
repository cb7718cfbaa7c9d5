"""RPN 2 on structured data: graphs, images and text (issue 14).

    nice .venv/bin/python benchmarks/structured_data.py              # the default protocol
    .venv/bin/python benchmarks/structured_data.py --only cora --seeds 2 --epochs-graph 50

For every dataset it trains, through rpnkit's one training loop (``rpnkit.training.fit``):
an MLP, an RPN 1 (no interdependence), the structured RPN 2 (``graph_rpn`` / ``grid_rpn`` /
``chain_rpn`` / ``attention_rpn``) and the classic peer written in plain PyTorch (GCN, CNN,
GRU). Reported: test accuracy (mean ± std over seeds) of the epoch with the best
*validation* accuracy (selection on validation only; the test split is never looked at
during training), the published RPN 2 figures beside them (PAPER_RESULTS.md, which reports
the best test accuracy seen), time per epoch (wall clock of the whole fit / epochs, one
thread, on a shared machine) and the peak memory of one training step (parameters, their
gradients and Adam state, plus the tensors autograd saves for backward in one forward of a
training batch, measured with ``saved_tensors_hooks``; CPU has no allocator statistics).

Results go to ``benchmarks/results/rpn2.md`` (and ``rpn2.json``).
"""

from __future__ import annotations

import os

import _venv  # noqa: F401  (re-runs this script with .venv/bin/python from a fresh shell)

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rpnkit import RPN
from rpnkit.data import load_data
from rpnkit.data.structured import load_graph, shared_dataset_dir
from rpnkit.interdependence import normalised_edges
from rpnkit.models import build_model
from rpnkit.training import fit

HERE = Path(__file__).resolve().parent
PAPER = {  # PAPER_RESULTS.md, RPN 2 section (best test accuracy as published)
    "cora": {"MLP": 0.661, "RPN 1": 0.682, "peer": 0.815, "RPN 2": 0.822, "RPN 2 hybrid": 0.830},
    "citeseer": {"MLP": 0.305, "RPN 1": 0.317, "peer": 0.703, "RPN 2": 0.709, "RPN 2 hybrid": 0.705},
    "mnist": {"MLP": 0.982, "RPN 1": 0.986, "peer": 0.996, "RPN 2": 0.998},
    "sst2": {"MLP": 0.805, "RPN 1": 0.807, "peer": 0.827, "RPN 2": 0.823},
    "ag_news": {"MLP": 0.921, "RPN 1": 0.919, "peer": 0.914, "RPN 2": 0.922},
}
PEER = {"cora": "GCN", "citeseer": "GCN", "mnist": "CNN", "sst2": "GRU", "ag_news": "GRU"}


# ----------------------------------------------------------------------------- peers
class GCN(nn.Module):
    """Kipf & Welling's 2-layer GCN in plain PyTorch (own Â, own sparse products)."""

    def __init__(self, graph, hidden: int = 16, dropout: float = 0.5) -> None:
        super().__init__()
        row, col, val = normalised_edges(graph.edges, graph.num_nodes)
        self.adj = torch.sparse_coo_tensor(np.stack([row, col]), val, (graph.num_nodes,) * 2,
                                           dtype=torch.float32, check_invariants=True).coalesce()
        x = graph.features / np.maximum(graph.features.sum(1, keepdims=True), 1)
        self.x = torch.as_tensor(x, dtype=torch.float32)
        self.lin1 = nn.Linear(graph.num_features, hidden)
        self.lin2 = nn.Linear(hidden, graph.num_classes)
        for lin in (self.lin1, self.lin2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, ids):
        x = self.x
        if self.training:  # dropout on the non-zero features (sparse dropout, as in GCN)
            x = self.x.to_sparse()
            keep = torch.rand_like(x.values()) >= self.drop.p
            x = torch.sparse_coo_tensor(x.indices(), x.values() * keep / (1 - self.drop.p),
                                        x.shape, check_invariants=False).to_dense()
        h = torch.relu(torch.sparse.mm(self.adj, self.lin1(x)))
        out = torch.sparse.mm(self.adj, self.lin2(self.drop(h)))
        return out[ids[:, 0].long()]


class CNN(nn.Module):
    def __init__(self, c1: int = 16, c2: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 49, 10))

    def forward(self, x):
        return self.net(x.reshape(-1, 1, 28, 28))


def masked_mean(h, ids):
    m = (ids > 0).to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1)


class GRUClassifier(nn.Module):
    def __init__(self, vocab: int, classes: int, embed: int = 64, hidden: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, embed, padding_idx=0)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.out = nn.Linear(hidden, classes)

    def forward(self, x):
        ids = x.long()
        h, _ = self.gru(self.emb(ids))
        return self.out(masked_mean(h, ids))


class BagModel(nn.Module):
    """Order-free text baseline: mean of token embeddings, then an MLP or an RPN 1."""

    def __init__(self, vocab: int, body: nn.Module, embed: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, embed, padding_idx=0)
        self.body = body

    def forward(self, x):
        ids = x.long()
        return self.body(masked_mean(self.emb(ids), ids))


# ----------------------------------------------------------------------------- measuring
def step_memory(model: nn.Module, xb: torch.Tensor) -> int:
    """Bytes of one training step: params + grads + Adam state + saved activations."""
    params = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    seen, saved = set(), [0]

    def pack(t):
        if t.layout != torch.strided or isinstance(t, nn.Parameter):
            return t  # sparse adjacency views share the buffers' storage
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            saved[0] += t.numel() * t.element_size()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(xb)
    saved[0] += out.numel() * out.element_size()
    return 4 * params + saved[0]


def run(name: str, make, bundle, train_cfg: dict, seeds: list[int], batch_rows: int) -> dict:
    accs, finals, epoch_s, mem, nparams = [], [], [], 0, 0
    for seed in seeds:
        torch.manual_seed(seed)
        model = make()
        nparams = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if seed == seeds[0]:
            xb = torch.as_tensor(bundle.x["train"][:batch_rows], dtype=torch.float32)
            mem = step_memory(model, xb)
        t = time.perf_counter()
        res = fit(model, bundle, {**train_cfg, "monitor": "accuracy", "threads": 1}, seed=seed)
        secs = time.perf_counter() - t
        accs.append(res.best_metrics["test"]["accuracy"])
        finals.append(res.final["test"]["accuracy"])
        epoch_s.append(secs / max(1, res.epochs_run))
        print(f"  {name} seed {seed}: val-selected test {accs[-1]:.4f} (final {finals[-1]:.4f}, "
              f"best epoch {res.best.get('epoch')}) {epoch_s[-1]:.3f}s/epoch", flush=True)
    return {"acc": accs, "final": finals, "epoch_s": statistics.mean(epoch_s),
            "memory_mb": mem / 2**20, "params": nparams}


def graph_section(ds: str, args) -> dict:
    g = load_graph(ds)
    f, c = g.num_features, g.num_classes
    feats = load_data(ds, {"view": "features", "normalize_features": True})
    binary = load_data(ds, {"view": "features"})  # RPN 1: κ needs the 0/1 values, not rows / |row|
    nodes = load_data(ds, {"view": "nodes"})
    cfg = {"epochs": args.epochs_graph, "scheduler": "none",
           "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 5e-4}}
    seeds = list(range(args.seeds_graph))
    drop = [{"name": "relu"}, {"name": "dropout", "p": 0.5}]
    models = {
        "MLP": (lambda: RPN.from_dims([f, 16, c], bias=True, init="xavier_uniform",
                                      layers=[{"output": drop}, None]), feats),
        "RPN 1": (lambda: RPN.from_dims([f, 16, c], bias=True, layers=[
            {"expansion": "trigonometric", "output": {"name": "dropout", "p": 0.5}}, None]),
                  binary),
        "RPN 2": (lambda: build_model("graph_rpn", dims=[f, 16, c], graph=ds), nodes),
        "RPN 2 hybrid": (lambda: build_model("graph_rpn", dims=[f, 16, c], graph=ds,
                                             interdependence="graph_pagerank",
                                             interdependence_params={"alpha": 0.1, "hops": 10}),
                         nodes),
        "peer": (lambda: GCN(g), nodes),
    }
    out = {}
    for label, (make, bundle) in models.items():
        out[label] = run(f"{ds} {label}", make, bundle, cfg, seeds, len(bundle.x["train"]))
    return out


def mnist_section(args) -> dict:
    root = str(shared_dataset_dir() / "mnist")
    n_train, n_val, n_test = args.mnist_split
    bundle = load_data("mnist_images", {"root": root}, {"train": n_train, "val": n_val, "test": n_test},
                       seed=0)
    cfg = {"epochs": args.epochs_mnist, "batch_size": 64, "scheduler": "cosine",
           "optimizer": {"name": "adam", "lr": 2e-3}}
    seeds = list(range(args.seeds_mnist))
    models = {
        "MLP": lambda: build_model("mlp", dims=[784, 128, 10]),
        "RPN 1": lambda: RPN.from_dims([784, 64, 10], bias=True, layers=[
            {"expansion": "taylor", "expansion_params": {"d": 2}, "reconciliation": "lorr",
             "reconciliation_params": {"r": 4}, "output": "relu"}, None]),
        "RPN 2": lambda: build_model("grid_rpn", dims=[784, 16, 32, 10]),
        "peer": CNN,
    }
    return {k: run(f"mnist {k}", m, bundle, cfg, seeds, 64) for k, m in models.items()}


def text_section(ds: str, args) -> dict:
    params = {"max_len": args.max_len, "vocab_size": 20000,
              "train_limit": args.text_train}
    bundle = load_data(ds, params)
    v, t, c = bundle.info["vocab_size"], args.max_len, bundle.n_classes
    epochs = args.epochs_ag if ds == "ag_news" else args.epochs_text
    cfg = {"epochs": epochs, "batch_size": 64, "scheduler": "cosine",
           "optimizer": {"name": "adam", "lr": 2e-3}}
    seeds = list(range(args.seeds_text))
    models = {
        "MLP": lambda: BagModel(v, build_model("mlp", dims=[64, 64, c])),
        "RPN 1": lambda: BagModel(v, RPN.from_dims([64, 64, c], bias=True, layers=[
            {"expansion": "taylor", "expansion_params": {"d": 2}, "output": "relu"}, None])),
        "RPN 2": lambda: build_model("chain_rpn", dims=[t, 64, c], vocab_size=v, embed_dim=64),
        "RPN 2 attention": lambda: build_model("attention_rpn", dims=[t, 64, c], vocab_size=v,
                                               embed_dim=64, heads=4),
        "peer": lambda: GRUClassifier(v, c),
    }
    return {k: run(f"{ds} {k}", m, bundle, cfg, seeds, 64) for k, m in models.items()}


def fmt(vals: list[float]) -> str:
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def _verdict(a: list[float], b: list[float], peer: str) -> str:
    """Name a winner only beyond the seed-to-seed spread: paired per-seed differences when
    both rows ran the same seeds, a winner when |mean difference| exceeds two standard errors
    of the paired differences (and never from fewer than 3 seeds)."""
    k = min(len(a), len(b))
    if k < 3:
        return f"no winner named ({k} seed{'s' if k > 1 else ''}: fewer than 3)."
    diffs = [x - y for x, y in zip(a[:k], b[:k])]
    mean = statistics.mean(diffs)
    se = statistics.stdev(diffs) / k ** 0.5
    if abs(mean) <= 2 * se:
        return (f"paired difference {mean:+.3f} ± {se:.3f} (s.e., {k} seeds): within the seed "
                f"spread, no winner.")
    return (f"paired difference {mean:+.3f} ± {se:.3f} (s.e., {k} seeds): "
            f"{'RPN 2' if mean > 0 else peer} ahead beyond the seed spread.")


def write(results: dict) -> None:
    def st(ds: str, key: str, default=None):
        return results.get(ds, {}).get("settings", {}).get(key, default)

    class A:  # the settings each section was run with
        epochs_graph = st("cora", "epochs_graph", st("citeseer", "epochs_graph"))
        seeds_graph = f"{st('cora', 'seeds_graph')} (Cora) / {st('citeseer', 'seeds_graph')} (Citeseer)"
        epochs_mnist = st("mnist", "epochs_mnist")
        seeds_mnist = st("mnist", "seeds_mnist")
        mnist_split = st("mnist", "mnist_split", [0, 0, 0])
        epochs_text = st("sst2", "epochs_text")
        epochs_ag = st("ag_news", "epochs_ag")
        seeds_text = st("sst2", "seeds_text", st("ag_news", "seeds_text"))
        text_train = st("sst2", "text_train", st("ag_news", "text_train"))
        max_len = st("sst2", "max_len", st("ag_news", "max_len"))

    args = A
    runs = "; ".join(f"{ds}: `{r['settings']['command']}` ({r['settings']['minutes']} min)"
                     for ds, r in results.items())
    lines = [
        "# RPN 2 on structured data (issue 14)",
        "",
        "CPU, one thread per run, on a 2-core machine shared with other jobs (times are "
        f"indicative). Runs: {runs}.",
        "",
        "**Protocol as run.** Test accuracy of the epoch with the best validation accuracy "
        "(selection on validation only), mean ± std over seeds; the paper column is the "
        "published RPN 2 figure (PAPER_RESULTS.md: the best *test* accuracy seen, full data). "
        "Memory: one training step (parameters + gradients + Adam state + tensors saved for "
        "backward in one forward of a training batch). Time: wall clock per epoch, evaluation "
        "of the validation split included.",
        "",
        f"* Cora / Citeseer: standard Planetoid split (140 / 120 train, 500 val, 1,000 test), "
        f"[features, 16, classes], dropout 0.5, Adam lr 0.01, weight decay 5e-4 on every "
        f"parameter, {args.epochs_graph} full-batch epochs, seeds: {args.seeds_graph}. "
        f"MLP = RPN with identity κ/ψ + ReLU + dropout; RPN 1 = RPN [features, 16, classes] with a "
        f"trigonometric κ (sin, cos, tan) in layer 1, no activation, dropout 0.5, default init, on the "
        f"binary features (on row-normalised features or with ReLU it collapses to a constant "
        f"output); RPN 2 = `graph_rpn` (ξ = D^-1/2 (A+I) D^-1/2, identity κ/ψ, GCN's Glorot "
        f"init and row-normalised features); RPN 2 hybrid = `graph_rpn` with ξ = "
        f"`graph_pagerank` (α 0.1, 10 steps); peer = a 2-layer GCN in plain PyTorch.",
        f"* MNIST: the shipped 10k test file only, split {args.mnist_split[0]:,} train / "
        f"{args.mnist_split[1]:,} val / {args.mnist_split[2]:,} test (seeded, stratified) – "
        f"not the paper's 60k/10k; {args.epochs_mnist} epochs, batch 64, Adam 2e-3 cosine, "
        f"{args.seeds_mnist} seeds. MLP [784,128,10]; RPN 1 [784,64,10] Taylor d=2 + "
        f"LoRR r=4; RPN 2 = `grid_rpn` [784,16,32,10] (3×3 cuboid patches, padding 1, max-pool "
        f"2, identity κ/ψ); peer = the same CNN in plain PyTorch.",
        f"* SST-2 (test = GLUE dev, 872; val = 872 train rows) and AG News (test.csv only, "
        f"split 70/10/20 stratified: 5,320 / 760 / 1,520): token ids, max_len {args.max_len}, "
        f"vocabulary ≤ 20,000 from the training split only, training subset "
        f"{args.text_train if args.text_train else 'all'} rows (SST-2), {args.epochs_text} (SST-2) / "
        f"{args.epochs_ag} (AG News) epochs, "
        f"batch 64, Adam 2e-3 cosine, {args.seeds_text} seeds. MLP / RPN 1 = mean of "
        f"64-d token embeddings, then MLP [64,64,C] / RPN [64,64,C] (Taylor d=2); RPN 2 = "
        f"`chain_rpn` [T,64,C] (embed 64, two chain heads with decays 0.5 / 0.9, tanh, mean "
        f"pooling); RPN 2 attention = `attention_rpn` [T,64,C] (4 heads); peer = a 1-layer GRU "
        f"(64) with mean pooling. The paper's text inputs differ (TF-IDF for MLP / RPN 1; full "
        f"AG News training set).",
        "",
        "| dataset | model | test acc (val-selected) | final-epoch test acc | paper | params | time / epoch | step memory |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ds, section in results.items():
        for label, r in section["rows"].items():
            peer = PEER[ds] if label == "peer" else label
            paper = PAPER[ds].get(label)
            lines.append(
                f"| {ds} | {peer} | {fmt(r['acc'])} | {fmt(r['final'])} | "
                f"{'' if paper is None else f'{paper:.3f}'} | {r['params']:,} | "
                f"{r['epoch_s']:.2f} s | {r['memory_mb']:.1f} MB |")
    lines += ["", "## Against the paper", ""]
    for ds, section in results.items():
        rows = section["rows"]
        if "RPN 2" not in rows or "peer" not in rows:
            continue
        ours = statistics.mean(rows["RPN 2"]["acc"])
        peer = statistics.mean(rows["peer"]["acc"])
        lines.append(
            f"* {ds}: RPN 2 {ours:.3f} vs the paper's {PAPER[ds]['RPN 2']:.3f} "
            f"({ours - PAPER[ds]['RPN 2']:+.3f}); our {PEER[ds]} {peer:.3f} vs the paper's "
            f"{PAPER[ds]['peer']:.3f} ({peer - PAPER[ds]['peer']:+.3f}); RPN 2 − {PEER[ds]} here: "
            f"{ours - peer:+.3f}; {_verdict(rows['RPN 2']['acc'], rows['peer']['acc'], PEER[ds])}"
            + (" graph_rpn with identity κ and ψ computes the same function as the GCN "
               "(tests/interdependence), so this row pair differs only by seed noise."
               if ds in ("cora", "citeseer") else ""))
    lines += [
        "",
        "Why the rows differ from the paper where they do:",
        "",
        "* Graphs follow the paper's protocol (standard split, [features, 16, classes], 200 "
        "epochs), so RPN 2 and GCN are directly comparable with the published figures; we "
        "select on validation, the paper reports the best test epoch (a small optimistic bias "
        "on its side). The paper's MLP / RPN 1 figures (0.661 / 0.682 on Cora, 0.305 / 0.317 "
        "on Citeseer) are not reproduced: our feature-only baselines land near the MLP figures "
        "usually quoted for this split (about 0.55 on Cora, 0.47 on Citeseer, e.g. in the GAT "
        "paper's tables) – below the paper on Cora, far above its 0.31 on Citeseer; the "
        "paper does not state its baseline setup.",
        "* MNIST uses 7,000 training images from the 10k test file and a few CPU epochs, not "
        "60k images trained to convergence, so every row is below the paper; compare the "
        "ordering of the rows, not the absolute numbers.",
        "* Text: token-embedding models trained from scratch for a few epochs on a subset "
        "(SST-2) or on 5,320 rows (AG News, whose train.csv is not available offline), "
        "whereas the paper's MLP / RPN 1 use TF-IDF bag-of-words of the full training sets "
        "and its LSTM / RPN 2 rows are trained to convergence. Absolute numbers are therefore "
        "well below the paper; only the comparison inside a row group is meaningful.",
    ]
    (HERE / "results" / "rpn2.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    import sys

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="cora,citeseer,mnist,sst2,ag_news")
    ap.add_argument("--seeds-graph", type=int, default=5)
    ap.add_argument("--epochs-graph", type=int, default=200)
    ap.add_argument("--seeds-mnist", type=int, default=2)
    ap.add_argument("--epochs-mnist", type=int, default=5)
    ap.add_argument("--mnist-split", type=int, nargs=3, default=[7000, 1000, 2000])
    ap.add_argument("--seeds-text", type=int, default=2)
    ap.add_argument("--epochs-text", type=int, default=5, help="SST-2")
    ap.add_argument("--epochs-ag", type=int, default=12, help="AG News (5,320 training rows)")
    ap.add_argument("--text-train", type=int, default=15000)
    ap.add_argument("--max-len", type=int, default=40)
    ap.add_argument("--merge", action="store_true",
                    help="keep the other datasets' rows of an earlier results/rpn2.json")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    torch.set_num_threads(1)
    path = HERE / "results" / "rpn2.json"
    results: dict = json.loads(path.read_text()) if args.merge and path.exists() else {}
    for ds in args.only.split(","):
        print(f"== {ds}", flush=True)
        t1 = time.perf_counter()
        if ds in ("cora", "citeseer"):
            rows = graph_section(ds, args)
            keys = ("seeds_graph", "epochs_graph")
        elif ds == "mnist":
            rows = mnist_section(args)
            keys = ("seeds_mnist", "epochs_mnist", "mnist_split")
        else:
            rows = text_section(ds, args)
            keys = ("seeds_text", "epochs_ag" if ds == "ag_news" else "epochs_text", "text_train",
                    "max_len")
        settings = {k: getattr(args, k) for k in keys}
        settings["minutes"] = round((time.perf_counter() - t1) / 60, 1)
        settings["command"] = "nice .venv/bin/python benchmarks/structured_data.py " + " ".join(args.argv)
        results[ds] = {"settings": settings, "rows": rows}
        path.write_text(json.dumps(results, indent=1))
        write(results)


if __name__ == "__main__":
    main()
