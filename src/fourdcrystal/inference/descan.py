"""The detector's descan: a direct beam that wanders across the detector as the probe scans, found in the scan
and taken out of every pattern before detection.

A scan coil moves the probe over the specimen and, unless the descan coils undo it exactly, the diffraction
pattern with it: over a large field of view the beam drifts tens of pixels across the detector, in a plane over
the scan positions (py4DSTEM fits that plane, ``fit_origin``, for the same reason). `predict` looks for each
pattern's beam within ``ModelInput.radius_px`` (twice the disk's radius) of the scan's mean beam; a beam further off
was not found, and its pattern was measured from the wrong point: on a 6 × 6 SrTiO3 scan at 200 kV / 2 mrad (256 px,
5 px disks) whose beam moved ±25 px across it, three of its four corners gave no vector at all, and without a vacuum
probe the scan's smeared median made a 23 px "disk" and every pattern gave its beam alone (benchmarks/RESULTS.md,
"A beam that wanders across the detector").

Each sampled pattern's shift is its cross-correlation maximum against the middle sample (both clipped at their
``CLIP_PERCENTILE``, or that of their lit pixels: the beam and the bright disks weigh alike, and a periodic
lattice's aliases do not win, as they did for a phase correlation); a plane over the scan positions is fitted to
them by least squares, then again without the samples more than ``OUTLIER_PX`` off it (a pattern whose brightest
feature is another), and none is taken where fewer than ``MIN_INLIER_SHARE`` of the samples lie on it. Where the
plane moves the beam by ``MIN_RANGE_PX`` or more over the scan, every recorded pattern is moved back by the plane's
whole pixels (no interpolation: its values stay as recorded; the pixels moved in read zero), so the beam search,
the mean pattern and the synthesized probe see a still beam; the vectors, measured from each pattern's own beam, do
not change, and their detector pixels are reported where the detector recorded them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the patterns are compared clipped at this percentile of their pixels (the bright disks' level), or of the pixels an
# electron reached where that is higher (at 1e3 e⁻ the 99.5th percentile of a 256² pattern is an empty pixel)
CLIP_PERCENTILE = 99.5
SPARSE_CLIP_PERCENTILE = 90.0
# the plane's fit leaves out the samples further than this off its first fit (px)
OUTLIER_PX = 3.0
# a plane that moves the beam by less than this over the scan (px, its largest displacement from the scan's middle)
# is left alone: the beam search reaches it (``ModelInput.radius_px`` ≥ 3 px) and the scan is read as recorded
MIN_RANGE_PX = 3.0
# fewer samples than this fix no plane, nor one that fewer than this share of them lie on (a scan whose samples
# match each other at other features than their beams: grains, an extinct beam)
MIN_SAMPLES = 6
MIN_INLIER_SHARE = 2 / 3


@dataclass(frozen=True)
class Descan:
    """A plane of beam shifts (px) over the scan: shift(rx, ry) = c0 + rx c1 + ry c2 (logical scan positions), zero
    at the scan's middle, and the scan bin ``n`` the logical positions sum (``Cube.scan_bin``)."""

    coef: np.ndarray  # (3, 2)
    n: int = 1

    def shift_px(self, rx, ry) -> np.ndarray:
        """(…, 2) the plane's shift at logical positions (rx, ry) (fractional allowed)."""
        rx, ry = np.asarray(rx, np.float64), np.asarray(ry, np.float64)
        return self.coef[0] + rx[..., None] * self.coef[1] + ry[..., None] * self.coef[2]

    def recorded_px(self, rx_rec, ry_rec) -> np.ndarray:
        """(…, 2) whole pixels by which the recorded patterns at recorded positions (rx_rec, ry_rec) are moved
        back: the plane at the logical position each lies in (a bin's member at its place within the bin)."""
        n = self.n
        return np.round(self.shift_px((np.asarray(rx_rec) + 0.5) / n - 0.5,
                                      (np.asarray(ry_rec) + 0.5) / n - 0.5)).astype(int)

    def logical_px(self, rx, ry) -> np.ndarray:
        """(…, 2) the mean whole-pixel move of the recorded patterns a logical position sums (its vectors' pixels
        are reported with it added back)."""
        n = self.n
        i = np.arange(n)
        rxr = np.asarray(rx)[..., None, None] * n + i[:, None]
        ryr = np.asarray(ry)[..., None, None] * n + i[None, :]
        return self.recorded_px(rxr, ryr).reshape(*np.shape(rx), n * n, 2).mean(axis=-2)


