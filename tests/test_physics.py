"""Physics of the quartets: multislice CBED, V_g and q_z labels against independent crystallography.

Small boxes keep every simulation well under a second; the module-scoped fixtures run each distinct
simulation once.
"""
import numpy as np
import pytest
from ase import Atoms
from pymatgen.core import Lattice, Structure

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.simulation.kinematic import kinematic_reflections, shortest_spacing_invA
from fourdcrystal.geometry import electron_wavelength_A
from fourdcrystal.simulation.multislice import (OVERLAP_RADIUS_FRACTION, ProbeSetting, array_module, draw_probe_settings,
                                               simulate_orientation)

GEO = Geometry(box_A=24.0, gpts=128, detector_px=64, thicknesses_A=(20.0, 40.0, 60.0), slice_thickness_A=2.0,
               energies_eV=(200e3, 300e3), semiangle_mrad_range=(3.0, 5.0))
SIM = {"parametrization": "lobato", "projection": "infinite", "frozen_phonons": 0, "phonon_sigma_A": 0.08,
       "qz_sigma_invA": 0.075, "tukey_alpha": 0.25, "defocus_A": [0.0, 0.0]}
PROBES = [ProbeSetting(0, 200e3, 4.0, 0.0), ProbeSetting(1, 300e3, 3.0, 0.0)]
TILT_RAD = 0.02


def silicon() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def rot_y(theta: float) -> np.ndarray:
    """Right-handed rotation by theta about the lab y axis."""
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def si110_rotation(tilt_rad: float = 0.0) -> np.ndarray:
    """Lab = R @ crystal: [110] along +z, [001] along +x, then a tilt about lab y."""
    z = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    x = np.array([0.0, 0.0, 1.0])
    return rot_y(tilt_rad) @ np.array([x, np.cross(z, x), z])


def oriented_atoms(structure: Structure, R: np.ndarray, geo: Geometry) -> Atoms:
    """Rotate and tile the conventional cell, crop to the geometry box (test-local helper)."""
    box, depth = geo.box_A, geo.max_thickness_A
    L = structure.lattice.matrix
    corners = np.array([[x, y, z] for x in (0, box) for y in (0, box) for z in (0, depth)])
    frac = (corners @ R) @ np.linalg.inv(L)  # lab corner -> crystal Cartesian (R^T v) -> fractional
    lo, hi = np.floor(frac.min(0)).astype(int) - 1, np.ceil(frac.max(0)).astype(int) + 1
    cells = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1).reshape(-1, 3)
    f = (cells[:, None, :] + structure.frac_coords[None]).reshape(-1, 3)
    lab = (f @ L) @ R.T
    numbers = np.tile(structure.atomic_numbers, len(cells))
    m = np.all((lab >= 0) & (lab < [box, box, depth]), axis=1)
    return Atoms(numbers=numbers[m], positions=lab[m], cell=[box, box, depth], pbc=[True, True, False])


@pytest.fixture(scope="module")
def untilted():
    R = si110_rotation(0.0)
    arrays, meta, timings = simulate_orientation(oriented_atoms(silicon(), R, GEO), GEO, SIM, PROBES)
    return R, arrays, meta, timings


@pytest.fixture(scope="module")
def tilted():
    R = si110_rotation(TILT_RAD)
    arrays, meta, _ = simulate_orientation(oriented_atoms(silicon(), R, GEO), GEO, SIM, PROBES[:1])
    return R, arrays, meta


def strong_reflections(R, energy_eV=200e3, frac=0.3):
    df = kinematic_reflections(silicon(), R, GEO, energy_eV, 1.2)
    df = df[df.vg_abs >= frac * df.vg_abs.max()]
    # stay clear of the detector edge so a 5x5 neighbourhood fits
    inside = df.qx_px.between(3, GEO.detector_px - 4) & df.qy_px.between(3, GEO.detector_px - 4)
    return df[inside]


