"""What a pattern can show: the Bragg reflections that are truth for evaluation and label for training.

One rule (:func:`shown_reflections`) decides, for one simulated pattern (beam energy, convergence
semi-angle, thickness) of one oriented crystal, which kinematic reflections
(:mod:`fourdcrystal.simulation.kinematic`) it shows:

* along a zone axis [uvw] (orientations of kind ``zone``, tilted or not), the candidates are the
  zero-order Laue zone (hu + kv + lw = 0) inside the first-order-Laue-zone (FOLZ) ring, radius
  ``√(2H/λ)`` with H = 1 / (shortest lattice translation along [uvw]): beyond it the zero layer's disks
  are crossed by higher-order ones; in any other orientation, every kinematic reflection;
* the whole disk (radius α/λ) must lie on the detector;
* two shown reflections are at least the peak extraction's non-maximum-suppression spacing apart
  (``min_spacing_px``, config ``evaluate.network_min_spacing_px``): of a closer pair (overlapping disks
  of a large cell) only the brighter one is shown — no detector could report both;
* the disk must be bright in the pattern itself: the mean of the noise-free multislice CBED over the
  disk's core (half its radius, at least the nearest pixels) must reach ``min_brightness`` × the
  direct beam's (the vacuum probe's core). Why the simulated pattern and not a kinematic or two-beam
  estimate: at a zone axis of a 10–100 nm crystal dynamical scattering lights zero-layer reflections
  whose kinematic excitation is nil (SrTiO3 [001], 30 nm: reflections with |V_g| = 0.07 V as bright as
  those with 2.5 V), while in a 2–6 nm crystal the outer ones stay dark; only the multislice knows.
  The positions stay crystallographic (kinematic); the pattern only says which are there.

Why render the label from this list rather than Fourier-transforming the potential slab, as the
seed did: the transform of a windowed box carries sidelobes along both detector axes through every
peak (visible at the dynamic range the log loss sees), and it holds every reciprocal-lattice point
near q_z = 0 — upper-layer points of crystals with a long period along the beam, or off-axis points
of tilted crystals, that the CBED beside it does not show. A network trained on those learns to paint
a lattice whatever the input. The rendered label holds exactly the truth: a Gaussian peak of height
|V_g| (V) at each shown reflection's kinematic position, V_0 on the direct beam, and q_z (Å⁻¹, the
reflection's lab-frame g_z) under each peak; peak extraction on it (the "oracle") recovers the truth.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fourdcrystal.geometry import Geometry, electron_wavelength_A

PEAK_SIGMA_PX = 0.75  # rendered peak width: the 3×3 sub-pixel fit needs neighbours above zero
# A shown reflection's peak is at least this fraction of V_0 high, so that every reflection the pattern
# shows is a peak above the detection threshold (dynamical scattering lights reflections with tiny V_g);
# above it the peak height is |V_g|, the kinematic intensity scale.
MIN_PEAK_FRACTION = 0.01


def folz_radius_invA(structure, zone_uvw, energy_eV: float) -> float:
    """Radius (Å⁻¹) of the first-order Laue-zone ring of ``structure`` along ``zone_uvw`` at ``energy_eV``."""
    from fourdcrystal.simulation.supercells import shortest_translation_A, symmetry_operations

    _, centring = symmetry_operations(structure)
    layer_spacing_invA = 1.0 / shortest_translation_A(zone_uvw, structure.lattice.matrix, centring)
    return math.sqrt(2.0 * layer_spacing_invA / electron_wavelength_A(energy_eV))


def disk_radius_px(geometry: Geometry, energy_eV: float, semiangle_mrad: float) -> float:
    """Radius of a diffraction disk on the detector (px): α / λ in Å⁻¹ over the pixel size."""
    return semiangle_mrad * 1e-3 / electron_wavelength_A(energy_eV) / geometry.dk_invA


def _disk_offsets(radius_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel offsets (di, dj) within ``radius_px`` of a disk's centre pixel."""
    k = int(np.ceil(radius_px))
    di, dj = np.mgrid[-k:k + 1, -k:k + 1]
    inside = np.hypot(di, dj) <= radius_px
    return di[inside], dj[inside]


