"""Ready-made physical examples for tests, benchmarks and docs: real multislice, known crystallography.

``srtio3()`` is cubic SrTiO3 (perovskite, a = 3.905 Å), a crystal the shipped pretrained model never
saw in training, ``gan()`` wurtzite GaN; ``zone_axis_cbed`` simulates one noise-free CBED of any
structure along a zone axis on a model's detector grid (abTEM, the workflow's own multislice) and returns
the kinematic reflections of the same orientation as crystallographic truth; ``rectangular_cell`` re-cuts
a crystal whose zone axis has a rectangular or hexagonal cell into a box of whole cells.
"""
from __future__ import annotations

import numpy as np

from fourdcrystal.geometry import Geometry


def srtio3():
    from pymatgen.core import Lattice, Structure

    return Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def gan():
    """Wurtzite GaN (a = 3.189, c = 5.185 Å): [0001] gives a hexagonal pattern (``rectangular_cell`` cuts
    it into a box)."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.189, 5.185), ["Ga", "N"],
                                     [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.377]])


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


# zone axes whose in-plane cell is a rectangle: the rows (integer combinations of a, b, c) of the orthogonal
# cell along x, y and the zone axis
RECTANGULAR_CELL_ROWS = {"cubic [110]": ((0, 0, 1), (1, -1, 0), (1, 1, 0)),
                         "cubic [111]": ((1, -1, 0), (1, 1, -2), (1, 1, 1)),
                         "hexagonal [0001]": ((1, 0, 0), (1, 2, 0), (0, 0, 1)),
                         "hexagonal [11-20]": ((0, 0, 1), (1, -1, 0), (1, 1, 0))}


def rectangular_cell(structure, rows, box_A: float, max_stretch: float = 0.012):
    """``structure`` re-cut into the orthogonal cell of ``rows`` (x, y, zone axis) and stretched along y by
    at most ``max_stretch`` so that a square box near ``box_A`` (within −25 % … +35 %) holds whole cells both
    ways, as a periodic multislice box must (a cut cell leaves a seam that moves every disk).

    Returns ``(Structure, (n_x, n_y))``: the re-cut crystal, with the zone axis along c = z and a along x
    (``zone_axis_cbed(s, (0, 0, 1), …)``), and the cells per box edge; the box is ``n_x · a``. Truth computed
    on the returned structure holds the stretch, so it is part of the crystal, not an error of the pattern."""
    from pymatgen.core import Lattice, Structure

    cut = structure.copy()
    cut.make_supercell([list(r) for r in rows])
    if max(abs(angle - 90.0) for angle in cut.lattice.angles) > 1e-6:
        raise ValueError(f"rows {rows} do not give an orthogonal cell of {structure.composition.reduced_formula}")
    px, py, pz = cut.lattice.abc
    fits = [(n_x, max(1, round(n_x * px / py))) for n_x in range(1, 400)
            if 0.75 * box_A <= n_x * px <= 1.35 * box_A]
    n_x, n_y = min(fits, key=lambda n: abs(n[0] * px / (n[1] * py) - 1))
    stretch = n_x * px / (n_y * py)
    if abs(stretch - 1) > max_stretch:
        raise ValueError(f"no box near {box_A:.1f} Å holds whole {px:.3f} × {py:.3f} Å cells within a "
                         f"{100 * max_stretch:g} % stretch")
    return Structure(Lattice.orthorhombic(px, py * stretch, pz), cut.species, cut.frac_coords), (n_x, n_y)


def lattice_grid_steps(structure) -> tuple[int, int]:
    """(d_a, d_b): every lattice translation of ``structure`` moves it by whole multiples of 1 / d_a of its cell's a
    and 1 / d_b of its b (the primitive translations' fractional components): 2 and 2 for a centred cell (the
    orthogonal cell of hexagonal [0001]; cubic F along [001]), 2 and 4 for cubic F re-cut along [110], 1 and 1 for
    a primitive one. A multislice grid must carry these translations as whole steps (``square_geometry``,
    ``rectangular_geometry``): a grid of an odd number of points per centred cell samples the potential of each
    half-cell differently, and its pattern shows the reflections the centring forbids (GaN [0001] at 15 points
    per 3.19 Å cell: (1 0) of the orthogonal cell at 5.6 % of the direct beam, 80 kV, 60 nm; 1e-11 at 30;
    benchmarks/RESULTS.md, "A centred cell on an odd grid")."""
    from fractions import Fraction

    frac = structure.lattice.get_fractional_coords(structure.get_primitive_structure().lattice.matrix)

    def step(column) -> int:
        return int(np.lcm.reduce([Fraction(float(v)).limit_denominator(24).denominator for v in column]))
    return step(frac[:, 0]), step(frac[:, 1])


def square_geometry(structure, period_A: float, box_A: float, gpts: int, detector_px: int, thicknesses_A,
                    slice_thickness_A: float = 2.0) -> Geometry:
    """The square box of whole in-plane periods (``period_A``) of ``structure`` nearest ``box_A`` whose cell count
    divides ``gpts``: a whole number of grid points per period (a fractional number aliases the sampled potential
    onto non-lattice positions) and no seam where the periodic box cuts the crystal; that number a multiple of the
    structure's ``lattice_grid_steps`` (2 for a centred cell), as ``rectangular_geometry``'s."""
    grid_step = max(lattice_grid_steps(structure))
    n = min((k for k in range(1, gpts + 1) if gpts % (k * grid_step) == 0),
            key=lambda k: abs(np.log(k * period_A / box_A)))
    return Geometry(box_A=n * period_A, gpts=gpts, detector_px=detector_px, thicknesses_A=tuple(thicknesses_A),
                    slice_thickness_A=slice_thickness_A)


def rectangular_geometry(structure, cells: tuple[int, int], gpts_at_least: int, detector_px: int,
                         thicknesses_A, slice_thickness_A: float = 2.0) -> Geometry:
    """The square box of ``cells`` = (n_x, n_y) cells of ``rectangular_cell``'s structure, with a whole number
    of grid points per cell both ways (a fractional number aliases the sampled potential onto non-lattice
    positions), a multiple of ``lattice_grid_steps`` (an odd number per centred cell lights the reflections the
    centring forbids): the least multiple of lcm(n_x d_a, n_y d_b) ≥ ``gpts_at_least``."""
    d_a, d_b = lattice_grid_steps(structure)
    step = int(np.lcm(cells[0] * d_a, cells[1] * d_b))
    return Geometry(box_A=cells[0] * structure.lattice.a, gpts=step * int(np.ceil(gpts_at_least / step)),
                    detector_px=detector_px, thicknesses_A=tuple(thicknesses_A),
                    slice_thickness_A=slice_thickness_A)