def test_shapes_order_and_probe_scaling(untilted):
    _, arrays, meta, timings = untilted
    n = len(PROBES) * len(GEO.thicknesses_A)
    P = GEO.detector_px
    for name in ("probe", "cbed", "vg", "qz"):
        assert arrays[name].shape == (n, P, P)
        assert arrays[name].dtype == np.float32
        assert np.isfinite(arrays[name]).all()
    assert [(m["probe_id"], m["thickness_A"]) for m in meta] == [(i, t) for i in (0, 1) for t in GEO.thicknesses_A]
    assert meta[3]["energy_eV"] == 300e3 and meta[3]["semiangle_mrad"] == 3.0
    np.testing.assert_allclose(arrays["probe"].max(axis=(1, 2)), 1.0, rtol=1e-6)
    # the vacuum probe is centred on the direct-beam pixel and is the same for every thickness
    ii, jj = np.mgrid[:P, :P]
    pr = arrays["probe"][0]
    assert abs((ii * pr).sum() / pr.sum() - GEO.center_px) < 0.05
    assert abs((jj * pr).sum() / pr.sum() - GEO.center_px) < 0.05
    np.testing.assert_array_equal(arrays["probe"][0], arrays["probe"][2])
    assert not np.array_equal(arrays["probe"][0], arrays["probe"][3])  # different semi-angle
    assert set(timings) == {"potential", "multislice", "labels"} and min(timings.values()) > 0
    assert (arrays["vg"] >= 0).all()


def test_cbed_conserves_and_direct_beam_weakens(untilted):
    _, arrays, _, _ = untilted
    c = GEO.center_px
    ii, jj = np.mgrid[: GEO.detector_px, : GEO.detector_px]
    for i, ps in enumerate(PROBES):
        rows = slice(i * 3, i * 3 + 3)
        tot_probe = arrays["probe"][rows].sum(axis=(1, 2))
        tot_cbed = arrays["cbed"][rows].sum(axis=(1, 2))
        assert (tot_cbed <= tot_probe * (1 + 1e-5)).all()
        assert (tot_cbed > 0.5 * tot_probe).all()  # nothing catastrophic: most electrons stay on the detector
        # direct-beam disk: radius alpha/lambda in pixels
        r_px = GEO.mrad_to_invA(ps.semiangle_mrad, ps.energy_eV) / GEO.dk_invA
        disk = (ii - c) ** 2 + (jj - c) ** 2 <= (0.8 * r_px) ** 2
        d = arrays["cbed"][rows][:, disk].sum(axis=1)
        assert d[0] > d[1] > d[2], d


def test_vg_maxima_on_kinematic_positions(untilted):
    R, arrays, _, _ = untilted
    df = strong_reflections(R)
    assert len(df) >= 8
    n_checked = 0
    for k in range(3):  # every thickness
        vg = arrays["vg"][k]
        for r in df.itertuples():
            i, j = int(round(r.qx_px)), int(round(r.qy_px))
            win = vg[i - 2:i + 3, j - 2:j + 3]
            a, b = np.unravel_index(win.argmax(), win.shape)
            assert abs(i - 2 + a - r.qx_px) <= 0.5 + 1e-9 and abs(j - 2 + b - r.qy_px) <= 0.5 + 1e-9, (r, k)
            # Magnitude in volts agrees with the structure factor where the reflection falls near a
            # pixel centre (between pixels the peak is shared among neighbours).
            if abs(r.qx_px - i) < 0.25 and abs(r.qy_px - j) < 0.25:
                n_checked += 1
                assert 0.75 * r.vg_abs <= win.max() <= 1.1 * r.vg_abs, (r.h, r.k, r.l, win.max(), r.vg_abs)
    assert n_checked >= 6


def test_axis_convention_cbed_and_vg_not_transposed(untilted):
    """Si [110] with [001] along x is not symmetric under x<->y: swapping axes must miss the reflections."""
    R, arrays, _, _ = untilted
    df = strong_reflections(R)
    df = df[(df.qx_invA.abs() - df.qy_invA.abs()).abs() > 3 * GEO.dk_invA]
    assert len(df) >= 4
    i, j = np.round(df.qx_px.to_numpy()).astype(int), np.round(df.qy_px.to_numpy()).astype(int)
    for k in range(arrays["vg"].shape[0]):
        assert np.all(arrays["vg"][k][i, j] > 5 * arrays["vg"][k][j, i])
    # the CBED disks sit on the same pixels (summed: single weak reflections may be dynamically extinct)
    for k in range(arrays["cbed"].shape[0]):
        assert arrays["cbed"][k][i, j].sum() > 3 * arrays["cbed"][k][j, i].sum()


