"""Orientations and oriented supercells (rule ``supercells``, one job per crystal).

For each crystal (its conventional cell, read from ``results/crystals/cifs/{crystal}.cif``) this
stage draws ``plan.n_orientations(config)`` orientations and cuts one supercell per orientation out
of the rotated, tiled crystal so that it fills the fixed simulation box of :class:`Geometry`
(``box_A`` x ``box_A`` x ``max_thickness_A``; identical for every crystal, so every pattern shares
one detector calibration).

Frames and conventions (binding; see docs/CONTRACTS.md):

* Crystal frame: pymatgen's Cartesian frame of the conventional lattice (``lattice.matrix`` rows are
  a, b, c in Å).  Lab frame: the beam travels along +z, the box spans [0, box_A) in x and y and
  [0, max_thickness_A) in z.  ``lab = R @ crystal``.
* ``R = T(tilt) @ Rz(inplane) @ A(zone)``: ``A`` takes the zone-axis direction u·a + v·b + w·c to +z
  and the component of a (or b, if a is parallel to the zone axis) perpendicular to it to +x; then
  an in-plane rotation by ``inplane_deg`` about z (counter-clockwise seen from +z); then the tilt.
* Tilt: the crystal is rotated by ``tilt_mrad`` = θ about the in-plane axis
  ``(-sin ψ, cos ψ, 0)`` with ψ = ``tilt_azimuth_deg``, so the zone axis ends up along
  ``(sin θ cos ψ, sin θ sin ψ, cos θ)``, i.e. it leans towards azimuth ψ.  ``tilt_x_mrad`` =
  θ cos ψ and ``tilt_y_mrad`` = θ sin ψ are the components of that lean.
* Euler angles: Bunge (ZXZ) with ``R = Rz(φ1) Rx(Φ) Rz(φ2)`` (active), i.e. the Bunge orientation
  matrix g (sample -> crystal) is ``R.T``; φ1, φ2 in [0, 360), Φ in [0, 180].
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.seeds import stable_hash
from fourdcrystal.simulation import plan
from fourdcrystal.atomic import atomic_path, write_table
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry

log = logging.getLogger("fourdcrystal.simulation.supercells")

ORIENTATION_COLUMNS = [
    "orientation_id", "crystal_id", "kind", "zone_u", "zone_v", "zone_w",
    "euler_phi1_deg", "euler_Phi_deg", "euler_phi2_deg", "inplane_deg", "tilt_mrad",
    "tilt_azimuth_deg", "tilt_x_mrad", "tilt_y_mrad", "n_atoms",
    "r00", "r01", "r02", "r10", "r11", "r12", "r20", "r21", "r22",
]

# Atoms that the lateral periodic seam of the box brings closer than this are near-duplicates
# (the rotated crystal is not commensurate with the box); no real bond is this short (H2: 0.74 Å).
SEAM_MIN_DISTANCE_A = 0.5
_KIND_CODE = {"zone": 1, "free": 2}


# --- small rotation helpers ---------------------------------------------------------------------
def rot_z(angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def tilt_rotation(tilt_mrad: float, azimuth_deg: float) -> np.ndarray:
    """Rotation by θ = tilt_mrad about the in-plane axis (-sin ψ, cos ψ, 0); takes +z towards azimuth ψ."""
    theta = tilt_mrad * 1e-3
    psi = math.radians(azimuth_deg)
    n = np.array([-math.sin(psi), math.cos(psi), 0.0])
    k = np.array([[0.0, -n[2], n[1]], [n[2], 0.0, -n[0]], [-n[1], n[0], 0.0]])
    # Rodrigues' formula: exact for any angle, no small-angle approximation.
    return np.eye(3) + math.sin(theta) * k + (1.0 - math.cos(theta)) * (k @ k)


def align_zone_to_z(lattice_matrix: np.ndarray, uvw) -> np.ndarray:
    """Proper rotation taking the crystal direction u·a + v·b + w·c to +z (see module docstring)."""
    m = np.asarray(lattice_matrix, dtype=float)
    d = np.asarray(uvw, dtype=float) @ m
    z = d / np.linalg.norm(d)
    for ref in (m[0], m[1], m[2]):
        x = ref - (ref @ z) * z
        if np.linalg.norm(x) > 1e-6 * np.linalg.norm(ref):
            break
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.vstack([x, y, z])  # rows: images of lab x, y, z -> R maps x->ex, y->ey, z->ez


def euler_bunge_deg(R: np.ndarray) -> tuple[float, float, float]:
    """Bunge (φ1, Φ, φ2) in degrees with R = Rz(φ1) Rx(Φ) Rz(φ2)."""
    from scipy.spatial.transform import Rotation

    with warnings.catch_warnings():
        # At Φ = 0 or 180° (beam along the crystal z axis) only φ1 ± φ2 is defined; scipy then sets
        # φ2 = 0 and warns.  The returned angles still reproduce R, which is all we need.
        warnings.simplefilter("ignore", UserWarning)
        phi1, Phi, phi2 = Rotation.from_matrix(R).as_euler("ZXZ", degrees=True)
    return float(phi1 % 360.0), float(Phi), float(phi2 % 360.0)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation uniform on SO(3) (Haar measure): a normalised 4-D Gaussian quaternion."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


# --- zone axes ------------------------------------------------------------------------------------
def symmetry_operations(structure):
    """Point-group rotations and lattice-centring translations, both in the structure's own basis."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    sga = SpacegroupAnalyzer(structure)
    rots = [np.rint(op.rotation_matrix).astype(int) for op in sga.get_point_group_operations(cartesian=False)]
    centring = [np.zeros(3)]
    for op in sga.get_symmetry_operations(cartesian=False):
        if np.allclose(op.rotation_matrix, np.eye(3)):
            t = np.mod(op.translation_vector, 1.0)
            t[np.isclose(t, 1.0, atol=1e-6)] = 0.0
            if np.linalg.norm(t) > 1e-6:
                centring.append(t)
    return rots, centring


