"""The detector's descan found in a scan's sampled patterns and taken out (fourdcrystal.inference.descan)."""
from __future__ import annotations

import numpy as np

from fourdcrystal.inference.descan import Descan, fit_descan, moved_back
from test_predict import Q, _disk, _lattice


def _samples(Rx, Ry, per_rx, per_ry, jitter=1.5, seed=0):
    """(patterns, positions): a lattice of disks on a beam moving per scan row / column (zero at the middle)."""
    rng = np.random.default_rng(seed)
    pats, pos = [], []
    for rx in range(Rx):
        for ry in range(Ry):
            c = np.array([Q / 2, Q / 2]) + rng.uniform(-jitter, jitter, 2) + np.array(per_rx) * (rx - (Rx - 1) / 2) \
                + np.array(per_ry) * (ry - (Ry - 1) / 2)
            dp = _disk((Q, Q), c) + sum(0.3 * np.exp(-np.hypot(*q)) * _disk((Q, Q), c + q / 0.05)
                                        for q in _lattice(0.2))
            pats.append(rng.poisson(dp * 200.0))
            pos.append((rx, ry))
    return np.array(pats, np.float32), np.array(pos)


def test_a_plane_of_beam_shifts_is_found_and_a_still_beam_left_alone():
    pats, pos = _samples(5, 6, (3.0, -1.0), (0.5, 2.0))
    d = fit_descan(pats, pos, (5, 6))
    assert d is not None
    np.testing.assert_allclose(d.coef[1:], [[3.0, -1.0], [0.5, 2.0]], atol=0.3)
    np.testing.assert_allclose(d.shift_px(2, 2.5), [0, 0], atol=1e-9)  # zero at the scan's middle
    still, pos = _samples(5, 6, (0, 0), (0, 0))
    assert fit_descan(still, pos, (5, 6)) is None  # ±1.5 px of jitter: the beam search reaches it
    assert fit_descan(pats[:5], pos[:5], (5, 6)) is None  # too few samples


def test_patterns_are_moved_back_by_whole_pixels_and_a_bins_move_is_its_members_mean():
    img = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    out = moved_back(img, np.array([[2, -1]]))
    np.testing.assert_array_equal(out[0, :4, 1:], img[0, 2:, :5])  # out[x] = in[x + shift]
    assert (out[0, 4:] == 0).all() and (out[0, :, 0] == 0).all()
    d = Descan(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]]), n=2)  # 1 px per logical row, binned 2 × 2
    # recorded rows 0–3 lie at logical -0.25, 0.25, 0.75, 1.25
    np.testing.assert_array_equal(d.recorded_px(np.array([0, 1, 2, 3]), np.zeros(4, int))[:, 0], [0, 0, 1, 1])
    np.testing.assert_allclose(d.logical_px(np.array([0, 1]), np.array([0, 0]))[:, 0], [0.0, 1.0])
