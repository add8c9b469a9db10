"""Orientations and oriented supercells (fourdcrystal.simulation.supercells, rule `supercells`)."""
import io
import logging
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ase.io import read as ase_read
from ase.neighborlist import neighbor_list
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter

from fourdcrystal.simulation import plan
from fourdcrystal.simulation import supercells as sc
from fourdcrystal.workflow import stages
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.workflow.smk import run_stage

ROOT = Path(__file__).resolve().parents[1]


# --- test crystals (built directly; the `select` stage writes the real CIFs) ----------------------
@pytest.fixture(scope="module")
def si():
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


@pytest.fixture(scope="module")
def sto():
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


@pytest.fixture(scope="module")
def mg():
    return Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.209, 5.211), ["Mg"], [[1 / 3, 2 / 3, 0.25]])


@pytest.fixture(scope="module")
def zno():
    return Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.25, 5.207), ["Zn", "O"],
                                     [[1 / 3, 2 / 3, 0.0], [1 / 3, 2 / 3, 0.382]])


@pytest.fixture(scope="module")
def mono():
    return Structure.from_spacegroup("P2_1/c", Lattice.monoclinic(5.1, 6.3, 7.2, 103.0), ["Ca", "O"],
                                     [[0.12, 0.21, 0.33], [0.41, 0.07, 0.18]])


@pytest.fixture
def cfg(default_config):
    default_config["orientations"].update(zone_axis_max_index=1, n_zone_axes=2, n_free=1, n_inplane=2,
                                          n_tilts=2, tilt_mrad=[0.0, 30.0])
    return default_config


def unit(v):
    v = np.asarray(v, dtype=float)
    return v / np.linalg.norm(v)


def density_ratio(atoms, structure, geometry):
    box_volume = geometry.box_A ** 2 * geometry.max_thickness_A
    return len(atoms) / box_volume / (structure.num_sites / structure.volume)


# --- rotations --------------------------------------------------------------------------------
def test_si_110_rotated_onto_beam_with_bulk_density(si, cfg):
    cfg["orientations"].update(n_zone_axes=3, n_free=0, n_tilts=1)
    table = sc.make_orientations(si, "si", cfg)
    rows = table[(table.zone_u == 1) & (table.zone_v == 1) & (table.zone_w == 0)]
    assert len(rows) == 2  # two in-plane rotations of the [110] zone axis
    d = np.array([1.0, 1.0, 0.0]) @ si.lattice.matrix
    geometry = Geometry.from_config(cfg)
    for _, row in rows.iterrows():
        R = sc.rotation_of(row)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        np.testing.assert_allclose(R @ unit(d), [0, 0, 1], atol=1e-9)
        atoms = sc.build_supercell(si, R, geometry)
        assert density_ratio(atoms, si, geometry) == pytest.approx(1.0, abs=0.05)
        p = atoms.positions
        assert p.min(axis=0).min() >= 0 and (p[:, :2] < geometry.box_A).all() and (p[:, 2] < geometry.max_thickness_A).all()


@pytest.mark.parametrize("uvw", [(0, 0, 1), (1, 0, 0)])  # [0001] and [2-1-10] (= [100] in three indices)
def test_hexagonal_zone_axes_along_beam_with_bulk_density(mg, cfg, uvw):
    geometry = Geometry.from_config(cfg)
    R = sc.rot_z(math.radians(17.0)) @ sc.align_zone_to_z(mg.lattice.matrix, uvw)
    np.testing.assert_allclose(R @ unit(np.array(uvw, float) @ mg.lattice.matrix), [0, 0, 1], atol=1e-9)
    atoms = sc.build_supercell(mg, R, geometry)
    assert density_ratio(atoms, mg, geometry) == pytest.approx(1.0, abs=0.05)
    assert set(atoms.get_chemical_symbols()) == {"Mg"}


def _perovskite(a_A):
    return Structure.from_spacegroup("Pm-3m", Lattice.cubic(a_A), ["Sr", "Ti", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]])


