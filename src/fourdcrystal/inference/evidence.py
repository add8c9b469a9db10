"""Every vector the network reports must be supported by the measured pattern.

The network maps a pattern to V_g peaks; where it has never seen such input (a vacuum scan position, an
amorphous support film, a detector without beam) it can still paint a lattice of peaks. A Bragg vector
is a claim that a diffraction disk sits there, so each one is checked against the measured pattern,
in the detector's own pixels (counts as recorded, no resampling), with the two conditions that decide
the truth (``fourdcrystal.simulation.labels``), made robust to shot noise:

* contrast: the mean over the disk's core (half the probe radius, at least the nearest pixels; its brightest
  pixel left out, since a hot pixel is no disk) stands
  out from the ring around the disk (radii r + 1 … 2r + 1; its median is the local level) by
  ``min_snr`` standard errors of that mean. The pixel noise is the largest of the ring's robust spreads
  (median absolute deviation; 84th percentile minus median) and the Poisson noise of the level,
  counting one electron as the smallest positive value in the pattern (a sparse low-dose pattern has a
  ring of zeros, whose MAD is zero, yet a few stray counts are no disk);
* brightness: the core's excess over the local level is at least ``min_brightness`` × the core mean of
  the pattern's own direct beam — a speckle of an amorphous film or a background wiggle is not a
  reflection.
On a flat background (vacuum, a detector without beam) a vector survives with probability ≈ 1e-3.

Only for disks that leave a valley around each other: with a disk radius α/λ above ``MAX_DISK_RADIUS_INVA``
(0.1 Å⁻¹, e.g. 2 mrad at 300 kV) the disks of a crystal with a lattice spacing of a few Å overlap, there
is no ring of background around any of them, and the check would drop real reflections (measured:
SrTiO3 [001] at 4 mrad kept 9 of its 20 strongest) — such vectors are left unchecked (``applies``).
"""
from __future__ import annotations

import math

import torch

_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of Gaussian noise
MAX_DISK_RADIUS_INVA = 0.1  # larger disks overlap for lattice spacings of a few Å (module docstring)
MIN_SNR = 3.0  # a disk stands out from its ring by this many standard errors (≈ 1e-3 false per flat-field test)
MIN_BRIGHTNESS = 1e-3  # ... and is at least this fraction of the direct beam (the truth's brightness floor)


def applies(disk_radius_px: float, q_pixel_size_invA: float) -> bool:
    """Whether the check can judge disks of this radius (detector px at this Å⁻¹/px)."""
    return disk_radius_px * q_pixel_size_invA <= MAX_DISK_RADIUS_INVA


def _offsets(r_lo: float, r_hi: float, device) -> torch.Tensor:
    k = int(math.ceil(r_hi))
    ax = torch.arange(-k, k + 1, device=device)
    di, dj = torch.meshgrid(ax, ax, indexing="ij")
    d = torch.hypot(di.float(), dj.float())
    m = (d > r_lo) & (d <= r_hi)
    return torch.stack([di[m], dj[m]], dim=1)


def _circle(img: torch.Tensor, centres: torch.Tensor, b, x, y, n: int = 64) -> torch.Tensor:
    """(V, n) pattern values at n points on the circle about the direct beam through each vector."""
    _, P, Q = img.shape
    c = centres.float()[b]
    dx, dy = x - c[:, 0], y - c[:, 1]
    rad = torch.hypot(dx, dy)[:, None]
    phi = torch.atan2(dy, dx)[:, None] + torch.arange(n, device=img.device) * (2 * math.pi / n)
    ii = (c[:, 0, None] + rad * torch.cos(phi)).round().long().clamp(0, P - 1)
    jj = (c[:, 1, None] + rad * torch.sin(phi)).round().long().clamp(0, Q - 1)
    return img[b[:, None], ii, jj]


