"""Kinematic truth: Bragg reflections of an oriented crystal, independent of the multislice.

For a conventional cell (pymatgen ``Structure``) and the rotation ``R`` (lab = R @ crystal
Cartesian; beam along +z of the lab frame) every reciprocal-lattice vector ``g = h a* + k b* + l c*``
(crystallographic reciprocal lattice, no 2π) with ``0 < |g| <= q_max`` is rotated to the lab frame.

* Excitation error: exact Ewald-sphere distance for an incident wave vector ``k0 = (0, 0, 1/λ)``,
  ``s_g = 1/λ - |k0 + g|`` (positive when the point lies inside the sphere; ≈ -g_z - λ|g|²/2).
* Kept: ``|s_g| <= s_max_invA`` (default 0.1 Å⁻¹).  Why that width: the convergent probe tilts the
  incident beam by up to α (a few mrad), moving s_g by α|g| ≈ 0.01 Å⁻¹ at 2 Å⁻¹, and a slab of
  thickness t excites points within ≈ 1/t (0.05 Å⁻¹ at 20 Å); 0.1 Å⁻¹ covers both with margin and
  matches the q_z width of the V_g label (σ = 0.075 Å⁻¹ by default).  Callers filter tighter on the
  returned ``excitation_error_invA`` or ``vg_abs`` when they need to.
* The direct beam (000) is excluded: it is always present, carries no crystallographic information,
  and evaluation matches non-zero reflections only.
* Reflections whose pixel falls outside the detector are dropped (they cannot be observed), and so are
  kinematically forbidden ones (|V_g| < ``min_vg_V``, e.g. Si 200).
* ``laue_zone``: for an orientation along a zone axis [uvw], the Laue zone n = hu + kv + lw of each
  reflection (0: the zero-order Laue zone, ZOLZ); -1 when no zone axis is given. ZOLZ reflections are
  kept whatever their excitation error: at a zone axis the whole zero layer is excited (the Ewald
  sphere's curvature puts outer ZOLZ reflections at s ≈ -λ|g|²/2, yet dynamical scattering lights them).
* ``vg_abs``: |V_g| in volts, ``V_g = (h²/(2π m0 e Ω)) Σ_j occ_j f_j(|g|) exp(-2πi g·r_j)`` with the
  electron scattering factors f (Å) of abTEM's parametrization (Lobato by default, the same one the
  multislice potential uses) and the non-relativistic constant h²/(2π m0 e) = 47.878 V Å², so it is
  directly comparable to the V_g label of :mod:`fourdcrystal.simulation.multislice` (static lattice, no
  Debye-Waller factor).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry, electron_wavelength_A

# h² / (2π m0 e) in V Å²: converts Σ f_e (Å) / Ω (Å³) to a Fourier coefficient of the potential in volts.
_H2_OVER_2PI_M0_E_VA2 = 47.87801

COLUMNS = ["h", "k", "l", "qx_invA", "qy_invA", "qz_invA", "qx_px", "qy_px", "vg_abs", "excitation_error_invA",
           "laue_zone"]


def _scattering_factors(species: list[str], parametrization: str):
    from abtem.parametrizations import validate_parametrization

    par = validate_parametrization(parametrization)
    return {el: par.scattering_factor(el) for el in species}


def structure_factor_V(structure, hkl: np.ndarray, g_abs_invA: np.ndarray, parametrization: str = "lobato"):
    """|V_g| (V) of the reflections ``hkl`` (n, 3) with |g| = ``g_abs_invA``; hkl = 0 gives V_0, the mean
    inner potential."""
    species = sorted({sp.symbol for site in structure for sp in site.species})
    fe = _scattering_factors(species, parametrization)
    frac = np.asarray(structure.frac_coords)
    k2 = np.asarray(g_abs_invA, dtype=float) ** 2
    f_by_el = {el: np.asarray(fe[el](k2), dtype=float) for el in species}
    phase = np.exp(-2j * np.pi * (np.asarray(hkl) @ frac.T))  # (n_refl, n_sites)
    amp = np.zeros(len(hkl), dtype=complex)
    for j, site in enumerate(structure):
        f_site = sum(occ * f_by_el[sp.symbol] for sp, occ in site.species.items())
        amp += f_site * phase[:, j]
    return _H2_OVER_2PI_M0_E_VA2 / structure.lattice.volume * np.abs(amp)


def mean_inner_potential_V(structure, parametrization: str = "lobato") -> float:
    """V_0 (V): the g = 0 Fourier coefficient of the crystal potential (the direct beam's V_g)."""
    return float(structure_factor_V(structure, np.zeros((1, 3), int), np.zeros(1), parametrization)[0])


def kinematic_reflections(structure, R, geometry: Geometry, energy_eV: float, q_max_invA: float, *,
                          s_max_invA: float = 0.1, parametrization: str = "lobato",
                          min_vg_V: float = 1e-3, zone_uvw=None) -> pd.DataFrame:
    """Reflections of ``structure`` rotated by ``R`` that are excited and fall on the detector.

    Returns a DataFrame with columns ``COLUMNS`` (pixel coordinates absolute on the detector grid:
    ``qx_px = center_px + qx / dk``), sorted by decreasing ``vg_abs``.
    """
    R = np.asarray(R, dtype=float)
    if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
        raise UserError("rotation R is not a 3x3 orthogonal matrix",
                        "pass the r00..r22 columns of orientations.csv reshaped to 3x3")
    if q_max_invA <= 0:
        raise UserError(f"q_max_invA must be > 0, got {q_max_invA}", "pass a positive q_max_invA (e.g. geometry.k_max_corner_invA)")
    lat = structure.lattice
    recip = lat.reciprocal_lattice_crystallographic.matrix  # rows a*, b*, c* in Å⁻¹ (no 2π)
    # |h| = |g·a| <= |g||a|: this bounds the index box that can hold |g| <= q_max.
    hmax = np.ceil(q_max_invA * np.asarray(lat.abc)).astype(int)
    axes = [np.arange(-m, m + 1) for m in hmax]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    hkl = hkl[np.any(hkl != 0, axis=1)]
    g_lab = (hkl @ recip) @ R.T  # rows: R @ g_cart
    g_abs = np.linalg.norm(g_lab, axis=1)
    k0 = 1.0 / electron_wavelength_A(energy_eV)
    s = k0 - np.sqrt(g_lab[:, 0] ** 2 + g_lab[:, 1] ** 2 + (k0 + g_lab[:, 2]) ** 2)
    qx_px = geometry.center_px + g_lab[:, 0] / geometry.dk_invA
    qy_px = geometry.center_px + g_lab[:, 1] / geometry.dk_invA
    last = geometry.detector_px - 1
    zone = hkl @ np.asarray(zone_uvw, dtype=int) if zone_uvw is not None else np.full(len(hkl), -1)
    keep = ((g_abs <= q_max_invA) & ((np.abs(s) <= s_max_invA) | (zone == 0))
            & (qx_px >= 0) & (qx_px <= last) & (qy_px >= 0) & (qy_px <= last))
    hkl, g_lab, g_abs, s, qx_px, qy_px, zone = (a[keep] for a in (hkl, g_lab, g_abs, s, qx_px, qy_px, zone))
    # structure factor with electron scattering factors, summed over (partially occupied) sites
    vg = structure_factor_V(structure, hkl, g_abs, parametrization)

    df = pd.DataFrame({
        "h": hkl[:, 0].astype(int), "k": hkl[:, 1].astype(int), "l": hkl[:, 2].astype(int),
        "qx_invA": g_lab[:, 0], "qy_invA": g_lab[:, 1], "qz_invA": g_lab[:, 2],
        "qx_px": qx_px, "qy_px": qy_px, "vg_abs": vg, "excitation_error_invA": s, "laue_zone": zone.astype(int),
    }, columns=COLUMNS)
    df = df[df["vg_abs"] >= min_vg_V]
    return df.sort_values("vg_abs", ascending=False, kind="stable").reset_index(drop=True)


# Reflections that count for the shortest spacing: excited (|s| under this, Å⁻¹, off a zone axis) and at
# least this fraction of the strongest |V_g|: the disks a pattern shows as its neighbours.
SPACING_MAX_EXCITATION_ERROR_INVA = 0.02
SPACING_MIN_VG_FRACTION = 0.05


def shortest_spacing_invA(structure, R, geometry: Geometry, energy_eV: float, *, zone_uvw=None,
                          parametrization: str = "lobato") -> float | None:
    """The shortest in-plane |g| (Å⁻¹) between the direct beam and a reflection the pattern shows at
    ``energy_eV``: the zero-order Laue zone on a zone axis, the excited reflections off one.  None where
    no reflection is on the detector."""
    refl = kinematic_reflections(structure, R, geometry, energy_eV, geometry.k_max_corner_invA,
                                 parametrization=parametrization, zone_uvw=zone_uvw)
    if refl.empty:
        return None
    on_plane = (refl["laue_zone"] == 0) if zone_uvw is not None else (
        refl["excitation_error_invA"].abs() <= SPACING_MAX_EXCITATION_ERROR_INVA)
    strong = refl["vg_abs"] >= SPACING_MIN_VG_FRACTION * refl["vg_abs"].max()
    g = np.hypot(refl["qx_invA"], refl["qy_invA"])[on_plane & strong]
    return float(g.min()) if len(g) else None