def _min_distance_A(atoms, cutoff_A=3.0):
    """Shortest interatomic distance, across the periodic lateral faces too (ASE's own neighbour list)."""
    return neighbor_list("d", atoms, cutoff_A).min()


def test_commensurate_box_has_no_duplicate_atoms_on_faces(cfg):
    # a = 4 Å tiles the 32 x 32 x 60 Å box exactly (8 x 8 x 15 cells): every face atom must be counted
    # once, so the count is exact, and no two atoms may meet across the periodic lateral seam.
    cubic = _perovskite(4.0)
    geometry = Geometry.from_config(cfg)
    atoms = sc.build_supercell(cubic, sc.align_zone_to_z(cubic.lattice.matrix, (0, 0, 1)), geometry)
    assert len(atoms) == 8 * 8 * 15 * 5
    assert np.bincount(atoms.numbers)[[8, 22, 38]].tolist() == [8 * 8 * 15 * 3, 8 * 8 * 15, 8 * 8 * 15]
    assert _min_distance_A(atoms) == pytest.approx(2.0, abs=1e-6)


def test_seam_near_duplicates_are_removed(cfg):
    # a = 3.99 Å: the atom planes at x = 8a = 31.92 Å (and y) sit 0.08 Å from x = 0 across the periodic
    # seam, i.e. they duplicate the x = 0 planes and must go.  Counting per site (z is not periodic:
    # 16 planes at frac z = 0, 15 at z = 1/2):  Sr 8*8*16, Ti 8*8*15, O 8*8*(16 + 15 + 15) = 4928.
    cubic = _perovskite(3.99)
    geometry = Geometry.from_config(cfg)
    atoms = sc.build_supercell(cubic, sc.align_zone_to_z(cubic.lattice.matrix, (0, 0, 1)), geometry)
    assert len(atoms) == 64 * (16 + 15 + 16 + 15 + 15)
    assert _min_distance_A(atoms) >= sc.SEAM_MIN_DISTANCE_A
    assert atoms.positions[:, :2].max() < 8 * 3.99 - 1.0


def test_rotated_supercell_keeps_density_and_spacing(sto, cfg):
    geometry = Geometry.from_config(cfg)
    R = sc.tilt_rotation(20.0, 33.0) @ sc.rot_z(math.radians(0.3)) @ sc.align_zone_to_z(sto.lattice.matrix, (0, 0, 1))
    atoms = sc.build_supercell(sto, R, geometry)
    assert _min_distance_A(atoms) >= sc.SEAM_MIN_DISTANCE_A
    assert density_ratio(atoms, sto, geometry) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("theta_mrad, psi_deg", [(12.5, 0.0), (30.0, 137.0), (250.0, -60.0)])
def test_tilt_moves_zone_axis_by_theta_towards_azimuth(si, theta_mrad, psi_deg):
    A = sc.rot_z(0.7) @ sc.align_zone_to_z(si.lattice.matrix, (1, 1, 1))
    R = sc.tilt_rotation(theta_mrad, psi_deg) @ A
    zone = R @ unit(np.array([1.0, 1.0, 1.0]) @ si.lattice.matrix)
    assert math.acos(np.clip(zone[2], -1, 1)) == pytest.approx(theta_mrad * 1e-3, abs=1e-9)
    psi = math.radians(psi_deg)
    np.testing.assert_allclose(zone[:2] / np.linalg.norm(zone[:2]), [math.cos(psi), math.sin(psi)], atol=1e-9)


def test_table_tilts_match_rotation(si, cfg):
    cfg["orientations"].update(n_tilts=3, tilt_mrad=[5.0, 30.0])
    table = sc.make_orientations(si, "si", cfg)
    assert len(table) == plan.n_orientations(cfg)
    assert table.tilt_mrad.between(5.0, 30.0).all()  # range does not start at 0: every row is tilted
    for _, row in table.iterrows():
        zone = sc.rotation_of(row) @ unit(np.array([row.zone_u, row.zone_v, row.zone_w]) @ si.lattice.matrix)
        assert math.acos(zone[2]) == pytest.approx(row.tilt_mrad * 1e-3, abs=1e-9)
        lean = zone[:2] / math.sin(row.tilt_mrad * 1e-3)  # unit vector towards the azimuth
        np.testing.assert_allclose(lean * row.tilt_mrad, [row.tilt_x_mrad, row.tilt_y_mrad], atol=1e-6)