def shortest_translation_A(uvw, lattice_matrix, centring) -> float:
    """Length of the shortest lattice translation along the primitive direction [uvw] (Å).

    In a centred conventional cell, e.g. fcc [110], a fraction of [uvw] (here a/2[110]) is already a
    lattice vector; the shorter it is, the denser the atomic columns seen along that zone axis.
    """
    d = np.asarray(uvw, dtype=float)
    for n in range(len(centring), 1, -1):
        f = d / n
        for t in centring[1:]:
            diff = f - t
            if np.allclose(diff, np.rint(diff), atol=1e-6):
                return float(np.linalg.norm(f @ lattice_matrix))
    return float(np.linalg.norm(d @ lattice_matrix))


def zone_axis_classes(structure, max_index: int) -> list[tuple[int, int, int]]:
    """Symmetry-distinct zone axes [uvw] with |u|, |v|, |w| <= max_index, densest first.

    Directions are primitive (gcd 1) and reduced by the crystal's point group (so [uvw] and
    [-u-v-w] are one class only when the point group holds the inversion).  Each class is represented
    by its member with the most non-negative indices, then the smallest index sum, then the
    lexicographically largest (hexagonal a: [100], not [110]).  Order:
    shortest lattice translation along the axis, then smallest index sum, then the representative.
    """
    rots, centring = symmetry_operations(structure)
    m = structure.lattice.matrix
    rng = range(-max_index, max_index + 1)
    dirs = [(u, v, w) for u in rng for v in rng for w in rng
            if (u, v, w) != (0, 0, 0) and math.gcd(math.gcd(u, v), w) == 1]
    in_range = set(dirs)
    seen: set = set()
    classes = []
    for d in dirs:
        if d in seen:
            continue
        orbit = {tuple(int(x) for x in r @ np.array(d)) for r in rots}
        members = [o for o in orbit if o in in_range]
        seen.update(members)
        rep = max(members, key=lambda o: (sum(x >= 0 for x in o), -sum(abs(x) for x in o), o))
        classes.append(rep)
    classes.sort(key=lambda o: (round(shortest_translation_A(o, m, centring), 6), sum(abs(x) for x in o),
                                tuple(-x for x in o)))
    return classes


# --- orientations -----------------------------------------------------------------------------
def _rng(seed: int, crystal_id: str, kind: str, base: int) -> np.random.Generator:
    # One stream per base orientation: adding free orientations leaves the zone-axis rows unchanged.
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_hash(crystal_id), _KIND_CODE[kind], base]))


