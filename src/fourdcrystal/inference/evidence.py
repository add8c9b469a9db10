"""Every vector the network reports must be supported by the measured pattern.

The network maps a pattern to V_g peaks; where it has never seen such input (a vacuum scan position, an
amorphous support film, a detector without beam) it can still paint a lattice of peaks. A Bragg vector
is a claim that a diffraction disk sits there, so each one is checked against the measured pattern,
in the detector's own pixels (counts as recorded, no resampling), with the two conditions that decide
the truth (``fourdcrystal.simulation.labels``), made robust to shot noise:

* contrast: the mean over the disk's core (half the probe radius, at least the nearest pixels; its brightest
  pixel left out, since a hot pixel is no disk, unless the disk is smaller than a pixel,
  ``HOT_PIXEL_MIN_RADIUS_PX``, and so itself one bright pixel) stands
  out from the ring around the disk (radii r + 1 … 2r + 1; its median is the local level) by
  ``min_snr`` standard errors of that mean. The pixel noise is the largest of the ring's robust spreads
  (median absolute deviation; 84th percentile minus median) and the Poisson noise of the level,
  counting one electron as ``one_electron`` finds it (a sparse low-dose pattern has a ring of zeros,
  whose MAD is zero, yet a few stray counts are no disk; a blurred one on a lit background hides its
  shot noise from the pixel spread, and its electron comes from the photon transfer of block sums,
  ``photon_transfer``). Where the pattern holds counts (``is_counts``,
  or a low-dose pattern through a detector's blur whose electrons are isolated blobs), the disk's
  electrons also face Poisson's exact test (``poisson_z``) against the ring's background (its mean, outside the
  other vectors' disks that reach into it where the beam holds ≥ ``LOW_DOSE_E[1]`` electrons; for a
  disk judged on the circle about the beam, the circle's mean outside every vector's disk; a disk beside
  the beam's counts only its own pixels), and a ring of mostly zeros is judged by that test alone: the
  Gaussian floor of one electron per pixel would ask a disk on an empty background for ~40 electrons.
  Where the background is correlated over a disk's size — the speckle of an amorphous film under a convergent
  probe is itself made of probe-sized blobs — pixels are not independent and the pixel noise / √n understates
  how much a disk-sized mean varies; so the standard error is at least the spread of the ring's sector means
  (``SECTORS``, each about a disk's area, after removing a linear gradient), scaled to the core's size, where
  the background fills the ring (its median above zero: sparse counts are shot noise);
* brightness: the core's excess over the local level is at least ``min_brightness`` × the core mean of
  the pattern's own direct beam — a speckle of an amorphous film or a background wiggle is not a
  reflection — and, within the contrast's noise, of the incident beam (``incident_beam``, ``bright_enough``):
  the truth's floor is on the vacuum beam, which a thick crystal's transmitted beam falls far below.
On a flat background (vacuum, a detector without beam) a vector survives with probability ≈ 1e-3.
* lattice: on a dense background (``DENSE_E_PER_DISK``; noise-free patterns too) a film's speckle grains
  are real bright blobs of a disk's size and pass both tests (80 kV, 3.5 mrad, 20 nm carbon: 5 per
  noise-free pattern, 3.75 at 1e5 e⁻), so there a vector placed on the pattern stands only when at least
  ``MIN_LATTICE_VECTORS`` of its pattern's vectors lie on one lattice through the beam (``lattice_support``),
  as measured or, for disks larger than ``small_disks``, as the network proposed them (within its looser
  uncertainty most of them, ``proposed_lattice_vectors``): a crystal's reflections do, speckles do not. A disk
  touching a neighbour (not refined) is judged on the network's positions, where it may also stand on a row
  through the beam with another vector (``row_partners``). On the network's positions each ±g pair counts once
  (``friedel_folded``): a film's speckle is centrosymmetric too. A counted background is dense by its ring's
  mean, not its median, which is zero for single counts (a disk judged on the circle about the beam: the circle's
  mean outside the disks), and from fewer electrons (``DENSE_COUNTED_E_PER_DISK``).
  A disk smaller than a pixel (``HOT_PIXEL_MIN_RADIUS_PX``) must itself lie on its pattern's lattice, whatever its
  background: it looks like a hot pixel.
* faint disks: the network's V_g peaks of faint small disks fall below the stamped threshold, under ~2e4
  electrons per pattern and, at any dose, for a thick crystal's weak orders; so it proposes small disks down
  to ``LOW_DOSE_THRESHOLD_FACTOR`` × the stamped threshold, and what only that lower threshold proposes
  must stand out by ``WEAK_MIN_SNR``. Above the low-dose ramp (``peak_thresholds``) such a vector must also
  lie on the lattice of its pattern's stronger vectors (``lattice_members``): an amorphous film's speckle
  passes the contrast test there (200 kV / 2 mrad at 1e5 e⁻: 6.25 false vectors per pattern without it),
  while below the ramp shot noise drowns the speckle and a crystal shows too few disks for a lattice.
* a lone vector: below ``LOW_DOSE_E[1]`` electrons a pattern's only vector beside the beam must stand out by
  ``LONE_MIN_SNR``: shot noise's chance blobs come one at a time, a crystal's reflections do not.

The ring is only background where the neighbouring disks leave it free. A disk is judged per vector, from
the pattern's own spacing (``neighbour_spacing_px``: its nearest other vector): with that neighbour closer
than ``RING_CLEAR_RADII`` radii, the neighbour's disk lies in the ring and the ring check would drop real
reflections (measured: SrTiO3 [001] at 4 mrad kept 9 of its 20 strongest), so it is judged against the
circle through it about the direct beam instead (``disk_contrast(..., overlapping=True)``). The same
2.5 mrad disk at 300 kV is thus ring-checked in Si [001] and circle-checked in SrTiO3 [001]. Disks of radius
α/λ ≤ ``MAX_SMALL_DISK_INVA`` (0.1 Å⁻¹, e.g. 2 mrad at 300 kV: ``small_disks``) keep the ring: they leave it
free in a lattice of up to ~4 Å, and in a coarser one the neighbours' disks within the ring are left out of
its level and spread where the beam holds ``LOW_DOSE_E[1]`` electrons (``crowded``; on a dimmer pattern the other
proposals may be the background's own chance clusters, as for the counting rate below). ZnO [11-20] at 200 kV /
2 mrad puts 5 px disks 12 px apart, and a faint disk between two bright ones stood under 1σ out against its whole
ring; judged against the circle instead, as a larger disk is, low-dose and film patterns lost (benchmarks/RESULTS.md,
"Zone axes not measured before"). Neither is
background where a disk lies on it: the direct beam's disk is left out of every ring it reaches (SrTiO3's
{110} disks at 300 kV / 2.5 mrad have the beam's edge in their ring, and at 1e3 e⁻ its ~12 electrons per
pixel there made 18-electron disks look like background), and the circle leaves out the disk's own and its
neighbours' disks (``_clear``). The ring's level otherwise keeps the other vectors' pixels: where those are a film's
speckle grains, the gaps between them are darker than the film (a crowded small disk's on a bright pattern leaves
them out: a film there is dense and judged by the lattice rule). Its counting rate leaves them out where the beam holds
``LOW_DOSE_E[1]`` electrons, so that a bright neighbour's edge does not raise it (a film's speckle there is dense
and judged by the lattice rule). A disk that overlaps the beam's keeps its whole ring and circle: its core holds
the beam's edge.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from fourdcrystal.inference.peaks import window3

_MAD_TO_SIGMA = 1.4826  # median absolute deviation -> standard deviation of Gaussian noise
MIN_SNR = 3.0  # a disk stands out from its ring by this many standard errors (≈ 1e-3 false per flat-field test)
MIN_BRIGHTNESS = 1e-3  # ... and is at least this fraction of the direct beam (the truth's brightness floor)
# ... of the incident beam too (``incident_beam``): in a thick crystal the transmitted beam holds a fraction of
# the electrons, and a floor on it alone admitted reflections that the truth's floor, on the vacuum beam, does
# not hold; judged within BRIGHTNESS_TOLERANCE standard errors of the disk's contrast, so that shot noise on a
# disk near the floor does not drop it (benchmarks/RESULTS.md, "The brightness floor on the incident beam")
BRIGHTNESS_TOLERANCE = 3.0
# a pattern of isolated electrons (``_isolated_electrons``): fewer than this many per background pixel, ...
LOW_COUNT_E_PER_PX = 1 / 9  # under one background electron per 3×3 window: blobs are isolated
MIN_MAXIMA_FRACTION = 0.01  # ... and local maxima on at least this share of its pixels
# ... or its median pixel is empty: zero, within the read noise, or under this fraction of one electron's blob. A
# camera's point spread (σ ≥ 1 px) leaves every pixel a tail of its neighbours' electrons (1e-15–2e-3 of an electron
# on bench_accuracy's noise-only negatives at 1e3 e⁻) and merges blobs, so that fewer than 1 % of the pixels are maxima:
# judged dense, such a pattern's electron was its photon transfer's, 0.03–0.08 of the real one, and every speck a disk
# (3–6 false vectors per pattern; benchmarks/RESULTS.md, "A camera's point spread")
BLUR_TAIL_OF_ELECTRON = 0.01
# ... where its maxima are single electrons: at most this many blobs' worth of it per maximum (a blurred speckle of
# electrons 1.4–2.6, the tests' noise-free synthetic disks 5.2, a noise-free simulated pattern thousands)
BLUR_TAIL_MAX_ELECTRONS_PER_MAXIMUM = 3.0
# ... counted on the pixels whose 3×3 window holds at most this many blobs: a low-dose beam's disk (300 kV, 3.5 mrad at
# 1e3 e⁻: ~1.4 electrons per pixel) is dense, and counted in it 3.6–6.4 blobs per maximum (σ = 1 px) made half of
# bench_accuracy's vacuum patterns dense, their electron the photon transfer's 0.003–0.07 of the real one
# (benchmarks/RESULTS.md, "A low-dose beam's disk beside a blurred speckle")
BLUR_TAIL_SPARSE_WINDOW = 3.0
# An electron's blob is a local maximum standing this many read-noise σ above the median pixel (``read_noise``): on a
# dark-subtracted integrating detector every pixel's noise has maxima, which are no electrons
READ_NOISE_PEAK_SIGMA = 3.5
READ_NOISE_MIN_NEGATIVE = 0.01  # ... measured where at least this share of a pattern's pixels read below zero
# ... or, where none does, from a floor that reads whole steps clipped at zero (``clipped_read_noise``: an integrating
# detector's dark-subtracted frames stored as unsigned integers): on the darkest quarter of a pattern's
# CLIPPED_BLOCK_PX² blocks (at most CLIPPED_MAX_BLOCKS of them), at least CLIPPED_MIN_NONZERO of the pixels above
# zero and CLIPPED_MIN_ZERO at zero, two steps as common as noise makes them and electrons cannot — 2 P(0) P(2) / P(1)²
# (CLIPPED_MIN_DISPERSION) is 1 for counts at any one rate (measured 0.9–1.1 on the darker blocks of counted patterns
# at 1e3–1e5 e⁻, with and without charge sharing) and 3.1 / 7.8 for Gaussian noise of 1.5 / 3 steps clipped —, white
# (neighbours above zero together no more often than CLIPPED_MAX_NEIGHBOURS × chance: an electron's blur spreads it
# over neighbours) and Gaussian (its share at zero within CLIPPED_ZERO_TOLERANCE of Φ(½ / σ), σ as measured: a bright
# pattern's electrons in the dark blocks leave fewer); benchmarks/RESULTS.md, "Read noise clipped at zero"
CLIPPED_BLOCK_PX = 8
CLIPPED_MAX_BLOCKS = 64  # at most 4,096 pixels: a 128 px detector's quarter, a 256 px one's sixteenth
CLIPPED_MIN_NONZERO, CLIPPED_MIN_ZERO = 0.2, 0.45
CLIPPED_MIN_DISPERSION = 3.0
CLIPPED_MAX_NEIGHBOURS = 1.5
CLIPPED_ZERO_TOLERANCE = 0.05
# Negative pixels that are no read noise: a smooth background subtracted by hand (``subtracted_floor``). Read noise is
# white: two neighbouring negative pixels differ by E(a - b)² = 2 (1 - 2/π) σ², 0.36 of 2 E x² (measured 0.36–0.42
# with 0.1–0.3 e⁻ at 1e3–1e5 e⁻), and it reads below zero on at most the half of the pixels where no electron
# arrived; a subtracted background reads the same −b(x) on neighbouring empty pixels (0.00–0.22) and on up to all of
# them (47–98 % of the pixels; benchmarks/RESULTS.md, "A background subtracted by hand")
WHITE_NOISE_MIN_RATIO = 0.25
READ_NOISE_MAX_NEGATIVE = 0.6
# ... and added back (``with_floor_restored``): on a low-dose pattern the empty pixels read −b(x), so b is minus the mean
# of the negative pixels within FLOOR_WINDOWS_PX[0] px, or within the next window where fewer than FLOOR_MIN_PIXELS of
# them are negative there (beside electrons, inside a disk)
FLOOR_WINDOWS_PX = (3, 9, 33)
FLOOR_MIN_PIXELS = 3
# A pattern taken for isolated electrons whose maxima are no single electrons — the 90th percentile of their 3×3
# excesses above this many of the median's — is a noise-free one (a film's speckle, a crystal's ringing: 12–28;
# the detector augmentation's electrons at 1e3 e⁻ on 128–256 px: 1.5–3.3). It stays counted for the contrast test
# (judged as Gaussian instead, its crystals' figures moved: benchmarks/RESULTS.md, "Film negatives over many films"),
# but is dense for the lattice rule, as a noise-free pattern is: a film's far grain on its faint ring stood alone
NOISE_FREE_MIN_SPREAD = 6.0
MAX_COUNT_PER_PX = 2**20  # more electrons in one pixel of one pattern than any detector records
COUNTS_MIN_SAMPLED = 32  # a pattern's counts judged on all its pixels where its sample holds fewer lit ones
PTC_BLOCK_PX = 4  # photon transfer (``photon_transfer``) on block sums larger than a detector's blur
# the ring (radii r + 1 … 2r + 1) is free of a neighbour's disk when the neighbour is ≥ 3 r away; a median
# survives a neighbour's edge reaching into it
RING_CLEAR_RADII = 3.0
# On a dense background (≥ DENSE_E_PER_DISK background electrons under a disk's area, or noise-free) a
# bright blob of a disk's size is no proof of a disk: the speckle of an amorphous film passes the contrast
# test there (its structure, not shot noise, is what varies), so a vector stands only with at least
# MIN_LATTICE_VECTORS of its pattern's non-beam vectors on one lattice through the beam within
# LATTICE_TOL_PX (``lattice_support``). Under fewer electrons the speckle drowns in shot noise, the
# counting test holds (≈ 1e-3 false per test) and a crystal at 1e3 e⁻ shows too few disks for a
# lattice (measured, benchmarks/RESULTS.md, "Film speckle"). A grain k times the mean μ electrons under a
# disk stands (k − 1)√μ σ out, so at 10 (not 30, as first set) a grain of twice the mean already passes:
# a film at 300 kV / 1 mrad and 1e5 e⁻ kept 0.17 such grains per pattern at 30, none at 10, at no cost to
# bench_accuracy (benchmarks/RESULTS.md, "The counting test beside the beam")
DENSE_E_PER_DISK = 10.0
# Counted, a speckle grain passes Poisson's exact test from far fewer background electrons: it is no Poisson
# variable but k times its mean with an exponential chance (fully developed speckle, grains of a disk's size), and
# from μ electrons under a disk a grain of 1 + 3/√μ times the mean stands 3σ out: e⁻³·¹ = 4.5 % of grains at μ = 2,
# 10 % at μ = 5. 20 nm of carbon at 200 kV / 2 mrad on a counting detector at 1e4 e⁻ (2–9 electrons under a disk:
# neither dense at 10 nor sparse) kept 2.5 false vectors per pattern at 3–6σ (256 px at 0.02 Å⁻¹/px; 2.75 at 0.03),
# where 1e3 (too few) and 1e5 (dense) kept none. So a counted background of DENSE_COUNTED_E_PER_DISK is dense where
# the direct beam's disk holds at least LOW_DOSE_E[0] electrons; the crystals of bench_accuracy's 200 kV / 2 mrad set
# (rings empty: 0.27 electrons, the ring's prior of one) were found as before at five doses. Under that a crystal's
# pattern shows too few disks for the lattice rule: gated on the pattern's electrons instead, the augmented
# detector's smooth background (up to 2.6e3 electrons beside 1e3 in the beam) let it drop the [001] set's 1e3 crystals
# (80 kV / 3.5 mrad / 60 nm F1 0.36 -> 0.28), where the lone rule and the counting test hold the film (benchmarks/
# RESULTS.md, "A film's speckle at 1e4 e⁻")
DENSE_COUNTED_E_PER_DISK = 2.0
LATTICE_TOL_PX = 0.75
LATTICE_CANDIDATES = 8
MIN_LATTICE_VECTORS = 4
# Judged on the network's own positions the tolerance is its uncertainty (a model pixel, about twice
# LATTICE_TOL_PX), under which random vectors share a lattice far more often, the more of them there are:
# n film speckles 12–40 px from the beam put 4 on one lattice at 1.56 px in 1.8 / 4.8 / 11 / 19 / 29 / 39 % of
# draws for n = 5 … 10, against ≤ 2 % for 4 at n ≤ 5, 5 at n ≤ 7, 6 at n ≤ 10, 7 at n ≤ 13: so there a
# pattern's n vectors need ``proposed_lattice_vectors(n)`` = max(4, n // 2 + 2) on one lattice, the most of
# them as a crystal's do (benchmarks/RESULTS.md, "Film speckle on a chance lattice")


def proposed_lattice_vectors(n_vectors):
    """How many of a pattern's ``n_vectors`` non-beam vectors must share one lattice through the beam within
    the network's uncertainty (comment above): ``MIN_LATTICE_VECTORS``, and more than half of them plus one."""
    return np.maximum(MIN_LATTICE_VECTORS, np.asarray(n_vectors) // 2 + 2)


# A pattern of few electrons (a 1e3 e⁻ scan: a few hundred in its diffracted disks) gives faint disks V_g
# peaks below the stamped threshold, so there the network's proposals, not the evidence, limit recall: the
# threshold falls log-linearly from the stamped one at LOW_DOSE_E[1] electrons per pattern to
# LOW_DOSE_THRESHOLD_FACTOR × it at LOW_DOSE_E[0] (a ramp: no cliff between neighbouring positions of one scan)
# and the counting test decides (``peak_thresholds``). Only for small disks, whose ring test holds at any
# count: large ones judged on the circle about the beam then passed a vacuum's halo (benchmarks/RESULTS.md,
# "Low-dose proposals")
LOW_DOSE_E = (2e3, 2e4)
LOW_DOSE_THRESHOLD_FACTOR = 0.25
# A low-dose pattern's only non-beam vector stands out by this much: a chance blob of shot noise (or a film's
# speckle grain) is alone, while a crystal shows its reflections as ±g pairs and lattices, so at 1e3 e⁻ on the
# fine camera (256 px at 0.0107 Å⁻¹/px) 14 of 21 false vectors on 288 negative patterns were their pattern's only
# vector, at 3.0–12σ (median 3.4), against 27 of 2,830 true ones on [001], rectangular and 2°-tilted crystals —
# the faint ones among them 3.3–3.8σ (three), the others ≥ 5.3σ (benchmarks/RESULTS.md, "A lone faint vector")
LONE_MIN_SNR = 5.0
# a vector proposed only under the lowered threshold is a weaker claim and needs stronger evidence: at 3σ a
# vacuum and a film at 80 kV / 3.5 mrad, 1e3 e⁻, kept 0.75 false vectors per pattern, at 4σ 0 and 0.25
WEAK_MIN_SNR = 4.0
# a vector the network proposed at its threshold that stands out by this much, though less than MIN_SNR, is kept
# where it lies on the lattice of its pattern's kept vectors (``MeasuredPattern._second_chance``): a disk that
# the network and the crystal's lattice both put there needs less of the pattern's evidence than a lone blob
# (bench_accuracy at 1e3 e⁻: F1 0.314 -> 0.338, precision up; benchmarks/RESULTS.md, "A second chance").
# So does a disk at another point of a low-dose pattern's lattice (under LOW_DOSE_E[1] electrons), tested out
# to COMPLETION_REACH × the farthest kept vector (``MeasuredPattern._lattice_completed``): a disk of a few
# electrons gives the network too faint a V_g peak to propose, while the pattern shows it where the crystal's
# lattice says it is (bench_accuracy at 1e3 e⁻: F1 0.338 -> 0.360 at higher precision, no other dose changed;
# at 3σ 0.347; benchmarks/RESULTS.md, "Low-dose lattices completed"). A completed point needs only
# COMPLETION_MIN_SNR: the lattice, fixed by the pattern's kept vectors, already says where the disk is, and the
# test has only to refuse the points where the pattern shows none (on all nine bench_accuracy sets at 1e3 e⁻:
# every set's F1 up by 0.01–0.07 from 2σ, strict precision within ±0.04 of it, no negative changed; at 1.5σ
# about half that gain; benchmarks/RESULTS.md, "Low-dose lattice points completed from 1σ")
LATTICE_MIN_SNR = 2.0
COMPLETION_MIN_SNR = 1.0
COMPLETION_REACH = 1.25
# On a brighter pattern of large disks (not ``small_disks``) the network misses bright disks of thick crystals
# (Si [001], 300 kV, 4 mrad, 100 nm: a fifth proposed at 1e5 e⁻), and the other points of the lattice are tested
# too, at this SNR, each measured on its disk (bench_accuracy [001] set: 1e5 F1 0.756 -> 0.771; benchmarks/
# RESULTS.md, "Lattices of large disks completed at any dose"). Not for small disks: there it added the
# reflections that double diffraction lights but the kinematic truth has not, and faint ones below its floor
# (200 kV / 2 mrad with shot noise at 1e5: 0.889 -> 0.870; 60 kV / 0.5 mrad / 100 nm noise-free 0.773 -> 0.684).
BRIGHT_COMPLETION_MIN_SNR = 5.0
# A bright pattern of large disks that the film's lattice rule (``MIN_LATTICE_VECTORS`` on one lattice) left with no
# vector beyond the beam, though some of its vectors stood out by BRIGHT_COMPLETION_MIN_SNR: the network proposed
# too few of its disks (Si [001] at 300 kV / 4 mrad / 100 nm, noise-free: three of the eight {220} and {400}, 24–37σ,
# none reported). Their lattice through the beam (at least SEED_LATTICE_VECTORS of them within ``LATTICE_TOL_PX``)
# is completed as a bright pattern's is, out to SEED_COMPLETION_REACH × the farthest of them (the {400} of three
# {220}), and the pattern keeps its vectors where ``MIN_LATTICE_VECTORS`` ±g pairs, each counted once, lie on one
# lattice as measured: a film's grains and their Friedel mates make two pairs, a crystal's lattice has its sums too
# (``MeasuredPattern._seed_lattices``; benchmarks/RESULTS.md, "A few bright disks that the film rule emptied")
SEED_LATTICE_VECTORS = 3
SEED_COMPLETION_REACH = 2.0
# A faint vector above the ramp stands on the lattice of its pattern's stronger vectors (``lattice_members``),
# refit on the strong vectors within this share of its shortest basis vector of a lattice point
LATTICE_REFIT_FRACTION = 0.2
LATTICE_REFITS = 3  # the bases refit, of those that index the most strong vectors before a refit
MAX_SMALL_DISK_INVA = 0.1  # smaller disks are apart in any lattice of a few Å (their ring: ``neighbour_spacing_px``)
CIRCLE_POINTS = 64  # samples of the circle about the beam through an overlapping disk
# a disk of a smaller radius puts its electrons on one pixel (0.5 mrad at 60 kV on a 0.02 Å⁻¹/px detector:
# r = 0.48 px), as a hot pixel does: its brightest pixel is the disk and stays in its sums (left out, every
# such disk of a noise-free or unblurred pattern failed the test: benchmarks/RESULTS.md, "Disks smaller
# than a pixel"); so each such vector must lie on its pattern's lattice (detectors.MeasuredPattern), which
# hot pixels do not
HOT_PIXEL_MIN_RADIUS_PX = 1.0
# Through a camera's point spread σ the beam's disk reaches this many σ beyond its edge (``_own_disk``): at 1e3 e⁻ its
# tail there (a few of its electrons) made a vacuum's halo beside it a disk at 4–8σ (300 kV / 3.5 mrad, σ = 1 px: 0.84
# false vectors per pattern over 32; benchmarks/RESULTS.md, "A low-dose beam's disk beside a blurred speckle")
BEAM_TAIL_SIGMAS = 2.0
SECTORS = 8  # the ring's sectors, each about a disk's area: the scale of a film's speckle
NEIGHBOURS = 8  # a disk's nearest neighbours whose disks are left out of its background
# Large disks that nearly touch (GaN and MoS2 [0001] at 300 kV / 3.5 mrad: 10.8 px disks 2.04 radii apart) leave
# dark gaps between every three, and the network proposes those gaps as a honeycomb beside the disks; with them a
# pattern's vectors index a lattice √3 finer than the crystal's (``between_disks``). A gap's core is darker than its
# ring of rims: on bench_accuracy's noise-free patterns of disks ≥ CLEAR_MIN_RADIUS_PX the network's vectors off
# every reflection held 0.02–0.35 × their annulus's brightness (median 0.30), its vectors on reflections ≥ 0.35
# (thick crystals' dynamical contrast; 0.51 at the gap of three flat disks that touch, computed). 0.5 refused the
# 60 nm disks (rectangular set 300 / 3.5 / 60 noise-free F1 0.29 -> 0.02); 0.3 and 0.45 measured beside
# (benchmarks/RESULTS.md, "Gaps between touching disks")
GAP_CORE_RADII = 0.3
GAP_ANNULUS_RADII = (0.45, 0.7)
GAP_MAX_RATIO = 0.35
GAP_MIN_Z = 3.0


def lattice_support(q_px: np.ndarray, tol_px: float = LATTICE_TOL_PX, candidates: int = LATTICE_CANDIDATES,
                    enough: int | None = None) -> int:
    """How many of one pattern's non-beam vectors ``q_px`` (N, 2; px from the direct beam) the best lattice
    through the beam indexes within ``tol_px``: the 2-D lattice spanned by two of the ``candidates``
    shortest (pairs enclosing less than ~14° are no basis), or the row of multiples of one (a systematic
    row, as in a two-beam orientation). ``enough``: stop at the first lattice that indexes this many. A
    crystal's reflections all index one lattice; a film's speckle does not: four random speckles of a
    256 px pattern index one within 0.75 px by chance ~1e-3 of the time. (Not ``analysis.lattice.
    find_basis``: its tolerance is a fraction of the basis, 0.15 |g|, which random vectors far from the
    beam meet easily — at 0.1 |g| five of them reach four on a lattice in ~5 % of draws.)"""
    q = np.asarray(q_px, np.float64).reshape(-1, 2)
    if len(q) < 3:
        return len(q)
    bases, counts = _bases_and_counts(q, tol_px, candidates)
    best = int(counts.max())
    if enough is not None and best >= enough:
        return best
    # high orders of a basis measured on noisy vectors drift by the order times its error: refit each
    return max(best, int(_indexed_all(q, bases, tol_px).max()))


def _bases_and_counts(q: np.ndarray, tol_px: float, candidates: int) -> tuple[list, np.ndarray]:
    """The rows (one of the ``candidates`` shortest of ``q``) and 2-D lattices (two of them enclosing more
    than ~14°) through the beam, rows first, and how many of ``q`` each indexes within ``tol_px``, all at
    once: rows q ≈ n a (n ≠ 0), lattices q ≈ h g1 + k g2 ((h, k) ≠ 0)."""
    cand = q[np.argsort(np.hypot(q[:, 0], q[:, 1]), kind="stable")[:candidates]]
    i, j = np.triu_indices(len(cand), 1)
    A, B = cand[i], cand[j]
    cross = A[:, 0] * B[:, 1] - A[:, 1] * B[:, 0]
    pairs = np.stack([A, B], axis=1)[np.abs(cross) > 0.25 * np.hypot(*A.T) * np.hypot(*B.T)]
    n = np.round(np.einsum("nd,cd->cn", q, cand) / np.einsum("cd,cd->c", cand, cand)[:, None])
    counts = ((np.hypot(*(q[None] - n[..., None] * cand[:, None]).transpose(2, 0, 1)) < tol_px) & (n != 0)).sum(axis=1)
    if len(pairs):
        hk = np.round(np.einsum("nd,pde->pne", q, np.linalg.inv(pairs)))
        off = q[None] - np.einsum("pne,ped->pnd", hk, pairs)
        counts = np.r_[counts, ((np.hypot(off[..., 0], off[..., 1]) < tol_px) & hk.any(axis=2)).sum(axis=1)]
    return [c[None] for c in cand] + list(pairs), counts


def friedel_folded(b: np.ndarray, q_px: np.ndarray, tol_px: float) -> tuple[np.ndarray, np.ndarray]:
    """Each pattern's vectors ``q_px`` (px from the beam) folded into one half-plane (q and −q alike), those of
    one pattern within ``tol_px`` of each other merged: a ±g pair is one observation. A crystal's pattern and an
    amorphous film's speckle are both centrosymmetric (Friedel's law), so two speckle pairs are a lattice
    through the beam of four vectors by construction; folded, they are two points."""
    b, q = np.asarray(b), np.asarray(q_px, np.float64).reshape(-1, 2)
    flip = (q[:, 1] < 0) | ((q[:, 1] == 0) & (q[:, 0] < 0))
    f = np.where(flip[:, None], -q, q)
    keep = np.ones(len(f), bool)
    for k in np.unique(b):
        idx = np.flatnonzero(b == k)
        d = np.hypot(f[idx, None, 0] - f[None, idx, 0], f[idx, None, 1] - f[None, idx, 1])
        # a point also meets its partner across the fold's edge (q ≈ −q' with both near the x axis)
        d = np.minimum(d, np.hypot(f[idx, None, 0] + f[None, idx, 0], f[idx, None, 1] + f[None, idx, 1]))
        dup = np.triu(d < tol_px, 1).any(axis=0)
        keep[idx[dup]] = False
    return b[keep], f[keep]


def lattice_support_many(b: np.ndarray, q_px: np.ndarray, tol_px: float, enough) -> dict[int, int]:
    """``lattice_support(..., enough=enough)`` of every pattern ``b`` of a batch (vectors ``q_px``): one
    vectorised pass over the lattices and rows spanned by each pattern's 4 shortest vectors (a crystal's
    shortest few span its lattice), then the full search for the patterns it leaves below ``enough`` (a
    count, or a function of a pattern's number of vectors giving its count)."""
    b, q = np.asarray(b), np.asarray(q_px, np.float64).reshape(-1, 2)
    ids, inv, counts = np.unique(b, return_inverse=True, return_counts=True)
    if not len(ids):
        return {}
    order = np.lexsort((np.hypot(q[:, 0], q[:, 1]), inv))  # by pattern, then shortest first
    slot = np.arange(len(b)) - np.repeat(np.cumsum(counts) - counts, counts)
    Q = np.full((len(ids), counts.max(), 2), np.nan)
    Q[inv[order], slot] = q[order]
    best = _support_counts(Q, tol_px, 4, passes=1)[0]  # (P,): the 4 shortest vectors' rows and lattices
    need = enough(counts) if callable(enough) else np.full(len(ids), enough)
    # fewer vectors than ``enough`` cannot reach it: such a pattern keeps the first pass's count
    full = np.flatnonzero((best < need) & (counts >= need))
    if len(full):
        best[full] = _full_support_many(Q[full], tol_px, need[full])
    return {int(k): int(v) for k, v in zip(ids, best)}


def _full_support_many(Q: np.ndarray, tol_px: float, need: np.ndarray) -> np.ndarray:
    """``lattice_support(q, tol_px, enough=need)`` of each pattern of ``Q`` (P, N, 2; px, NaN-padded, each
    pattern's vectors shortest first), all patterns at once: the rows and lattices of each one's
    ``LATTICE_CANDIDATES`` shortest vectors counted, and, for a pattern none of them gives ``need``, counted
    again after a refit (``_indexed_all``'s two passes, batched). Patterns of overlapping disks, whose few
    vectors share no lattice, went through this search one by one: a quarter of `predict`'s time on
    bench_predict's 4 mrad scan (benchmarks/RESULTS.md, "The film-speckle test's full search at once")."""
    first, refit, singular = _support_counts(Q, tol_px, LATTICE_CANDIDATES, passes=2)
    n_vectors = (~np.isnan(Q[..., 0])).sum(axis=1)
    first = np.where(n_vectors < 3, n_vectors, first)  # as ``lattice_support``: two vectors always "agree"
    out = first.copy()
    for p in np.flatnonzero((first < need) & (n_vectors >= 3)):
        for G in singular[p]:  # collinear (h, k): no unique refit, one by one as before
            refit[p] = max(refit[p], _indexed(Q[p, :n_vectors[p]], G, tol_px))
        out[p] = max(first[p], refit[p])
    return out


def _support_counts(Q: np.ndarray, tol_px: float, candidates: int, passes: int) -> tuple:
    """(the most vectors any row or lattice of each pattern's ``candidates`` shortest indexes within
    ``tol_px``, the same after ``passes`` - 1 refits, each pattern's lattices whose refit is singular) for
    NaN-padded ``Q`` (P, N, 2; each pattern's vectors shortest first). Rows: each candidate; lattices: two
    of them enclosing more than ~14°."""
    valid = ~np.isnan(Q[..., 0])
    Qz = np.where(valid[..., None], Q, 0.0)
    a = Q[:, :candidates]  # (P, C, 2), NaN where a pattern has fewer
    i, j = np.triu_indices(a.shape[1], 1)
    A, B = a[:, i], a[:, j]
    with np.errstate(invalid="ignore"):
        basis = np.abs(A[..., 0] * B[..., 1] - A[..., 1] * B[..., 0]) > \
            0.25 * np.hypot(A[..., 0], A[..., 1]) * np.hypot(B[..., 0], B[..., 1])  # (P, K): a lattice's basis
    G = np.where(basis[..., None, None], np.stack([A, B], axis=2), np.eye(2) * 1e9)  # no basis: indexes nothing
    row_valid = ~np.isnan(a[..., 0])
    rows = [np.where(row_valid, c, 0).max(axis=1) for c in _rows_refit(Qz, valid, np.nan_to_num(a), tol_px, passes)]
    first, last = _pairs_refit(Qz, valid, G, basis, tol_px, passes)
    singular = [G[p, last[p] < 0] for p in range(len(Q))]
    return (np.maximum(rows[0], first.max(axis=1, initial=0)), np.maximum(rows[1], last.max(axis=1, initial=0)),
            singular)


def _rows_refit(Qz: np.ndarray, valid: np.ndarray, a: np.ndarray, tol: float,
                passes: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts before any refit, counts after ``passes`` - 1 refits) within ``tol`` px of each row a (P, R, 2)
    over each pattern's vectors (``_rows_indexed``, batched; ``valid``: the real vectors of the padded ``Qz``).
    Written out component by component: numpy's einsum took most of this search's time on 2-vectors."""
    qx, qy, ok = Qz[:, None, :, 0], Qz[:, None, :, 1], valid[:, None]
    ax, ay = a[..., 0, None], a[..., 1, None]  # (P, R, 1)
    out = []
    for _ in range(passes):
        with np.errstate(invalid="ignore", divide="ignore"):
            n = np.round((qx * ax + qy * ay) / (ax * ax + ay * ay))  # (P, R, N)
            on = (np.hypot(qx - n * ax, qy - n * ay) < tol) & (n != 0) & ok
            m = np.where(on, n, 0.0)
            mm = (m * m).sum(axis=2, keepdims=True)
            fx, fy = (m * qx).sum(axis=2, keepdims=True) / mm, (m * qy).sum(axis=2, keepdims=True) / mm
        count = on.sum(axis=2)
        out.append(count)
        refit = (count >= 2)[..., None]
        ax, ay = np.where(refit, fx, ax), np.where(refit, fy, ay)
    return out[0], out[-1]


def _pairs_refit(Qz: np.ndarray, valid: np.ndarray, G: np.ndarray, basis: np.ndarray, tol: float,
                 passes: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts of each lattice G (P, K, 2, 2) as given, counts after ``passes`` - 1 refits) within ``tol`` px
    over each pattern's vectors (``_bases_and_counts`` and ``_pairs_indexed``, batched, component by
    component); -1 where a refit is singular (the indexed (h, k) collinear). ``basis``: which of G are
    lattices at all."""
    qx, qy, ok = Qz[:, None, :, 0], Qz[:, None, :, 1], valid[:, None] & basis[..., None]

    def indexed(G, inverse):
        g = [[G[..., r, c, None] for c in (0, 1)] for r in (0, 1)]  # (P, K, 1) each
        i = [[inverse[..., r, c, None] for c in (0, 1)] for r in (0, 1)]
        h, k = np.round(qx * i[0][0] + qy * i[1][0]), np.round(qx * i[0][1] + qy * i[1][1])
        on = (np.hypot(qx - h * g[0][0] - k * g[1][0], qy - h * g[0][1] - k * g[1][1]) < tol) & ((h != 0) | (k != 0)) & ok
        return np.where(on, h, 0.0), np.where(on, k, 0.0), on

    first = indexed(G, np.linalg.inv(G))[2].sum(axis=2)
    if passes == 1:
        return first, first
    G, singular = G.copy(), np.zeros(basis.shape, bool)
    for _ in range(passes):
        h, k, on = indexed(G, _pinv_2x2(G))
        hh, hk, kk = (h * h).sum(axis=2), (h * k).sum(axis=2), (k * k).sum(axis=2)
        HtQ = np.stack([np.stack([(h * qx).sum(axis=2), (h * qy).sum(axis=2)], -1),
                        np.stack([(k * qx).sum(axis=2), (k * qy).sum(axis=2)], -1)], -2)  # (P, K, 2, 2)
        HtH = np.stack([np.stack([hh, hk], -1), np.stack([hk, kk], -1)], -2)
        det = hh * kk - hk * hk  # integer (h, k): exact, zero only where they are collinear
        refit = on.sum(axis=2) >= 3
        singular |= refit & (det == 0)
        good = refit & (det != 0)
        G[good] = np.linalg.solve(HtH[good], HtQ[good])
    return first, np.where(singular, -1, on.sum(axis=2))


def _pinv_2x2(G: np.ndarray) -> np.ndarray:
    """``np.linalg.pinv`` of a stack of 2×2 matrices, in closed form where a matrix is well conditioned (its
    SVD took a third of the batched lattice search's time)."""
    det = G[..., 0, 0] * G[..., 1, 1] - G[..., 0, 1] * G[..., 1, 0]
    sound = np.abs(det) > 1e-9 * (G * G).sum(axis=(-2, -1))
    adj = np.stack([np.stack([G[..., 1, 1], -G[..., 0, 1]], -1), np.stack([-G[..., 1, 0], G[..., 0, 0]], -1)], -2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = adj / det[..., None, None]
    if not sound.all():
        out[~sound] = np.linalg.pinv(G[~sound])
    return out


def _indexed(q: np.ndarray, G: np.ndarray, tol_px: float) -> int:
    """Vectors ``q`` within ``tol_px`` of a nonzero point of the lattice (or row: one basis vector) ``G``
    through the origin, after one least-squares refit of ``G`` to those it indexes."""
    return _fit(q, G, tol_px)[0]


def _indexed_all(q: np.ndarray, bases: list, tol_px: float) -> np.ndarray:
    """``_indexed`` of each of ``bases`` (rows (1, 2) and lattices (2, 2)) at once: the same two passes of
    indexing and least-squares refit, in closed form for all bases together (a row's refit is
    a = Σ n q / Σ n², a lattice's solves its 2×2 normal equations). ``lattice_support`` refits every basis
    of a pattern without a lattice; one by one that took a third of `predict`'s time on large overlapping disks
    (benchmarks/RESULTS.md, "The lattice search at once"). A lattice whose indexed (h, k) are collinear
    has no unique refit and is refit by ``_fit`` (least squares' minimum-norm solution), as before."""
    rows = np.array([G[0] for G in bases if len(G) == 1], np.float64).reshape(-1, 2)
    pairs = np.array([G for G in bases if len(G) == 2], np.float64).reshape(-1, 2, 2)
    counts = np.r_[_rows_indexed(q, rows, tol_px), _pairs_indexed(q, pairs, tol_px)]
    singular = np.flatnonzero(counts < 0)
    counts[singular] = [_indexed(q, pairs[k - len(rows)], tol_px) for k in singular]
    return counts


def _rows_indexed(q: np.ndarray, a: np.ndarray, tol_px: float) -> np.ndarray:
    """``_indexed`` of each row a (R, 2): vectors within ``tol_px`` of n·a, n ≠ 0."""
    for _ in range(2):
        n = np.round(q @ a.T / np.einsum("rd,rd->r", a, a))  # (N, R)
        on = (np.hypot(q[:, None, 0] - n * a[:, 0], q[:, None, 1] - n * a[:, 1]) < tol_px) & (n != 0)
        m = np.where(on, n, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            refit = np.einsum("nr,nd->rd", m, q) / np.einsum("nr,nr->r", m, m)[:, None]
        a = np.where((on.sum(axis=0) >= 2)[:, None], refit, a)
    return on.sum(axis=0)


def _pairs_indexed(q: np.ndarray, G: np.ndarray, tol_px: float) -> np.ndarray:
    """``_indexed`` of each lattice G (P, 2, 2; rows the basis vectors): vectors within ``tol_px`` of
    hk·G, hk ≠ 0; -1 for a lattice whose refit is singular (its indexed hk collinear)."""
    singular = np.zeros(len(G), bool)
    for _ in range(2):
        hk = np.round(np.einsum("nd,pde->pne", q, np.linalg.pinv(G)))
        off = q[None] - np.einsum("pne,ped->pnd", hk, G)
        on = (np.hypot(off[..., 0], off[..., 1]) < tol_px) & hk.any(axis=2)
        H = hk * on[..., None]
        HtH, HtQ = np.einsum("pni,pnj->pij", H, H), np.einsum("pni,nd->pid", H, q)
        # integer (h, k): the determinant is exact, zero only where they are collinear
        det = HtH[:, 0, 0] * HtH[:, 1, 1] - HtH[:, 0, 1] * HtH[:, 1, 0]
        refit = on.sum(axis=1) >= 3
        singular |= refit & (det == 0)
        ok = refit & (det != 0)
        G = G.copy()
        G[ok] = np.linalg.solve(HtH[ok], HtQ[ok])
    return np.where(singular, -1, on.sum(axis=1))


def _fit(q: np.ndarray, G: np.ndarray, tol_px: float) -> tuple[int, np.ndarray]:
    """``_indexed``'s count and its refit basis."""
    for _ in range(2):
        hk = np.round(q @ np.linalg.pinv(G))
        on = (np.hypot(*(q - hk @ G).T) < tol_px) & hk.any(axis=1)
        if on.sum() >= len(G) + 1:
            G = np.linalg.lstsq(hk[on], q[on], rcond=None)[0]
    return int(on.sum()), G


def lattice_members(strong_px: np.ndarray, q_px: np.ndarray, tol_px: float, enough: int = MIN_LATTICE_VECTORS,
                    candidates: int = LATTICE_CANDIDATES) -> np.ndarray:
    """Which of one pattern's vectors ``q_px`` (N, 2; px from the direct beam) lie within ``tol_px`` of a
    nonzero point of the lattice of its stronger vectors ``strong_px``: the lattice (or row) through the
    beam spanned by two of the ``candidates`` shortest strong vectors (or one) that indexes the most of them
    within ``tol_px``, at least ``enough`` (else none qualifies), then refit on every strong vector within
    ``LATTICE_REFIT_FRACTION`` of its shortest basis vector of a lattice point: first orders measured 0.5 px
    short would put the fourth 2 px off. (Its half-index points too admitted a thick crystal's dynamical and
    HOLZ disks, which the kinematic truth leaves out: benchmarks/RESULTS.md, "Faint disks".) One pattern of
    ``lattice_members_many``."""
    s = np.asarray(strong_px, np.float64).reshape(-1, 2)
    q = np.asarray(q_px, np.float64).reshape(-1, 2)
    return lattice_members_many(np.zeros(len(s), int), s, np.zeros(len(q), int), q, tol_px, enough, candidates)


def lattice_members_many(b_strong, strong_px: np.ndarray, b, q_px: np.ndarray, tol_px: float,
                         enough: int = MIN_LATTICE_VECTORS, candidates: int = LATTICE_CANDIDATES) -> np.ndarray:
    """``lattice_members`` of every pattern of a batch at once: per vector ``q_px`` of pattern ``b``, whether it lies
    within ``tol_px`` of a nonzero point of the lattice of its pattern's strong vectors (``strong_px`` of patterns
    ``b_strong``). The same search — each pattern's rows and lattices of its ``candidates`` shortest strong vectors
    counted, the ``LATTICE_REFITS`` that index the most refit (``_fit``), the first to index the most (at least
    ``enough``) refit on the strong vectors near its points — on padded arrays, the 2 × 2 algebra in closed form:
    one pattern at a time it took 18 % of `predict`'s time on bench_predict's 2 mrad scan (37 vectors per pattern,
    benchmarks/RESULTS.md). Only the few bases that index the most are refit: a refit of every basis cost a sixth
    of `predict`'s time (benchmarks/RESULTS.md, "Faint disks"); on a tie the row, with fewer points, is the
    stricter. Equal to that search written pattern by pattern up to the rounding of its least squares (tested)."""
    bs, b = np.asarray(b_strong), np.asarray(b)
    s = np.asarray(strong_px, np.float64).reshape(-1, 2)
    q = np.asarray(q_px, np.float64).reshape(-1, 2)
    out = np.zeros(len(q), bool)
    ids, n_strong = np.unique(bs, return_counts=True)
    ids = ids[(n_strong >= enough) & np.isin(ids, b)]
    if not len(ids) or not len(q):
        return out
    mine = np.isin(bs, ids)
    where, S = _strong_by_pattern(np.searchsorted(ids, bs[mine]), s[mine], len(ids))
    valid = where >= 0
    G, is_row, found = _best_of_refits(S, valid, tol_px, enough, candidates)
    G = _refit_near(S, valid, G, is_row, found)
    row = np.searchsorted(ids, b)
    known = row < len(ids)
    known[known] = ids[row[known]] == b[known]
    k = np.flatnonzero(known)
    on = _indexed_by(q[k][:, None], G[row[k]], is_row[row[k]], tol_px)[1][:, 0]
    out[k] = on & found[row[k]]
    return out


def _strong_by_pattern(p: np.ndarray, s: np.ndarray, n_patterns: int) -> tuple[np.ndarray, np.ndarray]:
    """Vectors ``s`` of patterns ``p`` (0 … n_patterns - 1) padded per pattern, shortest first (ties in their given
    order, as a stable sort): (where (P, V): index into ``s`` or -1, S (P, V, 2), zeros where padded)."""
    counts = np.bincount(p, minlength=n_patterns)
    order = np.lexsort((np.arange(len(s)), np.hypot(s[:, 0], s[:, 1]), p))
    slot = np.arange(len(s)) - np.repeat(np.cumsum(counts) - counts, counts)
    where = np.full((n_patterns, int(counts.max())), -1)
    where[p[order], slot] = order
    return where, np.where((where >= 0)[..., None], s[np.maximum(where, 0)], 0.0)


def _indexed_by(Q: np.ndarray, G: np.ndarray, is_row: np.ndarray, tol_px: float):
    """Vectors ``Q`` (M, V, 2) indexed by bases ``G`` (M, 2, 2): a row (``is_row``) by its first basis vector a,
    n = round(q·a / a·a), a lattice by both, (h, k) = round(q G⁻¹): ((M, V, 2) indices, (M, V) within ``tol_px`` of
    a nonzero point). Component by component: numpy's einsum took most of the time on these 2-vectors."""
    qx, qy = Q[..., 0], Q[..., 1]
    g = [[G[:, r, c, None] for c in (0, 1)] for r in (0, 1)]  # (M, 1) each
    inv = _pinv_2x2(np.where(is_row[:, None, None], np.eye(2), G))
    i = [[inv[:, r, c, None] for c in (0, 1)] for r in (0, 1)]
    row = is_row[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.round((qx * g[0][0] + qy * g[0][1]) / (g[0][0] * g[0][0] + g[0][1] * g[0][1]))
        h = np.where(row, n, np.round(qx * i[0][0] + qy * i[1][0]))
        k = np.where(row, 0.0, np.round(qx * i[0][1] + qy * i[1][1]))
    on = (np.hypot(qx - h * g[0][0] - k * g[1][0], qy - h * g[0][1] - k * g[1][1]) < tol_px) & ((h != 0) | (k != 0))
    return np.stack([h, k], axis=-1), on


def _least_squares(Q: np.ndarray, hk: np.ndarray, use: np.ndarray, G: np.ndarray, is_row: np.ndarray) -> np.ndarray:
    """``G`` refit by least squares to the vectors ``use`` (M, V) of ``Q`` at indices ``hk`` where they are at least
    one more than its basis vectors (a row a = Σ n q / Σ n²; a lattice its 2 × 2 normal equations, ``_fit``'s
    ``np.linalg.lstsq`` where the (h, k) are collinear, whose minimum-norm solution it gives)."""
    G = G.copy()
    h, k = hk[..., 0] * use, hk[..., 1] * use
    qx, qy = Q[..., 0], Q[..., 1]
    enough = use.sum(axis=1) >= np.where(is_row, 2, 3)
    hh, hx, hy = (h * h).sum(axis=1), (h * qx).sum(axis=1), (h * qy).sum(axis=1)
    rows = enough & is_row
    G[rows, 0, 0], G[rows, 0, 1] = hx[rows] / hh[rows], hy[rows] / hh[rows]
    lat = enough & ~is_row
    hk_, kk, kx, ky = (h * k).sum(axis=1), (k * k).sum(axis=1), (k * qx).sum(axis=1), (k * qy).sum(axis=1)
    det = hh * kk - hk_ * hk_  # integer (h, k): exact, zero only where they are collinear
    solved = lat & (det != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        # [[hh, hk], [hk, kk]] G = [[hx, hy], [kx, ky]]
        G[solved, 0, 0] = ((kk * hx - hk_ * kx) / det)[solved]
        G[solved, 0, 1] = ((kk * hy - hk_ * ky) / det)[solved]
        G[solved, 1, 0] = ((hh * kx - hk_ * hx) / det)[solved]
        G[solved, 1, 1] = ((hh * ky - hk_ * hy) / det)[solved]
    for m in np.flatnonzero(lat & (det == 0)):
        G[m] = np.linalg.lstsq(hk[m][use[m]], Q[m][use[m]], rcond=None)[0]
    return G


def _best_of_refits(S: np.ndarray, valid: np.ndarray, tol_px: float, enough: int, candidates: int):
    """Per pattern (``lattice_members``' search): of its rows and lattices of the ``candidates`` shortest vectors,
    the ``LATTICE_REFITS`` that index the most (ties to the first, rows first), each refit twice (``_fit``), and of
    them the first to index the most, at least ``enough``: (G (P, 2, 2), is_row (P,), found (P,))."""
    P = len(S)
    cand = S[:, :candidates]
    C = cand.shape[1]
    i, j = np.triu_indices(C, 1)
    A, B = cand[:, i], cand[:, j]
    pair_ok = valid[:, i] & valid[:, j] & (np.abs(A[..., 0] * B[..., 1] - A[..., 1] * B[..., 0]) >
                                           0.25 * np.hypot(A[..., 0], A[..., 1]) * np.hypot(B[..., 0], B[..., 1]))
    bases = np.concatenate([np.stack([cand, np.zeros_like(cand)], axis=2), np.stack([A, B], axis=2)], axis=1)
    is_row = np.r_[np.ones(C, bool), np.zeros(len(i), bool)]
    ok = np.concatenate([valid[:, :C], pair_ok], axis=1)  # (P, C + K)
    safe = np.where(ok[..., None, None], bases, np.eye(2))
    K = safe.shape[1]
    flat_rows = np.broadcast_to(is_row, (P, K)).reshape(-1)
    Qk = np.broadcast_to(S[:, None], (P, K) + S.shape[1:]).reshape(P * K, *S.shape[1:])
    Vk = np.broadcast_to(valid[:, None], (P, K, S.shape[1])).reshape(P * K, -1)
    raw = _indexed_by(Qk, safe.reshape(-1, 2, 2), flat_rows, tol_px)[1] & Vk
    raw = np.where(ok, raw.sum(axis=1).reshape(P, K), -1)
    top = np.sort(np.argsort(-raw, axis=1, kind="stable")[:, :LATTICE_REFITS], axis=1)  # (P, T), in bases' order
    top_ok = np.take_along_axis(raw, top, axis=1) >= 0
    p = np.repeat(np.arange(P), top.shape[1])
    G = safe[p, top.reshape(-1)]
    rows_t = is_row[top.reshape(-1)]
    for _ in range(2):  # ``_fit``
        hk, on = _indexed_by(S[p], G, rows_t, tol_px)
        on &= valid[p]
        G = _least_squares(S[p], hk, on, G, rows_t)
    n_on = np.where(top_ok.reshape(-1), on.sum(axis=1), -1).reshape(P, -1)
    pick = np.argmax(n_on, axis=1)  # the first of the most
    found = n_on[np.arange(P), pick] >= enough
    chosen = np.arange(P) * top.shape[1] + pick
    return G[chosen], rows_t[chosen], found


def _refit_near(S: np.ndarray, valid: np.ndarray, G: np.ndarray, is_row: np.ndarray, found: np.ndarray) -> np.ndarray:
    """``lattice_members``' last step: up to three least-squares refits of each pattern's basis on its strong vectors
    within ``LATTICE_REFIT_FRACTION`` of its shortest basis vector of a lattice point; a pattern stops at the first
    pass with too few."""
    active = found.copy()
    for _ in range(3):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        g = G[idx]
        short = np.where(is_row[idx], np.hypot(g[:, 0, 0], g[:, 0, 1]), np.hypot(g[..., 0], g[..., 1]).min(axis=1))
        hk, near = _indexed_by(S[idx], g, is_row[idx], LATTICE_REFIT_FRACTION * short[:, None])
        near &= valid[idx]
        go = near.sum(axis=1) >= np.where(is_row[idx], 2, 3)
        G[idx[go]] = _least_squares(S[idx[go]], hk[go], near[go], g[go], is_row[idx[go]])
        active[idx[~go]] = False
    return G


def row_partners(b, q_px: np.ndarray, tol_px: float) -> np.ndarray:
    """Per vector (pattern ``b``, ``q_px`` (N, 2) px from the beam): whether another vector of its pattern lies
    within ``tol_px`` of a nonzero integer multiple of it, or it of the other's: the two on one systematic
    row through the beam (g and −g, g and 2g), as a crystal's reflections beside the beam are and a lone
    speckle grain is not."""
    b, q = np.asarray(b), np.asarray(q_px, np.float64).reshape(-1, 2)
    out = np.zeros(len(b), bool)
    for k in np.unique(b):
        idx = np.flatnonzero(b == k)
        if len(idx) < 2:
            continue
        v = q[idx]
        n = np.round(v @ v.T / np.einsum("id,id->i", v, v)[:, None])  # (i, j): v_j ≈ n v_i
        off = np.hypot(*(v[None] - n[..., None] * v[:, None]).transpose(2, 0, 1))
        pair = (off < tol_px) & (n != 0)
        np.fill_diagonal(pair, False)
        out[idx] = (pair | pair.T).any(axis=1)
    return out


def small_disks(disk_radius_px: float, q_pixel_size_invA: float) -> bool:
    """Whether disks of this radius (detector px at this Å⁻¹/px) are separate in any lattice of a few Å."""
    return disk_radius_px * q_pixel_size_invA <= MAX_SMALL_DISK_INVA


def neighbour_spacing_px(b, x_px, y_px) -> np.ndarray:
    """Per vector (batch index ``b``, position in px): the distance to the nearest other vector of the same
    pattern (inf where it is alone)."""
    b, x, y = np.asarray(b), np.asarray(x_px, np.float64), np.asarray(y_px, np.float64)
    out = np.full(len(b), np.inf)
    order = np.argsort(b, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(b[order]) != 0]) if len(b) else []
    for lo, hi in zip(starts, list(starts[1:]) + [len(b)]):
        idx = order[lo:hi]
        if len(idx) > 1:
            d = np.hypot(x[idx, None] - x[None, idx], y[idx, None] - y[None, idx])
            np.fill_diagonal(d, np.inf)
            out[idx] = d.min(axis=1)
    return out


def _offsets(r_lo: float, r_hi: float, device) -> torch.Tensor:
    k = int(math.ceil(r_hi))
    ax = torch.arange(-k, k + 1, device=device)
    di, dj = torch.meshgrid(ax, ax, indexing="ij")
    d = torch.hypot(di.float(), dj.float())
    m = (d > r_lo) & (d <= r_hi)
    return torch.stack([di[m], dj[m]], dim=1)


def _circle(img: torch.Tensor, centres: torch.Tensor, b, x, y, n: int = CIRCLE_POINTS):
    """(V, n) 3×3 means, (V, n) pixels and (V, n, 2) positions (px) at n points on the circle about the
    direct beam through each vector."""
    c = centres.float()[b]
    dx, dy = x - c[:, 0], y - c[:, 1]
    rad = torch.hypot(dx, dy)[:, None]
    phi = torch.atan2(dy, dx)[:, None] + torch.arange(n, device=img.device) * (2 * math.pi / n)
    ii = (c[:, 0, None] + rad * torch.cos(phi)).flatten()
    jj = (c[:, 1, None] + rad * torch.sin(phi)).flatten()
    off = _offsets(-1.0, 1.5, img.device)  # the 3×3 window
    win = _gather(img, b.repeat_interleave(n), ii, jj, off)
    centre = int(torch.nonzero((off == 0).all(dim=1))[0])
    pts = torch.stack([ii.round(), jj.round()], dim=1).reshape(len(b), n, 2)
    return win.mean(dim=1).reshape(len(b), n), win[:, centre].reshape(len(b), n), pts


def _neighbours(centres: torch.Tensor, b, x, y, reach_px: float, k: int = NEIGHBOURS) -> torch.Tensor:
    """(V, k', 2) positions (px) of the (at most ``k``) nearest other vectors of each vector's pattern and of
    its direct beam (``centres``) within ``reach_px``; inf where there are fewer (k' the most any has)."""
    pos = torch.stack([x, y], dim=1)
    n_patterns = len(centres)
    counts = torch.bincount(b, minlength=n_patterns)
    order = torch.argsort(b, stable=True)
    rank = torch.empty_like(b)
    rank[order] = torch.arange(len(b), device=b.device) - (torch.cumsum(counts, 0) - counts)[b[order]]
    width = int(counts.max()) if len(b) else 0
    # each pattern's vectors in one padded row, its beam last
    table = torch.full((n_patterns, width + 1, 2), torch.inf, device=pos.device)
    table[b, rank] = pos
    table[:, width] = centres.float()
    cand = table[b]  # (V, width + 1, 2)
    d = (cand - pos[:, None]).square().sum(dim=-1)
    d[torch.arange(len(b)), rank] = torch.inf  # not itself
    d = torch.where(d <= reach_px**2, d, torch.full_like(d, torch.inf))
    kk = max(1, min(k, int(torch.isfinite(d).sum(dim=1).max()) if len(b) else 1))
    dist, idx = torch.topk(d, kk, dim=1, largest=False)
    near = torch.gather(cand, 1, idx[..., None].expand(-1, -1, 2))
    return torch.where(torch.isfinite(dist)[..., None], near, torch.full_like(near, torch.inf))


def _clear(neighbours: torch.Tensor, pts: torch.Tensor, r: float, min_fraction: float) -> torch.Tensor:
    """(V, N) whether each of the points ``pts`` (V, N, 2) lies outside every neighbour's disk (radius ``r``
    and a pixel for a detector's blur); each vector keeps all its points where fewer than ``min_fraction`` of
    them are clear (its own disk's test then stays the unmasked one)."""
    clear = torch.ones(pts.shape[:2], dtype=torch.bool, device=pts.device)
    neighbours = _within_reach(neighbours, pts, r + 1.0)
    rows = torch.nonzero(torch.isfinite(neighbours[..., 0]).any(dim=1)).flatten()  # the others are clear
    if len(rows):
        d = (pts[rows][:, :, None, :] - neighbours[rows][:, None, :, :]).square().sum(dim=-1).amin(dim=2)
        c = d > (r + 1.0) ** 2
        clear[rows] = c | (c.sum(dim=1, keepdim=True) < min_fraction * pts.shape[1])
    return clear


def _within_reach(neighbours: torch.Tensor, pts: torch.Tensor, reach_px: float) -> torch.Tensor:
    """``neighbours`` (V, K, 2) with those that cannot come within ``reach_px`` of any of the points ``pts`` (V, N, 2)
    dropped (inf) and the rest moved first, K cut to the most any vector keeps: a neighbour whose distance from the
    points' centroid lies beyond their own distances from it ± the reach is farther than the reach from each (the
    triangle inequality; a pixel's margin for rounding). A circle about the beam meets the few disks at its own
    radius, not the pattern's other ~30 (``_circle_background``: ``_clear`` had cost `predict` 11 % of its time
    on a thick crystal's low-dose scan)."""
    if neighbours.shape[1] == 0 or pts.shape[1] == 0:
        return neighbours
    centroid = pts.mean(dim=1, keepdim=True)
    spread = (pts - centroid).square().sum(dim=-1).sqrt()  # (V, N)
    d = (neighbours - centroid).square().sum(dim=-1).sqrt()  # (V, K); inf where there is none
    margin = reach_px + 1.0
    near = (d <= spread.amax(dim=1, keepdim=True) + margin) & (d >= spread.amin(dim=1, keepdim=True) - margin)
    keep = int(near.sum(dim=1).max())
    if keep == neighbours.shape[1]:
        return neighbours
    order = torch.argsort((~near).to(torch.int8), dim=1, stable=True)[:, :keep]
    kept = torch.gather(neighbours, 1, order[..., None].expand(-1, -1, 2))
    return torch.where(torch.gather(near, 1, order)[..., None], kept, torch.full_like(kept, torch.inf))


def _sector_noise(ring: torch.Tensor, ring_off: torch.Tensor) -> torch.Tensor:
    """(V,) robust spread of the ring's ``SECTORS`` sector means about a plane (a linear gradient of a
    radial halo across the ring is no noise): the noise of a disk-sized mean of the background, which
    the pixel spread / √n underestimates where the background is correlated over a disk (module docstring)."""
    theta = torch.atan2(ring_off[:, 1].float(), ring_off[:, 0].float())
    k = ((theta + math.pi) / (2 * math.pi) * SECTORS).long().clamp(0, SECTORS - 1)
    onehot = torch.nn.functional.one_hot(k, SECTORS).float()  # (N, S)
    means = ring @ (onehot / onehot.sum(dim=0))  # (V, S)
    phi = (torch.arange(SECTORS, device=ring.device, dtype=torch.float32) + 0.5) * (2 * math.pi / SECTORS) - math.pi
    A = torch.stack([torch.ones_like(phi), torch.cos(phi), torch.sin(phi)], dim=1)  # (S, 3)
    resid = means - means @ (A @ torch.linalg.pinv(A)).T
    return _MAD_TO_SIGMA * _row_median(resid.abs()) * math.sqrt(SECTORS / (SECTORS - 3))


def _row_median(t: torch.Tensor) -> torch.Tensor:
    """``t.median(dim=1).values`` of a 2-D tensor, the same values (the lower middle one). On the CPU by numpy's
    selection (``np.partition``): 4.7 → 1.0 ms for a batch of 32 patterns of 128² (2 cores), where torch
    sorts; rows with NaN, other dtypes (numpy has no bfloat16) and other devices by torch."""
    if t.device.type != "cpu" or t.shape[1] == 0 or t.dtype not in (torch.float32, torch.float64):
        return t.median(dim=1).values
    a = t.detach().numpy()
    if np.isnan(a).any():
        return t.median(dim=1).values
    k = (a.shape[1] - 1) // 2
    return torch.from_numpy(np.ascontiguousarray(np.partition(a, k, axis=1)[:, k]))


def _row_nanmedian(t: torch.Tensor) -> torch.Tensor:
    """``t.nanmedian(dim=1).values`` of a 2-D tensor, the same values (the lower middle one of each row's
    numbers; NaN where it has none). On the CPU by numpy: narrow rows (a disk's ring) sorted at once, 1.2 →
    0.2 ms for 1,300 rings of 60 pixels; wide, sparse ones (a pattern's electron blobs) one row at a time."""
    if t.device.type != "cpu" or t.shape[1] == 0 or t.dtype not in (torch.float32, torch.float64):
        return t.nanmedian(dim=1).values
    a = t.detach().numpy()
    n = (~np.isnan(a)).sum(axis=1)
    k = np.maximum(n - 1, 0) // 2
    if a.shape[1] <= 256:  # NaN sort last: a row without numbers gives NaN
        return torch.from_numpy(np.sort(a, axis=1)[np.arange(len(a)), k])
    return torch.from_numpy(np.array([np.partition(row[~np.isnan(row)], kk)[kk] if nn else np.nan
                                      for row, kk, nn in zip(a, k, n)], dtype=a.dtype))


def is_counts(img: torch.Tensor, one_e: torch.Tensor, n: int = 4096) -> torch.Tensor:
    """(B,) whether each pattern holds counts: 99 % of its nonzero pixels (of up to ``n`` sampled) whole
    multiples of the smallest one, within 1 % (a hot pixel may be anything), and no more than
    ``READ_NOISE_MIN_NEGATIVE`` of them below zero (no count is: an integrating detector's read noise about its
    subtracted dark level is, and stored as integers it is whole multiples of its smallest step — measured: 20
    counts per electron with 3 counts of read noise as int16, one such "electron" per count, left the beam alone at
    1e3 e⁻ where the same values as float32 gave 8 vectors per pattern; benchmarks/RESULTS.md, "A detector's dark
    level"), nor where its floor is such noise clipped at zero (``clipped_read_noise``). Blurred,
    background-subtracted or noise-free patterns are not."""
    flat = img.flatten(1)
    whole, nonzero, negative = _whole_counts(flat[:, pixel_sample(flat.shape[1], n, img.device)], one_e)
    # a sparse pattern (a low-dose one's few hundred electrons, most in its beam) may leave a sample without a lit
    # pixel, which judged nothing: judged on all its pixels (its one electron stays its smallest value)
    few = nonzero < COUNTS_MIN_SAMPLED
    if bool(few.any()):
        whole[few], nonzero[few], negative[few] = _whole_counts(flat[few], one_e[few])
    return (whole >= 0.99 * nonzero.clamp_min(1)) & ~negative & ~(clipped_read_noise(img) > 0)


def _whole_counts(v: torch.Tensor, one_e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) of each row of pixels ``v``: how many are whole multiples of ``one_e`` (within 1 %), how many are above
    zero, and whether at least ``READ_NOISE_MIN_NEGATIVE`` of them are below zero (``is_counts``)."""
    v = v.double() / one_e[:, None].double()
    nonzero = v > 0
    # a multiple beyond MAX_COUNT_PER_PX is no count: a blur tail of 1e-20 as "one electron" makes every
    # float32 value look whole (measured: a blurred 1e3 e⁻ pattern taken as counts, every speck a disk)
    whole = ((v - v.round()).abs() <= 0.01) & nonzero & (v <= MAX_COUNT_PER_PX)
    negative = (v < 0).double().mean(dim=1) >= READ_NOISE_MIN_NEGATIVE
    return whole.sum(dim=1), nonzero.sum(dim=1), negative


def pixel_sample(n_pixels: int, n: int, device=None) -> torch.Tensor:
    """Indices of up to ``n`` of a flattened pattern's ``n_pixels`` pixels spread over the whole detector: steps of
    the golden ratio's share of the pattern (a Fibonacci lattice), a step coprime with the pattern's size, so that no
    two samples coincide. Evenly spaced indices alias on the rows: on a 256 px detector every 16th pixel is
    nearly the same 16 columns of every row, which missed a small beam and with it every electron of a sparse
    low-dose pattern (benchmarks/RESULTS.md, "A pixel sample that missed the beam")."""
    if n_pixels <= n:
        return torch.arange(n_pixels, device=device)
    step = int(round(n_pixels * (math.sqrt(5.0) - 1.0) / 2.0)) | 1
    while math.gcd(step, n_pixels) != 1:
        step += 2
    return (torch.arange(n, device=device, dtype=torch.int64) * step) % n_pixels


def one_electron(img: torch.Tensor) -> "Electron":
    """(B,) the value one electron adds to a pattern's sum, and (B,) whether the pattern is judged as
    counts (Poisson's exact test applies).

    A counted pattern: its smallest positive value (``is_counts``). A pattern that is not counted —
    a low-dose pattern through a detector's blur — may still be made of isolated electron blobs; then its
    smallest positive value is a blur tail (1e-7 of an electron measured at 1e3 e⁻, which made every
    few-electron speck a disk at SNR 1e4–1e8), and one electron is the typical 3×3 excess about a local
    maximum over the background (the median pixel). Such a pattern (``_isolated_electrons``) is judged as
    counts of that electron. Elsewhere (a dense or noise-free pattern) one electron is the Gaussian floor's
    scale: the background's photon transfer (``photon_transfer``), or where that cannot be measured the smallest
    positive value. Not the larger of the two: a bright pattern with no empty pixel has its darkest pixel's many
    electrons as its smallest value (bench_accuracy's 80 kV / 1 mrad patterns at 1e5: 10–60 electrons), which made
    every disk ~3–8 × less significant than it was (benchmarks/RESULTS.md, "A bright pattern's electron").
    ``.noise_free`` of the result: the patterns taken for isolated electrons whose maxima spread over decades
    (``NOISE_FREE_MIN_SPREAD``), which ``disk_contrast`` takes as dense."""
    positive = torch.where(img > 0, img, torch.full_like(img, torch.inf)).flatten(1).amin(dim=1)
    one_e = torch.where(torch.isfinite(positive), positive, torch.ones_like(positive))
    counting = is_counts(img, one_e)
    test = ~counting & torch.isfinite(positive)
    noise_free = torch.zeros_like(counting)
    if bool(test.any()):
        blob, isolated, spread = _isolated_electrons(img[test])
        idx = torch.nonzero(test).flatten()[isolated]
        one_e[idx], counting[idx], noise_free[idx] = blob[isolated], True, spread[isolated]
    dense = ~counting & torch.isfinite(positive)
    if bool(dense.any()):
        ptc = photon_transfer(img[dense])
        one_e[dense] = torch.where(ptc > 0, ptc, one_e[dense])
    return Electron(one_e, counting, noise_free)


class Electron(tuple):
    """``one_electron``'s (one_e, counting), and ``.noise_free``: (B,) the patterns taken for isolated electrons
    whose maxima spread over decades (``NOISE_FREE_MIN_SPREAD``), dense for the lattice rule."""

    def __new__(cls, one_e: torch.Tensor, counting: torch.Tensor, noise_free: torch.Tensor):
        t = super().__new__(cls, (one_e, counting))
        t.noise_free = noise_free
        return t


def peak_thresholds(img: torch.Tensor, threshold: float, electron=None) -> torch.Tensor:
    """(B,) the network's V_g threshold per pattern: ``threshold`` × 1 at ``LOW_DOSE_E[1]`` electrons or more,
    × ``LOW_DOSE_THRESHOLD_FACTOR`` at ``LOW_DOSE_E[0]`` or fewer, log-linear between; electrons counted as
    ``one_electron`` finds one (``electron``: its result for ``img``, when already known). A noise-free
    pattern's "electron" is tiny: it holds many."""
    electrons = pattern_electrons(img, electron)
    lo, hi = LOW_DOSE_E
    f = ((electrons.clamp_min(1.0).log() - math.log(lo)) / math.log(hi / lo)).clamp(0.0, 1.0)
    return (threshold * (LOW_DOSE_THRESHOLD_FACTOR + (1.0 - LOW_DOSE_THRESHOLD_FACTOR) * f)).to(torch.float32)


def pattern_electrons(img: torch.Tensor, electron=None) -> torch.Tensor:
    """(B,) float64: the electrons each pattern holds, counted as ``one_electron`` finds one (``electron``: its
    result for ``img``, when already known). A noise-free pattern's "electron" is tiny: it holds many."""
    one_e, _ = one_electron(img) if electron is None else electron
    return img.flatten(1).double().sum(dim=1) / one_e.double().clamp_min(1e-300)


def photon_transfer(s: torch.Tensor, block_px: int = PTC_BLOCK_PX) -> torch.Tensor:
    """(B,) the background's variance per unit of its level at the scale of ``block_px``² blocks: one
    electron's value where the background is shot noise (photon transfer: a block's sum of electrons
    has variance = mean), 0 where it cannot be measured.

    A blurred pattern (a scintillator's point spread) is neither counts nor isolated electrons, and
    its smallest value is a blur tail; the blur also lowers the pixel-to-pixel spread the ring test
    measures, but not a block's sum, which keeps the electrons it holds. So the variance is taken of
    differences of neighbouring block sums, over the darker half of the neighbour pairs (the background,
    not disks), the term of a linear gradient removed by comparing neighbours one and two blocks apart.
    A noise-free pattern's smooth background gives a value far below any disk's (tested)."""
    B, P, Q = s.shape
    k = int(block_px)
    S = s[:, :P // k * k, :Q // k * k].reshape(B, P // k, k, Q // k, k).sum(dim=(2, 4)).double()
    if min(S.shape[1:]) < 3:
        return torch.zeros(B, dtype=s.dtype, device=s.device)
    pairs = [(S[:, :, 1:-1], S[:, :, :-2], S[:, :, 2:]), (S[:, 1:-1], S[:, :-2], S[:, 2:])]
    d1 = torch.cat([(a - b).flatten(1) for a, b, _ in pairs], dim=1)  # neighbours
    d2 = torch.cat([(c - b).flatten(1) for _, b, c in pairs], dim=1)  # two blocks apart
    mean = torch.cat([((a + b + c) / 3).flatten(1) for a, b, c in pairs], dim=1)
    dark = mean <= _row_median(mean)[:, None]
    # shot noise: E d1² = E d2² = 2 g mean; a gradient δ per block adds δ² to d1², 4 δ² to d2²
    noise = ((4 * d1.square() - d2.square()) * dark).sum(dim=1) / 3
    level = (2 * mean * dark).sum(dim=1)
    g = torch.where((level > 0) & (noise > 0), noise / level.clamp_min(1e-300), torch.zeros_like(level))
    return g.to(s.dtype)


def _isolated_electrons(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) the median 3×3 excess over the median pixel about the local maxima above it (one electron's
    blob, where the pattern is one of electrons), and (B,) whether the pattern is one of isolated
    electrons: its background holds less than ``LOW_COUNT_E_PER_PX`` of them per pixel, and it is sparse
    (its median pixel is zero, or within the read noise of it) or at least ``MIN_MAXIMA_FRACTION`` of its pixels
    are such maxima (shot noise on a background speckles the whole detector; the flat interiors of a noise-free
    pattern's disks, whose excess is large, are a small share of it). A noise-free pattern's faint ringing can
    pass too, with an "electron" of that ringing's size, far below any disk: its disks stay as significant as
    before (tested). Also (B,) whether the pattern's background holds maxima and they spread over decades
    (``NOISE_FREE_MIN_SPREAD``): a noise-free one. On a dark-subtracted integrating detector (``read_noise`` > 0)
    a maximum is an electron's only where it stands ``READ_NOISE_PEAK_SIGMA`` σ of that noise above the median
    pixel; a pattern without negative pixels is judged as before."""
    level = _row_median(s.flatten(1))[:, None, None]
    noise = read_noise(s)
    peak = (s > level + READ_NOISE_PEAK_SIGMA * noise[:, None, None]) & (s >= window3(s, torch.maximum))
    # under a floor of read noise clipped at zero (``clipped_read_noise``) a maximum's 8 neighbours, mostly floor,
    # each add that noise's upper half, σ / √(2π) on average, not the median pixel (0): left in, one electron came out
    # 1.2–1.4 × its size under 0.08–0.15 electron of noise (tested)
    clipped = ((noise > 0) & ~(s.flatten(1).amin(dim=1) < 0))[:, None, None]
    floor = torch.where(clipped, 8.0 * noise[:, None, None] / math.sqrt(2.0 * math.pi), 9.0 * level)
    summed = window3(s, torch.add) - floor
    excess = torch.where(peak, summed, torch.full_like(s, float("nan"))).flatten(1)
    blob = _row_nanmedian(excess)
    many = peak.flatten(1).float().mean(dim=1) >= MIN_MAXIMA_FRACTION
    empty = many | (level[:, 0, 0] <= noise)
    # a median pixel that is a blur's tail (a camera's point spread reaches every pixel) is a zero one where the
    # maxima are a speckle of single electrons, not a noise-free pattern's few bright disks (summed only where asked),
    # counted where the speckle is sparse (``BLUR_TAIL_SPARSE_WINDOW``): a low-dose beam's dense disk is no speckle
    tail = ~empty & (level[:, 0, 0] <= BLUR_TAIL_OF_ELECTRON * blob)
    if bool(tail.any()):
        sparse = summed[tail] <= BLUR_TAIL_SPARSE_WINDOW * blob[tail][:, None, None]
        electrons = ((s[tail] - level[tail]).clamp_min(0) * sparse).flatten(1).sum(dim=1) / blob[tail]
        maxima = (peak[tail] & sparse).flatten(1).sum(dim=1)
        tail[tail.clone()] = electrons <= BLUR_TAIL_MAX_ELECTRONS_PER_MAXIMUM * maxima
    isolated = (level[:, 0, 0] < LOW_COUNT_E_PER_PX * blob) & (empty | tail)
    # the spread only where it can matter (an isolated pattern whose background holds maxima): a bright pattern's
    # batch skips the quantile (4 ms of 32 patterns at 128 px)
    noise_free = isolated & (level[:, 0, 0] > noise)
    if bool(noise_free.any()):
        maybe = noise_free.clone()
        noise_free[maybe] = _row_nanquantile(excess[maybe], 0.9) > NOISE_FREE_MIN_SPREAD * blob[maybe]
    return blob, isolated, noise_free


def read_noise(s: torch.Tensor) -> torch.Tensor:
    """(B,) each pattern's Gaussian read noise, from its negative pixels: an integrating detector's dark-subtracted
    frame reads N(0, σ²) where no electron arrived, and no electron reads below zero, so the pixels under zero are
    that noise's lower half (E[x² | x < 0] = σ²). For a pattern with fewer than ``READ_NOISE_MIN_NEGATIVE`` of its
    pixels negative (counts and simulations have none; a few are a defect, not a noise floor), the noise that a floor
    clipped at zero shows (``clipped_read_noise``), else 0."""
    if not bool(s.amin() < 0):  # counts and simulations: one pass (0.1 ms for 32 patterns at 128², the sums 3.3)
        return clipped_read_noise(s)
    neg = s.flatten(1).clamp_max(0.0).double()
    n = (neg < 0).sum(dim=1)
    sigma = (neg.square().sum(dim=1) / n.clamp_min(1)).sqrt()
    some = n >= READ_NOISE_MIN_NEGATIVE * neg.shape[1]
    if not bool(some.all()):
        sigma = torch.where(some, sigma, clipped_read_noise(s).double())
    return sigma.to(s.dtype)


# the last batch judged (held, so that no other tensor takes its place), its version (None for an inference-mode
# tensor, which keeps none: as ``model_input.ModelInput.electron``, a batch is not changed between its checks), σ
_CLIPPED_LAST: list = [None, None, None]


def clipped_read_noise(s: torch.Tensor) -> torch.Tensor:
    """``_clipped_read_noise(s)``, once per batch: ``is_counts`` and ``read_noise`` both ask it of each batch."""
    version = None if s.is_inference() else s._version
    if _CLIPPED_LAST[0] is not s or _CLIPPED_LAST[1] != version:
        _CLIPPED_LAST[:] = [s, version, _clipped_read_noise(s)]
    return _CLIPPED_LAST[2].clone()


def _clipped_read_noise(s: torch.Tensor) -> torch.Tensor:
    """(B,) the Gaussian read noise of each pattern whose floor reads it clipped at zero in whole steps (an integrating
    detector's dark-subtracted frames stored as unsigned integers: the noise's lower half reads 0, its upper half 1, 2,
    3 … steps), 0 for any other (the tests and constants: ``CLIPPED_*`` above). Judged on the darkest quarter of the
    pattern's blocks (at most ``CLIPPED_MAX_BLOCKS``), where no disk is; σ from the share of those pixels at m steps or
    fewer, P(x < m + ½) = Φ((m + ½) / σ), which the few electrons there barely change (their mean square would: 16
    steps where the noise was 3 at 1e5 e⁻)."""
    B, P, Q = s.shape
    out = torch.zeros(B, dtype=s.dtype, device=s.device)
    k = CLIPPED_BLOCK_PX
    if P < 2 * k or Q < 2 * k:
        return out
    flat = s.flatten(1)  # a floor of zeros on a sample of the pixels first (is_counts' sample): none, no test
    sample = flat[:, pixel_sample(flat.shape[1], 4096, s.device)]
    maybe = (sample == 0).float().mean(dim=1) >= CLIPPED_MIN_ZERO / 2
    if not bool(maybe.any()):
        return out
    x = s[maybe]
    b, nr, nc = len(x), P // k, Q // k
    # rows then columns (one summed axis at a time: 8 × faster than both at once in float64, 2 × than in float32)
    means = x[:, :nr * k, :nc * k].reshape(b, nr, k, nc * k).sum(dim=2).reshape(b, nr, nc, k).sum(dim=3).double() / k**2
    # the darkest by their neighbours' mean, not their own: picked by its own pixels, a block of noise alone is one
    # with fewer pixels above zero, and σ came out 0.5–0.7 × the true
    around = (window3(means, torch.add) - means) / (window3(torch.ones_like(means), torch.add) - 1)
    darkest = around.flatten(1).argsort(dim=1)[:, :max(1, min(nr * nc // 4, CLIPPED_MAX_BLOCKS))]  # (b, n)
    ar = torch.arange(k, device=s.device)
    rows = ((darkest // nc) * k)[:, :, None, None] + ar[:, None]
    cols = ((darkest % nc) * k)[:, :, None, None] + ar
    v = x[torch.arange(b, device=s.device)[:, None, None, None], rows, cols].double()  # (b, n, k, k): those pixels
    step = torch.where(v > 0, v, torch.full_like(v, math.inf)).flatten(1).amin(dim=1)
    v = v / step[:, None, None, None]
    nz, r = v > 0, v.round()
    whole = (((v - r).abs() <= 0.01) | ~nz).flatten(1).double().mean(dim=1) >= 0.99
    share = [(r == j).flatten(1).double().mean(dim=1) for j in (0, 1, 2)]
    above = 1.0 - share[0]
    dispersion = 2 * share[0] * share[2] / share[1].square().clamp_min(1e-12)
    together = (nz[..., :-1] & nz[..., 1:]).flatten(1).double().mean(dim=1) / above.square().clamp_min(1e-12)
    ok = whole & (above >= CLIPPED_MIN_NONZERO) & (share[0] >= CLIPPED_MIN_ZERO) & \
        (dispersion >= CLIPPED_MIN_DISPERSION) & (together <= CLIPPED_MAX_NEIGHBOURS) & torch.isfinite(step)
    if not bool(ok.any()):  # counts: no median to take
        return out
    # σ from the share under m + ½ steps, m the median of the values above zero (about 0.67 σ): most precise there,
    # and the few electrons of the dark blocks, above it, barely move it
    r, nz = r[ok], nz[ok]
    m = _row_nanmedian(torch.where(nz, r, torch.full_like(r, math.nan)).flatten(1)).clamp_min(1.0)
    under = (r <= m[:, None, None, None]).flatten(1).double().mean(dim=1).clamp(0.5 + 1e-6, 1 - 1e-6)
    sigma = (m + 0.5) / torch.special.ndtri(under)
    # and the zeros that noise of that σ leaves, Φ(0.5 / σ): electrons in the dark blocks (a bright pattern's diffuse
    # background) leave fewer, and their blur makes two steps common too
    gaussian = (share[0][ok] - torch.special.ndtr(0.5 / sigma)).abs() <= CLIPPED_ZERO_TOLERANCE
    found = torch.zeros_like(step)
    found[ok] = torch.where(gaussian, sigma * step[ok], torch.zeros_like(sigma))
    out[maybe] = found.to(s.dtype)
    return out


def subtracted_floor(s: torch.Tensor) -> torch.Tensor:
    """(B,) whether each pattern's negative pixels (at least ``READ_NOISE_MIN_NEGATIVE`` of them) are a smooth floor
    subtracted from it — a background removed by hand — rather than a detector's white read noise: neighbouring
    negative pixels alike (their squared difference under ``WHITE_NOISE_MIN_RATIO`` of 2 E x², module constants), or
    more than ``READ_NOISE_MAX_NEGATIVE`` of the pixels below zero. The checks count a pattern's electrons against
    its background, which such a pattern no longer shows."""
    if not bool(s.amin() < 0):  # counts and simulations: one pass
        return torch.zeros(len(s), dtype=torch.bool, device=s.device)
    x = s.float()
    a, b = x[:, :, :-1], x[:, :, 1:]
    both = (a < 0) & (b < 0)
    neg = x.clamp_max(0.0).flatten(1)
    n = (neg < 0).sum(dim=1)
    some = n >= READ_NOISE_MIN_NEGATIVE * neg.shape[1]
    diff = torch.where(both, (a - b).square(), torch.zeros_like(a)).flatten(1).sum(dim=1) / both.flatten(1).sum(
        dim=1).clamp_min(1)
    alike = diff < WHITE_NOISE_MIN_RATIO * 2.0 * neg.square().sum(dim=1) / n.clamp_min(1)
    return some & (alike | (n > READ_NOISE_MAX_NEGATIVE * neg.shape[1]))


def with_floor_restored(s: torch.Tensor) -> torch.Tensor:
    """``s`` (B, Qx, Qy) with the floor of each pattern that has one subtracted (``subtracted_floor``) added back, as its
    negative pixels show it (``FLOOR_WINDOWS_PX``), so that the checks count its electrons against its background
    again, and nothing left below zero; ``s`` itself where no pattern has one."""
    flagged = subtracted_floor(s)
    if not bool(flagged.any()):
        return s
    x = s[flagged].float()[:, None]
    neg = x.clamp_max(0.0)
    floor, found = torch.zeros_like(x), torch.zeros_like(x, dtype=torch.bool)
    for w in FLOOR_WINDOWS_PX:
        total = F.avg_pool2d(neg, w, 1, w // 2, count_include_pad=False)
        share = F.avg_pool2d((neg < 0).float(), w, 1, w // 2, count_include_pad=False)
        here = (share * w * w >= FLOOR_MIN_PIXELS) & ~found
        floor = torch.where(here, -total / share.clamp_min(1e-12), floor)
        found |= here
    out = s.clone()
    # what stays below zero is the estimate's error, no read noise (``read_noise`` would take it for one)
    out[flagged] = (x + floor)[:, 0].clamp_min(0.0).to(s.dtype)
    return out


def _row_nanquantile(t: torch.Tensor, q: float) -> torch.Tensor:
    """The ``q`` quantile of each row of a 2-D tensor, NaNs left out (NaN where a row has none); by numpy on the
    CPU (``torch.nanquantile`` refuses inputs beyond 16M elements)."""
    if t.device.type != "cpu":
        return torch.nanquantile(t, q, dim=1)
    a = t.detach().numpy()
    out = np.full(len(a), np.nan, dtype=a.dtype)
    some = (~np.isnan(a)).any(axis=1)
    if some.any():
        out[some] = np.nanquantile(a[some], q, axis=1)
    return torch.from_numpy(out)


def _row_nanquantiles(t: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """``torch.nanquantile(t, q, dim=1)`` of a 2-D float32 CPU tensor for each of ``qs``, the same values (linear
    interpolation, NaN where a row has none), from one numpy sort of the rows (NaN sort last): torch sorted the
    rings and circles of a batch's disks once per quantile, 3 % of `predict`'s time on bench_predict's 2 mrad scan.
    Its interpolation as torch's lerp computes it, with one rounding (tested bit for bit). Other tensors by torch."""
    if t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() != 2 or t.shape[1] == 0:
        return [torch.nanquantile(t, q, dim=1) for q in qs]
    a = t.detach().numpy()
    srt = np.sort(a, axis=1)
    n = (~np.isnan(a)).sum(axis=1)
    rows = np.arange(len(a))
    out = []
    for q in qs:
        rank = np.float32(q) * (n - 1).astype(np.float32)
        below = np.floor(rank)
        w = rank - below  # float32, as torch's weight
        lo = srt[rows, np.maximum(below, 0).astype(np.int64)]
        hi = srt[rows, np.maximum(np.ceil(rank), 0).astype(np.int64)]
        d = (hi - lo).astype(np.float64)  # the difference in float32, then one multiply-add (torch's lerp)
        v = np.where(w < 0.5, lo + w.astype(np.float64) * d, hi - d * (np.float32(1) - w).astype(np.float64))
        out.append(torch.from_numpy(np.where(n > 0, v, np.nan).astype(np.float32)))
    return out


def poisson_z(counts: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """The significance of ``counts`` electrons where ``expected`` come from the background, as a normal
    z-score: P(Poisson(expected) ≥ counts) = Φ(−z). Exact for the few counts of a low-dose pattern, where
    a Gaussian standard error is far too strict (a disk of 10 electrons on an empty background is
    certain); the Gaussian's z at high counts."""
    k, mu = counts.double(), expected.double().clamp_min(1e-12)
    tail = torch.where(k >= 0.5, torch.special.gammainc(k.clamp_min(0.5), mu), torch.ones_like(mu))
    return (-torch.special.ndtri(tail.clamp(1e-300, 1.0))).clamp(-50.0, 50.0).float()


def _gather(img: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    _, P, Q = img.shape
    ii = (i.round().long()[:, None] + off[None, :, 0]).clamp(0, P - 1)
    jj = (j.round().long()[:, None] + off[None, :, 1]).clamp(0, Q - 1)
    return img[b[:, None], ii, jj]


def incident_beam(b, brightness: np.ndarray, n_patterns: int) -> np.ndarray:
    """(n_patterns,) each pattern's incident beam in units of its direct (transmitted) beam: the sum of its
    vectors' ``brightness`` (each disk's core excess over its level, a fraction of the direct beam's core; the
    beam's own ≈ 1), at least 1. A disk's core mean over the vacuum beam's is its share of the electrons
    (disks of one probe have one shape), and the vacuum beam holds them all: the disks' shares add up to the
    incident beam. Only the disks proposed are counted, so the sum errs low, toward the direct beam's floor."""
    total = np.bincount(np.asarray(b, int), weights=np.clip(np.nan_to_num(brightness), 0.0, None),
                        minlength=n_patterns)
    return np.maximum(total, 1.0)


def bright_enough(brightness: np.ndarray, snr: np.ndarray, incident: np.ndarray) -> np.ndarray:
    """Per vector: ``brightness`` (a fraction of the direct beam) ≥ ``MIN_BRIGHTNESS``, and as a fraction of the
    incident beam (``incident``, per vector: ``incident_beam`` of its pattern) within ``BRIGHTNESS_TOLERANCE``
    standard errors (the contrast's, ``snr``) of it."""
    slack = 1.0 + BRIGHTNESS_TOLERANCE / np.clip(np.nan_to_num(snr), 1e-6, None)
    return (brightness >= MIN_BRIGHTNESS) & (brightness / incident * slack >= MIN_BRIGHTNESS)


def supported(patterns: torch.Tensor, centres: torch.Tensor, b, x_px, y_px, radius_px: float,
              min_snr: float | None = None, min_brightness: float | None = None) -> torch.Tensor:
    """Boolean mask over vectors (batch index ``b``, position ``x_px``, ``y_px`` in the detector's pixels)
    of ``patterns`` (B, Qx, Qy) whose direct beams sit at ``centres`` (B, 2): those whose disk the pattern
    shows (module docstring). ``radius_px``: the probe disk's radius in the detector's pixels."""
    snr, brightness = disk_contrast(patterns, centres, b, x_px, y_px, radius_px)[:2]
    return (snr >= (MIN_SNR if min_snr is None else min_snr)) & \
        (brightness >= (MIN_BRIGHTNESS if min_brightness is None else min_brightness))


_BACKGROUND = ("level", "spread", "spread_counts", "patch", "rate", "ring_rate")


def _ring_background(img, b, x, y, r: float, n_core: int, one_e, neighbours, others, bright, crowded) -> dict:
    """Background of separate disks, from the ring r + 1 … 2r + 1 about each (module docstring), its pixels
    in the ``neighbours``' disks (V, k, 2: the direct beam's) left out (``_clear``), and in the ``others``' too
    where the vector is ``crowded`` (V) and its pattern ``bright``: its median (``level``),
    pixel noise (``spread``; ``spread_counts`` for counts, where Poisson's exact test judges sparse rings),
    the noise of a core-sized mean of a speckle (``patch``), the background electrons per pixel for the
    counting test (``rate``: on a ``bright`` pattern, V, the ring's mean outside the ``others``' disks too, V,
    k', 2: the pattern's other vectors and beam whose disks reach the ring) and for the dense rule (``ring_rate``:
    the whole ring's, the beam's disk left out, whatever the level leaves out: a film's speckle grains are its
    background)."""
    ring_off = _offsets(r + 1.0, 2.0 * r + 1.0, img.device)
    ring = _gather(img, b, x, y, ring_off)
    pts = torch.stack([x.round()[:, None] + ring_off[:, 0], y.round()[:, None] + ring_off[:, 1]], dim=-1)
    whole = _clear(neighbours, pts, r, 0.25)
    off_disks = _clear(torch.cat([neighbours, others], dim=1), pts, r, 0.25)
    clear = torch.where((crowded & bright)[:, None], off_disks, whole)  # the level's pixels
    background = torch.where(clear, ring, torch.full_like(ring, torch.nan))
    med = _row_nanmedian(background)
    # robust pixel noise: the MAD, or the distance from the median to the 84th percentile (one σ of
    # Gaussian noise; for a ring of mostly zeros, whose MAD is zero, and for a skewed speckle)
    mad = _MAD_TO_SIGMA * _row_nanmedian((background - med[:, None]).abs())
    spread = torch.maximum(mad, _row_nanquantiles(background, (0.84,))[0] - med)
    # speckle needs a background that fills the ring; a ring of mostly zeros (sparse counts) is shot
    # noise, which the other terms judge (measured: the sector term there dropped the few-electron disks
    # of a 1e3 e⁻ scan, benchmarks/RESULTS.md); counted, that is Poisson's exact test. The beam's pixels
    # count as the level in their sector.
    filled = med > 0
    patch = torch.where(filled, _sector_noise(torch.where(clear, ring, med[:, None]), ring_off),
                        torch.zeros_like(med)) * math.sqrt(len(ring_off) / SECTORS / n_core)
    # the ring's mean with one electron added: a ring of zeros is no proof of a zero background
    rate = ((ring * whole).sum(dim=1) / one_e + 1.0) / whole.sum(dim=1)
    # a mean holds the slivers of bright neighbours reaching into the ring, which a median shrugs off: the
    # counting test's rate leaves them out, as the circle's does (TiO2 [001] 1° off the axis at 200 kV / 2 mrad:
    # three {2 1 0} disks at 0.02 of the beam refused at 1.3–1.8σ). Only where the beam holds LOW_DOSE_E[1]
    # electrons: below, the proposals sit on the background's chance clusters of electrons or a film's speckle
    # grains, part of the background, and a rate without them is too low (measured: with no gate the tilted set's
    # 1e3 F1 0.64 -> 0.61; from LOW_DOSE_E[0], a film counted at 3e3 e⁻ 0 -> 0.75 false vectors per pattern;
    # benchmarks/RESULTS.md, "The ring's counting rate without its neighbours' disks")
    own_rate = ((ring * off_disks).sum(dim=1) / one_e + 1.0) / off_disks.sum(dim=1)
    return {"level": med, "spread": spread, "spread_counts": torch.where(filled, spread, mad), "patch": patch,
            "rate": torch.where(bright, own_rate, rate), "ring_rate": rate}


def _circle_background(img, centres, b, x, y, one_e, neighbours, own, r: float, others, many) -> dict:
    """Background of overlapping disks, from the circle about the beam through each (``disk_contrast``),
    its level the 20th percentile of 3×3 means along it: at a few electrons per pixel a single pixel's is
    the shot noise's low tail, far below the background's mean (measured: a vacuum pattern's halo passed as
    disks at SNR 4–11, 300 kV / 3.5 mrad at 1e5 e⁻), and a 3×3 mean's still lies 0.84 of its shot noise
    (``one_electron``) below, which is added back; its pixel noise the pixels' spread. (Means over the
    whole core, like with like, fill the narrow gaps between overlapping disks: recall there fell by half,
    benchmarks/RESULTS.md.)"""
    means, pixels, pts = _circle(img, centres, b, x, y)
    # the counting test's background electrons per pixel: the circle's mean outside every vector's disk
    # (``others``: all of the pattern's and its beam), with one electron more, as for the ring; also the dense
    # rule's (``ring_rate``) where the beam holds ``many`` electrons (``_snr``). The darkest
    # fifth of a sparse background is empty, and a rate from it made a film's halo a disk at 3–5σ (300 kV /
    # 3.5 mrad at 1e3 e⁻; benchmarks/RESULTS.md, "The counting test beside the beam")
    off_disks = _clear(torch.cat([others, own], dim=1), pts, r, 0.25)
    mean_rate = ((means * off_disks).sum(dim=1) * 9.0 / one_e + 1.0) / (9.0 * off_disks.sum(dim=1).clamp_min(1))
    # the points in the disk itself or a neighbour's left out (``_clear``): on a circle through touching
    # disks (300 kV / 2.5 mrad SrTiO3) they were most of it, and its darkest fifth was still in disks
    clear = _clear(torch.cat([neighbours, own], dim=1), pts, r, 0.25)
    means = torch.where(clear, means, torch.full_like(means, torch.nan))
    pixels = torch.where(clear, pixels, torch.full_like(pixels, torch.nan))
    low = _row_nanquantiles(means, (0.2,))[0]
    # the 20th percentile of a shot-noise background lies 0.84 σ below its mean: add that σ of a 3×3 mean
    level = low + 0.84 * torch.sqrt(low.clamp_min(0) * one_e / 9.0)
    p50, p20 = _row_nanquantiles(pixels, (0.5, 0.2))
    spread = (p50 - p20) / 0.84
    return {"level": level, "spread": spread, "spread_counts": spread, "patch": torch.zeros_like(level),
            "rate": torch.maximum((level / one_e).clamp_min(1.0 / CIRCLE_POINTS), mean_rate),
            "ring_rate": torch.where(many, mean_rate, torch.zeros_like(mean_rate))}


def _snr(core, bg: dict, n_core: int, one_e, counting, disk_sum, n_disk, n_area: int, many):
    """Contrast of the core mean in standard errors: Gaussian, at least the speckle's; for counts also
    Poisson's exact test of the whole disk's electrons (``disk_sum`` over ``n_disk`` pixels, per vector:
    a sparse disk's few electrons fall anywhere in it, and the core holds a quarter of them), whichever
    is less. Also whether the background is dense (``DENSE_E_PER_DISK`` under a disk's ``n_area`` pixels;
    counted, where the direct beam holds ``many`` electrons, ``DENSE_COUNTED_E_PER_DISK``)."""
    excess = core - bg["level"]
    shot = torch.sqrt(bg["level"].clamp_min(one_e) * one_e) / n_core ** 0.5
    gauss = torch.maximum(bg["spread"] / n_core ** 0.5, shot)
    patch = bg["patch"]
    snr = excess / torch.maximum(gauss, patch)
    # a dense background (≥ DENSE_E_PER_DISK): its structure, not its electrons' shot noise, sets what a blob means.
    # Counted, the electrons under a disk judged on its ring are the ring's mean's (the counting test's rate): a
    # ring of single counts has a median of zero however many it holds (a film at 1e5 e⁻ on 256 px at 0.01
    # Å⁻¹/px: 14–125 electrons under a disk, its speckle grains kept at 5–15σ, 3 per pattern). The circle's of
    # overlapping disks only where the beam holds ``many`` electrons: at a low dose its mean holds the disks nobody
    # proposed (300 kV / 3.5 mrad / 60 nm at 1e3 e⁻: F1 0.09 -> 0.06; benchmarks/RESULTS.md, "A film's speckle on a
    # ring of single counts"), while at 1e4 a film's grains beside a 17 px beam passed at 4–6σ ("A film's speckle
    # beside large disks")
    dense = bg["level"] * n_area >= DENSE_E_PER_DISK * one_e
    dense |= counting & (bg["ring_rate"] * n_area >= torch.where(many, DENSE_COUNTED_E_PER_DISK, DENSE_E_PER_DISK))
    if bool(counting.any()):
        # the Gaussian floor of one electron per pixel would ask a disk on an empty background for ~40
        # electrons where 10 are certain
        counted = poisson_z(disk_sum / one_e, n_disk * bg["rate"])
        noise = torch.maximum(bg["spread_counts"] / n_core ** 0.5, patch)
        measured = torch.where(noise > 0, excess / noise.clamp_min(1e-30), torch.full_like(excess, torch.inf))
        snr = torch.where(counting, torch.minimum(counted, measured), snr)
    return snr, dense


class DiskContrast(NamedTuple):
    """``disk_contrast``'s measures, one value per vector."""

    snr: torch.Tensor  # the core mean's excess over the local level, in its standard errors
    brightness: torch.Tensor  # that excess as a fraction of the direct beam's core mean
    dense: torch.Tensor  # whether the background is dense (``DENSE_E_PER_DISK``; noise-free too)
    level: torch.Tensor  # the local level, the background of ``disk_intensity``
    # on a low-dose counted pattern (under LOW_DOSE_E[1] electrons): the larger of the core's and the whole disk's
    # mean excess, as a fraction of the same; the brightness of a disk its lattice predicts (None: ``brightness``)
    disk_brightness: torch.Tensor | None = None


def disk_contrast(patterns: torch.Tensor, centres: torch.Tensor, b, x_px, y_px, radius_px: float,
                  overlapping=False, electron=None, crowded=False, blur_px: float = 0.0) -> DiskContrast:
    """Per vector: the disk's contrast in standard errors of its core mean (``snr``), its excess over
    the local level as a fraction of the direct beam's core mean (``brightness``; ``disk_brightness``: on a
    low-dose counted pattern the larger of its core's and its whole disk's mean, as its counting test sees the
    whole disk), whether its
    background is dense (``dense``: at least ``DENSE_E_PER_DISK`` electrons under a disk, or noise-free), and
    that local level (``level``, in the pattern's units); module docstring.

    ``overlapping``: (V,) booleans or one for all: disks whose neighbours reach into their ring (module
    docstring). For those the level is the pattern's own on the circle through the vector about the
    direct beam: the 20th percentile of 3×3 means at 64 points of it (a radial halo of an amorphous
    film or of inelastic scattering is level around that circle; a disk is brighter than the darkest fifth
    of it), and the noise its pixels' spread (50th minus 20th percentile, 0.84 σ of Gaussian noise) or
    Poisson's. ``crowded``: (V,) booleans or one for all: small disks whose neighbours reach into their ring,
    judged on it without the neighbours' disks on a bright pattern (module docstring). ``electron``:
    ``one_electron(patterns)`` when already known. ``blur_px``: the camera's point spread σ (``_own_disk``)."""
    dev = patterns.device
    img = patterns.float()
    b = torch.as_tensor(b, device=dev).long()
    x, y = (torch.as_tensor(v, device=dev, dtype=torch.float32) for v in (x_px, y_px))
    if len(b) == 0:
        none = torch.zeros(0, device=dev)
        return DiskContrast(none, none, torch.zeros(0, device=dev, dtype=torch.bool), none)
    r = max(float(radius_px), 1.0)
    core_off = _offsets(-1.0, max(1.0, 0.5 * r), dev)
    # the core's mean without its brightest pixel: a hot pixel (one bright pixel) is no disk, unless the
    # disk is smaller than a pixel (then that pixel is the disk)
    hot = 1.0 if float(radius_px) >= HOT_PIXEL_MIN_RADIUS_PX else 0.0
    core_px = _gather(img, b, x, y, core_off)
    n_core = len(core_off) - int(hot)
    core = (core_px.sum(dim=1) - hot * core_px.amax(dim=1)) / n_core
    disk_px, own_px, outside = _own_disk(img, centres, b, x, y, r, blur_px)
    disk_sum = disk_px.sum(dim=1) - hot * disk_px.amax(dim=1)
    n_disk = (own_px.sum(dim=1) - int(hot)).clamp_min(1).float()
    electron = one_electron(img) if electron is None else electron
    one_e, counting = electron[0][b], electron[1][b]
    # the direct beam's background is the ring about it: the circle through it about itself is the beam
    over = torch.as_tensor(overlapping, device=dev, dtype=torch.bool).expand(len(b)) & outside
    # left out of the background (module docstring): the beam's disk from the rings it reaches, the disk's
    # own and its neighbours' (within 3 radii) from the circle; nothing for a disk overlapping the beam's
    beam = centres.float()[b][:, None]
    g = torch.hypot(x - beam[:, 0, 0], y - beam[:, 0, 1])
    apart = (g >= 2.0 * r + 1.0)[:, None, None]
    beam = torch.where(apart & (g <= 3.0 * r + 2.0)[:, None, None], beam, torch.full_like(beam, torch.inf))
    if bool(over.any()):
        # the pattern's other vectors and its beam, nearest first; the neighbours: the nearest within 3r + 2
        every = _neighbours(centres, b, x, y, math.inf, k=4 * NEIGHBOURS)
        near = every[:, :NEIGHBOURS]
        within = (near - torch.stack([x, y], dim=1)[:, None]).square().sum(dim=-1) <= (3.0 * r + 2.0) ** 2
        nb = torch.where(within[..., None], near, torch.full_like(near, torch.inf))
    else:
        every = nb = beam
    nb = torch.where(apart, nb, torch.full_like(nb, torch.inf))
    own = torch.where(apart, torch.stack([x, y], dim=1)[:, None], torch.full_like(beam, torch.inf))
    cb = torch.arange(len(img), device=dev)
    beam_disk = _gather(img, cb, centres[:, 0].float(), centres[:, 1].float(), _offsets(-1.0, r, dev)).sum(dim=1)
    beam_e = (beam_disk / electron[0]).double()[b]  # the electrons the beam's disk holds
    many, bright = beam_e >= LOW_DOSE_E[0], beam_e >= LOW_DOSE_E[1]
    # on a bright pattern the ring's counting rate leaves out the disks of its other vectors that reach into it
    reach = _neighbours(centres, b, x, y, 3.0 * r + 2.0) if bool((~over & bright).any()) else beam
    crowded = torch.as_tensor(np.asarray(crowded), device=dev, dtype=torch.bool).expand(len(b))
    reach = torch.where(apart, reach, torch.full_like(reach, torch.inf))
    bg = {k: torch.empty_like(core) for k in _BACKGROUND}
    for m, part in ((over, lambda m: _circle_background(img, centres, b[m], x[m], y[m], one_e[m], nb[m], own[m], r,
                                                        every[m], many[m])),
                    (~over, lambda m: _ring_background(img, b[m], x[m], y[m], r, n_core, one_e[m], beam[m],
                                                       reach[m], bright[m], crowded[m]))):
        if bool(m.any()):
            for k, v in part(m).items():
                bg[k][m] = v
    snr, dense = _snr(core, bg, n_core, one_e, counting, disk_sum, n_disk, own_px.shape[1] - 1, many)
    noise_free = getattr(electron, "noise_free", None)
    if noise_free is not None:
        dense = dense | noise_free[b]
    beam = _gather(img, cb, centres[:, 0].float(), centres[:, 1].float(), core_off).mean(dim=1)[b]
    # on a low-dose pattern a faint disk's few electrons fall anywhere in it, and its core (a quarter of it) often
    # holds none but the one left out as a hot pixel (8 electrons: in 37 % of draws); its counting test sees the
    # whole disk. Where the pattern's lattice predicts the disk its brightness is the whole disk's; a lone
    # vector's stays its core's, whose electrons a cluster of background counts beside a vacuum beam does not
    # share. Brighter patterns keep the core's, as the truth's floor is measured (a thick crystal's disk may be
    # brighter at its rim: benchmarks/RESULTS.md, "A counted disk's brightness")
    low = (pattern_electrons(img, electron) < LOW_DOSE_E[1])[b]
    whole = torch.where(counting & low, torch.maximum(core, disk_sum / n_disk), core) - bg["level"]
    beam = beam.clamp_min(1e-30)
    return DiskContrast(snr, (core - bg["level"]) / beam, dense, bg["level"], whole / beam)


def _own_disk(img: torch.Tensor, centres: torch.Tensor, b, x, y, r: float, blur_px: float = 0.0):
    """(V, n) the pixels of each vector's disk (radius ``r`` about its nearest pixel), zero where they are not its
    own; (V, n) which are; (V,) whether the vector lies outside the beam's disk (else it is the beam). A disk beside
    the beam's counts only its own pixels: the beam's disk holds most of a pattern's electrons, and its part in a
    neighbour's disk made a film's halo beside it a disk at 20σ (300 kV / 3.5 mrad at 1e3 e⁻; benchmarks/RESULTS.md,
    "The counting test beside the beam"). Through a camera's point spread (``blur_px``, σ) the beam's disk reaches
    ``BEAM_TAIL_SIGMAS`` σ further."""
    disk_off = _offsets(-1.0, r, img.device)
    disk_px = _gather(img, b, x, y, disk_off)
    c = centres.float()[b]
    outside = torch.hypot(x - c[:, 0], y - c[:, 1]) > r
    in_beam = torch.hypot((x.round() - c[:, 0])[:, None] + disk_off[None, :, 0],
                          (y.round() - c[:, 1])[:, None] + disk_off[None, :, 1]) <= r + 0.5 + BEAM_TAIL_SIGMAS * blur_px
    own_px = ~(in_beam & outside[:, None])
    return torch.where(own_px, disk_px, torch.zeros_like(disk_px)), own_px, outside


def disk_intensity(patterns: torch.Tensor, centres: torch.Tensor, b, x_px, y_px, radius_px: float,
                   level, blur_px: float = 0.0) -> torch.Tensor:
    """(V,) each disk's integrated intensity: its own pixels (``_own_disk``) summed, each less ``level`` (V,), the
    local level ``disk_contrast`` found; electrons for a counting detector. Its brightest pixel counts too, though
    the contrast test leaves it out: left out of the sum it took 1/n of every disk of n pixels, and ranked the
    disks against |F| no better on bench_accuracy (benchmarks/RESULTS.md, "Intensities measured on the disks").
    ``blur_px``: the camera's point spread σ (``_own_disk``)."""
    dev = patterns.device
    b = torch.as_tensor(b, device=dev).long()
    x, y = (torch.as_tensor(v, device=dev, dtype=torch.float32) for v in (x_px, y_px))
    if len(b) == 0:
        return torch.zeros(0, device=dev)
    disk_px, own_px, _ = _own_disk(patterns.float(), centres, b, x, y, max(float(radius_px), 1.0), blur_px)
    return disk_px.sum(dim=1) - own_px.sum(dim=1) * torch.as_tensor(level, device=dev, dtype=torch.float32)


def between_disks(patterns: torch.Tensor, b, x_px, y_px, radius_px: float, electron=None) -> torch.Tensor:
    """Boolean mask over vectors: those at a gap between disks rather than on one. The core of a disk
    (``GAP_CORE_RADII`` × its radius about its centre) is as bright as its surroundings (``GAP_ANNULUS_RADII``),
    dynamical contrast aside; the gap that three or four nearly touching disks leave is dark, ringed by their
    rims. A vector is at a gap where its core holds fewer electrons than ``GAP_MAX_RATIO`` × the annulus's
    brightness over its area would, by ``GAP_MIN_Z`` Poisson σ (P(Poisson ≤ k); electrons as ``one_electron``
    counts them, so that a low-dose core of few electrons is not refused on chance)."""
    dev = patterns.device
    b = torch.as_tensor(np.asarray(b), device=dev).long()
    x = torch.as_tensor(np.asarray(x_px, dtype=np.float64), device=dev).float()
    y = torch.as_tensor(np.asarray(y_px, dtype=np.float64), device=dev).float()
    img = patterns.float()
    one_e, _ = one_electron(img) if electron is None else electron
    core_off = _offsets(-1.0, GAP_CORE_RADII * radius_px, dev)
    annulus_off = _offsets(GAP_ANNULUS_RADII[0] * radius_px, GAP_ANNULUS_RADII[1] * radius_px, dev)
    e = one_e.float()[b].clamp_min(1e-30)
    core = (_gather(img, b, x, y, core_off).clamp_min(0).sum(dim=1) / e).double()
    disk = (GAP_MAX_RATIO * len(core_off) * _gather(img, b, x, y, annulus_off).clamp_min(0).mean(dim=1) / e).double()
    at_most = torch.special.gammaincc(core + 1.0, disk.clamp_min(1e-12))  # P(Poisson(disk) ≤ core)
    z = -torch.special.ndtri(at_most.clamp(1e-300, 1.0))
    return (core < disk) & (z >= GAP_MIN_Z)
