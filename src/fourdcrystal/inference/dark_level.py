"""A detector's dark level left in the patterns: found where it is unambiguous, subtracted where it is given.

A camera adds a constant to every pixel (its dark level, pedestal or offset) whether or not an electron
arrived; acquisition software usually subtracts it, but a file may hold the patterns as read out. Every
check of `predict` counts a disk's electrons against the background about it, and a pedestal counts as
background without being one: on bench_accuracy's 200 kV / 2 mrad set at 1e3 e⁻ per pattern a pedestal of one
electron per pixel halved the network's F1 (0.58 → 0.28), and on one SrTiO3 scan there two electrons per pixel left
the direct beam alone where 9 vectors per pattern were found without it (benchmarks/RESULTS.md, "A detector's dark
level").

Where it is unambiguous the dark level is found in the scan (``exact_dark_level``): a counting detector's
pixel that received no electron reads exactly its dark level, so in a pattern where at least
``EXACT_MIN_SHARE`` of the pixels read one same positive value and (but for a few defective ones) none reads
lower, that value is an offset. No shot noise makes it: a Poisson background whose lowest value is positive has
few pixels at it (at 15 electrons per pixel about two of 65,536 read its lowest value, 2). An integrating detector adds read
noise to its dark level, and then a flat pedestal under noise and a dense background of electrons are told
apart only by the size of one electron, which a dense pattern does not show (measured: the diffuse backgrounds of
2–13 e⁻ per pixel of patterns at 1e5–1e6 e⁻ passed the statistical tests of the floor tried); there the user gives
the level (``predict --dark-level``), and ``floor_note`` says when the patterns look as if one were left in.
A vacuum probe shows its own: off its disk no electron arrives (``probe_floor``).
"""
from __future__ import annotations

import numpy as np

from fourdcrystal.errors import UserError

# a pattern's dark level is found where at least this share of its pixels read one positive value (its median then)
# exactly ...
EXACT_MIN_SHARE = 0.5
# ... and at most this share below it (defective pixels: dead rows the bad-pixel search did not fill, one of 96 here;
# a dead pixel repaired reads its neighbours' mean, which may round below them) ...
EXACT_MAX_BELOW = 0.02
# ... in at least this share of the sampled patterns, all at one value (a detector's constant); values within this
# fraction of each other are one (a repaired pixel's rounding)
EXACT_MIN_PATTERNS = 0.5
EXACT_RTOL = 1e-6
# the note: every sampled pattern's darkest pixels (this quantile) read above zero
FLOOR_QUANTILE = 1e-3
# a vacuum probe's median pixel is its dark level where it is at least this fraction of its brightest pixel (below
# it moves nothing: the disk's radius is read at half its maximum)
PROBE_FLOOR_MIN = 1e-3
# a level given may exceed the patterns' median pixel by this many standard deviations of the pixels below it (read
# noise about a pedestal puts half of the unexposed pixels below it)
GIVEN_MAX_SIGMA = 3.0


def exact_dark_level(samples: np.ndarray) -> float | None:
    """The dark level a counting detector left in ``samples`` (n, Qx, Qy) as recorded: the one positive value that
    at least ``EXACT_MIN_SHARE`` of the pixels read exactly (each pattern's median, then), with at most
    ``EXACT_MAX_BELOW`` of them below it, in at least ``EXACT_MIN_PATTERNS`` of the patterns; None where there is
    none."""
    flat = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if not len(flat):
        return None
    level = np.median(flat, axis=1)
    tol = EXACT_RTOL * np.abs(level)[:, None]
    share = (np.abs(flat - level[:, None]) <= tol).mean(axis=1)
    below = (flat < level[:, None] - tol).mean(axis=1)
    offset = (level > 0) & (share >= EXACT_MIN_SHARE) & (below <= EXACT_MAX_BELOW)
    if offset.sum() < EXACT_MIN_PATTERNS * len(flat):
        return None
    found = level[offset]
    if np.ptp(found) > EXACT_RTOL * found.max():  # not one constant of the detector
        return None
    return float(np.median(found))


def floor_note(samples: np.ndarray) -> dict | None:
    """Where every sampled pattern reads above zero in its darkest pixels (its ``FLOOR_QUANTILE`` quantile): the
    smallest of those levels (``floor``) and the median pixel (``median``: an unexposed pixel's value where most
    pixels are unexposed). A dark level left in reads so — or a dense background at a high dose, which
    ``predict``'s note leaves the user to tell. None where a pattern reads zero or below."""
    flat = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    if not len(flat):
        return None
    floor = np.quantile(flat, FLOOR_QUANTILE, axis=1)
    if not bool((floor > 0).all()):
        return None
    return {"floor": float(floor.min()), "median": float(np.median(flat))}


def check_given(level: float, samples: np.ndarray) -> None:
    """A dark level the user gave must be one the patterns read: no more than their median pixel (most pixels of a
    pattern are unexposed, reading the dark level, or brighter) beyond ``GIVEN_MAX_SIGMA`` of the spread of the
    pixels below that median (an unexposed pixel's read noise)."""
    flat = np.asarray(samples, dtype=np.float64).ravel()
    median = float(np.median(flat))
    below = flat[flat < median] - median
    spread = float(np.sqrt(np.mean(below ** 2))) if len(below) else 0.0
    if not np.isfinite(level) or level < 0:
        raise UserError(f"--dark-level {level:g} is not a non-negative number of counts",
                        "pass the value an unexposed pixel reads (a dark frame's mean), auto, or 0")
    if level > median + GIVEN_MAX_SIGMA * spread:
        raise UserError(f"--dark-level {level:g} is above what the patterns' pixels read (their median {median:.6g}, "
                        f"{spread:.3g} below it): most of every pattern would read below zero",
                        "pass the value an unexposed pixel reads (a dark frame's mean), or auto")


def probe_floor(probe: np.ndarray) -> float:
    """The dark level a vacuum probe was recorded with: its median pixel — off the bright-field disk, where no electron
    arrives in vacuum — where the disk covers less than half of the detector and that level is at least
    ``PROBE_FLOOR_MIN`` of its brightest pixel; else 0 (a probe saved without one, simulated or normalised, or a disk
    that fills the detector). Left in, it made the whole detector the disk (its radius is read at half the maximum):
    a probe with a pedestal of twice its disk's counts gave a scan 10 vectors where the clean probe gave 126."""
    img = np.asarray(probe, dtype=np.float64)
    floor, peak = float(np.median(img)), float(img.max())
    if not (peak > 0 and floor >= PROBE_FLOOR_MIN * peak):
        return 0.0
    return floor if float((img > 0.5 * (img.min() + peak)).mean()) < 0.5 else 0.0
