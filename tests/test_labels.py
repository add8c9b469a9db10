"""Truth and labels hold what the pattern shows (fourdcrystal.simulation.labels): the rendered label
gives back the truth exactly (the oracle), holds no lattice point the CBED does not show, and follows
the zone-axis / excitation rule."""
import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from fourdcrystal.geometry import Geometry
from fourdcrystal.inference import peaks
from fourdcrystal.simulation.examples import srtio3
from fourdcrystal.simulation.kinematic import kinematic_reflections, mean_inner_potential_V
from fourdcrystal.simulation.labels import (disk_radius_px, folz_radius_invA, orientation_truth, render_labels,
                                            shown_reflections)
from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation
from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell, tilt_rotation

GEO = Geometry(box_A=32.0, gpts=256, detector_px=128, thicknesses_A=(100.0,), slice_thickness_A=2.0)
SIM = {"parametrization": "lobato", "label_min_vg_fraction": 0.01}


def _truth(structure, zone, R=None, energy=200e3, alpha=2.0, t=100.0, zone_axis=True):
    R = align_zone_to_z(structure.lattice.matrix, zone) if R is None else R
    v0 = mean_inner_potential_V(structure)
    frames, vg, qz = orientation_truth(structure, R, zone if zone_axis else None,
                                       [{"energy_eV": energy, "semiangle_mrad": alpha, "thickness_A": t}], GEO, SIM, v0)
    return frames[0], vg[0], qz[0], v0


def _found(vg, qz):
    pk = peaks.find_peaks(vg[None], qz[None], center_px=GEO.center_px, threshold=0.005,
                          exclude_center_px=2.0, min_spacing_px=3.0)
    return np.stack([pk["qx_px"], pk["qy_px"]], axis=1), pk["qz"]


def test_oracle_recovers_the_truth_exactly():
    refl, vg, qz, v0 = _truth(srtio3(), (0, 0, 1))
    shown = refl[refl["shown"]]
    assert 40 < len(shown) < len(refl)
    xy, _ = _found(vg, qz)
    assert len(xy) == len(shown)
    d = np.hypot(xy[:, None, 0] - shown["qx_px"].to_numpy()[None], xy[:, None, 1] - shown["qy_px"].to_numpy()[None])
    assert d.min(axis=1).max() < 0.01 and d.min(axis=0).max() < 0.01
    assert vg[GEO.center_px, GEO.center_px] == pytest.approx(v0, rel=1e-6)  # the direct beam holds V_0
    # far from every reflection the label is exactly zero: no window sidelobes
    far = np.ones_like(vg, bool)
    for x, y in np.vstack([shown[["qx_px", "qy_px"]].to_numpy(), [[64, 64]]]):
        far[max(0, int(x) - 5):int(x) + 6, max(0, int(y) - 5):int(y) + 6] = False
    assert vg[far].max() == 0.0


def test_tilted_zone_gives_qz_of_the_tilt_and_deterministic_labels():
    sto = srtio3()
    R = tilt_rotation(20.0, 0.0) @ align_zone_to_z(sto.lattice.matrix, (0, 0, 1))
    a = _truth(sto, (0, 0, 1), R=R)
    b = _truth(sto, (0, 0, 1), R=R)
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    refl, vg, qz, _ = a
    xy, qz_found = _found(vg, qz)
    shown = refl[refl["shown"]]
    # ZOLZ of a crystal tilted by θ: q_z = g_z of each reflection, i.e. ∝ -θ along the tilt axis
    near = np.argmin(np.hypot(xy[:, None, 0] - shown["qx_px"].to_numpy()[None],
                              xy[:, None, 1] - shown["qy_px"].to_numpy()[None]), axis=1)
    np.testing.assert_allclose(qz_found, shown["qz_invA"].to_numpy()[near], atol=1e-6)
    assert np.abs(shown["qz_invA"]).max() > 0.01


