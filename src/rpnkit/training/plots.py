"""PNG plots for run folders (matplotlib, Agg backend; the ``plots`` extra).

Without matplotlib a run folder gets no plots: :func:`make_plots` logs one warning naming
the extra and returns no paths (training never fails for it); :func:`require_matplotlib`
is the check the plotting front doors (``rpnkit plot``) make first.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..data.streaming import MissingPackageError

__all__ = ["make_plots", "require_matplotlib", "PLOTS_EXTRA"]

logger = logging.getLogger(__name__)

#: how to install what plotting needs
PLOTS_EXTRA = "pip install 'rpnkit[plots]'"


def require_matplotlib(feature: str = "plotting") -> None:
    """Raise :class:`~rpnkit.data.streaming.MissingPackageError` (a ``ConfigurationError``
    and an ``ImportError``) naming the ``plots`` extra when matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MissingPackageError(
            f"{feature} needs matplotlib, which is not installed: {PLOTS_EXTRA}"
        ) from None


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, **savefig_kwargs) -> None:
    """``fig.savefig`` through a temporary file in ``path``'s folder, renamed at the end: a
    failed or interrupted save leaves no partial image, and a link at ``path`` is replaced,
    never followed (the file it points to is untouched)."""
    from .checkpoint import file_mode

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:80]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, **savefig_kwargs)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _save(fig, path: Path) -> None:
    save_figure(fig, path, dpi=110, bbox_inches="tight", format="png")


def make_plots(out: Path, prep, result) -> list[Path]:
    """Learning curves, the fitted function (formula data) and the confusion matrix
    (classification) as PNG files in ``out``; without matplotlib one warning and none."""
    try:
        plt = _plt()
    except ImportError:
        logger.warning("plots skipped: matplotlib is not installed (%s, or set plots: false)",
                       PLOTS_EXTRA)
        return []
    paths = [_learning_curves(plt, out, result)]
    bundle = prep.bundle
    if bundle.formula is not None:
        paths.append(_function_fit(plt, out, prep))
    if bundle.task == "classification":
        paths.append(_confusion(plt, out, prep))
    plt.close("all")
    return paths


def _learning_curves(plt, out: Path, result) -> Path:
    """Loss (train and validation) and, beside it, every validation metric per epoch."""
    hist = result.history
    metrics = sorted({k for h in hist for k in h if k.startswith("val_") and k != "val_loss"})
    fig, axes = plt.subplots(1, 2 if metrics else 1, figsize=(11 if metrics else 6, 4),
                             squeeze=False)
    ax = axes[0][0]
    if hist:
        ep = [h["epoch"] for h in hist]
        ax.plot(ep, [h["train_loss"] for h in hist], label="train loss")
        if "val_loss" in hist[0]:
            ax.plot(ep, [h.get("val_loss", np.nan) for h in hist], label="val loss")
        vals = [h["train_loss"] for h in hist] + [h.get("val_loss", 1.0) for h in hist]
        if all(v is not None and np.isfinite(v) and v > 0 for v in vals):
            ax.set_yscale("log")
        if result.best.get("monitor"):
            ax.axvline(result.best["epoch"], color="grey", ls=":", label=f"best (epoch {result.best['epoch']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title("learning curves")
    ax.legend()
    if metrics:
        mx = axes[0][1]
        ep = [h["epoch"] for h in hist]
        for key in metrics:
            mx.plot(ep, [h.get(key, np.nan) for h in hist], label=key.removeprefix("val_"))
        if result.best.get("monitor"):
            mx.axvline(result.best["epoch"], color="grey", ls=":")
        mx.set_xlabel("epoch")
        mx.set_title("validation metrics")
        mx.legend()
    path = out / "learning_curves.png"
    _save(fig, path)
    return path


@torch.no_grad()
def _predict(prep, x_raw: np.ndarray) -> np.ndarray:
    model = prep.model
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    x = torch.as_tensor(prep.bundle.transform_x(x_raw), dtype=dtype, device=prep.device)
    was = model.training
    model.eval()
    y = model(x).double().cpu().numpy()
    model.train(was)
    return prep.bundle.inverse_y(y)[:, 0]


def _function_fit(plt, out: Path, prep) -> Path:
    b = prep.bundle
    f, ranges = b.formula, b.ranges
    path = out / "fit.png"
    if len(ranges) == 1:
        xs = np.linspace(ranges[0][0], ranges[0][1], 400)[:, None]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs[:, 0], f(xs), label="truth", lw=2)
        ax.plot(xs[:, 0], _predict(prep, xs), "--", label="model")
        ax.set_xlabel(f.variables[0])
        ax.set_title(f"f = {f.text}")
        ax.legend()
    elif len(ranges) == 2:
        g = 80
        u = np.linspace(*ranges[0], g)
        v = np.linspace(*ranges[1], g)
        uu, vv = np.meshgrid(u, v)
        xs = np.stack([uu.ravel(), vv.ravel()], 1)
        truth = f(xs).reshape(g, g)
        pred = _predict(prep, xs).reshape(g, g)
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        ext = [*ranges[0], *ranges[1]]
        lo, hi = np.nanmin(truth), np.nanmax(truth)
        for ax, img, title in ((axes[0], truth, "truth"), (axes[1], pred, "model")):
            im = ax.imshow(img, origin="lower", extent=ext, aspect="auto", vmin=lo, vmax=hi)
            ax.set_title(title)
            ax.set_xlabel(f.variables[0])
            ax.set_ylabel(f.variables[1])
            fig.colorbar(im, ax=ax)
        im = axes[2].imshow(np.abs(pred - truth), origin="lower", extent=ext, aspect="auto")
        axes[2].set_title("|model - truth|")
        fig.colorbar(im, ax=axes[2])
        fig.suptitle(f"f = {f.text}")
    else:
        xt = b.x["test"] if b.x_mean is None else b.x["test"] * b.x_std + b.x_mean
        truth = f(xt)
        pred = _predict(prep, xt)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(truth, pred, s=4, alpha=0.6)
        lo, hi = float(np.min(truth)), float(np.max(truth))
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.set_xlabel("truth (test split)")
        ax.set_ylabel("model")
        ax.set_title(f"f = {f.text}")
    _save(fig, path)
    return path


@torch.no_grad()
def _confusion(plt, out: Path, prep) -> Path:
    b = prep.bundle
    model = prep.model
    p = next(iter(model.parameters()), None)
    dtype = p.dtype if p is not None else torch.float32
    x = torch.as_tensor(b.x["test"], dtype=dtype, device=prep.device)
    was = model.training
    model.eval()
    logits = torch.cat([model(x[i : i + 4096]) for i in range(0, x.shape[0], 4096)]).cpu()
    model.train(was)
    pred = (logits[:, 0] > 0).long().numpy() if logits.shape[1] == 1 else logits.argmax(1).numpy()
    k = b.n_classes or int(max(pred.max(), b.y["test"].max()) + 1)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (b.y["test"].astype(int), pred), 1)
    fig, ax = plt.subplots(figsize=(1.2 + 0.5 * k, 1 + 0.5 * k))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    labels = b.classes or [str(i) for i in range(k)]
    ax.set_xticks(range(k), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (test, acc {np.trace(cm) / max(cm.sum(), 1):.3f})")
    path = out / "confusion_matrix.png"
    _save(fig, path)
    return path
