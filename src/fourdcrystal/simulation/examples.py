"""Ready-made physical examples for tests, benchmarks and docs: real multislice, known crystallography.

``srtio3()`` is cubic SrTiO3 (perovskite, a = 3.905 Å), a crystal the shipped pretrained model never
saw in training; ``zone_axis_cbed`` simulates one noise-free CBED of any structure along a zone axis
on a model's detector grid (abTEM, the workflow's own multislice) and returns the kinematic
reflections of the same orientation as crystallographic truth.
"""
from __future__ import annotations

import numpy as np

from fourdcrystal.geometry import Geometry


def srtio3():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def zone_axis_cbed(structure, zone, geometry: Geometry, thickness_A: float = 40.0, energy_eV: float = 300e3,
                   semiangle_mrad: float = 4.0, q_max_invA: float | None = None, deformation=None,
                   tilt: tuple[float, float] | None = None) -> dict:
    """Noise-free CBED + vacuum probe (probe max = 1) of ``structure`` with ``zone`` along the beam,
    on ``geometry``'s detector (box, gpts, detector_px), at one thickness; plus ``truth``, the
    kinematic reflections (fourdcrystal.simulation.kinematic) of that orientation up to ``q_max_invA`` (default
    95 % of the detector's half width). ``deformation``: an in-plane deformation gradient F (2×2, lab
    x/y after the zone is aligned; real lattice vectors a -> F a), e.g. F = R(θ)(I + ε) for a
    homogeneously strained, rotated crystal (fourdcrystal.analysis.strain). ``tilt``: (tilt_mrad,
    azimuth_deg), applied last as supercells.tilt_rotation does (the zone axis leans toward the azimuth)."""
    from fourdcrystal.simulation.kinematic import kinematic_reflections
    from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation
    from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell, tilt_rotation

    geo = Geometry(box_A=geometry.box_A, gpts=geometry.gpts, detector_px=geometry.detector_px,
                   thicknesses_A=(float(thickness_A),), slice_thickness_A=geometry.slice_thickness_A)
    R = align_zone_to_z(structure.lattice.matrix, tuple(zone))
    if deformation is not None:
        structure, R = _deformed(structure, R, deformation)
    if tilt is not None:
        R = tilt_rotation(*tilt) @ R
    arrays, _, _ = simulate_orientation(build_supercell(structure, R, geo), geo,
                                        {"parametrization": "lobato", "projection": "infinite"},
                                        [ProbeSetting(0, float(energy_eV), float(semiangle_mrad), 0.0)])
    kmax = 0.95 * geo.detector_px / 2 * geo.dk_invA if q_max_invA is None else float(q_max_invA)
    return {"cbed": arrays["cbed"][0].astype(np.float64), "probe": arrays["probe"][0], "geometry": geo,
            "truth": kinematic_reflections(structure, R, geo, float(energy_eV), kmax)}


def amorphous_film_atoms(geometry: Geometry, thickness_A: float, seed: int = 0, density_per_A3: float = 0.1):
    """An amorphous carbon support film filling the box laterally (ASE Atoms, cell = the geometry box):
    carbon at ``density_per_A3`` atoms/Å³ (0.1 ≈ 2 g/cm³), random positions at least 1.2 Å apart
    (rejection on a grid: no two atoms closer than a bond), so its pattern has diffuse rings, no Bragg
    reflections."""
    from ase import Atoms

    rng = np.random.default_rng(seed)
    L, T = float(geometry.box_A), float(thickness_A)
    n = int(round(density_per_A3 * L * L * T))
    pos = rng.uniform([0, 0, 0], [L, L, T], size=(3 * n, 3))
    cell_A = 1.2
    taken: set = set()
    keep = []
    for k, p in enumerate(pos):  # one atom per 1.2 Å cube: a cheap minimum distance
        key = tuple((p // cell_A).astype(int))
        if key not in taken:
            taken.add(key)
            keep.append(k)
        if len(keep) == n:
            break
    return Atoms(numbers=[6] * len(keep), positions=pos[keep], cell=[L, L, T], pbc=(True, True, False))


def amorphous_film_cbed(geometry: Geometry, energy_eV: float, semiangle_mrad: float, thickness_A: float = 200.0,
                        seed: int = 0) -> dict:
    """Noise-free CBED + vacuum probe (probe max = 1) of an amorphous carbon film on ``geometry``'s
    detector: a negative for evaluation (it shows no Bragg reflection)."""
    from .multislice import ProbeSetting, simulate_orientation

    geo = Geometry(box_A=geometry.box_A, gpts=geometry.gpts, detector_px=geometry.detector_px,
                   thicknesses_A=(float(thickness_A),), slice_thickness_A=geometry.slice_thickness_A)
    arrays, _, _ = simulate_orientation(amorphous_film_atoms(geo, thickness_A, seed), geo,
                                        {"parametrization": "lobato", "projection": "infinite"},
                                        [ProbeSetting(0, float(energy_eV), float(semiangle_mrad), 0.0)], labels=False)
    return {"cbed": arrays["cbed"][0].astype(np.float64), "probe": arrays["probe"][0]}


def _deformed(structure, R, F2):
    """The crystal rotated by R into the lab frame and deformed there by F2 (in-plane); R becomes I."""
    from pymatgen.core import Lattice, Structure

    F = np.eye(3)
    F[:2, :2] = np.asarray(F2, dtype=float)
    lab = structure.lattice.matrix @ R.T @ F.T  # rows a, b, c in the lab frame, then a -> F a
    return Structure(Lattice(lab), structure.species, structure.frac_coords), np.eye(3)
