"""What a pattern can show: the Bragg reflections that are truth for evaluation and label for training.

One rule (:func:`shown_reflections`) decides, for one acquisition (beam energy, convergence
semi-angle, thickness) of one oriented crystal, which kinematic reflections
(:mod:`fourdcrystal.simulation.kinematic`) the diffraction pattern shows:

* along a zone axis [uvw] (orientations of kind ``zone``, tilted or not): the reflections of the
  zero-order Laue zone (hu + kv + lw = 0) inside the first-order-Laue-zone (FOLZ) ring, radius
  ``√(2H/λ)`` with H = 1 / (shortest lattice translation along [uvw]): there the Ewald sphere meets the
  first upper layer, and beyond it the zero layer's disks are crossed by higher-order ones;
* in any other orientation: the reflections the Ewald sphere excites, |s_g| ≤ α|g| + 1/t (the
  convergent cone sweeps the sphere over ±α|g|; a slab of thickness t excites points within its
  shape-transform main lobe 1/t);
* in both cases only reflections whose whole disk (radius α/λ) lies on the detector and whose |V_g| is
  at least ``min_vg_fraction`` of the mean inner potential V_0 (the direct beam's V_g) —
  kinematically forbidden or negligible reflections are not truth.

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


def folz_radius_invA(structure, zone_uvw, energy_eV: float) -> float:
    """Radius (Å⁻¹) of the first-order Laue-zone ring of ``structure`` along ``zone_uvw`` at ``energy_eV``."""
    from fourdcrystal.simulation.supercells import _shortest_translation_A, _symmetry

    _, centring = _symmetry(structure)
    layer_spacing_invA = 1.0 / _shortest_translation_A(zone_uvw, structure.lattice.matrix, centring)
    return math.sqrt(2.0 * layer_spacing_invA / electron_wavelength_A(energy_eV))


def disk_radius_px(geometry: Geometry, energy_eV: float, semiangle_mrad: float) -> float:
    """Radius of a diffraction disk on the detector (px): α / λ in Å⁻¹ over the pixel size."""
    return semiangle_mrad * 1e-3 / electron_wavelength_A(energy_eV) / geometry.dk_invA


def shown_reflections(refl: pd.DataFrame, geometry: Geometry, energy_eV: float, semiangle_mrad: float,
                      thickness_A: float, v0_V: float, min_vg_fraction: float,
                      folz_radius: float | None = None) -> np.ndarray:
    """Boolean mask over ``refl`` (kinematic_reflections of this orientation and energy): the
    reflections this acquisition shows (module docstring). ``folz_radius`` (Å⁻¹): given for zone-axis
    orientations (then ``refl["laue_zone"]`` must hold the zone indices), None otherwise."""
    if refl.empty:
        return np.zeros(0, dtype=bool)
    r_px = disk_radius_px(geometry, energy_eV, semiangle_mrad)
    last = geometry.detector_px - 1
    x, y = refl["qx_px"].to_numpy(), refl["qy_px"].to_numpy()
    on_detector = (x - r_px >= 0) & (x + r_px <= last) & (y - r_px >= 0) & (y + r_px <= last)
    g_inplane = np.hypot(refl["qx_invA"].to_numpy(), refl["qy_invA"].to_numpy())
    if folz_radius is not None:
        excited = (refl["laue_zone"].to_numpy() == 0) & (g_inplane < folz_radius)
    else:
        g_abs = np.sqrt(g_inplane ** 2 + refl["qz_invA"].to_numpy() ** 2)
        tol = semiangle_mrad * 1e-3 * g_abs + 1.0 / thickness_A
        excited = np.abs(refl["excitation_error_invA"].to_numpy()) <= tol
    strong = refl["vg_abs"].to_numpy() >= min_vg_fraction * v0_V
    return on_detector & excited & strong


def render_labels(shown: pd.DataFrame, geometry: Geometry, v0_V: float,
                  sigma_px: float = PEAK_SIGMA_PX) -> tuple[np.ndarray, np.ndarray]:
    """V_g (V) and q_z (Å⁻¹) maps (P, P) float32: a Gaussian of height |V_g| at each shown reflection
    (and V_0 on the direct beam); q_z = the Gaussian-weighted g_z of the reflections under a pixel."""
    P, c = geometry.detector_px, float(geometry.center_px)
    xy = np.vstack([[c, c], shown[["qx_px", "qy_px"]].to_numpy(float)])
    height = np.concatenate([[v0_V], shown["vg_abs"].to_numpy(float)])
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


def orientation_truth(structure, R: np.ndarray, zone_uvw, meta: list[dict], geometry: Geometry, sim: dict,
                      v0_V: float) -> tuple[list[pd.DataFrame], np.ndarray, np.ndarray]:
    """Truth and labels of one orientation's patterns (``meta``: one dict per pattern with energy_eV,
    semiangle_mrad, thickness_A): per pattern its kinematic reflections with a boolean column ``shown``,
    and the stacked rendered V_g and q_z labels (n, P, P). ``zone_uvw``: the zone axis of a zone-axis
    orientation, else None."""
    from fourdcrystal.simulation.kinematic import kinematic_reflections

    by_energy: dict[float, tuple[pd.DataFrame, float | None]] = {}
    frames, vgs, qzs = [], [], []
    for m in meta:
        e = float(m["energy_eV"])
        if e not in by_energy:  # the reflections depend on the energy (Ewald sphere) only
            refl = kinematic_reflections(structure, R, geometry, e, geometry.k_max_corner_invA,
                                         parametrization=sim["parametrization"], zone_uvw=zone_uvw)
            by_energy[e] = (refl, None if zone_uvw is None else folz_radius_invA(structure, zone_uvw, e))
        refl, folz = by_energy[e]
        shown = shown_reflections(refl, geometry, e, float(m["semiangle_mrad"]), float(m["thickness_A"]), v0_V,
                                  float(sim["label_min_vg_fraction"]), folz)
        vg, qz = render_labels(refl[shown], geometry, v0_V)
        frames.append(refl.assign(shown=shown))
        vgs.append(vg)
        qzs.append(qz)
    return frames, np.stack(vgs), np.stack(qzs)