def relative_shifts(samples: np.ndarray) -> np.ndarray:
    """(k, 2) each sample's shift (whole px) against the middle one: the maximum of their cross-correlation, both
    clipped (``CLIP_PERCENTILE``, ``SPARSE_CLIP_PERCENTILE``) and less their mean."""
    def clipped(p):
        lit = p[p > 0]  # a low-dose pattern's pixels are mostly empty: its clip is among those an electron reached
        level = max(np.percentile(p, CLIP_PERCENTILE), np.percentile(lit, SPARSE_CLIP_PERCENTILE) if len(lit) else 0)
        p = np.minimum(p, level)
        return p - p.mean()

    pats = np.asarray(samples, dtype=np.float64)
    shape = pats.shape[1:]
    ref = np.conj(np.fft.rfft2(clipped(pats[len(pats) // 2])))
    out = np.zeros((len(pats), 2))
    for k, p in enumerate(pats):
        c = np.fft.irfft2(np.fft.rfft2(clipped(p)) * ref, s=shape)
        i, j = np.unravel_index(int(np.argmax(c)), shape)
        out[k] = [(i + shape[0] // 2) % shape[0] - shape[0] // 2, (j + shape[1] // 2) % shape[1] - shape[1] // 2]
    return out


def fit_descan(samples: np.ndarray, positions: np.ndarray, scan_shape: tuple[int, int], n: int = 1) -> Descan | None:
    """The descan plane of a scan (``Descan``) from its ``samples`` (k, Qx, Qy) at logical ``positions`` (k, 2) of
    a scan of ``scan_shape`` (logical, binned by ``n``), or None where it moves the beam by less than
    ``MIN_RANGE_PX`` over the scan or too few samples fix it."""
    positions = np.asarray(positions, np.float64)
    if len(samples) < MIN_SAMPLES or np.linalg.matrix_rank(positions - positions.mean(axis=0)) < 1:
        return None
    shifts = relative_shifts(samples)
    X = np.column_stack([np.ones(len(positions)), positions])
    use = np.ones(len(X), bool)
    for _ in range(2):
        coef = np.linalg.lstsq(X[use], shifts[use], rcond=None)[0]
        use = np.hypot(*(X @ coef - shifts).T) <= OUTLIER_PX
        if use.sum() < max(MIN_SAMPLES, MIN_INLIER_SHARE * len(X)):
            return None
    middle = np.array([1.0, (scan_shape[0] - 1) / 2, (scan_shape[1] - 1) / 2])
    coef = coef - np.outer([1.0, 0.0, 0.0], middle @ coef)  # zero at the scan's middle
    corners = np.array([[1.0, a, b] for a in (0, scan_shape[0] - 1) for b in (0, scan_shape[1] - 1)])
    if np.hypot(*(corners @ coef).T).max() < MIN_RANGE_PX:
        return None
    return Descan(coef, int(n))


def moved_back(patterns: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """``patterns`` (B, Qx, Qy), each moved by minus its whole-pixel shift (``shifts_px`` (B, 2)); the pixels moved
    in read zero."""
    out = np.zeros_like(patterns)
    Qx, Qy = patterns.shape[1:]
    for k, (dx, dy) in enumerate(np.asarray(shifts_px, int)):
        if abs(dx) >= Qx or abs(dy) >= Qy:
            continue
        src = (slice(max(dx, 0), Qx + min(dx, 0)), slice(max(dy, 0), Qy + min(dy, 0)))
        dst = (slice(max(-dx, 0), Qx + min(-dx, 0)), slice(max(-dy, 0), Qy + min(-dy, 0)))
        out[k][dst] = patterns[k][src]
    return out