def make_orientations(structure, crystal_id: str, config: dict) -> pd.DataFrame:
    """The orientation table of one crystal (all contract columns except n_atoms).

    Rows run over base orientations (n_zone_axes zone axes, then n_free random ones), then n_inplane
    in-plane rotations, then n_tilts tilts; exactly ``plan.n_orientations(config)`` rows.
    """
    o = config["orientations"]
    n_zone, n_free = int(o["n_zone_axes"]), int(o["n_free"])
    n_inplane, n_tilts = int(o["n_inplane"]), int(o["n_tilts"])
    tilt_lo, tilt_hi = (float(x) for x in o["tilt_mrad"])
    if not 0.0 <= tilt_lo <= tilt_hi:
        raise UserError(f"config key 'orientations.tilt_mrad' is {o['tilt_mrad']}",
                        "give a range [min, max] with 0 <= min <= max (mrad)")
    if n_zone + n_free == 0:
        raise UserError("config keys 'orientations.n_zone_axes' and 'orientations.n_free' are both 0",
                        "set at least one of them to 1 or more")
    m = structure.lattice.matrix
    minv = np.linalg.inv(m)

    bases = []  # (kind, uvw floats, base rotation A, random stream for its in-plane angles and tilts)
    if n_zone:
        classes = zone_axis_classes(structure, int(o["zone_axis_max_index"]))
        for i in range(n_zone):
            # Fewer distinct axes than asked: cycle through them; the in-plane angle differs each time.
            uvw = classes[i % len(classes)]
            rng = _rng(config["seed"], crystal_id, "zone", i)
            bases.append(("zone", np.array(uvw, dtype=float), align_zone_to_z(m, uvw), rng))
    for i in range(n_free):
        rng = _rng(config["seed"], crystal_id, "free", i)
        A = random_rotation(rng)
        d = A[2] @ minv  # crystal direction sent to +z (A.T @ ez), in the lattice basis
        bases.append(("free", d / np.abs(d).max(), A, rng))

    rows = []
    for kind, uvw, A, rng in bases:
        # Stratified in-plane angles: uniform marginals, but never two nearly equal angles.
        inplane = (np.arange(n_inplane) + rng.uniform(size=n_inplane)) * 360.0 / n_inplane
        for phi in inplane:
            for j in range(n_tilts):
                if j == 0 and tilt_lo == 0.0:
                    theta, psi = 0.0, 0.0
                else:
                    theta, psi = rng.uniform(tilt_lo, tilt_hi), rng.uniform(0.0, 360.0)
                R = tilt_rotation(theta, psi) @ rot_z(math.radians(phi)) @ A
                e1, e2, e3 = euler_bunge_deg(R)
                row = {
                    "orientation_id": len(rows), "crystal_id": crystal_id, "kind": kind,
                    "zone_u": float(uvw[0]), "zone_v": float(uvw[1]), "zone_w": float(uvw[2]),
                    "euler_phi1_deg": e1, "euler_Phi_deg": e2, "euler_phi2_deg": e3,
                    "inplane_deg": float(phi), "tilt_mrad": float(theta), "tilt_azimuth_deg": float(psi),
                    "tilt_x_mrad": float(theta * math.cos(math.radians(psi))),
                    "tilt_y_mrad": float(theta * math.sin(math.radians(psi))),
                    "n_atoms": -1,
                }
                row.update({f"r{a}{b}": float(R[a, b]) for a in range(3) for b in range(3)})
                rows.append(row)
    df = pd.DataFrame(rows, columns=ORIENTATION_COLUMNS)
    assert len(df) == plan.n_orientations(config)
    return df


def rotation_of(row) -> np.ndarray:
    """The 3x3 rotation R of an orientation-table row."""
    return np.array([[row[f"r{a}{b}"] for b in range(3)] for a in range(3)], dtype=float)


# --- supercells -----------------------------------------------------------------------------
def fit_problem(structure, geometry: Geometry, max_atoms: int, max_lattice_fraction: float) -> str | None:
    """Why this crystal cannot be cut into the box (None when it can); the limits are config
    ``orientations.max_atoms`` / ``max_lattice_fraction``."""
    if not structure.is_ordered:
        return "the structure has partial occupancies (a disordered site cannot become one atom)"
    try:
        [site.specie.Z for site in structure]
    except AttributeError:
        return "the structure holds a dummy species without an atomic number"
    edge_A = min(geometry.box_A, geometry.max_thickness_A)
    longest_A = float(max(structure.lattice.abc))
    if longest_A > max_lattice_fraction * edge_A:
        return (f"lattice parameter {longest_A:.2f} Å exceeds {max_lattice_fraction:g} x the smallest box edge "
                f"{edge_A:.1f} Å (orientations.max_lattice_fraction): too few unit cells across the box")
    n_est = structure.num_sites / structure.volume * geometry.box_A**2 * geometry.max_thickness_A
    if n_est > max_atoms:
        return (f"about {n_est:.0f} atoms would fill the {geometry.box_A:g}x{geometry.box_A:g}x"
                f"{geometry.max_thickness_A:g} Å box, above orientations.max_atoms = {max_atoms}")
    return None


def _seam_duplicates(pos: np.ndarray, box_A: float, depth_A: float) -> np.ndarray:
    """Indices of atoms that the lateral periodic boundary puts within SEAM_MIN_DISTANCE_A of another."""
    from scipy.spatial import cKDTree

    # Periodic in x and y only: a z period far beyond the box depth never wraps.
    boxsize = [box_A, box_A, 4.0 * depth_A + 1.0]
    p = pos.copy()
    p[:, 2] -= p[:, 2].min() if len(p) else 0.0
    tree = cKDTree(np.mod(p, boxsize), boxsize=boxsize)
    pairs = tree.query_pairs(SEAM_MIN_DISTANCE_A, output_type="ndarray")
    if not len(pairs):
        return np.empty(0, dtype=int)
    direct = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
    across = pairs[direct >= SEAM_MIN_DISTANCE_A]  # close only through the periodic seam
    return np.unique(across.max(axis=1))


