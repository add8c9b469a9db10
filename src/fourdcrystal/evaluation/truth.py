"""The kinematic truth of a test pattern, and which of its reflections are visible at a dose.

See evaluation.evaluate's docstring, step 3, for the definitions.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fourdcrystal.inference.model_input import probe_radius_px


def select_patterns(manifest: pd.DataFrame, split: str, n_max: int) -> pd.DataFrame:
    df = manifest[manifest["split"] == split].reset_index(drop=True)
    if len(df) > n_max:
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, n_max).round().astype(int))].reset_index(drop=True)
    return df


def kinematic_truth(rows: pd.DataFrame, P: int, min_vg_visible: float, edge_px: float = 1.0) -> pd.DataFrame:
    """All kinematic reflections of one pattern inside the detector, without (000); column
    ``above_floor``: |V_g| ≥ ``min_vg_visible`` × the strongest of them."""
    nz = rows[~((rows["h"] == 0) & (rows["k"] == 0) & (rows["l"] == 0))]
    nz = nz[nz["qx_px"].between(edge_px, P - 1 - edge_px) & nz["qy_px"].between(edge_px, P - 1 - edge_px)]
    nz = nz.reset_index(drop=True)
    vmax = nz["vg_abs"].max() if len(nz) else 0.0
    return nz.assign(above_floor=nz["vg_abs"] >= min_vg_visible * vmax)


def _offsets(r_lo: float, r_hi: float) -> np.ndarray:
    """Integer pixel offsets (n, 2) with r_lo < distance ≤ r_hi (r_lo < 0: the full disk)."""
    k = int(np.ceil(r_hi))
    di, dj = np.mgrid[-k:k + 1, -k:k + 1]
    d = np.hypot(di, dj)
    m = (d > r_lo) & (d <= r_hi)
    return np.stack([di[m], dj[m]], axis=1)


def disk_counts(expected: np.ndarray, xy: np.ndarray, radius_px: float, e_per_unit: float) -> dict[str, np.ndarray]:
    """Expected electrons in the disk of each reflection (see the module docstring, step 3).

    ``expected``: the noise-free pattern on the detector scale (CBED + expected background);
    ``xy``: (n, 2) kinematic positions in px; ``e_per_unit``: electrons per intensity unit
    (dose / Σ probe). Returns signal_e, total_e, background_e (per disk) and snr.
    """
    P, Q = expected.shape
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    c = np.rint(xy).astype(int)
    r = max(float(radius_px), 1.0)

    def gather(off):
        i = c[:, None, 0] + off[None, :, 0]
        j = c[:, None, 1] + off[None, :, 1]
        ok = (i >= 0) & (i < P) & (j >= 0) & (j < Q)
        return np.where(ok, expected[np.clip(i, 0, P - 1), np.clip(j, 0, Q - 1)], np.nan)

    disk = gather(_offsets(-1.0, r))
    ring = gather(_offsets(r + 1.0, 2.0 * r + 1.0))
    n_disk = np.sum(np.isfinite(disk), axis=1)
    with np.errstate(all="ignore"):
        level = np.nanpercentile(ring, 20, axis=1) if len(c) else np.zeros(0)
    level = np.nan_to_num(level, nan=0.0)
    total = e_per_unit * np.nansum(disk, axis=1)
    bg = e_per_unit * n_disk * level
    sig = total - bg
    snr = sig / np.sqrt(np.maximum(total, 1e-12))
    return {"signal_e": sig, "total_e": total, "background_e": bg, "snr": snr}


def expected_background(shape, params) -> np.ndarray | float:
    """The Augmenter's background of one draw (before counting; fractions of the probe maximum)."""
    if not (params.background_const or params.background_diffuse):
        return 0.0
    i0, i1 = np.indices(shape, dtype=np.float64)
    r = np.hypot(i0 - shape[0] // 2, i1 - shape[1] // 2)
    return params.background_const + params.background_diffuse * np.exp(-r / params.diffuse_width_px)


def visible_truth(truth: pd.DataFrame, cbed: np.ndarray, probe: np.ndarray, dose: float, params=None, *,
                  min_electrons: float, min_snr: float) -> pd.DataFrame:
    """The reflections of ``truth`` (from :func:`kinematic_truth`) visible at ``dose`` electrons
    per pattern, with their disk counts as extra columns."""
    if truth.empty:
        return truth.assign(signal_e=[], total_e=[], background_e=[], snr=[])
    e_per_unit = float(dose) / float(np.sum(probe, dtype=np.float64))
    exp_img = np.asarray(cbed, dtype=np.float64)
    if params is not None:
        exp_img = exp_img + expected_background(exp_img.shape, params)
    dc = disk_counts(exp_img, truth[["qx_px", "qy_px"]].to_numpy(), probe_radius_px(probe), e_per_unit)
    t = truth.assign(**dc)
    ok = t["above_floor"] & (t["signal_e"] >= float(min_electrons)) & (t["snr"] >= float(min_snr))
    return t[ok.to_numpy()]