def test_zone_axis_truth_is_the_zolz_inside_the_folz_ring():
    # body-centred tetragonal, c = 20 Å along the beam: its first upper layer (l = 1, h + k odd) lies
    # 0.05 Å⁻¹ above the zero layer and projects between the zero layer's points
    bct = Structure(Lattice.tetragonal(4.0, 20.0), ["Si", "Si"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    refl, vg, qz, _ = _truth(bct, (0, 0, 1))
    shown = refl[refl["shown"]]
    r_folz = folz_radius_invA(bct, (0, 0, 1), 200e3)
    assert r_folz == pytest.approx(np.sqrt(2 * (1 / 20.0) / 0.02508), rel=1e-3)
    assert (shown["laue_zone"] == 0).all() and (shown["l"] == 0).all()
    assert (np.hypot(shown["qx_invA"], shown["qy_invA"]) < r_folz).all()
    assert ((refl["l"] != 0) & (np.hypot(refl["qx_invA"], refl["qy_invA"]) < 1.0)).any()  # there were others
    xy, _ = _found(vg, qz)
    assert len(xy) == len(shown)


def test_free_orientation_truth_is_what_the_ewald_sphere_excites():
    sto = srtio3()
    R = tilt_rotation(60.0, 30.0) @ align_zone_to_z(sto.lattice.matrix, (1, 2, 3))
    thin = _truth(sto, None, R=R, t=50.0, zone_axis=False)[0]
    thick = _truth(sto, None, R=R, t=500.0, zone_axis=False)[0]
    for refl, t in ((thin, 50.0), (thick, 500.0)):
        s = refl[refl["shown"]]
        g = np.sqrt(s["qx_invA"] ** 2 + s["qy_invA"] ** 2 + s["qz_invA"] ** 2)
        assert (np.abs(s["excitation_error_invA"]) <= 2e-3 * g + 1 / t + 1e-12).all()
    assert 0 < thick["shown"].sum() < thin["shown"].sum()


def test_whole_disk_on_the_detector_and_vg_floor():
    refl = kinematic_reflections(srtio3(), np.eye(3), GEO, 200e3, GEO.k_max_corner_invA, zone_uvw=(0, 0, 1))
    v0 = mean_inner_potential_V(srtio3())
    small = shown_reflections(refl, GEO, 200e3, 1.0, 100.0, v0, 0.01, folz_radius=10.0)
    large = shown_reflections(refl, GEO, 200e3, 10.0, 100.0, v0, 0.01, folz_radius=10.0)
    r = disk_radius_px(GEO, 200e3, 10.0)  # 12.8 px: outer disks leave the detector
    x, y = refl["qx_px"].to_numpy(), refl["qy_px"].to_numpy()
    edge = np.minimum.reduce([x, y, 127 - x, 127 - y])
    assert (edge[large] >= r).all() and large.sum() < small.sum()
    strict = shown_reflections(refl, GEO, 200e3, 1.0, 100.0, v0, 0.05, folz_radius=10.0)
    assert (refl["vg_abs"].to_numpy()[strict] >= 0.05 * v0).all() and strict.sum() < small.sum()
    assert render_labels(refl[small], GEO, v0)[0].dtype == np.float32


def test_the_label_holds_only_reflections_the_cbed_shows():
    """Multislice of the body-centred tetragonal crystal: every truth reflection is a disk in the CBED,
    and the upper-layer points the old potential-transform label held near the centre are not."""
    bct = Structure(Lattice.tetragonal(4.0, 20.0), ["Ge", "Ge"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    R = align_zone_to_z(bct.lattice.matrix, (0, 0, 1))
    arrays, _, _ = simulate_orientation(build_supercell(bct, R, GEO), GEO,
                                        {"parametrization": "lobato", "projection": "infinite"},
                                        [ProbeSetting(0, 200e3, 1.5, 0.0)])
    cbed, old_label = arrays["cbed"][0], arrays["vg"][0]
    refl, vg, qz, _ = _truth(bct, (0, 0, 1), alpha=1.5)
    shown = refl[refl["shown"]]
    c = GEO.center_px

    def at(img, h, k):  # the value on the (h, k) position of the projected lattice, 1/4 Å⁻¹ per index
        return img[int(round(c + h * 0.25 / GEO.dk_invA)), int(round(c + k * 0.25 / GEO.dk_invA))]

    inner = shown[np.hypot(shown["qx_invA"], shown["qy_invA"]) < 0.8]
    zolz = [at(cbed, h, k) for h, k in zip(inner["h"], inner["k"])]
    upper = [(h, k) for h in range(-2, 3) for k in range(-2, 3) if (h + k) % 2]  # l = 1 layer positions
    # the CBED has disks on the zero layer; between them, where the l = 1 points project, it is dark
    assert max(at(cbed, h, k) for h, k in upper) < 0.1 * np.median(zolz)
    # ... yet the potential-transform label held those points, as strong as the zero layer's
    old_zolz = np.median([at(old_label, h, k) for h, k in zip(inner["h"], inner["k"])])
    assert min(at(old_label, h, k) for h, k in upper) > 0.5 * old_zolz
    assert max(at(vg, h, k) for h, k in upper) == 0.0  # the new label has none there