def build_supercell(structure, R: np.ndarray, geometry: Geometry):
    """ASE Atoms of the crystal rotated by R, tiled and cropped to the simulation box.

    Lattice points are generated for the integer range that covers the box's eight corners in the
    rotated lattice's fractional coordinates, all at once in NumPy; atoms are kept in the half-open
    box [0, L) x [0, L) x [0, T), so no atom appears twice on a face.
    """
    from ase import Atoms

    L, T = float(geometry.box_A), float(geometry.max_thickness_A)
    lat = structure.lattice.matrix @ R.T  # rows: rotated a, b, c in the lab frame
    frac = np.mod(structure.frac_coords, 1.0)
    frac[np.isclose(frac, 1.0, atol=1e-9)] = 0.0
    numbers = np.array([site.specie.Z for site in structure], dtype=int)

    corners = np.array([[x, y, z] for x in (0, L) for y in (0, L) for z in (0, T)])
    cf = corners @ np.linalg.inv(lat)
    lo = np.floor(cf.min(axis=0)).astype(int) - 1
    hi = np.floor(cf.max(axis=0)).astype(int) + 1
    grids = np.meshgrid(*(np.arange(a, b + 1) for a, b in zip(lo, hi)), indexing="ij")
    cells = np.stack([g.ravel() for g in grids], axis=1).astype(float)  # (N, 3)

    pos = ((cells[:, None, :] + frac[None, :, :]) @ lat).reshape(-1, 3)
    z_all = np.broadcast_to(numbers, (len(cells), len(numbers))).reshape(-1)
    keep = ((pos[:, 0] >= 0) & (pos[:, 0] < L) & (pos[:, 1] >= 0) & (pos[:, 1] < L)
            & (pos[:, 2] >= 0) & (pos[:, 2] < T))
    pos, z_all = pos[keep], z_all[keep]
    dup = _seam_duplicates(pos, L, T)
    if len(dup):
        mask = np.ones(len(pos), dtype=bool)
        mask[dup] = False
        pos, z_all = pos[mask], z_all[mask]
    return Atoms(numbers=z_all, positions=pos, cell=[L, L, T], pbc=(True, True, False))


# --- the stage --------------------------------------------------------------------------------
def read_structure(cif_path: str | Path):
    from pymatgen.core import Structure

    cif_path = Path(cif_path)
    if not cif_path.exists():
        raise UserError(f"CIF {cif_path} does not exist", "rerun the `select` checkpoint that writes results/crystals/cifs/")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen's CIF parser warns on harmless rounding
            return Structure.from_file(cif_path)
    except Exception as exc:  # pymatgen raises ValueError/KeyError/etc. for broken CIFs
        raise UserError(f"CIF {cif_path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})",
                        "replace it with a valid CIF of the conventional cell") from None


def build_crystal(structure, crystal_id: str, config: dict, orientations_path, supercells_path) -> pd.DataFrame:
    """Write the orientation table and the supercell frames of one crystal; return the table.

    A crystal that cannot fit the box gets a header-only table and an empty extxyz (reason logged).
    """
    from ase.io import write as ase_write

    geometry = Geometry.from_config(config)
    o = config["orientations"]
    reason = fit_problem(structure, geometry, int(o["max_atoms"]), float(o["max_lattice_fraction"]))
    if reason is None:
        table = make_orientations(structure, crystal_id, config)
        frames = []
        for _, row in table.iterrows():
            atoms = build_supercell(structure, rotation_of(row), geometry)
            if len(atoms) == 0:
                reason = f"orientation {row['orientation_id']} leaves no atom in the box"
                break
            table.loc[row.name, "n_atoms"] = len(atoms)
            info = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k != "n_atoms"}
            info["n_atoms"] = len(atoms)
            atoms.info.update(info)
            frames.append(atoms)
    if reason is not None:
        log.warning("crystal %s skipped: %s", crystal_id, reason)
        write_table(orientations_path, pd.DataFrame(columns=ORIENTATION_COLUMNS))
        with atomic_path(supercells_path) as tmp:
            Path(tmp).write_bytes(b"")
        return pd.DataFrame(columns=ORIENTATION_COLUMNS)

    table["n_atoms"] = table["n_atoms"].astype(int)
    with atomic_path(supercells_path) as tmp:
        ase_write(str(tmp), frames, format="extxyz")
    write_table(orientations_path, table)
    log.info("crystal %s: %d orientations, %d-%d atoms per supercell", crystal_id, len(table),
             table["n_atoms"].min(), table["n_atoms"].max())
    return table