def test_first_tilt_untilted_when_range_starts_at_zero(si, cfg):
    table = sc.make_orientations(si, "si", cfg)  # n_tilts = 2, range [0, 30]
    assert (table.tilt_mrad.iloc[0::2] == 0).all()
    assert (table.tilt_mrad.iloc[1::2] > 0).all() and (table.tilt_mrad <= 30).all()


def test_euler_angles_are_bunge_of_R(mg, cfg):
    table = sc.make_orientations(mg, "mg", cfg)
    for _, row in table.iterrows():
        p1, P, p2 = np.radians([row.euler_phi1_deg, row.euler_Phi_deg, row.euler_phi2_deg])
        c1, s1, c2, s2, cP, sP = np.cos(p1), np.sin(p1), np.cos(p2), np.sin(p2), np.cos(P), np.sin(P)
        # Bunge's orientation matrix g (sample -> crystal), written out; R (crystal -> lab) is g.T.
        g = np.array([[c1 * c2 - s1 * s2 * cP, s1 * c2 + c1 * s2 * cP, s2 * sP],
                      [-c1 * s2 - s1 * c2 * cP, -s1 * s2 + c1 * c2 * cP, c2 * sP],
                      [s1 * sP, -c1 * sP, cP]])
        np.testing.assert_allclose(g.T, sc.rotation_of(row), atol=1e-9)
        assert 0 <= row.euler_phi1_deg < 360 and 0 <= row.euler_Phi_deg <= 180 and 0 <= row.euler_phi2_deg < 360


def test_free_orientations_record_beam_direction(sto, cfg):
    cfg["orientations"].update(n_zone_axes=0, n_free=3, n_tilts=1)
    table = sc.make_orientations(sto, "sto", cfg)
    assert (table.kind == "free").all()
    for _, row in table.iterrows():
        beam = sc.rotation_of(row).T @ [0, 0, 1]  # crystal Cartesian direction along the beam
        zone = unit(np.array([row.zone_u, row.zone_v, row.zone_w]) @ sto.lattice.matrix)
        np.testing.assert_allclose(zone, beam, atol=1e-9)