def test_qz_zero_without_tilt(untilted):
    R, arrays, _, _ = untilted
    for r in strong_reflections(R).itertuples():
        i, j = int(round(r.qx_px)), int(round(r.qy_px))
        # 2e-3 Å⁻¹ at 0.55 Å⁻¹ is a 4 mrad tilt: the 20 Å slab resolves q_z only to ~1/t; thicker is tighter
        qz = np.abs(arrays["qz"][:3, i, j])
        assert qz[0] < 2e-3 and np.all(qz[1:] < 5e-4), (r.h, r.k, r.l, qz)


def test_qz_follows_tilt_sign_and_magnitude(tilted):
    """Tilt by +theta about lab y: g = (gx, gy, 0) -> (gx cos, gy, -gx sin), so q_z = -tan(theta) * q_x."""
    R, arrays, _ = tilted
    df = strong_reflections(R)
    df = df[df.qx_invA.abs() > 0.15]
    assert (df.qx_invA > 0).any() and (df.qx_invA < 0).any()
    for r in df.itertuples():
        expected = -np.tan(TILT_RAD) * r.qx_invA
        assert abs(r.qz_invA - expected) < 1e-4  # the kinematic truth agrees with the analytic tilt
        i, j = int(round(r.qx_px)), int(round(r.qy_px))
        qz = arrays["qz"][:, i, j]
        assert np.all(np.sign(qz) == np.sign(expected)), (r.h, r.k, r.l, qz, expected)
        # thicker slabs resolve q_z better: 25 % at 20 Å, 12 % from 40 Å on
        assert abs(qz[0] - expected) <= 0.25 * abs(expected) + 5e-4, (qz, expected)
        assert np.all(np.abs(qz[1:] - expected) <= 0.12 * abs(expected) + 5e-4), (qz, expected)


def test_tilt_weakens_vg_of_reflections_leaving_the_ewald_plane(untilted, tilted):
    # The Gaussian q_z weight makes V_g of a reflection with q_z != 0 smaller than untilted.
    R0, a0, _, _ = untilted
    R1, a1, _ = tilted
    df = strong_reflections(R1)
    far = df[df.qx_invA.abs() > 0.5]
    for r in far.itertuples():
        i, j = int(round(r.qx_px)), int(round(r.qy_px))
        assert a1["vg"][2, i, j] < a0["vg"][2, i, j]


def test_frozen_phonons_seeded_and_averaged():
    geo = Geometry(box_A=12.0, gpts=64, detector_px=32, thicknesses_A=(6.0, 12.0), slice_thickness_A=2.0)
    atoms = oriented_atoms(silicon(), si110_rotation(), geo)
    cfg = dict(SIM, frozen_phonons=2)
    probes = [ProbeSetting(0, 300e3, 4.0, 0.0)]
    a1, _, _ = simulate_orientation(atoms, geo, cfg, probes, seed=7)
    a2, _, _ = simulate_orientation(atoms, geo, cfg, probes, seed=7)
    a3, _, _ = simulate_orientation(atoms, geo, cfg, probes, seed=8)
    static, _, _ = simulate_orientation(atoms, geo, dict(SIM), probes)
    np.testing.assert_array_equal(a1["cbed"], a2["cbed"])
    assert not np.array_equal(a1["cbed"], a3["cbed"])
    assert not np.array_equal(a1["cbed"], static["cbed"])
    for k in a1:
        assert a1[k].shape == static[k].shape and np.isfinite(a1[k]).all()


