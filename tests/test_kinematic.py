"""Kinematic reflection lists: crystallography (extinctions, structure factors), Ewald geometry, pixels."""
import numpy as np
import pytest
from abtem.parametrizations import validate_parametrization
from pymatgen.core import Lattice, Structure

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry, electron_wavelength_A
from fourdcrystal.simulation.kinematic import COLUMNS, kinematic_reflections

GEO = Geometry(box_A=32.0, gpts=256, detector_px=128, thicknesses_A=(20.0, 40.0, 60.0), slice_thickness_A=2.0)
A_SI = 5.431


def silicon(species=("Si",)) -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(A_SI), list(species), [[0, 0, 0]])


def row(df, h, k, l):
    sel = df[(df.h == h) & (df.k == k) & (df.l == l)]
    return sel.iloc[0] if len(sel) else None


def f_e(symbol, g_invA, par="lobato"):
    return float(validate_parametrization(par).scattering_factor(symbol)(np.array([g_invA ** 2]))[0])


def test_columns_direct_beam_and_extinctions_si001():
    df = kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 1.5)
    assert list(df.columns) == COLUMNS
    assert row(df, 0, 0, 0) is None  # direct beam excluded by design
    assert row(df, 2, 0, 0) is None and row(df, 2, 2, 2) is None  # diamond-glide extinctions
    assert row(df, 1, 0, 0) is None  # F-centring
    for hkl in [(2, 2, 0), (4, 0, 0), (-2, 2, 0), (-4, -4, 0)]:
        assert row(df, *hkl) is not None, hkl
    # the beam is along [001]: ZOLZ (l = 0) reflections have q_z = 0 and negative s = -λ g²/2
    r = row(df, 2, 2, 0)
    g = np.sqrt(8) / A_SI
    assert r.qz_invA == pytest.approx(0.0, abs=1e-12)
    lam = electron_wavelength_A(300e3)
    assert r.excitation_error_invA == pytest.approx(-lam * g ** 2 / 2, rel=1e-3)
    assert (df.vg_abs.diff().dropna() <= 0).all()  # sorted strongest first


def test_pixel_coordinates_and_filters():
    df = kinematic_reflections(silicon(), np.eye(3), GEO, 200e3, 1.2, s_max_invA=0.05)
    r = row(df, 4, 0, 0)
    assert r.qx_invA == pytest.approx(4 / A_SI) and r.qy_invA == pytest.approx(0.0, abs=1e-12)
    assert r.qx_px == pytest.approx(GEO.center_px + (4 / A_SI) * GEO.box_A)
    assert r.qy_px == pytest.approx(GEO.center_px)
    q = np.hypot(np.hypot(df.qx_invA, df.qy_invA), df.qz_invA)
    assert (q <= 1.2 + 1e-12).all()
    assert (df.excitation_error_invA.abs() <= 0.05).all()
    assert df.qx_px.between(0, GEO.detector_px - 1).all() and df.qy_px.between(0, GEO.detector_px - 1).all()
    # the 111 reflections lie on the first-order Laue zone of [001] (q_z = 1/a): too far from the Ewald sphere
    assert row(df, 1, 1, 1) is None


def test_structure_factor_magnitudes_volts():
    """Diamond structure: |F_111| = 4√2 f, |F_220| = 8 f; V_g = 47.878 V Å² F / Ω."""
    df = kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 1.5, s_max_invA=1.0)
    omega = A_SI ** 3
    g111, g220 = np.sqrt(3) / A_SI, np.sqrt(8) / A_SI
    assert row(df, 1, 1, 1).vg_abs == pytest.approx(47.878 / omega * 4 * np.sqrt(2) * f_e("Si", g111), rel=1e-4)
    assert row(df, 2, 2, 0).vg_abs == pytest.approx(47.878 / omega * 8 * f_e("Si", g220), rel=1e-4)
    # Two independent electron scattering factor fits agree on the physics to a few percent.
    kirk = kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 1.5, s_max_invA=1.0, parametrization="kirkland")
    for hkl in [(1, 1, 1), (2, 2, 0), (3, 1, 1), (4, 0, 0)]:
        assert row(kirk, *hkl).vg_abs == pytest.approx(row(df, *hkl).vg_abs, rel=0.05), hkl
    # Si V_220 (static lattice) is a few volts, the textbook order of magnitude
    assert 3.0 < row(df, 2, 2, 0).vg_abs < 6.0


def test_partial_occupancy_interpolates():
    si = kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 1.0)
    ge = kinematic_reflections(silicon(["Ge"]), np.eye(3), GEO, 300e3, 1.0)
    mix = kinematic_reflections(silicon([{"Si": 0.5, "Ge": 0.5}]), np.eye(3), GEO, 300e3, 1.0)
    for hkl in [(2, 2, 0), (4, 0, 0)]:
        expect = 0.5 * (row(si, *hkl).vg_abs + row(ge, *hkl).vg_abs)
        assert row(mix, *hkl).vg_abs == pytest.approx(expect, rel=1e-6)


def test_rotation_about_beam_moves_reflections_and_tilt_moves_qz():
    c, s = np.cos(np.pi / 2), np.sin(np.pi / 2)
    rz = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])  # +90° about z: x -> y
    df = kinematic_reflections(silicon(), rz, GEO, 300e3, 1.2)
    r = row(df, 4, 0, 0)
    assert r.qx_invA == pytest.approx(0.0, abs=1e-12) and r.qy_invA == pytest.approx(4 / A_SI)
    th = 0.02
    ry = np.array([[np.cos(th), 0, np.sin(th)], [0, 1, 0], [-np.sin(th), 0, np.cos(th)]])
    t = kinematic_reflections(silicon(), ry, GEO, 300e3, 1.2)
    r = row(t, 4, 0, 0)
    assert r.qz_invA == pytest.approx(-np.sin(th) * 4 / A_SI)
    # tilting 0.2 rad takes most of the zone out of the Ewald sphere's reach
    big = np.array([[np.cos(0.2), 0, np.sin(0.2)], [0, 1, 0], [-np.sin(0.2), 0, np.cos(0.2)]])
    assert len(kinematic_reflections(silicon(), big, GEO, 300e3, 1.2, s_max_invA=0.03)) < len(
        kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 1.2, s_max_invA=0.03))


def test_bad_inputs():
    with pytest.raises(UserError, match="orthogonal"):
        kinematic_reflections(silicon(), np.ones((3, 3)), GEO, 300e3, 1.0)
    with pytest.raises(UserError, match="q_max_invA"):
        kinematic_reflections(silicon(), np.eye(3), GEO, 300e3, 0.0)