# --- symmetry reduction ---------------------------------------------------------------------------
def _class_of(structure, uvw, max_index=1):
    """The class representative that the point group maps uvw onto."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    reps = sc.zone_axis_classes(structure, max_index)
    ops = SpacegroupAnalyzer(structure).get_point_group_operations(cartesian=False)
    orbit = {tuple(int(x) for x in np.rint(op.rotation_matrix) @ np.array(uvw)) for op in ops}
    hits = [r for r in reps if r in orbit]
    assert len(hits) == 1
    return hits[0]


def test_cubic_symmetry_classes(si, sto):
    for s in (si, sto):
        reps = sc.zone_axis_classes(s, 1)
        assert sorted(reps) == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
        assert _class_of(s, (1, 0, 0)) == _class_of(s, (0, 1, 0)) == _class_of(s, (0, 0, -1)) == (1, 0, 0)
    # fcc: a/2<110> is the shortest translation, so [110] comes first; primitive cubic: [100] first.
    assert sc.zone_axis_classes(si, 1) == [(1, 1, 0), (1, 0, 0), (1, 1, 1)]
    assert sc.zone_axis_classes(sto, 1) == [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
    assert len(sc.zone_axis_classes(sto, 2)) == 6  # <100> <110> <111> <210> <211> <221>


def test_low_symmetry_and_polar_classes(mono, mg, zno):
    reps = sc.zone_axis_classes(mono, 1)
    assert {(1, 0, 0), (0, 1, 0), (0, 0, 1)} <= set(reps)  # monoclinic: a, b, c all distinct
    assert _class_of(mono, (1, 0, 1)) != _class_of(mono, (1, 0, -1))  # beta != 90 deg
    assert len(reps) == 9  # 2/m splits the 13 index-1 directions (up to sign) into 9 classes
    assert sc.zone_axis_classes(mg, 1)[:2] == [(1, 0, 0), (0, 0, 1)]  # a = 3.21 Å, c = 5.21 Å
    # 6mm has no inversion: [0001] and [000-1] see the crystal from opposite faces.
    assert _class_of(zno, (0, 0, 1)) != _class_of(zno, (0, 0, -1))
    assert _class_of(mg, (0, 0, 1)) == _class_of(mg, (0, 0, -1))


def test_no_orientations_asked_is_a_user_error(sto, cfg):
    cfg["orientations"].update(n_zone_axes=0, n_free=0)
    with pytest.raises(UserError, match="n_zone_axes.*both 0"):
        sc.make_orientations(sto, "sto", cfg)


def test_fewer_classes_than_zone_axes_reuses_them(sto, cfg):
    cfg["orientations"].update(n_zone_axes=5, n_free=0, n_inplane=1, n_tilts=1)
    table = sc.make_orientations(sto, "sto", cfg)
    assert len(table) == 5
    zones = list(zip(table.zone_u, table.zone_v, table.zone_w))
    assert zones == [(1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 0), (1, 1, 0)]
    assert table.inplane_deg.iloc[0] != table.inplane_deg.iloc[3]


# --- determinism --------------------------------------------------------------------------------
def test_orientations_are_deterministic(si, cfg):
    a = sc.make_orientations(si, "mp-149", cfg)
    pd.testing.assert_frame_equal(a, sc.make_orientations(si, "mp-149", cfg))
    assert not np.allclose(a.inplane_deg, sc.make_orientations(si, "mp-150", cfg).inplane_deg)
    cfg2 = {**cfg, "seed": cfg["seed"] + 1}
    assert not np.allclose(a.inplane_deg, sc.make_orientations(si, "mp-149", cfg2).inplane_deg)
    # Adding free orientations leaves the zone-axis rows as they were.
    cfg["orientations"]["n_free"] = 3
    b = sc.make_orientations(si, "mp-149", cfg)
    n_zone_rows = 2 * 2 * 2
    pd.testing.assert_frame_equal(a.iloc[:n_zone_rows], b.iloc[:n_zone_rows])


def test_orientations_do_not_depend_on_python_hash_seed(si, cfg):
    code = ("import sys, yaml; from pymatgen.core import Lattice, Structure; "
            "from fourdcrystal.simulation.supercells import make_orientations; "
            "s = Structure.from_spacegroup('Fd-3m', Lattice.cubic(5.431), ['Si'], [[0, 0, 0]]); "
            "cfg = yaml.safe_load(sys.stdin); "
            "print(make_orientations(s, 'mp-149', cfg)[['inplane_deg', 'tilt_mrad', 'r01']].to_json())")
    import yaml

    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], input=yaml.safe_dump(cfg), env=env,
                         capture_output=True, text=True, check=True).stdout
    here = sc.make_orientations(si, "mp-149", cfg)[["inplane_deg", "tilt_mrad", "r01"]]
    pd.testing.assert_frame_equal(pd.read_json(io.StringIO(out)), here, check_exact=False)


# --- the stage ----------------------------------------------------------------------------------
class _Wildcards(dict):
    """Snakemake's wildcards: attribute access plus dict()."""

    def __getattr__(self, key):
        return self[key]