def test_bad_inputs_raise_user_errors():
    atoms = oriented_atoms(silicon(), si110_rotation(), GEO)
    wrong = atoms.copy()
    wrong.set_cell([20.0, 20.0, 36.0])
    with pytest.raises(UserError, match="does not match the geometry box"):
        simulate_orientation(wrong, GEO, SIM, PROBES)
    with pytest.raises(UserError, match="no atoms"):
        simulate_orientation(atoms[[]], GEO, SIM, PROBES)
    with pytest.raises(UserError, match="no probe settings"):
        simulate_orientation(atoms, GEO, SIM, [])
    with pytest.raises(UserError, match="unknown simulation device"):
        array_module("tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="CuPy is not installed"):
            array_module("gpu")


def test_draw_probe_settings_ranges_and_determinism():
    cfg = dict(SIM, defocus_A=[-50.0, 50.0])
    a = draw_probe_settings(cfg, GEO, np.random.default_rng(3), 40)
    b = draw_probe_settings(cfg, GEO, np.random.default_rng(3), 40)
    assert a == b and [p.probe_id for p in a] == list(range(40))
    assert {p.energy_eV for p in a} == set(GEO.energies_eV)
    assert all(3.0 <= p.semiangle_mrad <= 5.0 and -50.0 <= p.defocus_A <= 50.0 for p in a)
    assert len({p.defocus_A for p in a}) == 40
    assert len(draw_probe_settings(dict(cfg, probes_per_orientation=3), GEO, np.random.default_rng(0))) == 3


def test_overlap_probes_make_disks_touch_and_leave_the_plain_draw_alone():
    # Si [001]: the shortest spacing is {220} (2√2 / a); [110] shows {111} (√3 / a) first.
    assert shortest_spacing_invA(silicon(), np.eye(3), GEO, 300e3, zone_uvw=(0, 0, 1)) == pytest.approx(
        2 * np.sqrt(2) / 5.431, rel=1e-6)
    R110 = np.array([[1, -1, 0], [0, 0, -1], [1, 1, 0]]) / np.array([[np.sqrt(2)], [1.0], [np.sqrt(2)]])
    assert shortest_spacing_invA(silicon(), R110, GEO, 300e3, zone_uvw=(1, 1, 0)) == pytest.approx(
        np.sqrt(3) / 5.431, rel=1e-6)
    geo = Geometry(box_A=24.0, gpts=128, detector_px=64, thicknesses_A=(20.0,), slice_thickness_A=2.0,
                   energies_eV=(60e3, 300e3), semiangle_mrad_range=(0.5, 4.0))
    cfg, g = dict(SIM, overlap_fraction=0.5), 0.3

    def overlapping(settings):
        fraction = np.array([p.semiangle_mrad * 1e-3 / electron_wavelength_A(p.energy_eV) / g for p in settings])
        return ((fraction >= OVERLAP_RADIUS_FRACTION[0]) & (fraction <= OVERLAP_RADIUS_FRACTION[1])).mean()

    drawn = draw_probe_settings(cfg, geo, np.random.default_rng(5), 400, shortest_g_invA=g)
    assert drawn == draw_probe_settings(cfg, geo, np.random.default_rng(5), 400, shortest_g_invA=g)
    assert all(0.5 <= p.semiangle_mrad <= 4.0 for p in drawn)
    plain = draw_probe_settings(SIM, geo, np.random.default_rng(5), 400)
    # 60 kV never reaches a 0.3 Å⁻¹ lattice's overlap within 4 mrad: those aims fall back to the plain draw
    assert overlapping(drawn) > overlapping(plain) + 0.15
    assert plain == draw_probe_settings(dict(SIM, overlap_fraction=0.0), geo, np.random.default_rng(5), 400,
                                        shortest_g_invA=g)
    assert plain == draw_probe_settings(cfg, geo, np.random.default_rng(5), 400, shortest_g_invA=None)


def test_one_and_two_slice_slabs_give_finite_labels():
    # A window sampled at its endpoints would weigh a 1-2 slice slab by zero (0/0 -> NaN labels).
    geo = Geometry(box_A=10.86, gpts=64, detector_px=32, thicknesses_A=(2.0, 4.0), slice_thickness_A=2.0)
    atoms = oriented_atoms(silicon(), np.eye(3), geo)
    arrays, _, _ = simulate_orientation(atoms, geo, SIM, [ProbeSetting(0, 300e3, 4.0, 0.0)])
    for name in arrays:
        assert np.isfinite(arrays[name]).all(), name
    # Si [001], box = 2a: the 220 reflection sits exactly on pixel centre + 2*2 = 4 px along x
    c = geo.center_px
    assert arrays["vg"][1][c + 4, c + 4] > 4 * arrays["vg"][1][c + 3, c + 4]


def test_a_centred_cell_on_the_multislice_grid_lights_no_reflection_its_centring_forbids():
    """examples.lattice_grid_steps / rectangular_geometry: GaN [0001] re-cut into its centred orthogonal cell (7 × 4
    cells, 22 Å), 80 kV, 1 mrad, 60 nm. The grid carries the half-cell translation in whole steps (an even number
    of points per cell both ways), so the orthogonal cell's (1 0) and (0 1), which the centring forbids, stay
    dark while the allowed (1 1) is lit. With the grid of a whole but odd number of points per cell (140: 35
    along b, as before) the same pattern lit (1 0) and (0 1) (benchmarks/RESULTS.md, "A centred cell on an odd grid")."""
    from fourdcrystal.simulation.examples import (RECTANGULAR_CELL_ROWS, gan, lattice_grid_steps, rectangular_cell,
                                                  rectangular_geometry, zone_axis_cbed)
    cut, cells = rectangular_cell(gan(), RECTANGULAR_CELL_ROWS["hexagonal [0001]"], box_A=22.0)
    assert cells == (7, 4) and lattice_grid_steps(cut) == (2, 2)
    geo = rectangular_geometry(cut, cells, 128, 64, (600.0,))
    assert geo.gpts % (2 * cells[0]) == 0 and geo.gpts % (2 * cells[1]) == 0
    ex = zone_axis_cbed(cut, (0, 0, 1), geo, thickness_A=600.0, energy_eV=80e3, semiangle_mrad=1.0)
    cb, c = ex["cbed"], geo.center_px

    def spot(h, k):  # the orthogonal cell's (h k): h along a (n_x px per index), k along b (n_y px)
        i, j = c + h * cells[0], c + k * cells[1]
        return cb[i - 1:i + 2, j - 1:j + 2].sum() / cb[c - 1:c + 2, c - 1:c + 2].sum()
    assert max(spot(1, 0), spot(0, 1), spot(-1, 0), spot(0, -1)) < 1e-6
    assert spot(1, 1) > 1e-3


def test_dynamical_intensities_converge_only_on_a_grid_near_0_06_A():
    """SrTiO3 [001], 6 cells (23.4 Å), 200 kV, 1 mrad, 10 nm: the (110) disk against the direct beam converges as
    the grid is refined (0.041 Å the reference): within 10 % at 0.061 Å, but 1.4 × too bright at 0.122 Å, the
    training data's and the default benchmark camera's sampling — the transmission function exp(iσV) of a 2 Å
    slice, not the potential, is under-sampled (benchmarks/RESULTS.md, "The multislice grid's sampling")."""
    from fourdcrystal.simulation.examples import srtio3, zone_axis_cbed

    s, n = srtio3(), 6

    def ratio_110(points_per_cell: int) -> float:
        geo = Geometry(box_A=n * s.lattice.a, gpts=n * points_per_cell, detector_px=40, thicknesses_A=(100.0,),
                       slice_thickness_A=2.0)
        cb, c = zone_axis_cbed(s, (0, 0, 1), geo, thickness_A=100.0, energy_eV=200e3, semiangle_mrad=1.0)["cbed"], 20
        return cb[c + n - 1:c + n + 2, c + n - 1:c + n + 2].sum() / cb[c - 1:c + 2, c - 1:c + 2].sum()

    converged = ratio_110(96)
    assert abs(ratio_110(64) / converged - 1) < 0.10
    assert ratio_110(32) / converged > 1.25


def test_bench_accuracy_oversample_refines_the_grid_in_the_same_boxes():
    """bench_accuracy --oversample 2: every crystal's box (and so the detector's pixel size) as with the detector's
    field alone, on a grid at least twice as fine: ≤ 0.075 Å on the default camera, where the field alone gives
    0.09–0.15 Å."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sets = list(bench.crystals().values()) + list(bench.rectangular_crystals().values())[1:]
    geos = {}
    for k in (1, 2):
        bench.set_detector(256, 0.02, k)
        geos[k] = [bench.detector_of(structure, period) for structure, _, period in sets]
    for coarse, fine in zip(geos[1], geos[2]):
        assert fine.box_A == coarse.box_A and fine.detector_px == coarse.detector_px == 256
        assert fine.gpts >= 2 * 384 and fine.box_A / fine.gpts <= 0.075 < coarse.box_A / coarse.gpts


def test_cubic_111_and_wurtzite_11_20_cells_cut_whole_and_keep_their_zero_layer():
    """examples.RECTANGULAR_CELL_ROWS "cubic [111]" and "hexagonal [11-20]" (bench_accuracy ``--crystals zones``): the
    re-cut cells are orthogonal, hold every atom of the crystal at its density, and along the new c their zero-order
    Laue zone is the crystal's own: Si [111] shows the six {220} at 60° (|g| = √8 / a) and no {111}; ZnO [11-20] shows
    (1-100) (the centred cell's (0 2)) and (0002), and its (0001) has |V_g| 0 (forbidden by the 6_3 screw axis)."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import RECTANGULAR_CELL_ROWS, rectangular_cell
    from fourdcrystal.simulation.kinematic import kinematic_reflections

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    zno = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.250, 5.207), ["Zn", "O"],
                                    [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])
    geo = Geometry(box_A=48.0, gpts=96, detector_px=64, thicknesses_A=(100.0,), slice_thickness_A=2.0)

    def zero_layer(cut) -> np.ndarray:  # in-plane |g| (Å⁻¹) and azimuth (°) of the ZOLZ, by |V_g|
        r = kinematic_reflections(cut, np.eye(3), geo, 200e3, 1.2, zone_uvw=(0, 0, 1))
        r = r[r["laue_zone"] == 0]
        return r

    cut, cells = rectangular_cell(si, RECTANGULAR_CELL_ROWS["cubic [111]"], box_A=48.0)
    assert max(abs(a - 90) for a in cut.lattice.angles) < 1e-6 and len(cut) == 6 * len(si)
    assert abs(cut.lattice.c - 5.431 * np.sqrt(3)) < 1e-6 and cells == (7, 4)
    z = zero_layer(cut)
    g = np.hypot(z["qx_invA"], z["qy_invA"])
    first = z[np.isclose(g, np.sqrt(8) / 5.431, rtol=0.012)]  # the cell stretched ≤ 1.2 % along y
    assert np.isclose(g.min(), np.sqrt(8) / 5.431, rtol=0.012) and len(first) == 6
    az = np.sort(np.degrees(np.arctan2(first["qy_invA"], first["qx_invA"])) % 360)
    assert np.allclose(np.diff(az), 60, atol=1.0)  # the stretch turns them by ≤ 0.6°
    assert g.min() > 1 / (5.431 / np.sqrt(3)) + 0.1  # no {111} (|g| 0.32 Å⁻¹) in the [111] zone

    cut, cells = rectangular_cell(zno, RECTANGULAR_CELL_ROWS["hexagonal [11-20]"], box_A=48.0)
    assert max(abs(a - 90) for a in cut.lattice.angles) < 1e-6 and len(cut) == 2 * len(zno)
    assert np.isclose(cut.lattice.a, 5.207) and np.isclose(cut.lattice.c, 3.250)
    z = zero_layer(cut)
    hk = {(int(h), int(k)): v for h, k, v in zip(z["h"], z["k"], z["vg_abs"])}
    assert hk.get((2, 0), 0) > 0.5 and hk.get((0, 2), 0) > 0.5  # (0002) along x = c; (1-100) along y
    assert hk.get((1, 0), 0.0) < 1e-6  # (0001): forbidden by the screw axis
    assert hk.get((0, 1), 0.0) < 1e-6  # the orthogonal cell's (0 1): forbidden by its centring
