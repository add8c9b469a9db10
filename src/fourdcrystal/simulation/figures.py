"""Dataset figures (rule `dataset_figures`): example quartets and a summary of what was simulated.

``quartets.png`` follows the seed paper's Fig. 2: per sample the vacuum probe, the CBED pattern,
the V_g label and the q_z label.  Probe, CBED and V_g span several decades (the direct beam
dominates), so they are shown on a log scale; q_z is signed and shown with a diverging map, masked
where V_g is weak because q_z is undefined there.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.atomic import atomic_path
from fourdcrystal.geometry import Geometry
from fourdcrystal.seeds import stable_seed
from fourdcrystal.simulation.store import load_manifest, read_pattern

log = logging.getLogger(__name__)


def _save(fig, path) -> None:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")


def pick_examples(manifest: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Up to ``n`` patterns from distinct crystals, one random pattern each (so thickness, energy
    and tilt vary), chosen by a seeded permutation so the figure is reproducible."""
    rng = np.random.default_rng(stable_seed(seed, "figure-examples"))
    crystals = sorted(manifest["crystal_id"].astype(str).unique())
    crystals = [crystals[i] for i in rng.permutation(len(crystals))][:n]
    rows = []
    for c in crystals:
        sub = manifest[manifest["crystal_id"].astype(str) == c]
        rows.append(sub.iloc[int(rng.integers(len(sub)))])
    return pd.DataFrame(rows).reset_index(drop=True)


def quartets_figure(manifest: pd.DataFrame, geometry: Geometry, out_path, n: int = 4, seed: int = 0, root=".") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    ex = pick_examples(manifest, n, seed)
    half = geometry.detector_px / 2 * geometry.dk_invA
    extent = (-half, half, half, -half)  # axis 0 = kx drawn vertically, axis 1 = ky horizontally
    fig, axes = plt.subplots(len(ex), 4, figsize=(13, 3.1 * len(ex)), squeeze=False)
    titles = ("probe |ψ(k)|²", "CBED", "V_g (V)", "q_z (1/Å)")
    for r, row in ex.iterrows():
        q = read_pattern(Path(root) / row["store"], int(row["index"]))
        for c, key in enumerate(("probe", "cbed", "vg", "qz")):
            ax = axes[r, c]
            img = q[key]
            if key == "qz":
                mask = q["vg"] < 0.02 * q["vg"].max()
                lim = float(np.abs(img[~mask]).max()) if (~mask).any() else 1.0
                im = ax.imshow(np.ma.array(img, mask=mask), cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent)
            else:
                pos = img[img > 0]
                vmax = float(pos.max()) if pos.size else 1.0
                # five decades show the weak CBED disks; V_g's smooth floor needs only three
                vmin = vmax * (1e-3 if key == "vg" else 1e-5)
                im = ax.imshow(np.clip(img, vmin, None), norm=LogNorm(vmin=vmin, vmax=vmax),
                               cmap="magma" if key != "vg" else "viridis", extent=extent)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c])
        axes[r, 0].set_ylabel(f"{row['crystal_id']}\n"
                              f"t={row['thickness_A']:.0f} Å, {row['energy_eV'] / 1e3:.0f} keV, "
                              f"α={row['semiangle_mrad']:.1f} mrad", fontsize=8)
    axes[-1, 0].set_xticks([-half, 0, half])
    axes[-1, 0].set_xlabel("k_y (1/Å)")
    fig.suptitle("Simulated quartets (log scale except q_z; q_z masked where V_g < 2 % of max)")
    _save(fig, out_path)
    plt.close(fig)


def summary_figure(manifest: pd.DataFrame, info: dict, out_path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    proto = manifest.assign(prototype=manifest["prototype"].fillna("?").astype(str))
    counts = proto.groupby(["prototype", "split"]).size().unstack(fill_value=0)
    bottom = np.zeros(len(counts))
    for split in ("train", "val", "test"):
        if split in counts:
            axes[0].bar(range(len(counts)), counts[split].to_numpy(), bottom=bottom, label=split)
            bottom += counts[split].to_numpy()
    axes[0].set_xticks(range(len(counts)), [s[:18] for s in counts.index], rotation=60, ha="right", fontsize=7)
    axes[0].set_ylabel("patterns")
    axes[0].set_title("patterns per prototype")
    axes[0].legend()
    axes[1].hist(manifest["thickness_A"], bins=max(5, manifest["thickness_A"].nunique() * 2))
    axes[1].set_xlabel("thickness (Å)")
    axes[1].set_title("thickness")
    tilt = np.hypot(manifest["tilt_x_mrad"], manifest["tilt_y_mrad"])
    axes[2].hist(tilt, bins=20)
    axes[2].set_xlabel("tilt (mrad)")
    axes[2].set_title("out-of-plane tilt")
    axes[3].hist(manifest["semiangle_mrad"], bins=20)
    axes[3].set_xlabel("semi-angle (mrad)")
    axes[3].set_title(f"probe convergence ({', '.join(f'{e / 1e3:.0f}' for e in sorted(manifest['energy_eV'].unique()))} keV)")
    c = info.get("counts", {})
    fig.suptitle(f"{len(manifest)} patterns, {manifest['crystal_id'].nunique()} crystals — "
                 + ", ".join(f"{s}: {c.get(s, {}).get('patterns', 0)} patterns / {c.get(s, {}).get('crystals', 0)} crystals"
                             for s in ("train", "val", "test")))
    fig.tight_layout()
    _save(fig, out_path)
    plt.close(fig)


def make_figures(manifest_path, info_path, quartets_png, summary_png, seed: int = 0, root=".") -> None:
    manifest = load_manifest(manifest_path)
    info = json.loads(Path(info_path).read_text())
    geometry = Geometry.from_dict(info["geometry"])
    quartets_figure(manifest, geometry, quartets_png, seed=seed, root=root)
    summary_figure(manifest, info, summary_png)
    log.info("figures: %s, %s", quartets_png, summary_png)
