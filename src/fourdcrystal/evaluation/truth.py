"""The truth of a test pattern, and the negatives (patterns whose truth is "no vectors but the beam").

Truth is crystallography: the kinematic reflections the pattern shows, decided at simulation time by
the one rule of :mod:`fourdcrystal.simulation.labels` (zero-order Laue zone inside the FOLZ ring for
zone-axis patterns, Ewald-sphere excitation otherwise; whole disk on the detector; |V_g| above a floor)
and stored with each shard's reflections as the column ``shown`` — the same set the training label
renders, so the oracle (peak extraction on the label) must recover it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# patterns without a crystal: the vacuum probe alone, an amorphous support film, and detector noise
# with no beam at all
NEGATIVE_KINDS = ("vacuum", "amorphous_film", "noise_only")


def select_patterns(manifest: pd.DataFrame, split: str, n_max: int) -> pd.DataFrame:
    df = manifest[manifest["split"] == split].reset_index(drop=True)
    if len(df) > n_max:
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, n_max).round().astype(int))].reset_index(drop=True)
    return df


def shown_truth(rows: pd.DataFrame) -> pd.DataFrame:
    """The reflections of one pattern's kinematic list that the pattern shows (its truth)."""
    if rows.empty or "shown" not in rows:
        return rows.iloc[:0].reset_index(drop=True)
    return rows[rows["shown"].to_numpy(bool)].reset_index(drop=True)


def as_recorded(truth: pd.DataFrame, distortion: np.ndarray, center_px: float) -> pd.DataFrame:
    """The truth where a detector with elliptical distortion ``distortion`` (2×2, A of
    ``learning.augment.distortion_matrix``) records it: each reflection at ``c + A (x - c)``, relative to the
    recorded direct beam. A Bragg-vector detector reports disks where the detector shows them; removing
    the projector's ellipticity is a calibration of the whole scan (its Bragg vector map), after detection."""
    if truth.empty or np.allclose(distortion, np.eye(2)):
        return truth
    xy = truth[["qx_px", "qy_px"]].to_numpy(np.float64) - center_px
    moved = xy @ np.asarray(distortion, np.float64).T + center_px
    return truth.assign(qx_px=moved[:, 0], qy_px=moved[:, 1])


def negative_cbed(kind: str, probe: np.ndarray, film_cbed: np.ndarray) -> np.ndarray:
    """The noise-free pattern of a negative (on the probe-max-1 scale of the simulated data)."""
    if kind == "vacuum":
        return np.asarray(probe, dtype=np.float64)
    if kind == "amorphous_film":
        return np.asarray(film_cbed, dtype=np.float64)
    if kind == "noise_only":
        return np.zeros_like(probe, dtype=np.float64)
    raise ValueError(f"unknown negative kind {kind!r}")
