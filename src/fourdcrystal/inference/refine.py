"""Sub-pixel Bragg-vector positions measured on the user's own pattern, where the network found them.

The network works on the model's grid (1/32 Å⁻¹ per pixel), which is coarser than most detectors: a
peak placed to 0.3 model pixels is still 0.5–1 detector pixels off on a 0.02 Å⁻¹/px camera. The
pattern itself, in the detector's own pixels, holds the position to a fraction of a pixel: a disk is
the probe's bright-field disk shifted by g. So each vector the network reports is moved, in two steps:

1. to the integer maximum of the pattern's cross-correlation with the probe (the matched filter of a
   shifted disk) within ``search_px`` of the network's position (``refine_positions``); if there is no
   interior maximum within reach (an overlapping neighbour, noise), the network's position stands;
2. to the best of the template's sub-pixel shifts 1/8 px apart around it (``SubpixelTemplate``); for
   small disks the template is edge-weighted, so that a disk's bright inner side does not pull it
   inward (``EDGE_SIGMA_RADII``); a larger disk that touches a neighbour keeps the plain probe: that
   neighbour's edge would pull as hard as its own.
3. with every other vector of its pattern onto the least-squares lattice through the beam that they
   index (``lattice_placed``): a crystal's zero-layer reflections lie on one 2-D lattice, so its fit
   averages the single disks' errors — most of all for overlapping disks, which step 1 leaves where the
   network put them (``predict --measured-positions`` stops after step 2). Vectors off that lattice (a
   second grain, HOLZ disks) and two on one lattice point (satellites) stay where they were measured, and
   so does every vector of a pattern whose lattice random vectors would index as well (``LATTICE_CHANCE_P``).
   On a pattern of few electrons (under ~2e4) that lattice is then refitted to the whole pattern: its every point
   within the detector, found by the network or not, pulls it toward the disk the pattern shows there — the few
   electrons of many far disks fix a lattice better than the network's few near vectors —, first each disk's
   own correlation maximum (``lattice_on_pattern``), then, where disks touch their neighbours, the likelihood of
   all the pattern's electrons at once (``lattice_likelihood``); small disks keep their vectors' size
   (``detectors.MeasuredPattern._place_on_lattice``). The probe's correlation peaks inward of a thick crystal's
   disk, which is brighter on its inner side, by an amount that changes with the thickness.

A large disk of many pixels clear of its neighbours (``CLEAR_MIN_RADIUS_PX``, ``CLEAR_SPACING_RADII``)
is searched for further, half its radius, and on the edge-weighted correlation in both steps
(``SubpixelTemplate.locate``): on thick crystals the plain correlation's maximum lies up to ~0.6 px
inward of its edge, beyond the sub-pixel step's ±1/2 px, and a diffuse background's slope pulls it
further. A bright one is searched for on its pattern clipped at the disk's median (``CLIP_MIN_SNR``): a
bright star inside a thick crystal's dim disk has edges of its own. (On small disks the edge-weighted
integer search was measured worse: at 1e3 e⁻ their few edge pixels are noisy, and a thick crystal's
inner fringes pull them; benchmarks/RESULTS.md.)

Steps 1–2 measure on the pattern less its diffuse background (``without_diffuse_background``) wherever the
network's proposals fix a lattice: the background's slope under a disk would move its fit radially.

Only for disks that no neighbour overlaps (small disks, ``evidence.small_disks``; larger ones whose
nearest other vector is ≥ ``MIN_SPACING_RADII`` disk radii away, ``evidence.neighbour_spacing_px``):
while the template sits on its disk it overlaps no other one, so the correlation peaks at the disk's
centre; overlapping disks pull it toward their neighbours, and keep the network's position.

Measured (benchmarks/RESULTS.md, "Sub-pixel refinement"): on the shipped model it raised F1 at 1 px at
every corner with disks that leave a valley, and a plain correlation (``corr_power`` 1) beat py4DSTEM's
"hybrid" one (Fourier amplitude raised to 0.5 or 0.25), which whitens small disks into noise.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fourdcrystal.analysis.lattice import binomial_tail, median_where
from fourdcrystal.inference.evidence import LATTICE_REFIT_FRACTION
from fourdcrystal.inference.peaks import log_parabola_vertex
from fourdcrystal.inference.probe_synth import bilinear

DEFAULT_SEARCH_PX = 1.5  # how far (detector px) from the network's position the pattern's disk may be
DEFAULT_CORR_POWER = 1.0
# A small disk (``evidence.small_disks``) has no neighbour within 3 radii: it is searched for within its own
# radius, where the network misplaces a faint one by more than a model pixel (80 kV / 3.5 mrad, MgO at 1e5:
# 1.5–2.6 px; benchmarks/RESULTS.md, "Low-dose proposals"); the direct beam is not searched for: it is the
# reference itself (``detectors.MeasuredPattern``)
SMALL_SEARCH_RADII = 1.0
MIN_SPACING_RADII = 2.0  # refine disks whose nearest neighbour is at least a diameter away (touching or apart)
# A large disk (not ``evidence.small_disks``) of at least CLEAR_MIN_RADIUS_PX is clear of its neighbours
# when its nearest proposed one is at least CLEAR_SPACING_RADII radii away: a gap of a quarter radius
# (MgO [001] at 300 kV, 3.5 mrad: 2.7 radii). A clear disk is searched for up to SEARCH_RADII of its
# radius from the network's position — the network places large disks of thick crystals 2–3 px off
# (300 kV, 3.5 mrad, 60 nm), and a neighbour's peak is ≥ 2.25 radii away — on the edge-weighted
# correlation (``SubpixelTemplate.locate``). Why a least radius in pixels: the plain probe's inward pull
# grows with the disk's size in pixels (0.4–1.3 px on 9 px disks, beyond the sub-pixel step's ±1/2 px),
# while edge weighting costs precision under noise where a disk has few edge pixels (4 px disks at 1e5
# e⁻, bench_strain: strain errors 0.34 → 0.46 %, where a common pull cancels against the reference;
# benchmarks/RESULTS.md).
CLEAR_MIN_RADIUS_PX = 6.0
CLEAR_SPACING_RADII = 2.25
SEARCH_RADII = 0.5
# A bright clear disk (SNR ≥ CLIP_MIN_SNR) is searched for on its pattern clipped at the disk's median
# (``SubpixelTemplate.locate``, ``clip``): a thick crystal's bright star inside a dim disk has edges of its
# own, and the edge-weighted correlation's best within reach put the star's edge on the template's rim (Si
# [001], 300 kV, 4 mrad, 100 nm noise-free: 3.5 px off); clipped, the disk is flat and only its rim has an
# edge. (The plain probe on the clipped pattern slid onto touching neighbours the network had not proposed:
# GaN [0001] at 300 kV, 3.5 mrad, 10 nm, 1e5 e⁻, F1 0.26 → 0.18.) A faint disk's median is a few electrons or
# none: it is searched for unclipped (benchmarks/RESULTS.md, "Large clear disks found on the clipped pattern").
CLIP_MIN_SNR = 10.0
SUBPIXEL_STEPS = 9  # template shifts per axis across one pixel (1/8 px apart) for the final fit
# The final fit's template is the probe high-passed twice by (1 - Gaussian of this many disk radii): the
# disk's edge, not its bright inner side, places it (``SubpixelTemplate``).
EDGE_SIGMA_RADII = 0.2
# A small disk that stands out by EDGE_CLIMB_MIN_SNR is first moved, before that fit, up the edge-weighted
# correlation from the plain correlation's integer maximum to its nearest maximum (at most EDGE_CLIMB_PX):
# a thick crystal's bright inner side puts the plain maximum up to a pixel inward, beyond the fit's ±1/2 px
# (bench_accuracy 1e5 e⁻: radial bias −0.18 px, RMS 0.31 px; 512 px detector −0.35 px). The nearest maximum,
# not the best within reach (``locate``): 2 px away an inner fringe's edge can win (80 kV, 3.5 mrad, 60 nm
# noise-free: 0.20 px outward). On a pattern of at least ``evidence.LOW_DOSE_E[1]`` electrons a disk standing
# out by EDGE_CLIMB_MIN_SNR climbs: converged 60 nm GaN disks under a diffuse background's shot noise stand
# out by 10–30σ and stayed ~0.7 px inward (bench_accuracy --oversample 2, 1e5 e⁻: RMS 0.339 → 0.315 px on the
# rectangular set). On a low-dose pattern only from LOW_DOSE_EDGE_CLIMB_MIN_SNR: a faint disk's few edge
# pixels are noisy (300 kV, 1 mrad, 60 nm at 1e3 e⁻: F1 0.35 → 0.33 from 10σ; flat 3 px disks at ~2,500 e⁻
# left their lattice; benchmarks/RESULTS.md, "The edge's nearest maximum" and "The edge climb by dose").
EDGE_CLIMB_PX, EDGE_CLIMB_MIN_SNR, LOW_DOSE_EDGE_CLIMB_MIN_SNR = 2, 10.0, 30.0
# Through a camera's point spread (``blur_px`` read off the probe) a low-dose pattern's small disks, the faint ones too,
# are placed by their deblurred edges and climb from SPREAD_EDGE_CLIMB_MIN_SNR up to SPREAD_EDGE_CLIMB_PX: the plain correlation then follows a disk's brighter inner side further than the sub-pixel fit
# reaches (200 kV / 2 mrad, 1e3 e⁻, σ = 1 px: vectors 0.3–0.5 px inward), while a 2 px climb took 2.5 px disks on the
# model's grid to other maxima at 1e4 e⁻ (F1 0.90 → 0.88; benchmarks/RESULTS.md, "A low-dose beam's disk beside a
# blurred speckle")
SPREAD_EDGE_CLIMB_MIN_SNR, SPREAD_EDGE_CLIMB_PX = 5.0, 1
# The sum of a batch's faint patterns (``detectors.MeasuredPattern._batch_lattice``), also under LOW_DOSE_E[1], climbs
# from SUM_EDGE_CLIMB_MIN_SNR (up to EDGE_CLIMB_PX): its disks fix one lattice's size, which every pattern of the scan
# takes (``measure_edge_scale``), and a least-squares fit to many disks averages each one's climb noise but not the
# plain maximum's inward pull (bench_accuracy's 200 kV / 2 mrad MgO [001] 30 nm in 2 × 2 scans at 1e3 e⁻: the sum's
# lattice 0.3–0.5 % small, vectors −0.15 px radially; benchmarks/RESULTS.md, "The summed patterns' disks climb to
# their edges")
SUM_EDGE_CLIMB_MIN_SNR = 5.0
# ... for disks that stand out clearly. A faint disk is placed by the plain probe (the matched filter:
# all its pixels, not only its few edge pixels, average the noise): small disks at 80 kV, 3.5 mrad, 1e5 e⁻
# within 1 px of the truth, SNR < 5: 81 → 85 %, 5–10: 85 → 90 %, while above SNR 20 the plain probe's
# pull towards a thick crystal's bright disk interior costs 0.2–0.3 px (benchmarks/RESULTS.md).
PLAIN_BELOW_SNR = 10.0
# Step 3 (``lattice_placed``): every vector of a pattern is moved onto the least-squares lattice through the
# beam of the pattern's vectors: a crystal's zero-layer reflections lie on one 2-D lattice (its projection,
# tilted or strained, is still one), so the fit averages the vectors' own errors. A vector is indexed
# within LATTICE_TOL_SEARCHES of the network's uncertainty (``MeasuredPattern.search_px``), at most
# ``evidence.LATTICE_REFIT_FRACTION`` of the lattice's shortest vector; a pattern places its vectors
# only with at least LATTICE_PLACE_MIN_VECTORS indexed (an overdetermined fit: 2 × 5 coordinates for 4
# unknowns). The basis comes from the LATTICE_PLACE_CANDIDATES shortest vectors (a crystal's shortest few
# span its lattice). The fit is refit on its inliers: those within LATTICE_INLIER_MEDIANS times the median
# residual (at least LATTICE_INLIER_FLOOR_PX): four disks measured 0.56 px off among 24 within 0.07 px had
# tilted it by 0.1 model px (tests/test_predict_envelope.py, 2×2-binned detector).
LATTICE_TOL_SEARCHES = 2.0
LATTICE_PLACE_MIN_VECTORS = 5
LATTICE_PLACE_CANDIDATES = 4
LATTICE_INLIER_MEDIANS, LATTICE_INLIER_FLOOR_PX = 3.0, 0.1
# ... and only where random vectors would index that many as rarely as this (binomial: each lands within the
# tolerance of a lattice point by chance π tol² / cell area; the evidence's lattice test of a film's speckle
# allows ~1e-3). Without it a barely trained model's random vectors (the demo's) were placed on chance
# lattices, which `strain` then fitted as grains (29 of 144 positions in 5 "grains", against 9 in 2
# unplaced); at 1e-3 random vectors were placed in 10 of 200 synthetic patterns, at 1e-5 in none, while a
# crystal's 6 first-order vectors stay placed (tests/test_refine.py), 5 of them in 38 % of draws.
LATTICE_CHANCE_P = 1e-5
# Steps 1–2 run on the pattern less its diffuse background (``without_diffuse_background``), where the
# pattern's vectors fix a lattice: the background's slope under a disk moves its edge fit radially, a scale
# error that differs from pattern to pattern with the background (bench_strain, SrTiO3 [001] 60 Å: e_xx / e_yy
# 0.23 / 0.27 % at 1e5 e⁻ and 0.24 / 0.24 % at 1e6, 0.05 % noise-free). The background: the median, in rings of
# BACKGROUND_RING_PX about the beam, of the pixels BACKGROUND_CLEAR_RADII disk radii or more from every point of
# that lattice (benchmarks/RESULTS.md, "The diffuse background left out of the sub-pixel fit").
BACKGROUND_CLEAR_RADII, BACKGROUND_RING_PX = 1.3, 3.0
# The edge-weighted template undoes the detector's point spread (``SubpixelTemplate``, ``blur_px``): H / (H² +
# DEBLUR_EPS) in place of 1 / H, so that it stops growing where H falls below ~DEBLUR_EPS^½.
DEBLUR_EPS = 1e-3


def hybrid_xcorr(patterns: torch.Tensor, template_fft_conj: torch.Tensor, corr_power: float) -> torch.Tensor:
    """(B, Qx, Qy) cross-correlation; ``template_fft_conj`` = conj(rfft2(template)) of the same size."""
    f = torch.fft.rfft2(patterns.float()) * template_fft_conj
    if corr_power != 1.0:
        mag = f.abs()
        f = f * torch.where(mag > 0, mag.clamp_min(1e-30) ** (corr_power - 1.0), torch.zeros_like(mag))
    return torch.fft.irfft2(f, s=patterns.shape[-2:])


def refine_positions(xc: torch.Tensor, template_centre: tuple[float, float], b, x_px, y_px,
                     search_px: float = DEFAULT_SEARCH_PX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions (detector px) of the correlation maxima nearest the given vectors.

    ``xc``: (B, Qx, Qy) correlation, maximal at shift s where the pattern's disk sits at the template's
    centre + s (circular shifts). Returns (x, y, moved): refined positions, and which vectors found an
    interior maximum within ``search_px`` (one for all, or one per vector; the others keep their position)."""
    B, Qx, Qy = xc.shape
    dev = xc.device
    b = torch.as_tensor(b, device=dev).long()
    x = torch.as_tensor(x_px, device=dev, dtype=torch.float32)
    y = torch.as_tensor(y_px, device=dev, dtype=torch.float32)
    if len(b) == 0:
        return x, y, torch.zeros(0, dtype=torch.bool, device=dev)
    search = torch.as_tensor(search_px, device=dev, dtype=torch.float32).reshape(-1, 1)
    k = int(search.max()) + 1
    ax = torch.arange(-k, k + 1, device=dev)
    di, dj = torch.meshgrid(ax, ax, indexing="ij")
    sx = x - template_centre[0]
    sy = y - template_centre[1]
    i0, j0 = sx.round().long(), sy.round().long()
    ii, jj = i0[:, None] + di.reshape(1, -1), j0[:, None] + dj.reshape(1, -1)
    near = torch.hypot(ii.float() - sx[:, None], jj.float() - sy[:, None]) <= search
    vals = torch.where(near, xc[b[:, None], ii % Qx, jj % Qy], torch.full_like(sx[:, None], -torch.inf))
    best = vals.argmax(dim=1)
    bi, bj = ii.gather(1, best[:, None])[:, 0], jj.gather(1, best[:, None])[:, 0]
    f0 = xc[b, bi % Qx, bj % Qy]
    nb = [xc[b, (bi + u) % Qx, (bj + v) % Qy] for u, v in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    interior = (f0 >= nb[0]) & (f0 >= nb[1]) & (f0 >= nb[2]) & (f0 >= nb[3]) & (f0 > 0)
    rx = template_centre[0] + bi.float() + log_parabola_vertex(nb[0], f0, nb[1])
    ry = template_centre[1] + bj.float() + log_parabola_vertex(nb[2], f0, nb[3])
    return torch.where(interior, rx, x), torch.where(interior, ry, y), interior


class SubpixelTemplate:
    """The probe template at sub-pixel shifts, for the final position of each disk.

    A parabola through the correlation's integer samples is biased by up to ~0.2 px toward the pixel
    centre for disks of a few pixels (benchmarks/RESULTS.md), and differently on different detector
    samplings. So the correlation is evaluated at shifts 1/8 px apart around the integer maximum —
    the pattern's window (the disk and a margin) against the template moved by each sub-pixel shift
    (Fourier shift, made once per probe) in one matrix product — and the parabola runs on that fine
    grid. The same as py4DSTEM's upsampled local correlation, at the cost of a small GEMM per batch.

    Why the template is high-passed (``edge_sigma_radii``): a diffracted disk is not a copy of the
    probe's flat disk — dynamical scattering and the falling form factor make its inner side brighter
    than its outer side, and a plain correlation follows that slope inward (SrTiO3 [001], 200 kV,
    2 mrad, 10 nm, noise-free: median 0.30 px off the Bragg positions, radial bias −0.12 px). The
    disk's edge sits at g ± α/λ whatever the interior holds. Correlating the pattern with the probe
    filtered twice by (1 − G_σ) — the same as correlating both high-passed once, at no cost per
    pattern — places the disks by their edges: with σ = 0.2 disk radii, median 0.02 px off (0.06 px
    at 1e5 e⁻, 0.21 vs 0.36 px at 1e4); σ = 0.15–0.35 radii measured alike under noise, larger σ
    leaves more of the bias (benchmarks/RESULTS.md, "Edge-weighted sub-pixel template").

    Why ``blur_px`` (the detector's point spread, Gaussian σ, ``probe_synth.point_spread_px``): a camera that
    spreads each electron over its neighbours (a scintillator; a hybrid-pixel sensor at 300 kV) blurs the
    edges away, and the high-passed correlation then weighs the disk's interior again (σ = 1.5 px on SrTiO3
    [001], 200 kV, 2 mrad, 10 nm: vectors 0.5 px off). With H the blur's transfer function the template is
    divided by H once for the pattern's blur and once more where the probe was recorded through the same
    camera (``probe_blurred``): pattern × template then equals the unblurred pattern × the unblurred
    template, shot noise included (counted before the blur, it is white again), regularised by
    ``DEBLUR_EPS`` where H vanishes (benchmarks/RESULTS.md, "A camera's point spread").
    """

    def __init__(self, probe, centre: tuple[float, float], radius_px: float, device="cpu",
                 edge_sigma_radii: float | None = EDGE_SIGMA_RADII, blur_px: float = 0.0, probe_blurred: bool = True):
        # window half-width: the disk and its edge (a deblurred template's ringing reaches a few σ further)
        self.h = int(math.ceil(max(radius_px, 1.0) + 2 * blur_px)) + 2
        self.radius_px = float(radius_px)
        self.centre = (float(centre[0]), float(centre[1]))
        self.ci, self.cj = int(round(centre[0])), int(round(centre[1]))
        sigma_px = 0.0 if edge_sigma_radii is None else edge_sigma_radii * max(radius_px, 1.0)
        # margin so that the Fourier shift's and the high-pass's wrap-around stay outside the window
        pad = self.h + 4 + int(math.ceil(3 * sigma_px + 4 * blur_px))
        crop = _crop(torch.as_tensor(probe, dtype=torch.float64), self.ci, self.cj, pad)
        n = crop.shape[0]
        d = torch.linspace(-0.5, 0.5, SUBPIXEL_STEPS, dtype=torch.float64)
        self.step = float(d[1] - d[0])
        k = torch.fft.fftfreq(n, dtype=torch.float64)
        phase_x = torch.exp(-2j * math.pi * d[:, None] * k[None, :])  # (S, n): shift by d along axis 0
        f = torch.fft.fft2(crop.to(torch.complex128))
        if sigma_px > 0:  # (1 - G_σ)² in Fourier space: G's transfer function is exp(-2π²σ²|k|²)
            k2 = k[:, None] ** 2 + k[None, :] ** 2
            f = f * (1.0 - torch.exp(-2.0 * math.pi ** 2 * sigma_px ** 2 * k2)) ** 2
            if blur_px > 0:  # the detector's point spread undone (class docstring): once per blurred image
                H = torch.exp(-2.0 * math.pi ** 2 * blur_px ** 2 * k2)
                f = f * (H / (H ** 2 + DEBLUR_EPS)) ** (2 if probe_blurred else 1)
        shifted = torch.fft.ifft2(f[None, None] * phase_x[:, None, :, None] * phase_x[None, :, None, :]).real
        inner = slice(pad - self.h, pad + self.h + 1)
        w = shifted[:, :, inner, inner]  # (S, S, W, W): template moved by (d_i, d_j), around its centre
        self.templates = w.reshape(SUBPIXEL_STEPS ** 2, -1).T.float().to(device)  # (W², S²)
        self.offsets = d.float().to(device)

    def locate(self, patterns: torch.Tensor, b, x, y, search_px: float,
               clip: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Integer positions (detector px) of this template's correlation maxima within ``search_px`` of
        (x, y), as ``refine_positions`` finds them on the plain correlation, computed on windows about
        the vectors: (x, y, moved), ``moved`` where an interior maximum is within reach (the others keep
        their position). With the edge-weighted template the maximum is the disk's edge's, not its bright
        inner side's: on thick crystals the plain correlation's lies up to ~0.6 px inward, beyond the
        sub-pixel fit's ±1/2 px. ``clip``: the windows clipped at the median of the disk's pixels about (x, y)
        first (``CLIP_MIN_SNR``), so that a bright star inside a dim disk has no edges of its own."""
        k = int(search_px) + 1
        score, ni, nj, sx, sy = self._scores(patterns, b, x, y, k, clip)
        u = torch.arange(-k - 1, k + 2, device=patterns.device)
        du, dv = torch.meshgrid(u, u, indexing="ij")
        cand_i, cand_j = ni[:, None, None] + du, nj[:, None, None] + dv
        near = (torch.hypot(cand_i - sx[:, None, None], cand_j - sy[:, None, None]) <= search_px) \
            & (du.abs() <= k) & (dv.abs() <= k)
        best = torch.where(near, score, torch.full_like(score, -torch.inf)).flatten(1).argmax(dim=1)
        return self._at_maximum(score, best // (2 * k + 3), best % (2 * k + 3), ni, nj, k, x, y)

    def climb(self, patterns: torch.Tensor, b, x, y, steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """From the integer positions nearest (x, y), up this template's correlation to its nearest local
        maximum, a pixel per step (to the best of the 3×3 about it), at most ``steps`` steps: (x, y, moved),
        ``moved`` where that is a maximum (the others keep (x, y)). Unlike ``locate``'s best within reach,
        a thick crystal's inner fringe further away does not win over the disk's own edge."""
        k = int(steps)
        score, ni, nj, _, _ = self._scores(patterns, b, x, y, k)
        v = torch.arange(len(b), device=patterns.device)
        ci = torch.full((len(b),), k + 1, device=patterns.device, dtype=torch.long)
        cj = ci.clone()
        for _ in range(k):
            around = torch.stack([score[v, ci + du, cj + dv] for du in (-1, 0, 1) for dv in (-1, 0, 1)], dim=1)
            best = torch.where(around[:, 4] >= around.amax(dim=1), 4, around.argmax(dim=1))  # stay on a tie
            ci, cj = ci + best // 3 - 1, cj + best % 3 - 1
        return self._at_maximum(score, ci, cj, ni, nj, k, x, y)

    def _scores(self, patterns: torch.Tensor, b, x, y, k: int, clip: bool = False):
        """The correlation with this template at the integer shifts −k−1 … k+1 px about the shift nearest
        each (x, y), on windows about the vectors: (score (V, 2k+3, 2k+3), that shift (ni, nj), and the
        exact one (sx, sy))."""
        h, S = self.h, SUBPIXEL_STEPS
        dev = patterns.device
        B, Qx, Qy = patterns.shape
        sx, sy = x - self.centre[0], y - self.centre[1]
        ni, nj = sx.round().long(), sy.round().long()
        ax = torch.arange(-h - k - 1, h + k + 2, device=dev)
        ii = (self.ci + ni[:, None] + ax[None]).clamp(0, Qx - 1)
        jj = (self.cj + nj[:, None] + ax[None]).clamp(0, Qy - 1)
        win = patterns[b[:, None, None], ii[:, :, None], jj[:, None, :]].float()
        if clip:
            # the vector at (x, y) lies (x - ci - ni, y - cj - nj) px from the window's middle pixel
            level = self._disk_level(win, x - self.ci - ni, y - self.cj - nj, h + k + 1)
            win = torch.minimum(win, level[:, None, None])
        zero_shift = self.templates[:, (S // 2) * S + S // 2].reshape(1, 1, 2 * h + 1, 2 * h + 1)
        return torch.nn.functional.conv2d(win[:, None], zero_shift)[:, 0], ni, nj, sx, sy

    def _disk_level(self, win: torch.Tensor, fx, fy, mid: int) -> torch.Tensor:
        """(V,) the median of each window's pixels within the disk's radius of its vector, which lies ``fx``,
        ``fy`` px from the window's pixel (``mid``, ``mid``)."""
        ax = torch.arange(win.shape[1], device=win.device, dtype=torch.float32) - mid
        d2 = (ax[None, :, None] - fx[:, None, None]) ** 2 + (ax[None, None, :] - fy[:, None, None]) ** 2
        inside = d2 <= max(self.radius_px, 1.0) ** 2
        return torch.where(inside, win, torch.full_like(win, torch.nan)).flatten(1).nanmedian(dim=1).values

    def _at_maximum(self, score, bi, bj, ni, nj, k: int, x, y):
        """(x, y, moved): the shifts (bi, bj) of ``score`` as positions where they are a positive interior
        maximum (its four neighbours no higher), else the given (x, y)."""
        v = torch.arange(len(bi), device=score.device)
        inside = (bi >= 1) & (bi <= 2 * k + 1) & (bj >= 1) & (bj <= 2 * k + 1)
        bi, bj = bi.clamp(1, 2 * k + 1), bj.clamp(1, 2 * k + 1)
        f0 = score[v, bi, bj]
        interior = inside & (f0 > 0) & (f0 >= score[v, bi - 1, bj]) & (f0 >= score[v, bi + 1, bj]) \
            & (f0 >= score[v, bi, bj - 1]) & (f0 >= score[v, bi, bj + 1])
        xi = self.centre[0] + (ni + bi - k - 1).float()
        yi = self.centre[1] + (nj + bj - k - 1).float()
        return torch.where(interior, xi, x), torch.where(interior, yi, y), interior

    def refine(self, patterns: torch.Tensor, b, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (detector px) of the disks near (x, y): the best template shift 1/8 px apart,
        refined by a parabola on that grid. The grid spans ±1/2 px about the integer shift nearest
        (x, y): a trust region about the plain correlation's maximum (measured: fitting once more a
        pixel further where the best shift was the grid's last moved thick-crystal disks astray)."""
        B, Qx, Qy = patterns.shape
        h, S = self.h, SUBPIXEL_STEPS
        # integer template shifts nearest the given positions; the sub-pixel grid covers ±1/2 px about them
        ni, nj = (x - self.centre[0]).round().long(), (y - self.centre[1]).round().long()
        ax = torch.arange(-h, h + 1, device=patterns.device)
        ii = (self.ci + ni[:, None] + ax[None]).clamp(0, Qx - 1)  # (V, W)
        jj = (self.cj + nj[:, None] + ax[None]).clamp(0, Qy - 1)
        win = patterns[b[:, None, None], ii[:, :, None], jj[:, None, :]].float().reshape(len(b), -1)
        score = (win @ self.templates).reshape(-1, S, S)  # (V, S, S)
        best = score.reshape(len(b), -1).argmax(dim=1)
        bi, bj = (best // S).clamp(1, S - 2), (best % S).clamp(1, S - 2)
        v = torch.arange(len(b), device=patterns.device)
        f0 = score[v, bi, bj]
        di = log_parabola_vertex(score[v, bi - 1, bj], f0, score[v, bi + 1, bj]) * self.step
        dj = log_parabola_vertex(score[v, bi, bj - 1], f0, score[v, bi, bj + 1]) * self.step
        # the template's disk centre is at self.centre; the shift n + d moves it onto the pattern's disk
        return (self.centre[0] + ni.float() + self.offsets[bi] + di,
                self.centre[1] + nj.float() + self.offsets[bj] + dj)


def _crop(img: torch.Tensor, ci: int, cj: int, half: int) -> torch.Tensor:
    """(2 half + 1)² window of ``img`` around (ci, cj), zero outside."""
    P, Q = img.shape
    out = torch.zeros(2 * half + 1, 2 * half + 1, dtype=img.dtype)
    i0, j0 = ci - half, cj - half
    si, sj = slice(max(i0, 0), min(ci + half + 1, P)), slice(max(j0, 0), min(cj + half + 1, Q))
    out[si.start - i0:si.stop - i0, sj.start - j0:sj.stop - j0] = img[si, sj]
    return out


def lattice_placed(b, q_px, tol_px: float, weights=None, enough: int = LATTICE_PLACE_MIN_VECTORS,
                   candidates: int = LATTICE_PLACE_CANDIDATES, lattices: bool = False):
    """Non-beam vectors of a batch (pattern ``b``, ``q_px`` (N, 2): detector px from the direct beam) placed
    on their pattern's least-squares lattice through the beam; returns (positions (N, 2), placed (N,)).

    Per pattern: of the 2-D lattices spanned by two of its ``candidates`` shortest vectors, the one that
    indexes the most within ``tol_px``; then, three times, a least-squares refit (weighted by ``weights``,
    else equal) on the inliers (``LATTICE_INLIER_MEDIANS``) of the vectors within ``min(tol_px,
    evidence.LATTICE_REFIT_FRACTION |g_min|)`` of a lattice point, each point claimed by one vector only (two
    on one point — a satellite, a second grain — are both left as measured). A pattern with fewer than
    ``enough`` indexed vectors, or as many as random vectors would reach with a chance of
    ``LATTICE_CHANCE_P`` or more, is left as measured. One vectorised pass over the batch (a loop of
    per-pattern fits cost ~1 ms per pattern). ``lattices``: also (N, 2) each placed vector's (h, k) and (N, 2, 2) its
    pattern's basis (NaN where not placed)."""
    q = np.asarray(q_px, np.float64).reshape(-1, 2)
    out, placed = q.copy(), np.zeros(len(q), bool)
    if len(q) < enough:
        return (out, placed, np.full((len(q), 2), np.nan), np.full((len(q), 2, 2), np.nan)) if lattices else \
            (out, placed)
    w = np.ones(len(q)) if weights is None else np.asarray(weights, np.float64)
    where, Q = _by_pattern(np.asarray(b), q)
    valid = where >= 0
    W = np.where(valid, w[np.maximum(where, 0)], 0.0)
    G, good = _best_basis(Q, valid, tol_px, enough, candidates)
    for _ in range(3):
        hk = np.round(Q @ np.linalg.inv(G))  # (P, V, 2)
        res = Q - hk @ G
        tol = np.minimum(tol_px, LATTICE_REFIT_FRACTION * np.hypot(G[..., 0], G[..., 1]).min(axis=1))
        on = (np.hypot(res[..., 0], res[..., 1]) < tol[:, None]) & (hk != 0).any(axis=2) & valid & good[:, None]
        key = np.where(on, hk[..., 0] * 65536 + hk[..., 1], np.nan)  # one vector per lattice point
        on &= (key[:, :, None] == key[:, None, :]).sum(axis=2) == 1
        good &= on.sum(axis=1) >= enough
        # the fit's outliers would tilt it: fit on its inliers, if enough, and place every indexed vector
        dist = np.where(on, np.hypot(res[..., 0], res[..., 1]), np.inf)
        cut = np.maximum(LATTICE_INLIER_FLOOR_PX, LATTICE_INLIER_MEDIANS * median_where(dist, on))
        inlier = on & (dist < cut[:, None])
        fit = np.where((inlier.sum(axis=1) >= enough)[:, None], inlier, on)
        Hw = hk * np.where(fit & good[:, None], W, 0.0)[..., None]
        HtH, HtQ = Hw.transpose(0, 2, 1) @ hk, Hw.transpose(0, 2, 1) @ Q
        # indexed vectors all on one row through the beam fix no 2-D lattice
        good &= np.linalg.det(HtH) > 1e-6 * np.einsum("pii->p", HtH) ** 2
        HtH[~good] = np.eye(2)
        G = np.where(good[:, None, None], np.linalg.solve(HtH, HtQ), G)
    # a lattice that random vectors would index as well is no crystal: placing them on it would paint one
    good &= binomial_tail(on.sum(axis=1), valid.sum(axis=1), np.pi * tol**2 / np.abs(np.linalg.det(G))) < LATTICE_CHANCE_P
    on &= good[:, None]
    fitted = hk @ G
    out[where[on]] = fitted[on]
    placed[where[on]] = True
    if not lattices:
        return out, placed
    index, basis = np.full((len(q), 2), np.nan), np.full((len(q), 2, 2), np.nan)
    index[where[on]] = hk[on]
    basis[where[on]] = np.broadcast_to(G[:, None], hk.shape[:2] + (2, 2))[on]
    return out, placed, index, basis


# ``lattice_on_pattern``: Newton steps of the whole lattice (a point's own step at most this far), and the margin
# (disk radii + px) a lattice point keeps from the detector's edge to count
WHOLE_PATTERN_STEPS, WHOLE_PATTERN_MAX_STEP_PX = 8, 1.5
WHOLE_PATTERN_EDGE_RADII, WHOLE_PATTERN_EDGE_PX = 1.0, 3.0
# a lattice point pulls only where the pattern's correlation stands this many of its robust σ above its median (a
# disk at 1σ, as a low-dose lattice point is completed; at 0 a pattern of noise alone pulled a lattice 0.4 px away)
WHOLE_PATTERN_MIN_SIGMA = 1.0


def probe_template_fft(probe: np.ndarray, centre_px) -> np.ndarray:
    """conj(rfft2) of the probe image moved so that ``centre_px`` (its disk's centre, rounded) sits on pixel (0, 0),
    unit sum: the pattern's correlation with it is the electrons within a disk about each pixel."""
    t = np.roll(np.asarray(probe, np.float64), (-int(round(centre_px[0])), -int(round(centre_px[1]))), axis=(0, 1))
    return np.conj(np.fft.rfft2(t / max(t.sum(), 1e-300)))


def lattice_on_pattern(image: np.ndarray, template_fft_conj: np.ndarray, origin_px, basis_px, radius_px: float,
                       steps: int = WHOLE_PATTERN_STEPS) -> tuple[np.ndarray, np.ndarray]:
    """(origin (2,), basis (2, 2), rows g1 g2), detector px: the lattice ``origin + h g1 + k g2`` that puts its points
    on the disks of one pattern (``image``, (Qx, Qy)), started from ``origin_px``, ``basis_px``.

    The pattern is correlated with the probe (``probe_template_fft``); at every lattice point within the detector
    (``WHOLE_PATTERN_EDGE_*``) where that correlation stands ``WHOLE_PATTERN_MIN_SIGMA`` above its median and curves
    down — a disk is there — a Newton step on it (its gradient and curvature, bilinear) says where that disk's
    centre lies; the lattice is then the least-squares fit to those centres, each weighted by its disk's electrons
    above the median (a centre measured on N electrons has variance ∝ 1/N), ``steps`` times. Why: at ~1e3 e⁻ a
    pattern's few near vectors place its lattice to ~1 %, where the few electrons of each of its many far disks
    together fix it better (bench_strain at 1e3). Its scale is biased: the probe's correlation peaks inward of a
    thick crystal's disk, brighter on its inner side (noise-free at 300 kV / 2.5 mrad, 2–20 nm: SrTiO3 [001] −0.3 to
    −1.6 %, GaN [0001] −0.2 to −3.7 %); its shape is not, on square and hexagonal lattices, by their symmetry
    (benchmarks/RESULTS.md, "A low-dose lattice on its whole pattern")."""
    img = np.asarray(image, np.float64)
    P, Q = img.shape
    corr = np.fft.irfft2(np.fft.rfft2(img) * template_fft_conj, s=img.shape)
    base = float(np.median(corr))
    spread = 1.4826 * float(np.median(np.abs(corr - base)))  # the correlation's noise where no disk is
    gx, gy = np.gradient(corr)
    gxx, gxy = np.gradient(gx)
    # the correlation, its gradient and its Hessian as one (P, Q, 6) stack: one interpolation per step
    fields = np.stack([corr - base, gx, gy, gxx, gxy, np.gradient(gy, axis=1)], axis=-1)
    o, G = np.asarray(origin_px, np.float64).copy(), np.asarray(basis_px, np.float64).copy()
    n = int(min(30, np.ceil(max(P, Q) / max(np.hypot(G[:, 0], G[:, 1]).min(), 1.0)) + 1))
    orders = np.arange(-n, n + 1)
    hk = np.stack(np.meshgrid(orders, orders, indexing="ij"), -1).reshape(-1, 2).astype(float)
    m = WHOLE_PATTERN_EDGE_RADII * radius_px + WHOLE_PATTERN_EDGE_PX
    for _ in range(steps):
        p = o + hk @ G
        inside = (p[:, 0] >= m) & (p[:, 0] < P - 1 - m) & (p[:, 1] >= m) & (p[:, 1] < Q - 1 - m)
        p, h = p[inside], hk[inside]
        w, gx_p, gy_p, hxx, hxy, hyy = bilinear(fields, *p.T).T
        det = hxx * hyy - hxy ** 2
        disk = (w > WHOLE_PATTERN_MIN_SIGMA * spread) & (w > 0) & (hxx < 0) & (det > 0)
        if disk.sum() < 4:
            break
        p, h, w, gx_p, gy_p, hxx, hxy, hyy, det = (a[disk] for a in (p, h, w, gx_p, gy_p, hxx, hxy, hyy, det))
        step = -np.stack([hyy * gx_p - hxy * gy_p, hxx * gy_p - hxy * gx_p], axis=1) / det[:, None]
        target = p + np.clip(step, -WHOLE_PATTERN_MAX_STEP_PX, WHOLE_PATTERN_MAX_STEP_PX)
        X = np.column_stack([np.ones(len(h)), h])  # target = o + h g1 + k g2, per axis
        sw = np.sqrt(w)[:, None]
        sol, _, rank, _ = np.linalg.lstsq(X * sw, target * sw, rcond=None)
        if rank < 3:  # the disks found span no 2-D lattice
            break
        o, G = sol[0], sol[1:]
    return o, G


# ``lattice_likelihood``: Newton steps of the whole lattice (each disk moved at most LIKELIHOOD_MAX_STEP_PX per step,
# stopped below LIKELIHOOD_TOL_PX); the correlation is sampled LIKELIHOOD_UPSAMPLE times finer than the detector on
# detectors of up to LIKELIHOOD_UPSAMPLE_MAX_PX (bilinear between whole pixels flattened 4–5 px disks' peaks)
LIKELIHOOD_STEPS, LIKELIHOOD_MAX_STEP_PX, LIKELIHOOD_TOL_PX = 10, 0.5, 1e-3
LIKELIHOOD_UPSAMPLE, LIKELIHOOD_UPSAMPLE_MAX_PX = 2, 256
# a lattice point takes part where the scan's patterns about it hold a disk of at least this many electrons above
# its ring (an empty point's noise would only pull), and a single pixel is a hot one where it holds SPIKE_TIMES its
# brightest neighbour plus SPIKE_MIN_E electrons (a hot pixel is 0.5–2 × a pattern's brightest; one electron
# through a detector's blur lights its neighbours too)
LIKELIHOOD_MIN_DISK_E = 1.0
SPIKE_TIMES, SPIKE_MIN_E = 2.0, 2.0
# ``lattice_likelihood(starts=...)``: the other starts' spread (a fraction of the basis' largest component, origin px)
# and their one seed (every pattern the same starts: identical outputs for identical input)
LIKELIHOOD_START_SPREAD, LIKELIHOOD_START_SEED = (0.01, 0.3), 0
# ``lattice_likelihoods``: patterns ascended together, their correlations upsampled at once (on a 256 px detector
# each pattern's fine map and its spectrum hold ~4 MB)
LIKELIHOOD_CHUNK = 8
EVIDENCE_MIN_E = 1.0  # ``lattice_evidence``: the least count a disk's chance is taken to vary by


def without_spikes(image: np.ndarray, electron: float) -> np.ndarray:
    """``image`` with each single-pixel spike (``SPIKE_TIMES``, ``SPIKE_MIN_E``) set to its 8 neighbours' median:
    on a pattern of ~1e3 electrons a hot pixel holds as many as a faint disk, and pulls the lattice fit that
    weighs every electron (``lattice_likelihood``) toward itself."""
    img = np.asarray(image, np.float64)
    padded = np.pad(img, 1, mode="edge")
    H, W = img.shape
    around = np.stack([padded[1 + di:1 + di + H, 1 + dj:1 + dj + W]
                       for di in (-1, 0, 1) for dj in (-1, 0, 1) if di or dj])
    spike = img > SPIKE_TIMES * around.max(axis=0) + SPIKE_MIN_E * electron
    if not spike.any():
        return img
    out = img.copy()
    out[spike] = np.median(around[:, spike], axis=0)
    return out


def disk_and_ring_levels(image: np.ndarray, radius_px: float) -> np.ndarray:
    """(P, Q, 2): about every pixel of ``image``, its mean within ``radius_px`` (a disk there) and in the ring
    1–3 px beyond (the background about it); ``lattice_likelihood``'s brightness of each lattice point. ``image``
    (K, P, Q), a stack: (K, P, Q, 2), each the same as alone."""
    img = np.asarray(image, np.float64)
    P, Q = img.shape[-2:]
    i = np.fft.fftfreq(P) * P
    j = np.fft.fftfreq(Q) * Q
    r = np.hypot(i[:, None], j[None, :])
    spectrum = np.fft.rfft2(img)
    return np.stack([np.fft.irfft2(spectrum * np.conj(np.fft.rfft2(kernel / kernel.sum())), s=(P, Q))
                     for kernel in (r <= radius_px, (r > radius_px + 1) & (r <= radius_px + 3))], axis=-1)


def _upsampled(corr: np.ndarray, up: int) -> np.ndarray:
    """``corr`` ((..., P, Q), periodic, band-limited) on a grid ``up`` times finer, by zero-padding its spectrum."""
    if up == 1:
        return corr
    P, Q = corr.shape[-2:]
    spec = np.fft.fftshift(np.fft.fft2(corr), axes=(-2, -1))
    padded = np.zeros(corr.shape[:-2] + (up * P, up * Q), complex)
    i0, j0 = (up * P - P) // 2, (up * Q - Q) // 2
    padded[..., i0:i0 + P, j0:j0 + Q] = spec
    return np.fft.ifft2(np.fft.ifftshift(padded, axes=(-2, -1))).real * up * up


def _upsampled_from_half(half: np.ndarray, shape: tuple[int, int], up: int) -> np.ndarray:
    """``_upsampled`` of the real maps whose ``np.fft.rfft2`` is ``half`` ((..., P, Q // 2 + 1); ``shape`` (P, Q)),
    from that half-spectrum by one real inverse transform (a third of the complex pair's time on a batch's
    few-electron patterns). On even grids ``_upsampled`` keeps each Nyquist frequency at its negative end and the
    real part then halves it between both ends: so does this. Odd grids go through ``_upsampled``."""
    P, Q = shape
    if up == 1 or P % 2 or Q % 2:
        return _upsampled(np.fft.irfft2(half, s=shape), up)
    h, q = P // 2, Q // 2
    fine = np.zeros(half.shape[:-2] + (up * P, up * Q // 2 + 1), complex)
    for col, scale in ((slice(0, q), 1.0), (q, 0.5)):  # the Nyquist column halved
        fine[..., :h, col] = half[..., :h, col] * scale
        fine[..., up * P - h + 1:, col] = half[..., h + 1:, col] * scale
    fine[..., h, :q] = fine[..., up * P - h, :q] = half[..., h, :q] / 2  # the Nyquist row halved onto ± P/2
    fine[..., h, q] = half[..., h, q] / 2
    return np.fft.irfft2(fine, s=(up * P, up * Q)) * up * up


def _bilinear_of(maps: np.ndarray, which: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``probe_synth.bilinear`` of the maps ``maps[which]`` ((K, P, Q); ``which`` one per point) at (x, y) px."""
    _, P, Q = maps.shape
    x = np.clip(x, 0, P - 1)
    y = np.clip(y, 0, Q - 1)
    x0 = np.minimum(np.floor(x).astype(int), P - 2)
    y0 = np.minimum(np.floor(y).astype(int), Q - 2)
    fx, fy = x - x0, y - y0
    flat, at = maps.reshape(-1), (which * P + x0) * Q + y0
    return ((1 - fx) * (1 - fy) * flat.take(at) + fx * (1 - fy) * flat.take(at + Q)
            + (1 - fx) * fy * flat.take(at + 1) + fx * fy * flat.take(at + Q + 1))


def _derivatives(fine: np.ndarray, which: np.ndarray, at: np.ndarray, up: int) -> tuple[np.ndarray, ...]:
    """(∂x, ∂y, ∂xx, ∂xy, ∂yy) per detector px of the maps ``fine[which]`` (each ``up`` times finer than the
    detector, bilinear) at the points ``at`` (their px), by central differences one fine pixel wide: only where the
    lattice's points are."""
    v = _stencils(fine, which, at)
    return ((v[:, 2, 1] - v[:, 0, 1]) * up / 2,
            (v[:, 1, 2] - v[:, 1, 0]) * up / 2,
            (v[:, 2, 1] - 2 * v[:, 1, 1] + v[:, 0, 1]) * up ** 2,
            (v[:, 2, 2] - v[:, 2, 0] - v[:, 0, 2] + v[:, 0, 0]) * up ** 2 / 4,
            (v[:, 1, 2] - 2 * v[:, 1, 1] + v[:, 1, 0]) * up ** 2)


def _stencils(maps: np.ndarray, which: np.ndarray, at: np.ndarray) -> np.ndarray:
    """(N, 3, 3): ``_bilinear_of`` of ``maps[which]`` at each point ``at`` (N, 2) moved by −1, 0, +1 px along each
    axis. Whole-pixel moves keep each point's fractions, so away from the edge the nine samples are read on the 4×4
    pixels about it (16 reads, not 36); near it each sample is clipped as ``_bilinear_of`` clips it."""
    _, P, Q = maps.shape
    d = np.array([-1.0, 0.0, 1.0])
    v = np.empty((len(at), 3, 3))
    inner = (at[:, 0] >= 1) & (at[:, 0] < P - 2) & (at[:, 1] >= 1) & (at[:, 1] < Q - 2)
    edge = np.flatnonzero(~inner)
    if len(edge):
        x = (at[edge, 0, None, None] + d[:, None]).repeat(3, axis=2).ravel()
        y = (at[edge, 1, None, None] + d[None, :]).repeat(3, axis=1).ravel()
        v[edge] = _bilinear_of(maps, np.repeat(which[edge], 9), x, y).reshape(-1, 3, 3)
    i = np.flatnonzero(inner)
    x0, y0 = np.floor(at[i, 0]).astype(int), np.floor(at[i, 1]).astype(int)
    fx, fy = (at[i, 0] - x0)[:, None, None], (at[i, 1] - y0)[:, None, None]
    corner = (which[i] * P + x0 - 1) * Q + y0 - 1
    p = maps.reshape(-1).take(corner[:, None] + (np.arange(4)[:, None] * Q + np.arange(4)).ravel()).reshape(-1, 4, 4)
    v[i] = ((1 - fx) * (1 - fy) * p[:, :3, :3] + fx * (1 - fy) * p[:, 1:, :3]
            + (1 - fx) * fy * p[:, :3, 1:] + fx * fy * p[:, 1:, 1:])
    return v


def lattice_likelihood(image: np.ndarray, template_fft_conj: np.ndarray, origin_px, basis_px, radius_px: float,
                       levels: np.ndarray, levels_shift_px, electron: float, starts: int = 1
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(origin (2,), basis (2, 2), rows g1 g2), detector px: the lattice ``origin + h g1 + k g2`` most likely to have
    given the electrons of one pattern (``image``, its hot pixels removed: ``without_spikes``), started from
    ``origin_px``, ``basis_px``; its size included (``lattice_likelihoods`` of one pattern).

    Model: about lattice point g the pattern's electrons fall as b_g + a_g·probe(x − g), Poisson. With a flat disk
    the log-likelihood of the lattice is, up to terms that do not move, Σ_g log(1 + a_g/b_g) · C(g), C the pattern's
    correlation with the probe (the electrons within a disk about each point). The lattice is moved to its maximum
    jointly, by damped Newton steps on its 6 parameters; each point's disk-to-ring ratio a_g/b_g is read on
    ``levels`` (``disk_and_ring_levels`` of patterns about this one, aligned on their beams; ``levels_shift_px``:
    this pattern's px + shift = levels' px), points under ``LIKELIHOOD_MIN_DISK_E`` left out.
    Why not each disk's own maximum (``lattice_on_pattern``): at ~1e3 e⁻ a far disk holds 2–20 electrons, its
    correlation is flat-topped and its own maximum wanders by a pixel, while the lattice's likelihood pools every
    disk's electrons before it is maximised; and a disk's brightness from its own few electrons weighs noise. On
    bench_strain's SrTiO3 [001] 60 Å at 1e3 e⁻ from the true lattice: mean |error| e_xx / e_yy / e_xy / rotation
    0.77 / 0.76 / 0.53 % / 0.28° against 1.27 / 1.05 / 0.69 % / 0.44° (benchmarks/RESULTS.md, "A low-dose lattice by
    its likelihood"). Its size is biased as the plain probe's correlation is (a thick crystal's disk is brighter
    on its inner side): −1.9 % at 60 Å, as the vectors' lattice (−1.7 %) and py4DSTEM's (−1.7 %) at that dose.
    ``starts`` > 1: also from ``starts`` − 1 lattices about the given one (``_starts``; all ascended at once), the
    likeliest result kept, each compared over the points it lights: with ~100 electrons beyond the beam (a 2 nm
    crystal at 1e3 e⁻) the likelihood has many maxima a few electrons' disks apart (bench_strain's SrTiO3 [001] 20 Å
    at 1e3 e⁻ from the batch's lattice: mean |error| e_xx 1.57 % from one start, 1.05 % from 16)."""
    o, G = lattice_likelihoods(np.asarray(image)[None], template_fft_conj, np.asarray(origin_px)[None],
                               np.asarray(basis_px)[None], radius_px, levels, np.asarray(levels_shift_px)[None],
                               np.array([electron]), starts)
    return o[0], G[0]


def lattice_likelihoods(images: np.ndarray, template_fft_conj: np.ndarray, origins_px, bases_px, radius_px: float,
                        levels: np.ndarray, levels_shifts_px, electrons, starts: int = 1
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``lattice_likelihood`` of the patterns ``images`` (K, P, Q) at once, each from its own ``origins_px`` (K, 2)
    and ``bases_px`` (K, 2, 2), shifted onto ``levels`` by its ``levels_shifts_px`` (K, 2), of one electron
    ``electrons`` (K,): (origins (K, 2), bases (K, 2, 2)). Every pattern's starts are ascended together: one by one,
    a batch's few-electron patterns had cost `predict` 40 % of its time on a thick crystal's 1e3 e⁻ scan
    (benchmarks/RESULTS.md, "The batch's likelihoods at once"), ``LIKELIHOOD_CHUNK`` patterns at a time."""
    imgs = np.asarray(images, np.float64)
    K, P, Q = imgs.shape
    if K > LIKELIHOOD_CHUNK:
        parts = [lattice_likelihoods(imgs[a:a + LIKELIHOOD_CHUNK], template_fft_conj,
                                     np.asarray(origins_px)[a:a + LIKELIHOOD_CHUNK],
                                     np.asarray(bases_px)[a:a + LIKELIHOOD_CHUNK], radius_px, levels,
                                     np.asarray(levels_shifts_px)[a:a + LIKELIHOOD_CHUNK],
                                     np.asarray(electrons)[a:a + LIKELIHOOD_CHUNK], starts)
                 for a in range(0, K, LIKELIHOOD_CHUNK)]
        return np.concatenate([o for o, _ in parts]), np.concatenate([G for _, G in parts])
    up = LIKELIHOOD_UPSAMPLE if max(P, Q) <= LIKELIHOOD_UPSAMPLE_MAX_PX else 1
    fine = _upsampled_from_half(np.fft.rfft2(imgs) * template_fft_conj, (P, Q), up)
    o = np.asarray(origins_px, np.float64).reshape(K, 2).copy()
    G = np.asarray(bases_px, np.float64).reshape(K, 2, 2).copy()
    start = np.stack([np.vstack(t) for k in range(K) for t in _starts(o[k], G[k], starts)])  # (K·S, 3, 2)
    of = np.repeat(np.arange(K), starts)  # each start's pattern
    shifts, e = np.asarray(levels_shifts_px, np.float64).reshape(K, 2), np.asarray(electrons, np.float64)
    Xs, ws, tried = [], [], []
    # the points that take part where each start puts them
    for s, (hk, w) in enumerate(_weighed_points_many(start[:, 0], start[:, 1:], (P, Q), radius_px, levels, shifts[of],
                                                     e[of])):
        if len(hk) >= 4 and _spans_a_plane(hk):
            Xs.append(np.column_stack([np.ones(len(hk)), hk]))  # point = X @ theta
            ws.append(w)
            tried.append(s)
    if not tried:
        return o, G
    tried = np.array(tried)
    ascended = _newton(fine, of[tried], up, Xs, ws, start[tried])
    if starts == 1:
        o[of[tried]], G[of[tried]] = ascended[:, 0], ascended[:, 1:]
        return o, G
    points = _weighed_points_many(ascended[:, 0], ascended[:, 1:], (P, Q), radius_px, levels, shifts[of[tried]],
                                  e[of[tried]])
    at = np.concatenate([theta[0] + hk @ theta[1:] for theta, (hk, _) in zip(ascended, points)]) * up
    n_points = [len(hk) for hk, _ in points]
    value_at = np.split(_bilinear_of(fine, np.repeat(of[tried], n_points), at[:, 0], at[:, 1]),
                        np.cumsum(n_points)[:-1])
    best_value = np.full(K, -np.inf)
    for theta, k, (hk, w), v in zip(ascended, of[tried], points, value_at):
        value = w @ v if len(hk) else -np.inf
        if value > best_value[k]:  # each pattern's likeliest start, the first of equals
            o[k], G[k], best_value[k] = theta[0], theta[1:], value
    return o, G


def _spans_a_plane(hk: np.ndarray) -> bool:
    """Whether the lattice points ``hk`` (N, 2; whole numbers) are not all on one line: their Gram determinant about
    the first, exact in whole numbers, is positive (``np.linalg.matrix_rank`` of [1 h k] ≥ 3, without its SVD)."""
    d = hk - hk[0]
    g = d.T @ d
    return bool(g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0] > 0)


def weighed_lattice_points(o, G, shape, radius_px: float, levels, levels_shift_px, electron: float):
    """(hk (N, 2), weights log(1 + a_g/b_g) (N,)): the points of lattice ``o``, ``G`` on a detector of ``shape``
    clear of its edge whose disk in ``levels`` holds ``LIKELIHOOD_MIN_DISK_E`` electrons above its ring
    (``lattice_likelihood``)."""
    return _weighed_points_many(np.asarray(o, float)[None], np.asarray(G, float)[None], shape, radius_px, levels,
                                np.asarray(levels_shift_px, float)[None], np.array([electron], float))[0]


def summed_disk_z(points_px: np.ndarray, levels: np.ndarray, radius_px: float, electron: float,
                  n_summed: int) -> np.ndarray:
    """(N,) how many Poisson σ the disk at each of ``points_px`` (N, 2) stands above its ring in the sum of the
    ``n_summed`` patterns whose mean ``levels`` (``disk_and_ring_levels``) holds, one electron ``electron``: the
    disk's excess electrons over the root of its electrons (the ring's own noise, over three times the disk's
    pixels, left out). 0 where the disk holds none."""
    disk, ring = bilinear(levels, *np.asarray(points_px, float).reshape(-1, 2).T).T
    area_e = np.pi * max(radius_px, 1.0) ** 2 * n_summed / electron  # a level (per pixel, mean) -> electrons summed
    return np.where(disk > 0, (disk - ring) * area_e / np.sqrt(np.maximum(disk * area_e, 1e-12)), 0.0)



def summed_disk_brightness(points_px: np.ndarray, beam_px, levels: np.ndarray) -> np.ndarray:
    """(N,) the disk at each of ``points_px`` (N, 2) in the mean ``levels`` (``disk_and_ring_levels``) of a batch's
    patterns: its excess over its ring as a fraction of the beam's at ``beam_px`` (``evidence.bright_enough``'s
    brightness, on the patterns' mean)."""
    disk, ring = bilinear(levels, *np.asarray(points_px, float).reshape(-1, 2).T).T
    beam_disk, beam_ring = bilinear(levels, *np.asarray(beam_px, float).reshape(1, 2).T)[0]
    return (disk - ring) / max(float(beam_disk - beam_ring), 1e-30)

def _weighed_points_many(origins, Gs, shape, radius_px: float, levels, levels_shifts_px, electrons) -> list:
    """``weighed_lattice_points`` of lattices ``origins`` (S, 2), ``Gs`` (S, 2, 2) at once, each shifted onto
    ``levels`` by its ``levels_shifts_px`` (S, 2), of one electron ``electrons`` (S,): [(hk, weights)] per lattice."""
    P, Q = shape
    n = np.minimum(30, np.ceil(max(P, Q) / np.maximum(np.hypot(Gs[..., 0], Gs[..., 1]).min(axis=1), 1.0)) + 1)
    orders = np.arange(-int(n.max()), int(n.max()) + 1)
    hk = np.stack(np.meshgrid(orders, orders, indexing="ij"), -1).reshape(-1, 2).astype(float)
    m = WHOLE_PATTERN_EDGE_RADII * radius_px + WHOLE_PATTERN_EDGE_PX
    p = origins[:, None, :] + hk @ Gs  # (S, M, 2)
    inside = (np.abs(hk).max(axis=1)[None] <= n[:, None]) & (p[..., 0] >= m) & (p[..., 0] < P - 1 - m) \
        & (p[..., 1] >= m) & (p[..., 1] < Q - 1 - m)
    s_of, h_of = np.nonzero(inside)
    disk, ring = bilinear(levels, *(p[s_of, h_of] + np.asarray(levels_shifts_px, float)[s_of]).T).T
    excess = disk - ring
    area = np.pi * max(radius_px, 1.0) ** 2
    electron = np.asarray(electrons, float)[s_of]
    lit = excess * area >= LIKELIHOOD_MIN_DISK_E * electron
    weight = np.log1p(excess[lit] / np.maximum(ring[lit], 1e-3 * electron[lit]))
    s_of, h_of = s_of[lit], h_of[lit]
    cut = np.searchsorted(s_of, np.arange(len(origins) + 1))
    return [(hk[h_of[a:b]], weight[a:b]) for a, b in zip(cut[:-1], cut[1:])]


def _starts(o: np.ndarray, G: np.ndarray, starts: int):
    """The given lattice, then ``starts`` − 1 about it, the same draws for every pattern (``LIKELIHOOD_START_SEED``):
    each basis component moved by ``LIKELIHOOD_START_SPREAD[0]`` of the basis' largest, the origin by
    ``LIKELIHOOD_START_SPREAD[1]`` px (normal deviates)."""
    yield o, G
    rng = np.random.default_rng(LIKELIHOOD_START_SEED)
    for _ in range(starts - 1):
        yield (o + rng.normal(0.0, LIKELIHOOD_START_SPREAD[1], 2),
               G + rng.normal(0.0, LIKELIHOOD_START_SPREAD[0], (2, 2)) * np.abs(G).max())


def _newton(fine: np.ndarray, of: np.ndarray, up: int, Xs: list, ws: list, thetas: np.ndarray) -> np.ndarray:
    """Damped Newton steps of each start's ``thetas[s]`` (rows origin, g1, g2) to the nearest maximum of
    Σ ws[s] · fine[of[s]](Xs[s] @ theta): (S, 3, 2). Every start at once, their points padded with rows X = 0, w = 0
    (no pull, no move); each stops on its own once it moves under ``LIKELIHOOD_TOL_PX`` (16 starts one by one had
    cost `predict` 60 % of its time on a thin crystal's low-dose scan)."""
    S, N = len(Xs), max(len(X) for X in Xs)
    X, w = np.zeros((S, N, 3)), np.zeros((S, N))
    for s, (Xk, wk) in enumerate(zip(Xs, ws)):
        X[s, :len(Xk)], w[s, :len(wk)] = Xk, wk
    theta, active = np.array(thetas, np.float64), np.ones(S, bool)
    for _ in range(LIKELIHOOD_STEPS):
        a = np.flatnonzero(active)
        Xa, wa = X[a], w[a]
        at = (Xa @ theta[a]).reshape(-1, 2) * up
        dx, dy, hxx, hxy, hyy = (d.reshape(len(a), N) for d in _derivatives(fine, np.repeat(of[a], N), at, up))
        grad = np.concatenate([np.matmul((wa * dx)[:, None], Xa), np.matmul((wa * dy)[:, None], Xa)], axis=2)[:, 0]
        curv = -_weighed_gram(Xa, wa, hxx, hxy, hyy)
        ev = np.linalg.eigvalsh(curv)
        # damped toward gradient ascent where the likelihood is not concave about the lattice
        damp = np.maximum(0.0, -1.1 * ev[:, 0]) + 1e-9 * np.abs(ev).max(axis=1)
        step = np.linalg.solve(curv + damp[:, None, None] * np.eye(6), grad[..., None])[..., 0]
        step = step.reshape(len(a), 2, 3).transpose(0, 2, 1)
        move = np.abs(Xa @ step).max(axis=(1, 2))  # the largest move of any point
        step *= np.minimum(1.0, LIKELIHOOD_MAX_STEP_PX / np.maximum(move, 1e-300))[:, None, None]
        theta[a] += step
        active[a[move < LIKELIHOOD_TOL_PX]] = False
        if not active.any():
            break
    return theta


def _weighed_gram(X: np.ndarray, w: np.ndarray, hxx: np.ndarray, hxy: np.ndarray, hyy: np.ndarray) -> np.ndarray:
    """(S, 6, 6) Σ_n w h Xᵀ X per start with h the (xx, xy; xy, yy) second derivatives at its points: the Hessian
    of Σ w · f(X @ theta) in theta's x column then its y column."""
    def block(h):
        return np.matmul(X.transpose(0, 2, 1) * (w * h)[:, None], X)
    xy = block(hxy)
    return np.concatenate([np.concatenate([block(hxx), xy], axis=2), np.concatenate([xy, block(hyy)], axis=2)], axis=1)


def lattice_evidence(image: np.ndarray, origin_px, basis_px, radius_px: float, levels: np.ndarray, levels_shift_px,
                     electron: float) -> float:
    """How many standard deviations the electrons of one pattern (``image``, hot pixels removed) stand above their
    rings at the points of lattice ``origin_px`` + h g1 + k g2 (``basis_px``), each weighed as
    ``lattice_likelihood`` weighs it (``levels``: the patterns about this one): Σ w_g (N_g − A·ring_g) over its
    standard deviation without disks, N_g the electrons within a disk's radius, ring_g the pattern's own
    electrons per px 1–3 px beyond it. A pattern that shows no such lattice (vacuum, a film, another grain) gives
    ~N(0, 1), raised by ~1 where the lattice was fitted to it (``lattice_likelihood``: bench_strain's 2 nm draws at
    1e3 e⁻ with their disks replaced by their rings, 96 patterns: at most 3.5; the patterns themselves 4.2–28,
    median 9.7)."""
    return float(lattice_evidences(np.asarray(image)[None], np.asarray(origin_px)[None], np.asarray(basis_px)[None],
                                   radius_px, levels, np.asarray(levels_shift_px)[None], np.array([electron]))[0])


def lattice_evidences(images: np.ndarray, origins_px, bases_px, radius_px: float, levels: np.ndarray,
                      levels_shifts_px, electrons) -> np.ndarray:
    """(K,) ``lattice_evidence`` of the patterns ``images`` (K, P, Q) on their lattices ``origins_px`` (K, 2),
    ``bases_px`` (K, 2, 2), shifted onto ``levels`` by ``levels_shifts_px`` (K, 2), of one electron ``electrons``
    (K,), at once."""
    imgs = np.asarray(images, np.float64)
    o, G = np.asarray(origins_px, np.float64), np.asarray(bases_px, np.float64)
    e = np.asarray(electrons, np.float64)
    points = _weighed_points_many(o, G, imgs.shape[1:], radius_px, levels, levels_shifts_px, e)
    own_levels = disk_and_ring_levels(imgs, radius_px)
    r = max(radius_px, 1.0)
    area, ring_area = np.pi * r ** 2, np.pi * ((r + 3) ** 2 - (r + 1) ** 2)
    z = np.zeros(len(imgs))
    for k, (hk, w) in enumerate(points):
        hk_beyond = np.abs(hk).sum(axis=1) > 0  # the direct beam is no evidence of a crystal
        hk, w = hk[hk_beyond], w[hk_beyond]
        if not len(hk):
            continue
        disk, ring = bilinear(own_levels[k], *(o[k] + hk @ G[k]).T).T
        excess = (w * (disk - ring)).sum() * area / e[k]
        # each disk's count varies as if it expected at least EVIDENCE_MIN_E electrons: on an empty detector a stray
        # electron in one disk would otherwise stand infinitely many deviations above a ring of none
        chance = np.maximum(np.maximum(ring, 0.0) * area * (1 + area / ring_area) / e[k], EVIDENCE_MIN_E)
        z[k] = excess / math.sqrt((w ** 2 * chance).sum())
    return z


def without_diffuse_background(patterns: torch.Tensor, centres: torch.Tensor, b, q_px, radius_px: float, tol_px: float,
                               enough: int) -> torch.Tensor:
    """``patterns`` (B, H, W) less their diffuse background (``_ring_background``; clipped at zero), where their
    non-beam vectors (pattern ``b``, ``q_px`` px from the beam at ``centres``) fix a lattice
    (``fitted_lattices``, at least ``enough`` within ``tol_px``). Other patterns are returned as they are."""
    b = np.asarray(b)
    out = patterns
    if len(b) < enough:
        return out
    rows, G, good = fitted_lattices(b, q_px, tol_px, enough)
    rows, G = rows[good], G[good]
    if not len(rows):
        return out
    sub = patterns[torch.as_tensor(rows, device=patterns.device)].float()
    bg = _ring_background(sub.cpu(), centres[torch.as_tensor(rows, device=centres.device)].cpu().float(),
                          torch.as_tensor(G).float(), float(radius_px)).to(patterns.device)
    out = patterns.clone().float()
    out[torch.as_tensor(rows, device=patterns.device)] = (sub - bg).clamp_min(0)
    return out


def _ring_background(img: torch.Tensor, c: torch.Tensor, G: torch.Tensor, r: float) -> torch.Tensor:
    """(P, H, W) each pattern's diffuse background: the median, in rings of ``BACKGROUND_RING_PX`` about its
    beam, of its pixels ``BACKGROUND_CLEAR_RADII`` disk radii or more from every point of its lattice ``G``
    (zero in a ring without such pixels). The median, not the mean: a disk the lattice does not hold (another
    grain's, a HOLZ disk) is no background, and sparse counts (low dose) have none to subtract. ``img`` float32."""
    P, H, W = img.shape
    # each pixel's offset from its pattern's beam along either axis, broadcast (no (P, H, W, 2) array)
    di = torch.arange(H, dtype=img.dtype)[None, :, None] - c[:, 0, None, None]
    dj = torch.arange(W, dtype=img.dtype)[None, None, :] - c[:, 1, None, None]
    ring = (torch.hypot(di, dj) / BACKGROUND_RING_PX).long()
    nb = int(ring.max()) + 1
    # the level from every other pixel along each axis (a quarter of the work): it varies over rings of pixels
    di2, dj2 = di[:, ::2].expand(P, -1, (W + 1) // 2), dj[:, :, ::2].expand(P, (H + 1) // 2, -1)
    f = torch.einsum("phwi,pij->phwj", torch.stack([di2, dj2], dim=-1), torch.linalg.inv(G))
    off_point = torch.einsum("phwi,pij->phwj", f - f.round(), G)
    clear = (torch.hypot(off_point[..., 0], off_point[..., 1]) >= BACKGROUND_CLEAR_RADII * r).flatten()
    k = (torch.arange(P)[:, None, None] * nb + (torch.hypot(di2, dj2) / BACKGROUND_RING_PX).long()).flatten()[clear]
    v = img[:, ::2, ::2].flatten()[clear]
    if not len(v):
        return torch.zeros_like(img)
    # one sort of (ring, value) keys puts each ring's clear pixels in ascending order: the median is the middle one
    key = torch.from_numpy(np.sort((k * 2**32 + _ordered_bits(v)).numpy()))
    n = torch.bincount(k, minlength=P * nb)
    middle = (torch.cumsum(n, 0) - n + (n - 1).clamp_min(0) // 2).clamp_max(len(v) - 1)
    level = torch.where(n > 0, _float_of_ordered_bits(key[middle] & (2**32 - 1)), torch.zeros((), dtype=img.dtype))
    return level.view(P, nb).gather(1, ring.view(P, -1)).view(P, H, W)


def _ordered_bits(v: torch.Tensor) -> torch.Tensor:
    """int64 in [0, 2³²) that order as the float32 values ``v`` do: the IEEE bits, a negative's flipped."""
    i = v.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(i >= 0, i + 2**31, -1 - i)


def _float_of_ordered_bits(u: torch.Tensor) -> torch.Tensor:
    """The float32 values whose ``_ordered_bits`` are ``u``."""
    return torch.where(u >= 2**31, u - 2**31, -1 - u).to(torch.int32).view(torch.float32)


def on_lattice_of(b_kept, q_kept, b, q, tol_px: float, enough: int, candidates: int = 8) -> np.ndarray:
    """(N,) whether each vector ``q`` (N, 2; px from the beam) of pattern ``b`` lies within ``tol_px`` of a
    nonzero point of its pattern's lattice through the beam fitted to the vectors ``q_kept`` of patterns
    ``b_kept``: spanned by two of their ``candidates`` shortest that index the most (at least ``enough``),
    then refit twice by least squares on those within ``evidence.LATTICE_REFIT_FRACTION`` |g_min| of a
    point. Vectorised over the batch, as ``lattice_placed`` (a per-pattern ``evidence.lattice_members`` cost
    1.7 ms per pattern in `predict`, benchmarks/RESULTS.md)."""
    b_kept, b = np.asarray(b_kept), np.asarray(b)
    q_kept = np.asarray(q_kept, np.float64).reshape(-1, 2)
    q = np.asarray(q, np.float64).reshape(-1, 2)
    ok = np.zeros(len(q), bool)
    if len(q_kept) < enough or not len(q):
        return ok
    patterns, G, good = fitted_lattices(b_kept, q_kept, tol_px, enough, candidates)
    row = np.minimum(np.searchsorted(patterns, b), len(G) - 1)
    known = patterns[row] == b
    hk = np.round(np.einsum("ni,nij->nj", q, np.linalg.inv(G[row])))
    res = q - np.einsum("ni,nij->nj", hk, G[row])
    return known & good[row] & (np.hypot(res[:, 0], res[:, 1]) < tol_px) & (hk != 0).any(axis=1)


def fitted_lattices(b_kept, q_kept, tol_px: float, enough: int, candidates: int = 8):
    """Per pattern of ``b_kept`` (sorted, unique): the lattice through the beam of its vectors ``q_kept`` (px
    from the beam) as ``on_lattice_of`` fits it: (patterns (P,), G (P, 2, 2) rows g1, g2, good (P,): whether it
    indexes at least ``enough``)."""
    b_kept = np.asarray(b_kept)
    q_kept = np.asarray(q_kept, np.float64).reshape(-1, 2)
    where, Q = _by_pattern(b_kept, q_kept)
    valid = where >= 0
    G, good = _best_basis(Q, valid, tol_px, enough, candidates)
    for _ in range(2):
        hk = np.round(Q @ np.linalg.inv(G))
        res = np.hypot(*np.moveaxis(Q - hk @ G, -1, 0))
        near = (res < LATTICE_REFIT_FRACTION * np.hypot(G[..., 0], G[..., 1]).min(axis=1)[:, None]) \
            & (hk != 0).any(axis=2) & valid
        H = hk * near[..., None]
        HtH = H.transpose(0, 2, 1) @ hk
        fit = good & (near.sum(axis=1) >= 3) & (np.linalg.det(HtH) > 1e-6 * np.einsum("pii->p", HtH) ** 2)
        HtH[~fit] = np.eye(2)
        G = np.where(fit[:, None, None], np.linalg.solve(HtH, H.transpose(0, 2, 1) @ Q), G)
    return np.unique(b_kept), G, good  # the rows of G, as _by_pattern orders them


def _by_pattern(b: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vectors ``q`` (N, 2) of patterns ``b`` as one padded array per pattern, shortest first: (where (P, V):
    the index into ``q`` or -1 where padded, Q (P, V, 2): the vectors, zeros where padded)."""
    _, inv, counts = np.unique(b, return_inverse=True, return_counts=True)
    order = np.lexsort((np.hypot(q[:, 0], q[:, 1]), inv))  # by pattern, then shortest first
    slot = np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts)
    where = np.full((len(counts), int(counts.max())), -1)
    where[inv[order], slot] = order
    return where, np.where((where >= 0)[..., None], q[np.maximum(where, 0)], 0.0)


def _best_basis(Q: np.ndarray, valid: np.ndarray, tol_px: float, enough: int, candidates: int):
    """Per pattern, of the 2-D lattices spanned by two of its ``candidates`` shortest vectors (enclosing more
    than ~14°), the one that indexes the most of ``Q`` within ``tol_px``: (G (P, 2, 2), rows g1, g2; whether it
    indexes at least ``enough``)."""
    P = len(Q)
    cand = Q[:, :candidates]
    i, j = np.triu_indices(cand.shape[1], 1)
    if not len(i):  # no pattern holds two vectors: no basis anywhere
        return np.broadcast_to(np.eye(2) * 1e9, (P, 2, 2)).copy(), np.zeros(P, bool)
    A, B = cand[:, i], cand[:, j]  # (P, K, 2)
    ok = valid[:, i] & valid[:, j] & (np.abs(A[..., 0] * B[..., 1] - A[..., 1] * B[..., 0]) >
                                      0.25 * np.hypot(A[..., 0], A[..., 1]) * np.hypot(B[..., 0], B[..., 1]))
    G = np.where(ok[..., None, None], np.stack([A, B], axis=2), np.eye(2) * 1e9)  # (P, K, 2, 2); no basis: 1e9
    hk = np.round(Q[:, None] @ np.linalg.inv(G))  # (P, K, V, 2)
    off = Q[:, None] - hk @ G
    n_on = ((np.hypot(off[..., 0], off[..., 1]) < tol_px) & (hk != 0).any(axis=3) & valid[:, None] & ok[..., None]).sum(2)
    best = np.argmax(n_on, axis=1)
    return G[np.arange(P), best], n_on[np.arange(P), best] >= enough
