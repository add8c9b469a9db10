"""Peak extraction and Hungarian matching (fourdcrystal.inference.peaks)."""
import numpy as np
import pytest

from fourdcrystal.evaluation import scoring, tuning
from fourdcrystal.inference import peaks as bragg


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
    p, t = scoring.match(pred, true, tol_px=2.0)
    pairs = set(zip(p.tolist(), t.tolist()))
    # greedy nearest would give pred 0 -> true 1 (1.1 px) and leave true 0 unmatched
    assert pairs == {(0, 0), (1, 1)}
    p, t = scoring.match(pred, true, tol_px=0.5)
    assert set(zip(p.tolist(), t.tolist())) == {(1, 1)}
    assert scoring.match(np.zeros((0, 2)), true, 2.0)[0].size == 0


def test_nms_min_spacing_keeps_only_the_stronger_of_close_peaks():
    P, c = 48, 24
    # a reflection with a weaker side lobe 2 px away (network ringing) and a real neighbour 6 px away
    vg = _gauss(P, [(c, c, 1.0), (36.0, 14.0, 0.3), (38.0, 14.0, 0.2), (36.0, 20.0, 0.25)], sigma=0.6)[None]
    plain = bragg.find_peaks(vg, None, center_px=c, threshold=0.02, exclude_center_px=2.0)
    nms = bragg.find_peaks(vg, None, center_px=c, threshold=0.02, exclude_center_px=2.0, min_spacing_px=3)
    pos = lambda o: sorted(zip(np.round(o["qx_px"]).astype(int).tolist(), np.round(o["qy_px"]).astype(int).tolist()))  # noqa: E731
    assert pos(plain) == [(36, 14), (36, 20), (38, 14)]
    assert pos(nms) == [(36, 14), (36, 20)]  # the lobe at 2 px goes, the neighbour at 6 px stays
    wide = bragg.find_peaks(vg, None, center_px=c, threshold=0.02, exclude_center_px=2.0, min_spacing_px=6)
    assert pos(wide) == [(36, 14)]


def test_tune_threshold_picks_the_f1_maximum_of_real_scoring():
    """True reflections have V_g ≥ 0.1 of the beam, spurious bumps 0.03: the grid value between wins."""
    P, c = 64, 32
    rng = np.random.default_rng(3)
    true_xy = [(c + 8 * h, c + 8 * k) for h in (-3, -2, -1, 1, 2, 3) for k in (-3, 0, 3)]
    fake_xy = [(x + 4, y + 4) for x, y in true_xy[::2]]  # midway: not on a true peak's flank
    vg = _gauss(P, [(c, c, 1.0)] + [(x, y, rng.uniform(0.1, 0.4)) for x, y in true_xy]
                + [(x, y, 0.03) for x, y in fake_xy])[None]
    truth = np.array(true_xy, float)

    def score(t):
        pk = bragg.find_peaks(vg, None, center_px=c, threshold=t, exclude_center_px=2.0, min_spacing_px=2)
        pred = np.c_[pk["qx_px"], pk["qy_px"]]
        m = len(scoring.match(pred, truth, 1.0)[0])
        p, r = m / max(len(pred), 1), m / len(truth)
        return {"f1": 2 * p * r / (p + r) if m else 0.0, "precision": p, "recall": r}

    best, rows = tuning.tune_threshold(score, [0.01, 0.05, 0.2])
    f1 = {r["peak_threshold"]: r["f1"] for r in rows}
    assert best == 0.05 and f1[0.05] == pytest.approx(1.0)
    assert f1[0.01] < 1.0 and f1[0.2] < 1.0  # spurious peaks in / weak true ones out
    assert tuning.tune_threshold(lambda t: {"precision": 0.5, "recall": 0.5}, [0.3, 0.1])[0] == 0.3  # ties: first


def test_tune_threshold_by_f_beta_weighs_precision():
    """The pretrained run's val scores (benchmarks/RESULTS.md, 2026-12-01): F1 picks the lower threshold,
    F_0.5 the one whose precision is higher at less recall; nothing found scores 0."""
    val = {0.02: (0.669, 0.433), 0.05: (0.834, 0.357), 0.1: (0.901, 0.274), 0.9: (float("nan"), 0.0)}

    def score(t):
        return {"precision": val[t][0], "recall": val[t][1]}

    assert tuning.tune_threshold(score, list(val))[0] == 0.02
    best, rows = tuning.tune_threshold(score, list(val), beta=0.5)
    assert best == 0.05
    assert {r["peak_threshold"]: r["f_beta"] for r in rows}[0.9] == 0.0
    assert tuning.f_beta(0.5, 0.5, 0.5) == pytest.approx(0.5)


