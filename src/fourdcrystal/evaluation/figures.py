"""Evaluation figures: F1 vs dose, position RMS and radial bias vs thickness, example overlays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.plotting import save_figure


def make_figures(metrics: dict, examples: dict, out_dir: Path, center_px: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pd.DataFrame(metrics.get("by_dose", []))
    colors = {"network": "C0", "classical": "C1", "oracle": "0.4"}
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for det in ("network", "classical"):
        r = rows[rows["detector"] == det] if not rows.empty else rows
        if len(r):
            ax.plot(r["dose"], r["f1"], "o-", color=colors[det], label=det)
    o = rows[rows["detector"] == "oracle"] if not rows.empty else rows
    if len(o):
        ax.plot(o["dose"], o["f1"], "--", color=colors["oracle"], label="oracle (true V_g)")
    for det in ("network", "classical"):
        r = rows[rows["detector"] == det] if not rows.empty else rows
        if len(r) and "f1_2px" in r:
            ax.plot(r["dose"], r["f1_2px"], ":", color=colors[det], label=f"{det}: F1 at 2 px")
    ax.set_xscale("log")
    ax.set_xlabel("dose (e⁻ / pattern)")
    ax.set_ylabel("F1 at 1 px (dotted: 2 px)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Bragg vector F1 vs dose (test split)")
    save_figure(fig, out_dir / "f1_vs_dose.png")

    th = pd.DataFrame(metrics.get("by_thickness", []))
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.4))
    for det in ("network", "classical", "oracle"):
        r = th[th["detector"] == det] if not th.empty else th
        if len(r) and "rms_px" in r:
            g = r.groupby("thickness_A")[["rms_px", "radial_bias_px"]].mean()
            axs[0].plot(g.index, g["rms_px"], "o-", color=colors[det], label=det)
            axs[1].plot(g.index, g["radial_bias_px"], "o-", color=colors[det], label=det)
    axs[0].set_ylabel("position RMS (px)")
    axs[1].set_ylabel("radial bias (px)")
    axs[1].axhline(0, color="k", lw=0.5)
    for a in axs:
        a.set_xlabel("thickness (Å)")
        a.legend(fontsize=8)
    fig.suptitle("Position error vs thickness (mean over doses)")
    save_figure(fig, out_dir / "rms_bias_vs_thickness.png")

    n = len(examples.get("cbed", []))
    fig, axs = plt.subplots(1, max(n, 1), figsize=(4 * max(n, 1), 4), squeeze=False)
    for k in range(n):
        a = axs[0, k]
        a.imshow(np.log1p(np.clip(examples["cbed"][k], 0, None) / 1e-3), cmap="gray")
        t = examples["truth"][k]
        a.scatter(t["qy_px"], t["qx_px"], s=60, facecolors="none", edgecolors="lime", label="truth (shown)")
        if examples.get("network") is not None:
            nk = examples["network"][k]
            a.scatter(nk["qy_px"], nk["qx_px"], marker="x", s=25, color="C0", label="network")
        c = examples["classical"][k]
        a.scatter(c["qy_px"], c["qx_px"], marker="+", s=35, color="C1", label="classical")
        a.set_axis_off()
        a.set_title(f"dose {examples['dose']:.0e}")
        if k == 0:
            a.legend(fontsize=7, loc="lower left")
    save_figure(fig, out_dir / "overlays.png")