def disk_brightness(cbed: np.ndarray, probe: np.ndarray, xy_px: np.ndarray, radius_px: float) -> np.ndarray:
    """Mean of ``cbed`` over each disk's core (radius ``radius_px`` / 2, at least 1 px) around ``xy_px``
    (n, 2), over the same mean of the vacuum ``probe`` around its maximum."""
    di, dj = _disk_offsets(max(1.0, 0.5 * radius_px))
    P, Q = cbed.shape

    def core_mean(img, x, y):
        i = np.clip(np.rint(x).astype(int)[:, None] + di[None], 0, P - 1)
        j = np.clip(np.rint(y).astype(int)[:, None] + dj[None], 0, Q - 1)
        return img[i, j].mean(axis=1)

    c = np.unravel_index(int(np.argmax(probe)), probe.shape)
    beam = float(core_mean(np.asarray(probe, float), np.array([c[0]]), np.array([c[1]]))[0])
    xy = np.asarray(xy_px, float).reshape(-1, 2)
    return core_mean(np.asarray(cbed, float), xy[:, 0], xy[:, 1]) / max(beam, 1e-30)


def disk_sums(img: np.ndarray, xy_px: np.ndarray, radius_px: float) -> np.ndarray:
    """Sum of ``img`` over the disk of ``radius_px`` (at least the nearest pixel) about each position
    ``xy_px`` (n, 2); pixels off the image count as zero."""
    di, dj = _disk_offsets(max(0.5, float(radius_px)))
    xy = np.rint(np.asarray(xy_px, float).reshape(-1, 2)).astype(int)
    i, j = xy[:, :1] + di[None], xy[:, 1:] + dj[None]
    on = (i >= 0) & (i < img.shape[0]) & (j >= 0) & (j < img.shape[1])
    vals = np.where(on, np.asarray(img, np.float64)[np.clip(i, 0, img.shape[0] - 1), np.clip(j, 0, img.shape[1] - 1)], 0.0)
    return vals.sum(axis=1)


def counted(signal_e: np.ndarray, background_e: np.ndarray, min_snr: float) -> np.ndarray:
    """Boolean mask: disks whose expected electrons ``signal_e`` stand ``min_snr`` Poisson standard deviations
    above the expected electrons of the background under them (``background_e``): S ≥ k·√(S + B).
    The dose side of "what a pattern can show": at 10³ electrons per pattern a disk holding a few of them is
    not in the pattern, whatever its brightness in the noise-free simulation."""
    s = np.asarray(signal_e, float)
    return s >= float(min_snr) * np.sqrt(np.clip(s + np.asarray(background_e, float), 0.0, None))


def _resolvable(xy: np.ndarray, brightness: np.ndarray, min_spacing_px: float) -> np.ndarray:
    """Greedy suppression, brightest first: drop a reflection within ⌈min_spacing_px⌉ px (Chebyshev, the
    rule of fourdcrystal.inference.peaks) of a brighter kept one."""
    keep = np.zeros(len(xy), dtype=bool)
    r = np.ceil(min_spacing_px)
    for k in np.argsort(-brightness, kind="stable"):
        if not np.any(keep & (np.abs(xy[:, 0] - xy[k, 0]) <= r) & (np.abs(xy[:, 1] - xy[k, 1]) <= r)):
            keep[k] = True
    return keep


def in_field(refl: pd.DataFrame, geometry: Geometry, energy_eV: float, semiangle_mrad: float,
             folz_radius: float | None = None) -> np.ndarray:
    """Boolean mask over ``refl``: the reflections a pattern could show at all — whole disk on the detector
    and, along a zone axis (``folz_radius`` given), zero-order Laue zone inside the FOLZ ring — however
    bright. The shown ones (:func:`shown_reflections`) are those of these bright enough to be truth."""
    r_px = disk_radius_px(geometry, energy_eV, semiangle_mrad)
    last = geometry.detector_px - 1
    x, y = refl["qx_px"].to_numpy(float), refl["qy_px"].to_numpy(float)
    mask = (x - r_px >= 0) & (x + r_px <= last) & (y - r_px >= 0) & (y + r_px <= last)
    if folz_radius is not None:
        g_inplane = np.hypot(refl["qx_invA"].to_numpy(), refl["qy_invA"].to_numpy())
        mask &= (refl["laue_zone"].to_numpy() == 0) & (g_inplane < folz_radius)
    return mask


def shown_reflections(refl: pd.DataFrame, geometry: Geometry, energy_eV: float, semiangle_mrad: float,
                      cbed: np.ndarray, probe: np.ndarray, min_brightness: float,
                      folz_radius: float | None = None, min_spacing_px: float = 3.0) -> np.ndarray:
    """Boolean mask over ``refl`` (kinematic_reflections of this orientation and energy): the
    reflections the noise-free pattern ``cbed`` (with its vacuum ``probe``) shows (module docstring).
    ``folz_radius`` (Å⁻¹): given for zone-axis orientations (then ``refl["laue_zone"]`` holds the zone
    indices), None otherwise."""
    if refl.empty:
        return np.zeros(0, dtype=bool)
    r_px = disk_radius_px(geometry, energy_eV, semiangle_mrad)
    xy = refl[["qx_px", "qy_px"]].to_numpy(float)
    mask = in_field(refl, geometry, energy_eV, semiangle_mrad, folz_radius)
    shown = np.zeros(len(refl), dtype=bool)
    b = disk_brightness(cbed, probe, xy[mask], r_px)
    idx = np.flatnonzero(mask)[b >= min_brightness]
    # the direct beam takes part in the suppression (it is always a peak) but is no reflection
    xy_all = np.vstack([xy[idx], [[geometry.center_px, geometry.center_px]]])
    keep = _resolvable(xy_all, np.concatenate([b[b >= min_brightness], [np.inf]]), min_spacing_px)
    shown[idx[keep[:-1]]] = True
    return shown