def test_tune_threshold_ties_within_the_tolerance_go_to_the_highest_threshold():
    """A retrain's val scores (benchmarks/RESULTS.md, 2026-12-04; 30 patterns): F_0.5 0.7587 at 0.02 against
    0.7568 at 0.05 — a coin flip that the tie rule settles towards fewer false vectors; a clear best stays."""
    val = {0.01: (0.858, 0.487), 0.02: (0.878, 0.490), 0.05: (0.956, 0.412), 0.1: (0.955, 0.290)}

    def score(t):
        return {"precision": val[t][0], "recall": val[t][1]}

    assert tuning.tune_threshold(score, list(val), beta=0.5)[0] == 0.02
    assert tuning.tune_threshold(score, list(val), beta=0.5, tie_tolerance=0.005)[0] == 0.05
    assert tuning.tune_threshold(score, list(val), beta=1.0, tie_tolerance=0.005)[0] == 0.02  # F1: 0.628 vs 0.576


def test_plateau_is_no_peak_and_nms_is_greedy_over_peaks_only():
    P, c = 48, 24
    vg = _gauss(P, [(c, c, 1.0)], sigma=0.6)
    vg[30:40, 5:15] = 0.2  # a saturated plateau: no peaks in it
    # a chain A > B > C, 3 px apart: greedy keeps A, drops B, then keeps C (B no longer counts)
    vg += _gauss(P, [(36.0, 30.0, 0.5), (36.0, 33.0, 0.4), (36.0, 36.0, 0.3)], sigma=0.5)
    out = bragg.find_peaks(vg[None], None, center_px=c, threshold=0.02, exclude_center_px=2.0, min_spacing_px=3)
    got = sorted(zip(np.round(out["qx_px"]).astype(int).tolist(), np.round(out["qy_px"]).astype(int).tolist()))
    assert got == [(36, 30), (36, 36)]


def test_nms_equals_the_greedy_definition_on_random_peaks():
    """Batched suppression == visiting peaks strongest first and dropping those within h px
    (Chebyshev) of a kept one, on random clustered peaks in several patterns."""
    import torch

    rng = np.random.default_rng(3)
    B, P, h = 3, 40, 3
    b = torch.from_numpy(rng.integers(0, B, 400))
    ij = rng.integers(0, P, (400, 2))
    flat = np.unique(b.numpy() * P * P + ij[:, 0] * P + ij[:, 1])  # distinct pixels
    b, i, j = (torch.from_numpy(a) for a in (flat // (P * P), flat // P % P, flat % P))
    val = torch.from_numpy(rng.choice([0.1, 0.2, 0.3, 0.5], len(flat)))  # many ties
    keep = bragg._suppress(b, i, j, val, (B, P, P), h).numpy()
    order = sorted(range(len(flat)), key=lambda k: (-float(val[k]), k))
    ref = np.zeros(len(flat), bool)
    for k in order:
        near = ref & (b.numpy() == int(b[k])) & (np.abs(i.numpy() - int(i[k])) <= h) & (np.abs(j.numpy() - int(j[k])) <= h)
        ref[k] = not near.any()
    assert 0 < ref.sum() < len(flat)
    np.testing.assert_array_equal(keep, ref)


def test_window3_is_the_3x3_max_and_sum_up_to_the_edges():
    """The shifted-view 3×3 maximum and sum equal pooling with the pattern's edges left out, for floats
    (max) and the uint8 candidate counts (sum) find_peaks uses."""
    import torch

    v = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 9, 7)).astype(np.float32))
    ref_max = torch.nn.functional.max_pool2d(v[:, None], 3, stride=1, padding=1)[:, 0]
    assert torch.equal(bragg.window3(v, torch.maximum), ref_max)
    counts = (v > 0).to(torch.uint8)
    ref_sum = torch.nn.functional.avg_pool2d(counts[:, None].float(), 3, stride=1, padding=1,
                                             count_include_pad=True, divisor_override=1)[:, 0]
    got = bragg.window3(counts, torch.add)
    assert got.dtype == torch.uint8 and torch.equal(got.float(), ref_sum)
    assert torch.equal(v, torch.from_numpy(np.random.default_rng(1).normal(size=(2, 9, 7)).astype(np.float32)))
