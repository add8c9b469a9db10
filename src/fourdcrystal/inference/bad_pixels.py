"""Detector pixels that do not record what fell on them, found in the scan itself and filled in.

Two defects of real pixelated detectors reach `predict` uncorrected, and each broke it where it crossed
the direct beam (a GaN scan at 1e5 e⁻; benchmarks/RESULTS.md, "A quad detector's cross"):

* **dead lines**: a row or column that reads zero in every pattern (a dead column, a chip gap written as
  0, a masked gap written as NaN and read as 0). Through the beam it splits the disk, and the probe made
  from the scan shrank to half its radius;
* **lines of another gain**: a Medipix/Timepix quad detector (Merlin, 512 × 512 px) reads its four chips
  as one image, and the pixels along the chip edges are 2–3 × wider, so the cross through the detector's
  centre counts 2–3 × too much. Uncorrected, it outshone the beam.

The usual remedy, a mask of bad pixels whose values are replaced by their neighbours' (py4DSTEM's
``DataCube.median_filter_masked_pixels``, pixStem's ``correct_bad_pixels``), is what this module does,
with the mask found in the data (``stripes``): a band of 1–3 detector rows (or columns) is bad where,
wherever the pattern is bright and flat across it (the two rows flanking it on either side agree within
``STRIPE_FLAT``: inside the beam's disk, a large disk), it holds one steady multiple of them that differs
from 1 by ``STRIPE_MIN_GAIN`` or more, beyond the sampled patterns' noise. A row of diffraction disks is not
steady: its ratio is large on the disks and 1 between them. Rows are searched first, then columns with the
rows' gains divided out (a dead row left out), then rows again; a band through the detector's middle, where
a quad detector's chips meet, needs fewer flat pixels (``STRIPE_MIN_PIXELS_MIDDLE``). A user's own mask
(``predict --bad-pixels FILE``) is added to what is found. Each bad pixel then reads as the
inverse-distance-weighted mean of the nearest good pixels in the 8 directions (``BadPixels.repair``), in
every pattern and in a probe recorded on the same detector.

Single dead or hot pixels are not searched for: a zero pixel beside a disk's edge looks like a dead one
in a noise-free or low-dose pattern, the network was trained with both kinds (``learning.augment``), the
evidence check leaves hot pixels out (``evidence.disk_contrast``), and the low-dose lattice fit sets single-pixel
spikes aside (``refine.without_spikes``); a mask given by the user covers them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourdcrystal.errors import UserError

# A band of at most STRIPE_MAX_WIDTH_PX rows (a quad detector's cross is 2–3 px wide) is compared with the
# two rows on either side of it, at the pixels where those four agree within STRIPE_FLAT and each holds
# ≥ STRIPE_MIN_ELECTRONS summed over the sampled patterns (≈ 10 % shot noise); at least STRIPE_MIN_PIXELS
# such pixels, and STRIPE_STEADY of them sharing one ratio that differs from 1 by ≥ STRIPE_MIN_GAIN.
STRIPE_MAX_WIDTH_PX = 3
STRIPE_FLAT = 1.25
STRIPE_MIN_ELECTRONS = 100.0
STRIPE_MIN_PIXELS = 5
# ... or STRIPE_MIN_PIXELS_MIDDLE for a band through the detector's middle, where a quad detector's chips
# meet: there a beam of 3–4 px radius (200 kV, 2 mrad at 0.02 Å⁻¹/px) is flat across the band and its
# flanks at 3 pixels only
STRIPE_MIN_PIXELS_MIDDLE = 3
# ... and the flanks at least STRIPE_MIN_LEVEL of the STRIPE_BRIGHT_RANK-th brightest pixel (the beam's level,
# whatever hot pixels there are): the beam and bright disks, not a noisy background where four pixels agree by
# chance (bench_accuracy's read-noise backgrounds gave single rows at 5 of 6 such pixels)
STRIPE_MIN_LEVEL = 0.05
STRIPE_BRIGHT_RANK = 32
STRIPE_STEADY = 0.8
STRIPE_MIN_GAIN = 0.4
# ... each steady pixel off its flanks by at least STRIPE_MIN_Z standard deviations of the sampled patterns'
# spread: four noisy background pixels agree, and a fifth differs from them, by chance (bench_accuracy's
# 80 kV / 1 mrad patterns, whose sub-pixel beam leaves the noisy background among the brightest pixels)
STRIPE_MIN_Z = 5.0
DEAD_GAIN = 0.2  # a line holding less than this of its flanks is dead: left out, not divided by its gain


@dataclass
class BadPixels:
    """A detector's bad pixels (``mask``, True = bad) and how each was found (``found``: kind -> count).
    ``electron``: one electron's value where the scan holds counts (``evidence.is_counts``), else None."""

    mask: np.ndarray
    found: dict = field(default_factory=dict)
    electron: float | None = None

    def __post_init__(self):
        self.mask = np.asarray(self.mask, dtype=bool)
        self._idx, self._nbr, self._w = _repair_plan(self.mask)

    @property
    def n(self) -> int:
        return int(self.mask.sum())

    def with_pixels(self, pixels, kind: str) -> "BadPixels":
        """These bad pixels and ``pixels`` ((row, column) each), counted as ``kind`` in ``found``."""
        mask = self.mask.copy()
        for i, j in pixels:
            mask[i, j] = True
        return BadPixels(mask, {**self.found, kind: self.found.get(kind, 0) + int(mask.sum() - self.mask.sum())},
                         self.electron)

    def repair(self, patterns: np.ndarray) -> np.ndarray:
        """``patterns`` (…, Qx, Qy) with every bad pixel replaced by its good neighbours' weighted mean (in place
        where ``patterns`` is a writable float array, returned either way)."""
        if not len(self._idx):
            return patterns
        if not patterns.flags.writeable:
            patterns = patterns.copy()
        flat = patterns.reshape(-1, self.mask.size)
        filled = (flat[:, self._nbr] * self._w).sum(axis=-1)
        if self.electron:
            # a counted scan stays counts: its filled pixels as whole electrons. As fractions they made a
            # Merlin-like quad cross (1,020 pixels) read as no counts, and one electron as ~4 of them, so a
            # 1e5 e⁻ pattern counted as a low-dose one (benchmarks/RESULTS.md, "A counted disk's brightness")
            filled = np.round(filled / self.electron) * self.electron
        flat[:, self._idx] = filled
        return flat.reshape(patterns.shape)


