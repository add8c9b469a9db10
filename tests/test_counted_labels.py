"""Training labels counted at the drawn dose (fourdcrystal.learning.counted_labels): a disk that holds too few
electrons above its background leaves the label; bright disks, the direct beam, noise-free samples and high
doses keep the stored label exactly; a film under a disk raises the bar."""
import numpy as np
import pandas as pd
import pytest

from fourdcrystal.geometry import Geometry, electron_wavelength_A
from fourdcrystal.inference import peaks
from fourdcrystal.learning.augment import AugmentParams, Augmenter
from fourdcrystal.learning.counted_labels import CountedLabels
from fourdcrystal.learning.dataset import QuartetDataset
from fourdcrystal.simulation import store as qstore
from fourdcrystal.simulation.labels import counted, disk_radius_px, disk_sums, render_labels

GEO = Geometry(box_A=16.0, gpts=128, detector_px=64, thicknesses_A=(10.0,), slice_thickness_A=2.0)
ENERGY = 200e3
RADIUS_PX = 3.0
ALPHA_MRAD = RADIUS_PX * GEO.dk_invA * electron_wavelength_A(ENERGY) * 1e3
V0 = 10.0
# (qx_px, qy_px, vg_abs, qz_invA, brightness of the disk against the direct beam)
REFLECTIONS = [(48.0, 32.0, 2.0, 0.01, 0.1), (16.0, 32.0, 0.5, -0.02, 0.002), (32.0, 48.0, 1.0, 0.0, 0.02)]


def _disk(center, r=RADIUS_PX, n=64):
    i, j = np.indices((n, n))
    return (np.hypot(i - center[0], j - center[1]) <= r).astype(np.float32)


def _quartet():
    probe = _disk((32, 32))
    cbed = probe.copy()
    for x, y, *_, b in REFLECTIONS:
        cbed += b * _disk((x, y))
    refl = pd.DataFrame([r[:4] for r in REFLECTIONS], columns=["qx_px", "qy_px", "vg_abs", "qz_invA"])
    vg, qz = render_labels(refl, GEO, V0)
    return {"probe": probe, "cbed": cbed, "vg": vg, "qz": qz}


def _table(q_store: str):
    split = pd.DataFrame({"store": [q_store], "index": [0], "energy_eV": [ENERGY], "semiangle_mrad": [ALPHA_MRAD]})
    refl = pd.DataFrame([{"store": q_store, "index": 0, "shown": True, "qx_px": x, "qy_px": y, "vg_abs": v,
                          "qz_invA": z} for x, y, v, z, _ in REFLECTIONS]
                        + [{"store": q_store, "index": 0, "shown": False, "qx_px": 20.0, "qy_px": 20.0, "vg_abs": 3.0,
                            "qz_invA": 0.0}])
    return split, refl


def _found(vg):
    pk = peaks.find_peaks(vg[None], None, center_px=GEO.center_px, threshold=0.005, exclude_center_px=2.0,
                          min_spacing_px=3.0)
    return sorted(zip(np.round(pk["qx_px"]).astype(int).tolist(), np.round(pk["qy_px"]).astype(int).tolist()))


def test_disk_sums_and_the_counting_rule():
    img = _disk((10, 10)) * 2.0
    assert disk_sums(img, np.array([[10.0, 10.0]]), RADIUS_PX)[0] == pytest.approx(2.0 * _disk((10, 10)).sum())
    assert disk_sums(img, np.array([[0.0, 0.0]]), 0.2)[0] == 0.0  # at least the nearest pixel; off the disk
    np.testing.assert_array_equal(counted(np.array([9.0, 8.9, 40.0, 30.0]), np.array([0.0, 0.0, 100.0, 100.0]), 3.0),
                                  [True, False, True, False])
    assert disk_radius_px(GEO, ENERGY, ALPHA_MRAD) == pytest.approx(RADIUS_PX)


