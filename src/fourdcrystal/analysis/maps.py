"""The outputs of ``fourdcrystal strain``: the per-position table, the maps as arrays and as figures.

Maps are (Rx, Ry) arrays indexed like the scan (``[rx, ry]``) and drawn with rx down and ry across,
as py4DSTEM draws real-space maps; positions that could not be fit are NaN (grey in the figures).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fourdcrystal.plotting import save_figure

# map name -> (unit, title); the one list of what goes into strain_maps.zarr and the figures
MAPS = {
    "exx_pct": ("%", "e_xx"), "eyy_pct": ("%", "e_yy"), "exy_pct": ("%", "e_xy (tensor shear)"),
    "rotation_deg": ("°", "in-plane rotation"), "tilt_x_mrad": ("mrad", "tilt toward +x"),
    "tilt_y_mrad": ("mrad", "tilt toward +y"), "tilt_mrad": ("mrad", "out-of-plane tilt"),
    "tilt_azimuth_deg": ("°", "tilt direction"), "indexed_fraction": ("", "indexed fraction"),
    "grain": ("", "grain (-1: not fit)"), "residual_invA": ("Å⁻¹", "fit RMS residual"),
}


# the maps whose noise per position the summary states (``noise_per_position``)
NOISE_MAPS = ("exx_pct", "eyy_pct", "exy_pct", "rotation_deg")
MAD_TO_SIGMA = 1.4826  # σ of a Gaussian over the median of its absolute deviations
MIN_NOISE_PAIRS = 8  # neighbour pairs an estimate needs


def noise_per_position(m: np.ndarray, grain: np.ndarray) -> float:
    """One position's noise in map ``m`` (the standard deviation of its value about the smooth field), from the
    differences of scan neighbours fit in the same grain: a field that varies slowly over a step cancels in a
    difference while each position's noise adds, Var(a − b) = 2σ², so σ = 1.4826 · median |a − b| / √2, robust to
    the few pairs across an interface. Along each scan axis, the smaller of the two: a field that steps along one axis
    (layers, bench_strain's rows of states) raises only that axis' median. NaN with fewer than
    ``MIN_NOISE_PAIRS`` pairs along either axis. The strain maps' precision as papers quote it (the spread in an
    unstrained area), without asking for one."""
    best = np.inf
    for axis in (0, 1):
        n = m.shape[axis]
        a, b = np.take(m, np.arange(n - 1), axis), np.take(m, np.arange(1, n), axis)
        ga, gb = np.take(grain, np.arange(n - 1), axis), np.take(grain, np.arange(1, n), axis)
        d = np.abs(a - b)[(ga == gb) & (ga >= 0) & np.isfinite(a) & np.isfinite(b)]
        if len(d) >= MIN_NOISE_PAIRS:
            best = min(best, MAD_TO_SIGMA * float(np.median(d)) / np.sqrt(2.0))
    return float(best) if np.isfinite(best) else float("nan")


def to_maps(table, scan_shape) -> dict[str, np.ndarray]:
    """Per-position columns -> (Rx, Ry) float arrays (NaN where a position has no row or no fit)."""
    out = {}
    rx, ry = table["rx"].to_numpy(int), table["ry"].to_numpy(int)
    for name in MAPS:
        m = np.full(scan_shape, -1.0 if name == "grain" else np.nan)
        m[rx, ry] = table[name].to_numpy(float)
        out[name] = m
    return out


def write_arrays(maps: dict[str, np.ndarray], path: Path, attrs: dict) -> None:
    """strain_maps.zarr: one float32 (Rx, Ry) array per map, its unit in the array's attributes."""
    import zarr

    root = zarr.open_group(zarr.storage.LocalStore(str(path)), mode="w", zarr_format=3)
    for name, m in maps.items():
        arr = root.create_array(name, data=m.astype(np.float32))
        arr.attrs["unit"] = MAPS[name][0]
    root.attrs.update(json.loads(json.dumps(attrs, default=float)))