def render_labels(shown: pd.DataFrame, geometry: Geometry, v0_V: float,
                  sigma_px: float = PEAK_SIGMA_PX) -> tuple[np.ndarray, np.ndarray]:
    """V_g (V) and q_z (Å⁻¹) maps (P, P) float32: a Gaussian of height max(|V_g|, MIN_PEAK_FRACTION·V_0)
    at each shown reflection (and V_0 on the direct beam); q_z = the Gaussian-weighted g_z of the
    reflections under a pixel."""
    P, c = geometry.detector_px, float(geometry.center_px)
    xy = np.vstack([[c, c], shown[["qx_px", "qy_px"]].to_numpy(float)])
    height = np.concatenate([[v0_V], np.maximum(shown["vg_abs"].to_numpy(float), MIN_PEAK_FRACTION * v0_V)])
    gz = np.concatenate([[0.0], shown["qz_invA"].to_numpy(float)])
    vg = np.zeros((P, P))
    weight = np.zeros((P, P))
    weighted_qz = np.zeros((P, P))
    half = int(math.ceil(4 * sigma_px))
    offsets = np.arange(-half, half + 1)
    for (x, y), h, z in zip(xy, height, gz):
        i = int(round(x)) + offsets
        j = int(round(y)) + offsets
        i, j = i[(i >= 0) & (i < P)], j[(j >= 0) & (j < P)]
        g = np.exp(-0.5 * ((i[:, None] - x) ** 2 + (j[None, :] - y) ** 2) / sigma_px ** 2)
        vg[np.ix_(i, j)] += h * g
        weight[np.ix_(i, j)] += g
        weighted_qz[np.ix_(i, j)] += z * g
    qz = np.divide(weighted_qz, weight, out=np.zeros_like(weight), where=weight > 1e-12)
    return vg.astype(np.float32), qz.astype(np.float32)


def orientation_truth(structure, R: np.ndarray, zone_uvw, meta: list[dict], arrays: dict, geometry: Geometry,
                      sim: dict, v0_V: float, min_spacing_px: float = 3.0) -> tuple[list[pd.DataFrame], np.ndarray, np.ndarray]:
    """Truth and labels of one orientation's patterns (``meta``: one dict per pattern with energy_eV,
    semiangle_mrad; ``arrays``: their noise-free ``cbed`` and ``probe`` stacks): per pattern its
    kinematic reflections with boolean columns ``shown`` (the truth) and ``in_field`` (:func:`in_field`:
    could be shown, however faint), and the stacked rendered V_g and q_z labels
    (n, P, P). ``zone_uvw``: the zone axis of a zone-axis orientation, else None. ``min_spacing_px``: the
    peak extraction's non-maximum suppression (config evaluate.network_min_spacing_px)."""
    from fourdcrystal.simulation.kinematic import kinematic_reflections

    by_energy: dict[float, tuple[pd.DataFrame, float | None]] = {}
    frames, vgs, qzs = [], [], []
    for n, m in enumerate(meta):
        e = float(m["energy_eV"])
        if e not in by_energy:  # the reflections depend on the energy (Ewald sphere) only
            refl = kinematic_reflections(structure, R, geometry, e, geometry.k_max_corner_invA,
                                         parametrization=sim["parametrization"], zone_uvw=zone_uvw)
            by_energy[e] = (refl, None if zone_uvw is None else folz_radius_invA(structure, zone_uvw, e))
        refl, folz = by_energy[e]
        shown = shown_reflections(refl, geometry, e, float(m["semiangle_mrad"]), arrays["cbed"][n],
                                  arrays["probe"][n], float(sim["label_min_brightness"]), folz, min_spacing_px)
        vg, qz = render_labels(refl[shown], geometry, v0_V)
        frames.append(refl.assign(shown=shown, in_field=in_field(refl, geometry, e, float(m["semiangle_mrad"]), folz)))
        vgs.append(vg)
        qzs.append(qz)
    return frames, np.stack(vgs), np.stack(qzs)