def _repair_plan(mask: np.ndarray):
    """Flat indices of the bad pixels, of the good ones each is filled from, and their weights (rows sum to 1):
    the nearest good pixel in each of the 8 directions along the detector's rows, columns and diagonals,
    weighted by 1/distance, so that a line's pixels are interpolated across it (exactly, for a linear slope)."""
    bad = np.flatnonzero(mask)
    if not len(bad):
        return bad, np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32)
    if mask.all():
        raise UserError("every detector pixel is marked bad", "pass a bad-pixel mask that is True only on bad pixels")
    Qx, Qy = mask.shape
    bi, bj = np.unravel_index(bad, mask.shape)
    dirs = [(-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (1, 1), (-1, 1), (1, -1)]
    nbr = np.zeros((len(bad), len(dirs)), np.int64)
    w = np.zeros((len(bad), len(dirs)), np.float64)
    for d, (di, dj) in enumerate(dirs):
        todo = np.arange(len(bad))
        for step in range(1, max(Qx, Qy)):
            i, j = bi[todo] + step * di, bj[todo] + step * dj
            inside = (i >= 0) & (i < Qx) & (j >= 0) & (j < Qy)
            todo, i, j = todo[inside], i[inside], j[inside]
            good = ~mask[i, j]
            nbr[todo[good], d] = i[good] * Qy + j[good]
            w[todo[good], d] = 1.0 / (step * np.hypot(di, dj))
            todo = todo[~good]
            if not len(todo):
                break
    for r in np.nonzero(w.sum(axis=1) == 0)[0]:  # every ray meets only bad pixels: the nearest good one
        gi, gj = np.nonzero(~mask)
        k = np.argmin((gi - bi[r]) ** 2 + (gj - bj[r]) ** 2)
        nbr[r, 0], w[r, 0] = gi[k] * Qy + gj[k], 1.0
    return bad, nbr, (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def electron_value(samples: np.ndarray) -> float:
    """One electron's value in the samples: the smallest positive pixel (a counting detector's 1, a gain-scaled
    count), at most 1. For integrating detectors it is far below an electron, which only lowers the level
    a stripe's flanks must reach."""
    pos = samples[samples > 0]
    return float(min(1.0, pos.min())) if pos.size else 1.0


def stripes(total: np.ndarray, noise: np.ndarray, floor: float, skip: np.ndarray | None = None) -> dict[int, float]:
    """Rows (axis 0) in bands of 1 to STRIPE_MAX_WIDTH_PX that hold a steady multiple ≠ 1 of the two rows
    flanking the band on each side, where those four agree and reach ``floor`` (see the module docstring),
    as {row: that multiple}; ``noise``: the standard deviation of each pixel of ``total``. The columns
    ``skip`` (dead ones found already: they cross every row) are left out."""
    if skip is not None:
        total, noise = total[:, ~skip], noise[:, ~skip]
    Q = total.shape[0]
    out: dict[int, float] = {}
    for w in range(1, STRIPE_MAX_WIDTH_PX + 1):
        k0s = np.arange(2, Q - w - 1)
        rows = np.stack([k0s - 2, k0s - 1, k0s + w, k0s + w + 1], axis=1)  # (K, 4) flanking rows per band
        lo, hi = total[rows].min(axis=1), total[rows].max(axis=1)  # (K, Qy)
        flat_all = (lo * STRIPE_FLAT >= hi) & (lo >= floor)
        middle = np.abs(k0s + (w - 1) / 2 - (Q - 1) / 2) <= 1.0
        enough = flat_all.sum(axis=1) >= np.where(middle, STRIPE_MIN_PIXELS_MIDDLE, STRIPE_MIN_PIXELS)
        for k0, fl, flat in zip(k0s[enough], rows[enough], flat_all[enough]):
            if any(k in out for k in range(k0, k0 + w)):
                continue
            side = total[fl][:, flat].mean(axis=0)
            side_var = (noise[fl][:, flat] ** 2).mean(axis=0) / len(fl)
            gains = [_steady_gain(total[k, flat], side, np.sqrt(noise[k, flat] ** 2 + side_var))
                     for k in range(k0, k0 + w)]
            if all(g is not None for g in gains):
                out.update(zip(range(k0, k0 + w), gains))
    return out


def _steady_gain(row: np.ndarray, side: np.ndarray, sigma: np.ndarray) -> float | None:
    """The multiple of ``side`` that STRIPE_STEADY of the pixels ``row`` hold (within STRIPE_FLAT; below
    DEAD_GAIN, within 0.05), if it differs from 1 by STRIPE_MIN_GAIN or more and each of them from ``side`` by
    STRIPE_MIN_Z ``sigma``; else None."""
    ratio = row / side
    m = float(np.median(ratio))
    if abs(m - 1.0) < STRIPE_MIN_GAIN:
        return None
    steady = (np.abs(ratio - m) <= 0.05) if m < DEAD_GAIN else ((ratio <= m * STRIPE_FLAT) & (ratio * STRIPE_FLAT >= m))
    significant = np.abs(row - side) >= STRIPE_MIN_Z * sigma
    return m if (steady & significant).mean() >= STRIPE_STEADY else None


def find_bad_pixels(samples: np.ndarray, user_mask: np.ndarray | None = None) -> BadPixels:
    """The bad pixels of the detector that recorded ``samples`` (n, Qx, Qy), plus ``user_mask``."""
    s = np.asarray(samples, dtype=np.float64)
    total = np.clip(s, 0, None).sum(axis=0)
    one_e = electron_value(s)
    # each summed pixel's noise: its spread over the samples (which the patterns' own changes only raise);
    # one pattern alone: Poisson in electrons of ``one_e``
    noise = s.std(axis=0, ddof=1) * np.sqrt(len(s)) if len(s) > 1 else np.sqrt(total * one_e)
    floor = max(STRIPE_MIN_ELECTRONS * one_e,
                STRIPE_MIN_LEVEL * np.sort(total.ravel())[-min(total.size, STRIPE_BRIGHT_RANK)])
    given = np.zeros(total.shape, bool) if user_mask is None else np.asarray(user_mask, bool)
    found: list[dict[int, float]] = [{}, {}]  # rows, columns: {index: gain}
    for axis in (0, 1, 0):  # rows; columns across those rows; rows the columns hid
        t, sd = (total, noise) if axis == 0 else (total.T, noise.T)
        t, sd = t.copy(), sd.copy()
        dead = np.zeros(t.shape[1], bool)
        for k, g in found[1 - axis].items():  # lines found across: a gain divided out, a dead one left out
            if g < DEAD_GAIN:
                dead[k] = True
            else:
                t[:, k] /= g
                sd[:, k] /= g
        found[axis].update(stripes(t, sd, floor, skip=dead))
    lines = np.zeros(total.shape, bool)
    lines[list(found[0]), :] = True
    lines[:, list(found[1])] = True
    counts = {"in dead rows or columns, or ones of another gain": int(lines.sum()),
              "from the given mask": int((given & ~lines).sum())}
    mask = given | lines
    return BadPixels(mask, counts, one_e if _holds_counts(s, mask, one_e) else None)


def _holds_counts(samples: np.ndarray, mask: np.ndarray, one_e: float) -> bool:
    """Whether every sampled pattern holds counts of ``one_e`` (``evidence.is_counts``) on its good pixels (a
    line of 2.5 × wider pixels holds half counts)."""
    import torch

    from fourdcrystal.inference.evidence import is_counts

    img = torch.from_numpy(np.where(mask, 0.0, samples).astype(np.float32))
    return bool(is_counts(img, torch.full((len(img),), float(one_e))).all())


def read_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A user's bad-pixel mask (a 2-D array of the detector's shape; nonzero / True = bad)."""
    from fourdcrystal.inference.datacube_io import open_array

    cube = open_array(path, None, ndim=2)
    try:
        a = np.asarray(cube.array[...])
    finally:
        cube.close()
    a = a.reshape(tuple(n for n in a.shape if n > 1) or a.shape)
    if a.shape != tuple(shape):
        raise UserError(f"bad-pixel mask {path} is {a.shape}, the patterns are {tuple(shape)}",
                        "pass a 2-D mask of the detector's shape (nonzero = bad pixel)")
    return np.asarray(a != 0)  # NaN counts as bad too