def _panel(fig, ax, m, name, cmap, symmetric, region, grains):
    import matplotlib.patches as mpatches

    unit, title = MAPS[name]
    finite = m[np.isfinite(m)]
    # 99th percentile of |value|, at least 0.01 (% or °) so that round-off on a uniform map stays white
    lim = max(float(np.percentile(np.abs(finite), 99)) if finite.size else 1.0, 0.01)
    kw = {"vmin": -lim, "vmax": lim} if symmetric else {}
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad="0.7")
    if name == "grain":  # categories: grey for "not fit" (-1), one colour per grain, integer ticks
        n = int(np.nanmax(m)) + 2
        cm = matplotlib.colors.ListedColormap(["0.7"] + [matplotlib.colormaps["tab10"](k % 10) for k in range(n - 1)])
        kw = {"vmin": -1.5, "vmax": n - 1.5}
    im = ax.imshow(np.ma.masked_invalid(m), cmap=cm, interpolation="nearest", **kw)
    if grains is not None:
        _grain_boundaries(ax, grains)
    if region is not None:
        (x0, x1), (y0, y1) = region
        ax.add_patch(mpatches.Rectangle((y0 - 0.5, x0 - 0.5), y1 - y0, x1 - x0, fill=False, ec="k", lw=1.5, ls="--"))
    ax.set_title(title)
    ax.set_xlabel("scan ry")
    ax.set_ylabel("scan rx")
    cb = fig.colorbar(im, ax=ax, shrink=0.8, label=unit or None)
    if name == "grain":
        cb.set_ticks(np.arange(-1, int(np.nanmax(m)) + 1))


def _grain_boundaries(ax, grains) -> None:
    """Thin black lines on the pixel edges between positions of different grains."""
    from matplotlib.collections import LineCollection

    segs = [[(j + 0.5, i - 0.5), (j + 0.5, i + 0.5)] for i, j in zip(*np.nonzero(grains[:, 1:] != grains[:, :-1]))]
    segs += [[(j - 0.5, i + 0.5), (j + 0.5, i + 0.5)] for i, j in zip(*np.nonzero(grains[1:] != grains[:-1]))]
    ax.add_collection(LineCollection(segs, colors="k", linewidths=0.8))


def figure(maps, names, path, suptitle, region=None, cmaps=None) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(names), figsize=(4.8 * len(names), 4.0), squeeze=False, layout="constrained")
    grains = maps["grain"] if np.nanmax(maps["grain"]) > 0 else None
    for ax, name in zip(axes[0], names):
        cmap = (cmaps or {}).get(name, "RdBu_r")
        _panel(fig, ax, maps[name], name, cmap, cmap == "RdBu_r", region, grains)
    fig.suptitle(suptitle)
    save_figure(fig, path)


def tilt_figure(maps, path, suptitle) -> None:
    """Out-of-plane tilt: magnitude (colour) and direction (arrows toward the azimuth the zone axis leans to)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.6, 4.0), squeeze=False, layout="constrained")
    _panel(fig, axes[0, 0], maps["rotation_deg"], "rotation_deg", "RdBu_r", True, None, None)
    _panel(fig, axes[0, 1], maps["tilt_mrad"], "tilt_mrad", "viridis", False, None, None)
    tx, ty = maps["tilt_x_mrad"], maps["tilt_y_mrad"]
    if np.isfinite(tx).any():
        rx, ry = np.indices(tx.shape)
        # arrows in (ry across, rx down) axes: the y component across, the x component down (the scan's own
        # directions where the axes are the scan's: `strain --x-axis-deg`)
        axes[0, 1].quiver(ry, rx, ty, -tx, color="w", angles="xy", pivot="middle")
    else:
        axes[0, 1].text(0.5, 0.5, "no q_z in these vectors\n(classical baseline)", ha="center", va="center",
                        transform=axes[0, 1].transAxes)
    fig.suptitle(suptitle)
    save_figure(fig, path)