def _gather(img: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    _, P, Q = img.shape
    ii = (i.round().long()[:, None] + off[None, :, 0]).clamp(0, P - 1)
    jj = (j.round().long()[:, None] + off[None, :, 1]).clamp(0, Q - 1)
    return img[b[:, None], ii, jj]


def supported(patterns: torch.Tensor, centres: torch.Tensor, b, x_px, y_px, radius_px: float,
              min_snr: float | None = None, min_brightness: float | None = None) -> torch.Tensor:
    """Boolean mask over vectors (batch index ``b``, position ``x_px``, ``y_px`` in the detector's pixels)
    of ``patterns`` (B, Qx, Qy) whose direct beams sit at ``centres`` (B, 2): those whose disk the pattern
    shows (module docstring). ``radius_px``: the probe disk's radius in the detector's pixels."""
    snr, brightness = disk_contrast(patterns, centres, b, x_px, y_px, radius_px)
    return (snr >= (MIN_SNR if min_snr is None else min_snr)) & \
        (brightness >= (MIN_BRIGHTNESS if min_brightness is None else min_brightness))


def disk_contrast(patterns: torch.Tensor, centres: torch.Tensor, b, x_px, y_px, radius_px: float,
                  overlapping: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per vector: the disk's contrast in standard errors of its core mean (``snr``) and its excess over
    the local level as a fraction of the direct beam's core mean (``brightness``); module docstring.

    ``overlapping``: disks too large to leave a ring of background around each (``applies`` false). The
    level is then the pattern's own on the circle through the vector about the direct beam: its 20th
    percentile over 64 points (a radial halo of an amorphous film or of inelastic scattering is level
    around that circle; a disk is brighter than the darkest fifth of it), and the noise that circle's
    spread (50th minus 20th percentile, 0.84 σ of Gaussian noise) or Poisson's."""
    dev = patterns.device
    img = patterns.float()
    b = torch.as_tensor(b, device=dev).long()
    x, y = (torch.as_tensor(v, device=dev, dtype=torch.float32) for v in (x_px, y_px))
    if len(b) == 0:
        return torch.zeros(0, device=dev), torch.zeros(0, device=dev)
    r = max(float(radius_px), 1.0)
    core_off = _offsets(-1.0, max(1.0, 0.5 * r), dev)
    # the core's mean without its brightest pixel: a hot pixel (one bright pixel) is no disk
    core_px = _gather(img, b, x, y, core_off)
    n_core = len(core_off) - 1
    core = (core_px.sum(dim=1) - core_px.amax(dim=1)) / n_core
    if overlapping:
        ring = _circle(img, centres, b, x, y)
        level = torch.quantile(ring, 0.2, dim=1)
        spread = (torch.quantile(ring, 0.5, dim=1) - level) / 0.84
    else:
        ring = _gather(img, b, x, y, _offsets(r + 1.0, 2.0 * r + 1.0, dev))
        level = ring.median(dim=1).values
        # robust pixel noise: the MAD, or for a ring that is mostly zeros (low dose) the distance from the
        # median to the 84th percentile (one standard deviation of Gaussian noise)
        spread = torch.maximum(_MAD_TO_SIGMA * (ring - level[:, None]).abs().median(dim=1).values,
                               torch.quantile(ring, 0.84, dim=1) - level)
    positive = torch.where(img > 0, img, torch.full_like(img, torch.inf)).flatten(1).amin(dim=1)
    one_e = torch.where(torch.isfinite(positive), positive, torch.ones_like(positive))[b]
    poisson = torch.sqrt(level.clamp_min(one_e) * one_e)
    excess = core - level
    snr = excess / (torch.maximum(spread, poisson) / n_core ** 0.5)
    cb = torch.arange(len(img), device=dev)
    beam = _gather(img, cb, centres[:, 0].float(), centres[:, 1].float(), core_off).mean(dim=1)[b]
    return snr, excess / beam.clamp_min(1e-30)
