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
from fourdcrystal.simulation.labels import (disk_brightness, disk_radius_px, folz_radius_invA, in_field,
                                            orientation_truth, render_labels, shown_reflections)
from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation
from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell, tilt_rotation

GEO = Geometry(box_A=32.0, gpts=256, detector_px=128, thicknesses_A=(100.0,), slice_thickness_A=2.0)
SIM = {"parametrization": "lobato", "projection": "infinite", "label_min_brightness": 1e-4}


def _pattern(structure, R, energy, alpha, t=100.0):
    geo = Geometry(box_A=GEO.box_A, gpts=GEO.gpts, detector_px=GEO.detector_px, thicknesses_A=(t,),
                   slice_thickness_A=2.0)
    return simulate_orientation(build_supercell(structure, R, geo), geo, SIM, [ProbeSetting(0, energy, alpha, 0.0)])


def _truth(structure, zone, R=None, energy=200e3, alpha=2.0, t=100.0, zone_axis=True, sim=None):
    R = align_zone_to_z(structure.lattice.matrix, zone) if R is None else R
    arrays, meta, _ = sim or _pattern(structure, R, energy, alpha, t)
    v0 = mean_inner_potential_V(structure)
    frames, vg, qz = orientation_truth(structure, R, zone if zone_axis else None, meta, arrays, GEO, SIM, v0)
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
    field = refl[refl["in_field"]]  # the zero layer inside the ring, however faint; the truth among it
    assert (field["l"] == 0).all() and (np.hypot(field["qx_invA"], field["qy_invA"]) < r_folz).all()
    assert not (refl["shown"] & ~refl["in_field"]).any()
    assert ((refl["l"] != 0) & (np.hypot(refl["qx_invA"], refl["qy_invA"]) < 1.0)).any()  # there were others
    xy, _ = _found(vg, qz)
    assert len(xy) == len(shown)


def test_shown_means_bright_in_the_pattern_and_whole_disk_on_the_detector():
    sto = srtio3()
    R = tilt_rotation(60.0, 30.0) @ align_zone_to_z(sto.lattice.matrix, (1, 2, 3))  # no low-index zone
    arrays, meta, _ = _pattern(sto, R, 300e3, 3.0, 60.0)
    refl = kinematic_reflections(sto, R, GEO, 300e3, GEO.k_max_corner_invA)
    r = disk_radius_px(GEO, 300e3, 3.0)
    shown = shown_reflections(refl, GEO, 300e3, 3.0, arrays["cbed"][0], arrays["probe"][0], 1e-4)
    xy = refl[["qx_px", "qy_px"]].to_numpy()
    b = disk_brightness(arrays["cbed"][0], arrays["probe"][0], xy, r)
    edge = np.minimum.reduce([xy[:, 0], xy[:, 1], 127 - xy[:, 0], 127 - xy[:, 1]])
    assert 0 < shown.sum() < len(refl)
    assert (b[shown] >= 1e-4).all() and (edge[shown] >= r).all()
    assert ((b < 1e-4) | (edge < r))[~shown].all()
    # in the field: every disk wholly on the detector, however faint; the shown ones are among them
    field = in_field(refl, GEO, 300e3, 3.0)
    assert np.array_equal(field, edge >= r) and not (shown & ~field).any() and (field & ~shown).any()
    # a stricter brightness shows fewer; the rendered peaks never fall below the detection floor
    strict = shown_reflections(refl, GEO, 300e3, 3.0, arrays["cbed"][0], arrays["probe"][0], 1e-2)
    assert strict.sum() < shown.sum() and not (strict & ~shown).any()
    v0 = mean_inner_potential_V(sto)
    vg, _ = render_labels(refl[shown], GEO, v0)
    assert vg.dtype == np.float32 and len(_found(vg, vg)[0]) == shown.sum()


def test_the_label_holds_only_reflections_the_cbed_shows():
    """Multislice of the body-centred tetragonal crystal: every truth reflection is a disk in the CBED,
    and the upper-layer points the old potential-transform label held near the centre are not."""
    bct = Structure(Lattice.tetragonal(4.0, 20.0), ["Ge", "Ge"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    R = align_zone_to_z(bct.lattice.matrix, (0, 0, 1))
    sim = _pattern(bct, R, 200e3, 1.5)
    cbed, old_label = sim[0]["cbed"][0], sim[0]["vg"][0]
    refl, vg, qz, _ = _truth(bct, (0, 0, 1), alpha=1.5, sim=sim)
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