def test_low_dose_drops_faint_disks_and_high_dose_keeps_the_stored_label():
    q = _quartet()
    split, refl = _table("s")
    labels = CountedLabels(split, refl, GEO, min_snr=3.0)
    beam_e = 1e3  # electrons in the probe; the 0.002 disk holds 2, the 0.02 one 20, the 0.1 one 100
    vg, qz = labels.label(0, q, q["cbed"], AugmentParams(dose_e=beam_e))
    assert _found(vg) == [(32, 48), (48, 32)]
    assert vg[32, 32] == pytest.approx(V0, rel=1e-6)  # the direct beam stays
    assert qz[48, 32] == pytest.approx(0.01, abs=1e-6)
    assert qz[16, 32] == 0.0
    for params in (AugmentParams(dose_e=1e6), AugmentParams(dose_e=None)):
        vg, qz = labels.label(0, q, q["cbed"], params)
        assert vg is q["vg"] and qz is q["qz"]
    # a film under every disk, 2.5 times the kept faint disk's level: 20 signal vs 3·√(20 + 50) -> dropped
    film = q["cbed"] + 0.05
    vg, _ = labels.label(0, q, film, AugmentParams(dose_e=beam_e))
    assert _found(vg) == [(48, 32)]
    # the drawn constant background counts the same way
    vg, _ = labels.label(0, q, q["cbed"], AugmentParams(dose_e=beam_e, background_const=0.05))
    assert _found(vg) == [(48, 32)]


def test_dataset_counts_each_sample_at_its_own_dose(tmp_path):
    q = _quartet()
    arrays = {k: v[None] for k, v in q.items()}
    qstore.write_shard(tmp_path / "shard", arrays, pd.DataFrame({"crystal_id": ["c"]}),
                       pd.DataFrame({"index": pd.Series(dtype="int64")}), GEO, attrs={"crystal_id": "c", "shard": 0})
    split, refl = _table("shard/quartets.zarr")
    quiet = {"background_const": [0.0, 0.0], "background_diffuse": [0.0, 0.0], "blur_px": [0.0, 0.0],
             "origin_shift_px": 0.0, "ellipticity": 0.0, "hot_pixel_fraction": 0.0, "dead_pixel_fraction": 0.0}
    found = {}
    for dose in (1e3, 1e6):
        aug = Augmenter({**quiet, "dose_e_per_pattern": [dose, dose]})
        ds = QuartetDataset(split, tmp_path, aug, seed=3, counted=CountedLabels(split, refl, GEO, 3.0))
        found[dose] = _found(ds[0]["vg"].numpy())
        plain = QuartetDataset(split, tmp_path, aug, seed=3)
        np.testing.assert_array_equal(ds[0]["cbed"], plain[0]["cbed"])  # the pattern is the same draw
    assert found[1e3] == [(32, 48), (48, 32)]
    assert found[1e6] == [(16, 32), (32, 48), (48, 32)]


def test_counting_without_the_reflections_table_is_a_one_line_error(tmp_path):
    from fourdcrystal.errors import UserError
    from fourdcrystal.learning.dataset import load_data

    q = _quartet()
    qstore.write_shard(tmp_path / "shard", {k: v[None] for k, v in q.items()}, pd.DataFrame({"crystal_id": ["c"]}),
                       pd.DataFrame({"index": pd.Series(dtype="int64")}), GEO, attrs={"crystal_id": "c", "shard": 0})
    manifest = tmp_path / "dataset" / "manifest.parquet"
    manifest.parent.mkdir()
    split, _ = _table("shard/quartets.zarr")
    pd.concat([split.assign(split="train"), split.assign(split="val")]).to_parquet(manifest, index=False)
    cfg = {"train": {"augment": True, "negative_fraction": 0.0, "film_fraction": 0.0, "label_min_snr": 3.0},
           "augment": {}}
    model_cfg = {"stem_stride": 2, "depth": 3}
    with pytest.raises(UserError, match="reflections.parquet does not exist"):
        load_data(cfg, model_cfg, manifest, tmp_path, None, seed=0)
    cfg["train"]["label_min_snr"] = None
    data = load_data(cfg, model_cfg, manifest, tmp_path, None, seed=0)
    assert data.train.counted is None