def _smk(tmp_path, cfg, crystal):
    """The attributes of Snakemake's `snakemake` object that rule `supercells` passes to its script."""
    return SimpleNamespace(
        input=SimpleNamespace(cifs=str(tmp_path / "cifs")),
        output=SimpleNamespace(orientations=str(tmp_path / "out" / crystal / "orientations.csv"),
                               supercells=str(tmp_path / "out" / crystal / "supercells.extxyz")),
        log=[str(tmp_path / f"{crystal}.log")],
        params=SimpleNamespace(seed=cfg["seed"], orientations=cfg["orientations"], geometry=cfg["geometry"]),
        wildcards=_Wildcards(crystal=crystal),
        rule="supercells",
    )


def test_rule_end_to_end_through_script_function(tmp_path, sto, cfg):
    (tmp_path / "cifs").mkdir()
    CifWriter(sto).write_file(tmp_path / "cifs" / "mp-5229.cif")
    smk = _smk(tmp_path, cfg, "mp-5229")
    run_stage(stages.supercells, smk)

    table = pd.read_csv(smk.output.orientations)
    assert list(table.columns) == sc.ORIENTATION_COLUMNS
    assert len(table) == plan.n_orientations(cfg) == 12
    assert table.orientation_id.tolist() == list(range(12))
    assert (table.crystal_id == "mp-5229").all()
    assert table.kind.tolist() == ["zone"] * 8 + ["free"] * 4

    frames = ase_read(smk.output.supercells, index=":", format="extxyz")
    geometry = Geometry.from_config(cfg)
    assert len(frames) == 12
    for row, atoms in zip(table.itertuples(), frames):
        assert atoms.info["orientation_id"] == row.orientation_id
        assert atoms.info["crystal_id"] == "mp-5229" and atoms.info["kind"] == row.kind
        assert len(atoms) == row.n_atoms
        np.testing.assert_allclose(atoms.cell.lengths(), [geometry.box_A, geometry.box_A, geometry.max_thickness_A])
        assert atoms.pbc.tolist() == [True, True, False]
        assert atoms.info["tilt_mrad"] == pytest.approx(row.tilt_mrad)
        assert density_ratio(atoms, sto, geometry) == pytest.approx(1.0, abs=0.05)
    assert "rule supercells: done" in Path(smk.log[0]).read_text()


def test_crystal_too_large_for_box_is_skipped(tmp_path, cfg, caplog):
    big = Structure(Lattice.orthorhombic(5.0, 6.0, 40.0), ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    orient, xyz = tmp_path / "o.csv", tmp_path / "s.extxyz"
    with caplog.at_level(logging.WARNING, logger="fourdcrystal"):
        table = sc.build_crystal(big, "huge", cfg, orient, xyz)
    assert table.empty
    assert pd.read_csv(orient).columns.tolist() == sc.ORIENTATION_COLUMNS and pd.read_csv(orient).empty
    assert xyz.exists() and xyz.stat().st_size == 0
    assert "huge skipped" in caplog.text and "lattice parameter 40.00" in caplog.text


def test_too_many_atoms_is_skipped_with_reason(tmp_path, si, cfg, caplog):
    cfg["orientations"]["max_atoms"] = 1000  # Si fills the 32 x 32 x 60 Å box with ~3100 atoms
    with caplog.at_level(logging.WARNING, logger="fourdcrystal"):
        table = sc.build_crystal(si, "si", cfg, tmp_path / "o.csv", tmp_path / "s.extxyz")
    assert table.empty and (tmp_path / "s.extxyz").stat().st_size == 0
    assert "orientations.max_atoms = 1000" in caplog.text


def test_missing_or_broken_cif_is_a_user_error(tmp_path, cfg):
    with pytest.raises(UserError, match="does not exist"):
        sc.read_structure(tmp_path / "nope.cif")
    (tmp_path / "cifs").mkdir()
    (tmp_path / "cifs" / "bad.cif").write_text("data_x\n_cell_length_a oops\n")
    smk = _smk(tmp_path, cfg, "bad")
    with pytest.raises(SystemExit) as exc:
        run_stage(stages.supercells, smk)
    assert exc.value.code == 2
    assert not Path(smk.output.orientations).exists() and not Path(smk.output.supercells).exists()
