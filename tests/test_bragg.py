"""Peak extraction and Hungarian matching (fourdcrystal.bragg)."""
import numpy as np
import pytest

from fourdcrystal import bragg


def _gauss(P, peaks, sigma=0.9):
    i, j = np.indices((P, P))
    return sum(a * np.exp(-((i - x) ** 2 + (j - y) ** 2) / (2 * sigma ** 2)) for x, y, a in peaks)


def test_subpixel_peaks_and_threshold_relative_to_direct_beam():
    P, c = 48, 24
    peaks = [(c, c, 1.0), (30.3, 17.6, 0.2), (12.7, 33.4, 0.05), (40.1, 40.45, 0.01)]
    vg = np.stack([_gauss(P, peaks), 3.0 * _gauss(P, peaks)])  # scale-free: same peaks in both
    i = np.indices((P, P))[0]
    qz = np.stack([0.01 * (i - c), -0.01 * (i - c)]).astype(np.float32)
    out = bragg.find_peaks(vg, qz, center_px=c, threshold=0.02)
    for b in (0, 1):
        sel = out["pattern"] == b
        got = np.c_[out["qx_px"][sel], out["qy_px"][sel]]
        assert len(got) == 3  # the 0.01 peak is below 2 % of the direct beam
        for x, y, _ in peaks[:3]:
            assert np.min(np.hypot(got[:, 0] - x, got[:, 1] - y)) < 0.1
        k = np.argmin(np.hypot(got[:, 0] - 30.3, got[:, 1] - 17.6))
        assert out["qz"][sel][k] == pytest.approx((1 if b == 0 else -1) * 0.01 * 6.3, abs=2e-3)
    ex = bragg.find_peaks(vg, None, center_px=c, threshold=0.005, exclude_center_px=2.0)
    assert len(ex["pattern"]) == 6 and np.all(np.isnan(ex["qz"]))


def test_match_is_one_to_one_and_respects_radius():
    true = np.array([[10.0, 10.0], [10.0, 12.5], [30.0, 30.0]])
    pred = np.array([[10.0, 11.4], [10.2, 12.4], [50.0, 50.0]])
    p, t = bragg.match(pred, true, tol_px=2.0)
    pairs = set(zip(p.tolist(), t.tolist()))
    # greedy nearest would give pred 0 -> true 1 (1.1 px) and leave true 0 unmatched
    assert pairs == {(0, 0), (1, 1)}
    p, t = bragg.match(pred, true, tol_px=0.5)
    assert set(zip(p.tolist(), t.tolist())) == {(1, 1)}
    assert bragg.match(np.zeros((0, 2)), true, 2.0)[0].size == 0
