"""Training figures: loss curves (results/figures/loss.png) and a validation panel
(results/figures/validation.png: probe, CBED, true/predicted V_g, true/predicted q_z)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.atomic import atomic_path


def _save(fig, path: Path) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", bbox_inches="tight")


def loss_figure(steps_csv, epochs_csv, out_png) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = pd.read_csv(steps_csv)
    epochs = pd.read_csv(epochs_csv)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    ax = axes[0]
    ax.semilogy(steps["step"], steps["loss"], lw=0.6, alpha=0.5, label="train (step)")
    if len(epochs):
        ax.semilogy(epochs["step"], epochs["train_loss"], "o-", label="train (epoch mean)")
        ax.semilogy(epochs["step"], epochs["val_loss"], "s-", label="val")
    ax.set(xlabel="step", ylabel="loss", title="total loss")
    ax.legend(fontsize=8)
    ax = axes[1]
    if len(epochs):
        ax.semilogy(epochs["step"], epochs["train_vg_loss"], "o-", label="train V_g")
        ax.semilogy(epochs["step"], epochs["val_vg_loss"], "s-", label="val V_g")
        ax.semilogy(epochs["step"], epochs["train_qz_loss"], "o--", label="train q_z")
        ax.semilogy(epochs["step"], epochs["val_qz_loss"], "s--", label="val q_z")
    ax.set(xlabel="step", title="loss terms")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.plot(steps["step"], steps["lr"], color="k")
    ax.set(xlabel="step", ylabel="learning rate", title="schedule")
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return Path(out_png)


def validation_figure(model, dataset, out_png, n: int = 4) -> Path:
    """Predict ``n`` evenly spaced patterns of ``dataset`` (a QuartetDataset) and plot them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.colors import LogNorm

    rows = np.unique(np.linspace(0, len(dataset) - 1, min(n, len(dataset))).astype(int))
    items = [dataset[int(r)] for r in rows]
    probe = torch.stack([it["probe"] for it in items])
    cbed = torch.stack([it["cbed"] for it in items])
    with torch.no_grad():
        vg_p, qz_p = model(probe, cbed)
    cols = ["probe", "CBED", "V_g true", "V_g pred", "q_z true (1/Å)", "q_z pred (1/Å)"]
    fig, axes = plt.subplots(len(items), 6, figsize=(16, 2.8 * len(items)), squeeze=False)
    for i, it in enumerate(items):
        vg_t = it["vg"].numpy()
        vmax = max(float(vg_t.max()), 1e-12)
        mask = vg_t > 0.05 * vmax  # q_z shown only where there is a reflection (as in the loss)
        qlim = max(float(np.abs(it["qz"].numpy()[mask]).max()) if mask.any() else 0.1, 1e-3)
        panels = [
            (it["probe"].numpy(), dict(norm=LogNorm(1e-4, 1), cmap="magma")),
            (it["cbed"].numpy(), dict(norm=LogNorm(1e-5, max(float(it["cbed"].max()), 1e-4)), cmap="magma")),
            (vg_t, dict(norm=LogNorm(1e-3 * vmax, vmax), cmap="viridis")),
            (vg_p[i].numpy(), dict(norm=LogNorm(1e-3 * vmax, vmax), cmap="viridis")),
            (np.where(mask, it["qz"].numpy(), np.nan), dict(cmap="RdBu_r", vmin=-qlim, vmax=qlim)),
            (np.where(mask, qz_p[i].numpy(), np.nan), dict(cmap="RdBu_r", vmin=-qlim, vmax=qlim)),
        ]
        for j, (img, kw) in enumerate(panels):
            ax = axes[i, j]
            if "norm" in kw:
                img = np.clip(img, kw["norm"].vmin, None)
            im = ax.imshow(img.T, origin="lower", **kw)  # axis 0 = kx drawn horizontally
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        axes[i, 0].set_ylabel(f"val #{int(rows[i])}", fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)
    plt.close(fig)
    return Path(out_png)
