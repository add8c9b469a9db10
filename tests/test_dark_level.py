"""A detector's dark level left in the patterns (fourdcrystal.inference.dark_level): found only where no shot noise
can make it — most pixels at one positive value, none lower —, and the floor no pixel reads below, for the note."""
from __future__ import annotations

import numpy as np

from fourdcrystal.inference.dark_level import exact_dark_level, floor_note, probe_floor


def _sparse_counts(rng, n=8, shape=(96, 96), electrons=300):
    """Counting-detector frames of ``electrons`` each, most pixels unexposed (zero)."""
    frames = np.zeros((n, *shape), np.float32)
    for f in frames:
        np.add.at(f, tuple(rng.integers(0, shape[0], (2, electrons))), 1.0)
    return frames


def test_a_counting_detectors_offset_is_found_where_shot_noise_cannot_make_it():
    rng = np.random.default_rng(0)
    counts = _sparse_counts(rng)
    assert exact_dark_level(counts) is None  # zero-based counts: none
    assert exact_dark_level(counts + 7) == 7.0
    assert exact_dark_level(counts * 20 + 100) == 100.0  # in any gain
    # a dense background of electrons has few pixels at its lowest value, whatever it is
    dense = rng.poisson(15.0, (8, 96, 96)).astype(np.float32)
    assert dense.min() > 0 and exact_dark_level(dense) is None
    # a noise-free pattern's smooth positive background: no value is shared
    i, j = np.indices((96, 96))
    smooth = np.exp(-np.hypot(i - 48, j - 48) / 30.0)[None].repeat(4, 0).astype(np.float32)
    assert exact_dark_level(smooth) is None


def test_a_repaired_dead_pixel_or_a_minority_of_frames_does_not_hide_or_fake_it():
    rng = np.random.default_rng(1)
    frames = _sparse_counts(rng) + 7
    frames[:, 10, 10] = 7 * (1 - 1e-7)  # a dead pixel read as its neighbours' mean, rounded below them
    frames[:, 20, :] = 0  # a dead row the bad-pixel search did not fill
    assert exact_dark_level(frames) == 7.0
    mixed = frames.copy()
    mixed[:5] -= 7  # most frames without it: no detector constant
    assert exact_dark_level(mixed) is None
    mixed = frames.copy()
    mixed[::2] += 1  # two levels: no one constant
    assert exact_dark_level(mixed) is None


def test_the_floor_of_an_integrating_detectors_pedestal_is_noted_and_a_subtracted_one_not():
    rng = np.random.default_rng(2)
    counts = _sparse_counts(rng) * 20
    noise = rng.normal(0.0, 3.0, counts.shape)
    note = floor_note(counts + 100 + noise)
    assert 85 < note["floor"] < 95 and 99 < note["median"] < 101
    assert exact_dark_level(np.rint(counts + 100 + noise)) is None  # under read noise: not found, only noted
    assert floor_note(counts + noise) is None  # dark-subtracted: reads below zero
    assert floor_note(counts) is None  # counts: zeros


def test_a_vacuum_probe_gives_up_the_dark_level_it_was_recorded_with_and_a_clean_probe_nothing():
    i, j = np.indices((64, 64))
    disk = (np.hypot(i - 32, j - 32) < 6).astype(np.float32) * 500
    assert probe_floor(disk + 100) == 100.0
    assert probe_floor(disk / disk.max() + 1e-6) == 0.0  # a simulated or normalised probe's tail moves nothing
    assert probe_floor(np.where(np.hypot(i - 32, j - 32) < 40, 500, 100).astype(np.float32)) == 0.0  # a disk filling it
