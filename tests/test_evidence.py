"""Network vectors are kept only where the measured pattern shows a disk (fourdcrystal.inference.evidence)."""
import numpy as np
import torch

from fourdcrystal.geometry import Geometry
from fourdcrystal.inference.evidence import supported
from fourdcrystal.learning.augment import Augmenter
from fourdcrystal.simulation.examples import srtio3, zone_axis_cbed
from fourdcrystal.simulation.labels import disk_brightness

GEO = Geometry(box_A=32.0, gpts=256, detector_px=128, thicknesses_A=(100.0,), slice_thickness_A=2.0)
RADIUS = 0.0015 / 0.0197 * 32  # 1.5 mrad at 300 kV in px of 1/32 Å⁻¹: disks apart, as for strain mapping


def _check(pattern, xy, centre=(64.0, 64.0)):
    p = torch.from_numpy(np.asarray(pattern, np.float32))[None]
    c = torch.tensor([centre])
    return supported(p, c, np.zeros(len(xy), int), xy[:, 0], xy[:, 1], RADIUS).numpy()


def test_flat_vacuum_and_sparse_counts_support_nothing():
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), GEO, thickness_A=100.0, semiangle_mrad=1.5)
    rng = np.random.default_rng(0)
    xy = rng.uniform(8, 120, size=(400, 2))
    xy = xy[np.hypot(xy[:, 0] - 64, xy[:, 1] - 64) > 3 * RADIUS]  # away from the beam
    vacuum = Augmenter({}).apply(ex["probe"], ex["probe"], rng, dose=1e5)
    assert _check(vacuum, xy).mean() <= 0.02
    # counts as a detector records them (no blur): a few stray electrons are no disk even at 1e3
    sharp = Augmenter({"blur_px": [0.0, 0.0]}).apply(ex["probe"], ex["probe"], rng, dose=1e3)
    assert _check(sharp, xy).mean() <= 0.02
    sparse = np.zeros((128, 128))
    sparse[64, 64] = 50.0
    sparse[30, 30] = 1.0  # one stray count is no disk
    assert not _check(sparse, np.array([[30.0, 30.0]])).any()


def test_reflections_of_a_crystal_are_supported():
    # (overlapping disks, α|g| > half the spacing, leave no valley around a disk: the check then drops
    # real reflections too — a known limit, measured in benchmarks/bench_accuracy.py)
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), GEO, thickness_A=100.0, semiangle_mrad=1.5)
    t = ex["truth"]
    t = t[np.hypot(t["qx_px"] - 64, t["qy_px"] - 64) < 55]
    # the reflections the truth counts (fourdcrystal.simulation.labels: ≥ 1e-3 of the beam), with margin
    bright = disk_brightness(ex["cbed"], ex["probe"], t[["qx_px", "qy_px"]].to_numpy(), RADIUS) >= 2e-3
    xy = t[["qx_px", "qy_px"]].to_numpy()[bright]
    assert len(xy) >= 8
    assert _check(ex["cbed"], xy).all()  # noise-free
    noisy = Augmenter({}).apply(ex["cbed"], ex["probe"], np.random.default_rng(1), dose=1e5)
    assert _check(noisy, xy).mean() >= 0.9
    # half way between two reflections there is no disk
    mid = (xy[:-1] + xy[1:]) / 2
    mid = mid[np.min(np.hypot(mid[:, None, 0] - t["qx_px"].to_numpy()[None], mid[:, None, 1] - t["qy_px"].to_numpy()[None]),
                     axis=1) > 2 * RADIUS]
    mid = mid[np.hypot(mid[:, 0] - 64, mid[:, 1] - 64) > 2 * RADIUS]  # nor the direct beam
    if len(mid):
        assert _check(ex["cbed"], mid).mean() <= 0.2
