"""The py4DSTEM baseline finds the disks of a synthetic pattern within 0.5 px."""
import numpy as np

from fourdcrystal.evaluation import tuning
from fourdcrystal.inference import classical


def _disk(shape, c, r=3.0):
    i, j = np.indices(shape)
    return 1.0 / (1.0 + np.exp((np.hypot(i - c[0], j - c[1]) - r) / 0.4))


def test_classical_finds_synthetic_disks_subpixel():
    Q = 64
    probe = _disk((Q, Q), (32.0, 32.0))
    rng = np.random.default_rng(1)
    centres = [(31.6, 32.3)] + [(31.6 + 9.0 * h + 1.7 * k, 32.3 - 1.7 * h + 9.0 * k) for h, k in
                                [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (2, 0), (-1, 1)]]
    dp = sum((1.0 if n == 0 else 0.3) * _disk((Q, Q), c) for n, c in enumerate(centres))
    dp = dp + rng.normal(0, 0.002, dp.shape)
    df = classical.find_disks(np.stack([dp, dp[::-1]]), probe, {"minPeakSpacing": 5, "edgeBoundary": 2,
                                                               "minRelativeIntensity": 0.05})
    for n, cs in enumerate([centres, [(Q - 1 - x, y) for x, y in centres]]):
        got = df[df.pattern == n][["qx_px", "qy_px"]].to_numpy()
        assert len(got) == len(cs)
        for x, y in cs:
            assert np.min(np.hypot(got[:, 0] - x, got[:, 1] - y)) < 0.5


def test_tune_picks_best_on_score():
    seen = []

    def score(s):
        seen.append(s["minRelativeIntensity"])
        return {"f1": 1.0 - abs(s["minRelativeIntensity"] - 0.01) - 0.1 * s["sigma"] - 0.1 * (1 - s["corrPower"])}

    grid = {"minRelativeIntensity": [0.002, 0.005, 0.01, 0.02, 0.05], "sigma": [0.0, 1.0], "corrPower": [1.0, 0.5]}
    best, table = tuning.tune_classical(score, None, grid)
    assert best["minRelativeIntensity"] == 0.01 and best["sigma"] == 0.0 and best["corrPower"] == 1.0
    assert len(table) == len(seen) == 5 * 2 * 2
