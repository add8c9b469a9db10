"""A vacuum-probe template made from the scan itself, for scans recorded without a vacuum probe.

The model and the beam finder need the image of the probe on the detector: in practice a bright
disk (the condenser aperture's image) with a soft edge. Without a vacuum recording, its size and
edge are measured on the bright-field disk of the scan's *median* pattern, taken after moving every
sampled pattern's direct beam onto the same spot (descan would otherwise blur the edge; the median
over scan positions ignores single hot pixels and is the same disk wherever the crystal scatters), and the
template is a flat disk with a logistic edge of that radius and width — what py4DSTEM's
``Probe.generate_synthetic_probe(radius, width, Qshape)`` draws, written here in numpy so that
`predict` need not import py4DSTEM (≈ 3 s). A cut-out of the median pattern itself is not used:
inside a crystal the direct disk carries dynamical contrast and only part of the beam's current, so
its template would put the patterns on another intensity scale than the vacuum probes the network
was trained with (``ModelInput`` scales every pattern to the probe's total).
"""
from __future__ import annotations

import numpy as np

from fourdcrystal.errors import UserError

MAX_SAMPLE = 64  # patterns in the median (evenly spread over the scan): enough for a clean disk
# Edge of the template (px): the network was trained with noise-free, unblurred simulated probes
# (a pixel-sharp aperture edge) next to patterns blurred by the detector, so the template is drawn
# sharp at the measured half-maximum radius rather than with the blurred edge measured in the data.
# On simulated SrTiO3 scans (1e5 e⁻, detector blur) this edge kept F1 within 0.015 of the true
# probe's, the measured edge (0.4 px) within 0.03.
TEMPLATE_EDGE_PX = 0.1


def sample_indices(n: int) -> np.ndarray:
    """The flat scan indices of ``sample_patterns``: up to MAX_SAMPLE of ``n``, spread evenly."""
    return np.unique(np.linspace(0, n - 1, min(n, MAX_SAMPLE)).astype(int))


def sample_patterns(cube) -> np.ndarray:
    """Up to MAX_SAMPLE patterns spread evenly across the scan (``sample_indices``), (n, Qx, Qy) float32."""
    return np.stack([cube.read(int(k), int(k) + 1)[0] for k in sample_indices(int(np.prod(cube.shape[:2])))])


def aligned(patterns: np.ndarray, centres: np.ndarray, to: tuple[float, float]) -> np.ndarray:
    """``patterns`` after a Fourier (sub-pixel) shift of each one's ``centres`` onto ``to``.

    The patterns are padded with their edge values before the shift: a Fourier shift is periodic, and a
    beam cut by the detector's edge would otherwise come back in on the far side (a real Merlin scan with
    its beam 25 px from the edge had its probe "found" 250 px away, on the wrapped copy)."""
    n, Qx, Qy = patterns.shape
    d = np.asarray(to, dtype=np.float64)[None] - np.asarray(centres, dtype=np.float64)
    pad = int(np.ceil(np.abs(d).max())) + 2
    padded = np.pad(patterns, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    Px, Py = padded.shape[1:]
    fx, fy = np.fft.fftfreq(Px)[:, None], np.fft.rfftfreq(Py)[None, :]
    ramp = np.exp(-2j * np.pi * (d[:, 0, None, None] * fx + d[:, 1, None, None] * fy))
    shifted = np.fft.irfft2(np.fft.rfft2(padded) * ramp, s=(Px, Py))
    return shifted[:, pad:pad + Qx, pad:pad + Qy]


# A beam recorded at the detector's ceiling (a plateau of at least this many pixels at the scan's maximum in
# the sampled patterns' median): users saturate the beam to see weak reflections.
SATURATED_MIN_PX = 5
# Diffracted disks used to measure the disk's size when the beam is saturated: at least SPOT_MIN_COUNT of
# them, each standing out by SPOT_MIN_CONTRAST of the (saturated) beam's contrast above its own background.
SPOT_MIN_COUNT, SPOT_MAX_COUNT, SPOT_MIN_CONTRAST = 3, 8, 0.1
SPOT_SMALLER = 0.75  # the diffracted disks' radius replaces the beam's only below this fraction of it
# ... and only where their radii agree: a crystal's disks are images of one aperture, so their half-maximum
# radii share one size (a real precession scan's eight: 1.85–2.19 px, interquartile range 0.05 of their median);
# blobs of a detector's flare do not (a real Merlin scan's eight: 3.2–19.9 px, 0.65). Beyond this spread the
# beam's own size stands.
SPOT_MAX_SPREAD = 0.25


def saturation_level(samples: np.ndarray) -> float | None:
    """The detector's ceiling if the scan's beams reach it (the median of the sampled patterns holds a plateau
    of ``SATURATED_MIN_PX`` pixels at their maximum: the same pixels in most patterns, as a beam is, where the
    maximum of sparse counts is reached by scattered pixels), else None."""
    top = float(samples.max())
    if not np.isfinite(top) or top <= 0:
        return None
    at_top = int((np.median(samples, axis=0) >= top * (1 - 1e-6)).sum())
    return top if at_top >= SATURATED_MIN_PX else None


def _local_maxima(img: np.ndarray, half: int = 2) -> np.ndarray:
    """Pixels that are the maximum of their (2·half+1)² neighbourhood."""
    p = np.pad(img, half, mode="constant", constant_values=-np.inf)
    n0, n1 = img.shape
    return np.all([img >= p[i:i + n0, j:j + n1] for i in range(2 * half + 1) for j in range(2 * half + 1)], axis=0)


def diffracted_disk_radius(pattern: np.ndarray, beam: dict) -> float | None:
    """Median half-maximum radius (px) of the brightest diffracted disks of ``pattern`` (a median pattern),
    each about its own background (the lowest of its radial profile within the beam's radius), or None if
    fewer than ``SPOT_MIN_COUNT`` stand out by ``SPOT_MIN_CONTRAST`` of the beam's contrast or their radii
    disagree (an interquartile range over ``SPOT_MAX_SPREAD`` of their median: no disks of one aperture).
    ``beam``: the beam's ``measure_disk``."""
    img = np.asarray(pattern, dtype=np.float64)
    img = img - np.percentile(img, 10)
    sm = _box3(img)
    (cx, cy), R = beam["center_px"], beam["radius_px"]
    i, j = np.indices(img.shape)
    edge = int(np.ceil(R)) + 1
    away = (np.hypot(i - cx, j - cy) > 1.5 * R + 2) & (i >= edge) & (j >= edge) & \
        (i < img.shape[0] - edge) & (j < img.shape[1] - edge)
    beam_contrast = sm[min(max(int(round(cx)), 0), img.shape[0] - 1), min(max(int(round(cy)), 0), img.shape[1] - 1)]
    cand = np.argwhere(_local_maxima(sm) & away)
    cand = cand[np.argsort(sm[cand[:, 0], cand[:, 1]])[::-1][:SPOT_MAX_COUNT]]
    radii = []
    for a, b in cand:
        rr = np.hypot(i - a, j - b)
        prof_r, prof = _radial_profile(img, rr)
        inside = prof_r <= R + 0.25  # the 0.5 px bin holding R too: not on a knife-edge at a bin centre
        bg, top = prof[inside].min(), prof[prof_r <= 1.0].mean()
        if top - bg >= SPOT_MIN_CONTRAST * beam_contrast > 0:
            radii.append(_crossing(prof_r, prof - bg, 0.5 * (top - bg)))
    if len(radii) < SPOT_MIN_COUNT:
        return None
    q25, median, q75 = np.percentile(radii, [25, 50, 75])
    return float(median) if q75 - q25 <= SPOT_MAX_SPREAD * median else None


def _box3(img: np.ndarray) -> np.ndarray:
    """3×3 box average (edges padded): a lone bright pixel cannot pass for the beam."""
    p = np.pad(img, 1, mode="edge")
    return sum(p[i:i + img.shape[0], j:j + img.shape[1]] for i in range(3) for j in range(3)) / 9.0


def _crossing(r: np.ndarray, prof: np.ndarray, level: float) -> float:
    """First radius where the radial profile falls below ``level`` (linear between bins)."""
    below = np.nonzero(prof < level)[0]
    if len(below) == 0 or below[0] == 0:
        return float(r[below[0]]) if len(below) else float(r[-1])
    k = below[0]
    return float(r[k - 1] + (prof[k - 1] - level) / (prof[k - 1] - prof[k]) * (r[k] - r[k - 1]))


def _radius_past_dark_rings(r: np.ndarray, prof: np.ndarray, top: float) -> float:
    """Half-maximum radius of a disk whose profile (from its middle, of level ``top``) may fall below half
    inside the aperture and rise again: the outermost fall below half that ends on an aperture's edge (down to
    ``DARK_RING_BACKGROUND`` × ``top`` within ``DARK_RING_EDGE_PX``) with no gap down to that level before it;
    else the first fall. Thick crystals' bright-field disks hold such rings: Si [001] at 60 kV, 4 mrad,
    100 nm fell to 39 % of its middle at 1.2 px and rose to 81 % at 2.8 px, its edge at 3.4 px; GaN [0001]
    at 300 kV, 3.5 mrad, 60 nm fell to 38 % at 6.8 px and rose to 58 % before its edge at 10.5 px.
    Overlapping diffracted disks, or a diffuse halo, rise again too but do not end on an edge; a separate
    disk lies beyond a gap."""
    level, floor = 0.5 * top, DARK_RING_BACKGROUND * top
    radius = _crossing(r, prof, level)
    n = np.arange(len(prof))
    k = int(np.argmax(prof < level)) if np.any(prof < level) else len(prof)
    while k < len(prof):
        back = np.nonzero((n > k) & (prof >= level))[0]
        if len(back) == 0 or prof[k:back[0]].min() <= floor:  # a gap down to the background: the disk ended
            break
        fall = np.nonzero((n > back[0]) & (prof < level))[0]
        if len(fall) == 0:
            break
        k = fall[0]
        crossing = _crossing(r[k - 1:], prof[k - 1:], level)
        beyond = prof[(r > crossing) & (r <= crossing + DARK_RING_EDGE_PX)]
        if beyond.size and beyond.min() <= floor:
            radius = crossing
    return radius


# A disk whose logistic edge is wider than this (px; its 10–90 % rise over 4.4 × as many) is no aperture's
# image: bench_accuracy's disks measure ≤ 3.3 px even in thick, overlapping crystals. About Si [110]'s barely
# visible one-pixel beam at 80 kV on its diffuse halo, the half maximum lay 29 px out (edge 17.5 px); the
# brightest disk, a {111} one of the same size, is measured instead.
SOFT_EDGE_PX = 6.0
# Half-maximum radii below this are no disk (a lone pixel's is 0.56 px); a disk of one bright pixel, as 80 kV
# and 1 mrad draw on a 0.02 Å⁻¹/px detector, measures 0.8–0.9 px noise-free.
MIN_DISK_RADIUS_PX = 0.5
# Dark rings inside a disk (``_radius_past_dark_rings``): a disk ends past one only on an aperture's edge, its
# profile down to DARK_RING_BACKGROUND of the disk's middle within DARK_RING_EDGE_PX. A rise alone (back to
# half the middle, or to 0.7 of it within 2 px) let overlapping diffracted disks at a low dose pass for the
# beam's rim (a fading disk among neighbours 1.5 radii away, 3e3 e⁻: 2.4 × its radius) and the diffuse halo
# about Si [110]'s faint beam at 80 kV (5.5–14 ×).
DARK_RING_EDGE_PX, DARK_RING_BACKGROUND = 1.5, 0.25


def symmetry_centre(pattern: np.ndarray) -> tuple[float, float]:
    """The pattern's centre of inversion symmetry (px, to half a pixel): the maximum of its autoconvolution,
    halved. Bragg disks come in pairs ±g about the direct beam (Friedel's law, and the lattice whatever the
    intensities), so this finds the beam where the brightest disk is not it: in a thick crystal a {220} disk
    outshone Si [001]'s direct beam, 18 px away, and the beam's own rim its middle
    (benchmarks/RESULTS.md, "The probe made from the scan, over bench_accuracy's envelope")."""
    a = np.clip(np.asarray(pattern, np.float64) - np.percentile(pattern, 10), 0, None)
    shape = (2 * a.shape[0], 2 * a.shape[1])  # zero-padded: no wrap-around
    f = np.fft.rfft2(a, s=shape)
    conv = np.fft.irfft2(f * f, s=shape)
    k = np.unravel_index(np.argmax(conv), conv.shape)
    return k[0] / 2.0, k[1] / 2.0


def measure_disk(pattern: np.ndarray, seed: tuple[float, float] | None = None) -> dict:
    """Centre (px), radius (px, half-maximum) and logistic edge width (px) of the direct beam's disk.

    The measurement starts at ``seed``; by default at the pattern's ``symmetry_centre``, or, where no disk is
    found from there or its edge is too soft for an aperture's (``SOFT_EDGE_PX``), at the brightest 3×3 mean
    (a lone hot pixel cannot pass for it; a real Merlin scan's beam, cut by the detector's edge beside a
    saturated flare, has no centre of symmetry on the detector), whichever edge is the sharper.
    Radius and edge are read off the radial profile of the pattern itself about the disk's centre of mass,
    outward from the brightest bin of its inner profile (a dark pixel at the centre of a low-dose median
    ended the disk there: 0.2 px, and `predict` refused the scan)."""
    img = np.asarray(pattern, dtype=np.float64)
    img = img - np.percentile(img, 10)  # background level (most of a diffraction pattern is dark)
    sm = _box3(img)
    if not np.isfinite(sm.max()) or sm.max() <= 0:
        raise UserError("the scan's median pattern is flat: no direct beam to make a probe from",
                        "pass a vacuum probe with --probe (or --probe-from-region over vacuum positions)")
    if seed is not None:
        return _disk_about(img, seed)
    measured, error = [], None
    for start in (lambda: symmetry_centre(img), lambda: np.unravel_index(np.argmax(sm), sm.shape)):
        try:
            disk = _disk_about(img, start())
        except UserError as exc:
            error = exc
            continue
        if disk["edge_px"] <= SOFT_EDGE_PX:
            return disk
        measured.append(disk)
    if not measured:
        raise error
    return min(measured, key=lambda d: d["edge_px"])


def _disk_about(img: np.ndarray, seed) -> dict:
    """``measure_disk`` of the background-free ``img`` from ``seed``."""
    i, j = np.indices(img.shape)
    c = np.array(seed, dtype=np.float64)
    radius = 1.0
    for _ in range(4):  # centre of mass of the half-maximum disk about the current centre, then its radius
        rr = np.hypot(i - c[0], j - c[1])
        prof_r, prof = _radial_profile(img, rr)
        inner = np.nonzero(prof_r <= max(1.0, 0.5 * radius))[0]
        k0 = inner[np.argmax(prof[inner])]
        top = prof[inner].mean()
        radius = _radius_past_dark_rings(prof_r[k0:], prof[k0:], top)
        w = (img > 0.5 * top) * (rr <= radius + 1.5) * img
        if w.sum() > 0:
            c = np.array([(i * w).sum(), (j * w).sum()]) / w.sum()
    # logistic edge 1/(1+exp((r-R)/w)): its 90 %-10 % distance is 2 ln 9 · w
    width = max(0.05, (_crossing(prof_r[k0:], prof[k0:], 0.1 * top) -
                       _crossing(prof_r[k0:], prof[k0:], 0.9 * top)) / (2 * np.log(9)))
    if radius < MIN_DISK_RADIUS_PX or radius > 0.45 * min(img.shape):
        raise UserError(f"no bright-field disk found in the scan's median pattern (radius {radius:.1f} px)",
                        "pass a vacuum probe with --probe (or --probe-from-region over vacuum positions)")
    return {"center_px": (float(c[0]), float(c[1])), "radius_px": float(radius), "edge_px": float(width)}


# A disk this large (half-maximum radius, px) has its radius taken as the larger of that and its aperture
# edge's (``edge_radius``): inside a thick crystal's disk the intensity can fall toward the rim, and its
# half maximum then lies inside the aperture (SrTiO3 [001], 60 nm, 300 kV, 3.5 mrad: 0.65–0.70 × the true
# radius; the edge 0.93–0.95 ×). A template too small costs the network more than one too large (80 kV,
# 3.5 mrad, 60 nm at 1e5 e⁻: F1 0.65 / 0.85 / 0.89 at 0.85 / 0.9 / 1.0 × the radius, 0.88–0.90 at
# 1.05–1.2 ×). Under 2 px the edge is a pixel or two wide, and the half maximum is used alone.
EDGE_MIN_RADIUS_PX = 2.0


def edge_radius(pattern: np.ndarray, centre, radius_px: float, n_rays: int = 64, step: float = 0.25) -> float:
    """Radius (px) of the aperture's edge about ``centre``: on each of ``n_rays`` rays, the outermost fall at
    least half as steep as the ray's steepest within 0.5–1.3 × ``radius_px`` + 2 px; their median. The
    aperture's edge is where the disk ends, whatever the dynamical contrast inside it (a disk fading toward
    its rim falls fastest inside the aperture) and whatever lies beyond it on some rays (an overlapping
    disk hid the edge in the azimuthal average: SrTiO3 [001], 300 kV, 3.5 mrad, 60 nm, 1e3 e⁻, 0.68 × the
    radius; 0.91–0.96 × ray by ray). Detector blur widens the edge but does not move it."""
    r = np.arange(0.0, 1.3 * radius_px + 3, step)
    rays = _paired_rays(pattern, centre, r, n_rays)  # neighbouring rays in pairs, and 3 samples
    rays = (rays[:, :-2] + rays[:, 1:-1] + rays[:, 2:]) / 3.0  # along each: a low-dose median's noise
    r = r[1:-1]
    slope = np.gradient(rays, step, axis=1)
    slope[:, (r < 0.5 * radius_px) | (r > 1.3 * radius_px + 2)] = 0.0
    edges = []
    for s in slope:
        if s.min() >= 0:
            continue
        k = np.nonzero(s <= 0.5 * s.min())[0][-1]
        while k > 0 and s[k - 1] < s[k]:  # inward to that fall's steepest point
            k -= 1
        edges.append(r[k] + _parabola_vertex(s, k) * step)
    return float(np.median(edges)) if edges else float(radius_px)


def _paired_rays(img: np.ndarray, centre, r: np.ndarray, n_rays: int) -> np.ndarray:
    """(n_rays / 2, len(r)) profiles of ``img`` along ``n_rays`` rays from ``centre`` at radii ``r`` (px),
    neighbouring rays averaged in pairs."""
    theta = np.linspace(0.0, 2 * np.pi, n_rays, endpoint=False)[:, None]
    rays = bilinear(np.asarray(img, dtype=np.float64), centre[0] + np.cos(theta) * r, centre[1] + np.sin(theta) * r)
    return rays.reshape(n_rays // 2, 2, -1).mean(axis=1)


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``img`` (Qx, Qy, or Qx, Qy, K for K maps at once) interpolated linearly at (x, y) px, coordinates beyond the
    edge clipped onto it (numpy only: scipy.ndimage's import alone costs `predict` 0.15–0.2 s of start-up)."""
    x = np.clip(x, 0, img.shape[0] - 1)
    y = np.clip(y, 0, img.shape[1] - 1)
    x0 = np.minimum(np.floor(x).astype(int), img.shape[0] - 2)
    y0 = np.minimum(np.floor(y).astype(int), img.shape[1] - 2)
    fx, fy = x - x0, y - y0
    if img.ndim == 3:
        fx, fy = fx[..., None], fy[..., None]
    return ((1 - fx) * (1 - fy) * img[x0, y0] + fx * (1 - fy) * img[x0 + 1, y0]
            + (1 - fx) * fy * img[x0, y0 + 1] + fx * fy * img[x0 + 1, y0 + 1])


def _parabola_vertex(y: np.ndarray, k: int) -> float:
    """Offset (in samples, within ±0.5) of the extremum of the parabola through y[k-1], y[k], y[k+1]."""
    if not 0 < k < len(y) - 1:
        return 0.0
    curvature = y[k - 1] - 2 * y[k] + y[k + 1]
    return float(np.clip(0.5 * (y[k - 1] - y[k + 1]) / curvature, -0.5, 0.5)) if curvature != 0 else 0.0


def _radial_profile(img: np.ndarray, rr: np.ndarray, step: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    b = (rr / step).astype(int)
    n = np.bincount(b.ravel())
    s = np.bincount(b.ravel(), weights=img.ravel())
    ok = n > 0
    return (np.arange(len(n))[ok] + 0.5) * step, s[ok] / n[ok]


def synthetic_probe(shape: tuple[int, int], center_px, radius_px: float, edge_px: float) -> np.ndarray:
    """Flat disk with a logistic edge (max 1): py4DSTEM's synthetic probe, centred on ``center_px``."""
    i, j = np.indices(shape)
    r = np.hypot(i - center_px[0], j - center_px[1])
    return (1.0 / (1.0 + np.exp(np.clip((r - radius_px) / edge_px, -50, 50)))).astype(np.float32)


# The detector's point spread read off a probe's edge (``point_spread_px``): an aperture's edge recorded without blur
# measures a logistic width of 0.17–0.27 px on pixels (bench_accuracy's probes, 60–300 kV, 0.5–4 mrad, 0.01–0.04
# Å⁻¹/px), taken as SHARP_EDGE_PX; a Gaussian blur of σ widens the edge's 10–90 % rise to 2.563 σ, the logistic's
# is 2 ln 9 w (hence the factor). Spreads under POINT_SPREAD_MIN_PX are left alone (the simulations' sharp
# probes and the training's blur up to 0.7 px land below it), as are disks under EDGE_MIN_RADIUS_PX, whose edge
# is a pixel or two wide whatever the camera.
SHARP_EDGE_PX = 0.2
LOGISTIC_TO_GAUSSIAN = 2 * np.log(9) / 2.5631
POINT_SPREAD_MIN_PX = 0.5


def point_spread_px(probe: np.ndarray, edge_px: float | None = None) -> float:
    """The detector's point spread (Gaussian σ, px) that a vacuum ``probe``'s edge shows (or an edge of logistic
    width ``edge_px`` measured on the scan's bright-field disk), 0 where it shows none worth undoing
    (``POINT_SPREAD_MIN_PX``): an aperture's image is sharp, so what widens its edge is the camera's spread of
    each electron (a scintillator, a hybrid-pixel sensor at 300 kV), which the sub-pixel fit undoes
    (``refine.SubpixelTemplate``'s ``blur_px``)."""
    try:
        disk = measure_disk(np.asarray(probe, dtype=np.float64))
    except UserError:
        return 0.0
    if disk["radius_px"] < EDGE_MIN_RADIUS_PX:
        return 0.0
    w = disk["edge_px"] if edge_px is None else float(edge_px)
    sigma = LOGISTIC_TO_GAUSSIAN * float(np.sqrt(max(w ** 2 - SHARP_EDGE_PX ** 2, 0.0)))
    return sigma if sigma >= POINT_SPREAD_MIN_PX else 0.0


def check_given_probe(probe: np.ndarray) -> None:
    """A one-line error if the given vacuum ``probe`` is flat or empty: a gain reference passed as the probe
    gave 85 vectors per pattern on a GaN scan, 83 of them on no reflection (benchmarks/RESULTS.md, "A vacuum
    probe that does not match the scan"). A probe of another disk size than the scan's is harmful too; it is
    named in a note where the scan's disk can judge it (``given_probe_size_note``)."""
    img = np.asarray(probe, dtype=np.float64)
    if not np.isfinite(img).all() or _box3(img - np.percentile(img, 10)).max() <= 0:
        raise UserError("the vacuum probe holds no bright-field disk (a flat or empty image)",
                        "pass the vacuum probe recorded with this scan, or omit --probe to synthesize one from it")


def probe_from_scan(cube, samples: np.ndarray | None = None, saturated: bool | None = None) -> tuple[np.ndarray, dict]:
    """(template, description): the synthetic probe of the scan's bright-field disk (``scan_disk``)."""
    disk, path = scan_disk(cube, samples, saturated)
    probe = synthetic_probe(tuple(cube.shape[2:]), disk["center_px"], disk["radius_px"], TEMPLATE_EDGE_PX)
    return probe, {"path": path, "center_px": disk["center_px"], "radius_px": disk["radius_px"],
                   "edge_px": TEMPLATE_EDGE_PX, "measured_edge_px": disk["edge_px"],
                   **({"hot_pixels": disk["hot_pixels"]} if disk.get("hot_pixels") else {})}


# A disk of the scan's mean pattern is a diffuse glow with no aperture's image in it, as a detector read
# without beam leaves (its diffuse background; bench_accuracy's augmentation draws a · exp(-r / r0): half
# maximum at 0.69 r0, logistic edge 0.5 r0), where all three hold: its edge is wider than SOFT_EDGE_PX, its
# radius is at least GLOW_MIN_RADIUS_PER_EDGE × that edge (a beam of one pixel on a bright halo has a wide edge
# and a radius of a pixel), and across the steepest fall of each ray (``edge_step``) it drops by less than
# GLOW_MAX_EDGE_STEP of its level (large overlapping disks have wide, halo-like azimuthal edges but an
# aperture's step on the rays clear of a neighbour). The mean, not the median: a median of sparse counts cuts
# a glow at ln 2 electrons per pixel into a flat disk with a sharp edge. Measured (benchmarks/RESULTS.md, "A
# scan without a beam, refused"): noise-only scans' glows step by ≤ 0.22; crystals' disks with a glow's edge
# and radius (MoS2 [0001] at 300 kV / 4 mrad) by ≥ 0.62.
GLOW_MIN_RADIUS_PER_EDGE, GLOW_MAX_EDGE_STEP = 0.5, 0.4
EDGE_STEP_PX = (1.0, 3.0)  # the step: mean 1–3 px inside the steepest fall minus mean 1–3 px outside it


def edge_step(img: np.ndarray, centre, radius_px: float, n_rays: int = 64, step: float = 0.25) -> float:
    """The median over rays from ``centre`` of the fall across each one's steepest fall within 0.5–1.3 ×
    ``radius_px`` + 2 px (mean ``EDGE_STEP_PX`` inside − mean as far outside), over the disk's level (the
    brightest of the rays' median profile within ``radius_px``): about 1 for an aperture's sharp edge whatever
    its size, less into an overlapping neighbour; for an exponential glow of scale r0, 1 − exp(−4 px / r0) at
    most. Over the disk's level rather than each ray's own level inside the edge (which makes a glow's step the
    same everywhere along it): a mean of a few sparse patterns' counts, dark at the glow's rim, drew the
    relative fall of a glow of r0 = 12–24 px up to 0.43 (in 6 draws of 4 patterns)."""
    near, far = EDGE_STEP_PX
    r = np.arange(0.0, 1.3 * radius_px + 2 + far + 1, step)
    rays = _paired_rays(img, centre, r, n_rays)
    level = np.median(rays[:, r <= radius_px], axis=0).max()
    if not level > 0:
        return 0.0
    smooth = np.stack([np.convolve(x, np.ones(5) / 5, mode="same") for x in rays])  # over 1 px
    fall = -np.gradient(smooth, step, axis=1)
    window = np.nonzero((r >= 0.5 * radius_px) & (r <= 1.3 * radius_px + 2))[0]
    k = window[np.argmax(fall[:, window], axis=1)]
    offsets = np.arange(int(near / step), int(far / step) + 1)
    inside = np.take_along_axis(rays, np.clip(k[:, None] - offsets, 0, len(r) - 1), axis=1).mean(axis=1)
    outside = np.take_along_axis(rays, np.clip(k[:, None] + offsets, 0, len(r) - 1), axis=1).mean(axis=1)
    return float(np.median(inside - outside) / level)


def diffuse_glow(mean: np.ndarray, disk: dict) -> dict | None:
    """The disk about ``disk``'s centre on the scan's ``mean`` pattern, with its ``edge_step``, where it is a
    diffuse glow rather than an aperture's image (the three tests above), else None."""
    img = np.asarray(mean, dtype=np.float64)
    img = img - np.percentile(img, 10)
    try:
        glow = _disk_about(img, disk["center_px"])
    except UserError:  # no disk on the mean at all: judged on the median's
        glow = dict(disk)
    if glow["edge_px"] <= SOFT_EDGE_PX or glow["radius_px"] < GLOW_MIN_RADIUS_PER_EDGE * glow["edge_px"]:
        return None
    # the step at either radius, the mean's or the median's: on the mean, a cluster of large overlapping disks
    # can measure as one disk (GaN [0001] at 200 kV / 4 mrad on a 128 px detector: 34 px for 9.7), while the
    # median's radius is the aperture's
    glow["edge_step"] = max(edge_step(img, glow["center_px"], glow["radius_px"]),
                            edge_step(img, disk["center_px"], disk["radius_px"]))
    return glow if glow["edge_step"] < GLOW_MAX_EDGE_STEP else None


# A "beam" of one pixel whose eight neighbours hold less than HOT_PIXEL_MAX_SPILL of its excess over the
# background in the scan's mean pattern, and the rest of whose pattern holds less than HOT_PIXEL_MAX_REST of it,
# is a hot pixel in dark frames, not a beam: a real beam under a pixel spills into its neighbours (an aperture's
# disk of 0.64 px radius centred on a pixel puts ~5 % into each neighbour's mean; a detector's charge sharing and
# descan more; judged on whole counts only, as a detector records them), and a crystal's diffracted disks or a
# film's scattering lie beside it (a noise-free pattern of one-pixel disks: 0.8 of its beam), counted in the
# pixels that stand out by HOT_PIXEL_FEATURE of it. Two real Merlin scans of dark frames (rosettasciio's test
# data) hold one hot pixel of 4–10 counts with nothing around it and 0.18 and 0 of its counts in such pixels (a
# weaker hot pixel; stray single counts are under 0.02); the first was read as the beam of every pattern
# (benchmarks/RESULTS.md, "A hot pixel in dark frames").
HOT_PIXEL_MAX_SPILL = 0.01
HOT_PIXEL_MAX_REST, HOT_PIXEL_FEATURE = 0.5, 0.05
HOT_PIXEL_BEAM_MAX_RADIUS_PX = 1.5  # judged only where the disk measures this small


def hot_pixel_beam(mean: np.ndarray, disk: dict) -> tuple[int, int] | None:
    """The pixel (row, column) at ``disk``'s centre on the scan's plain ``mean`` pattern (not re-centred) where it
    is a hot pixel in dark frames rather than a beam (``HOT_PIXEL_MAX_SPILL``, ``HOT_PIXEL_MAX_REST``), else None."""
    img = np.asarray(mean, dtype=np.float64)
    i, j = (int(round(float(c))) for c in disk["center_px"])
    if not (1 <= i < img.shape[0] - 1 and 1 <= j < img.shape[1] - 1):
        return None
    window = img[i - 1:i + 2, j - 1:j + 2]
    a, b = np.unravel_index(int(np.argmax(window)), window.shape)
    i, j = i + a - 1, j + b - 1
    if not (1 <= i < img.shape[0] - 1 and 1 <= j < img.shape[1] - 1):
        return None
    excess = img - float(np.median(img))
    peak = excess[i, j]
    spill = (excess[i - 1:i + 2, j - 1:j + 2].sum() - peak) / 8.0
    # the rest: the pixels beyond its neighbours that stand out by HOT_PIXEL_FEATURE of it (stray counts do not)
    elsewhere = excess >= HOT_PIXEL_FEATURE * peak
    elsewhere[i - 1:i + 2, j - 1:j + 2] = False
    hot = 0 < peak and spill <= HOT_PIXEL_MAX_SPILL * peak and excess[elsewhere].sum() <= HOT_PIXEL_MAX_REST * peak
    return (int(i), int(j)) if hot else None


# Re-centring the sampled patterns on their beams removes descan's blur: it sharpens the disk and cannot halve
# it. Where the re-centred median's disk measures under this fraction of the plain median's, the beams found in
# a few noisy patterns were wrong (a 2 × 2 scan at 1e3 e⁻ of a disk among overlapping neighbours: 0.18 × its
# radius), and the plain median's disk is kept.
RECENTRED_MIN_FRACTION = 0.5


def scan_disk(cube, samples: np.ndarray | None = None, saturated: bool | None = None,
              _hot_pixels: tuple = ()) -> tuple[dict, str]:
    """(disk, how it was measured): the centre, radius and edge (px) of the scan's bright-field disk;
    ``samples``: the scan's ``sample_patterns`` if already read; ``saturated``: whether its beams reach the
    detector's ceiling (``saturation_level``), if already known. A hot pixel that hid the beam is left out of the
    search (``_without_hot_pixel``), and listed in the disk's ``hot_pixels``.

    Two passes: a first template from the plain median pattern finds each sampled pattern's beam
    (``model_input.BeamFinder``), the disk is then measured on the median of the re-centred patterns."""
    import torch

    from fourdcrystal.inference.model_input import BeamFinder

    pats = sample_patterns(cube) if samples is None else samples
    first = measure_disk(np.median(pats, axis=0))
    guess = first["center_px"]
    finder = BeamFinder(synthetic_probe(tuple(cube.shape[2:]), guess, first["radius_px"], first["edge_px"]), "cpu")
    # to 1e-3 px: the finder's float32 centres are ~1e-5 px off a whole pixel by an amount that differs between
    # CPUs, enough to move the pixels at 1 px across the radial profile's 0.5 px bin edge (``_radial_profile``):
    # a one-pixel beam on a halo measured as a 13 px disk on one CPU and 1 px on another
    centres = np.round(finder.find(torch.from_numpy(pats), guess, max(3.0, first["radius_px"])).numpy(), 3)
    moved = aligned(pats, centres, guess)
    median, mean = np.median(moved, axis=0), moved.mean(axis=0)
    disk = measure_disk(median, guess)  # every sampled pattern's beam was moved onto the guess
    if disk["radius_px"] < RECENTRED_MIN_FRACTION * first["radius_px"]:
        median, mean, disk = np.median(pats, axis=0), pats.mean(axis=0), first
    if disk["radius_px"] >= EDGE_MIN_RADIUS_PX:
        disk["radius_px"] = max(disk["radius_px"], edge_radius(median, disk["center_px"], disk["radius_px"]))
    path = "synthesized from the bright-field disk of the scan's median pattern"
    # a saturated beam blooms (and its halo reads as part of it): its diffracted disks, unsaturated, give the
    # disk's size (benchmarks/RESULTS.md, "A real precession pattern with a saturated beam")
    saturated = saturation_level(pats) is not None if saturated is None else saturated
    glow = None if saturated else diffuse_glow(mean, disk)
    if glow is not None:
        raise UserError(f"no bright-field disk in the scan: its mean pattern holds only a diffuse glow "
                        f"({glow['radius_px']:.0f} px, its edge {glow['edge_px']:.0f} px wide and falling by "
                        f"{glow['edge_step']:.2f} of its level where an aperture's falls by ~1), as a detector "
                        "read without beam leaves, or a beam too small or too crowded by its neighbours to measure",
                        "pass a vacuum probe with --probe (or --probe-from-region over vacuum positions)")
    # judged on a detector's whole counts only: a noise-free simulation puts a disk under half a pixel wholly into
    # one pixel (bench_accuracy's 60 kV / 0.5 mrad, 0.48 px: refused twice in the far corners' noise-free scans)
    recorded = bool(np.all(pats == np.round(pats)))
    hot = hot_pixel_beam(pats.mean(axis=0), disk) \
        if recorded and disk["radius_px"] < HOT_PIXEL_BEAM_MAX_RADIUS_PX else None
    if hot is not None:
        # a hot pixel brighter than the beam hides it from the search: the beam is looked for again without it
        # (a detector's stuck pixel at its ceiling in every frame of a 37,000 e⁻ scan), and only a scan that
        # shows nothing else is refused (dark frames)
        found = _without_hot_pixel(cube, pats, hot, _hot_pixels)
        if found is not None:
            return found
        raise UserError(f"no bright-field disk in the scan: its only bright feature is the single pixel {hot} with "
                        "nothing around it (under 1 % of its counts in its neighbours), a hot pixel (a scan of dark "
                        "frames, or a blanked beam)",
                        "check that the scan holds a beam, or pass a vacuum probe with --probe")
    spots = diffracted_disk_radius(median, disk) if saturated else None
    if spots is not None and spots < SPOT_SMALLER * disk["radius_px"]:
        disk = dict(disk, radius_px=spots)
        path += ", its radius measured on the diffracted disks (the beam is saturated)"
    if _hot_pixels:
        disk = dict(disk, hot_pixels=list(_hot_pixels))
        path += f" (hot pixel{'s' * (len(_hot_pixels) > 1)} {', '.join(map(str, _hot_pixels))} left out)"
    return disk, path


MAX_HOT_PIXELS = 8  # hot pixels left out of the beam's search, one after the other, before a scan is refused


def _without_hot_pixel(cube, pats: np.ndarray, hot: tuple[int, int], before: tuple):
    """``scan_disk`` of ``pats`` with pixel ``hot`` read as the median of its 8 neighbours in every pattern, or None
    where that finds no beam either — nothing, or a disk under ``HOT_PIXEL_BEAM_MAX_RADIUS_PX`` (dark frames' stray
    counts, another hot pixel: a beam hidden by a hot pixel is an aperture's disk) — or ``MAX_HOT_PIXELS`` were
    left out already."""
    if len(before) >= MAX_HOT_PIXELS:
        return None
    i, j = hot
    filled = np.array(pats, dtype=np.float32, copy=True)
    ring = np.delete(filled[:, i - 1:i + 2, j - 1:j + 2].reshape(len(filled), 9), 4, axis=1)
    filled[:, i, j] = np.median(ring, axis=1)
    try:
        found = scan_disk(cube, filled, None, _hot_pixels=before + (hot,))  # saturated: the pixel may have read so
    except UserError:
        return None
    return found if found[0]["radius_px"] >= HOT_PIXEL_BEAM_MAX_RADIUS_PX else None


# A given vacuum probe is compared with the scan's own bright-field disk where that measure is sound: a disk
# of JUDGE_MIN_RADIUS_PX or more with an aperture's sharp edge (logistic width ≤ JUDGE_MAX_EDGE_PX), not
# saturated. There, on bench_accuracy's [001], rectangular and far-corner scans with their true probes (145 of
# 310 judged, 2 × 2 scans), the probe's radius was 0.88–1.13 × the scan's; overlapping and smaller disks,
# which measure 0.54–2.9 ×, are not judged. A probe 0.78 / 1.22 / 1.44 × the scan's disk put 7 / 7 / 27 of
# ~36 vectors per pattern off every reflection on a GaN scan (benchmarks/RESULTS.md, "A vacuum probe that
# does not match the scan"): beyond PROBE_SIZE_TOLERANCE × either way, `predict` says so.
JUDGE_MIN_RADIUS_PX, JUDGE_MAX_EDGE_PX, PROBE_SIZE_TOLERANCE = 3.0, 2.0, 1.2
# The scan's disk is measured on this many of the sampled patterns: the judgement is a note, and the full
# synthesis (64 patterns) would add 0.3–0.5 s to every `predict` call with a probe (128–256 px detectors)
JUDGE_SAMPLES = 16


def given_probe_size_note(probe: np.ndarray, cube, samples: np.ndarray | None = None,
                          saturated: bool = False) -> str | None:
    """A note when the given vacuum ``probe``'s disk and the scan's own (``scan_disk``) differ by more than
    ``PROBE_SIZE_TOLERANCE`` ×, where the scan's disk can judge it; else None."""
    if saturated:
        return None
    samples = sample_patterns(cube) if samples is None else samples
    try:
        disk, _ = scan_disk(cube, samples[::max(1, len(samples) // JUDGE_SAMPLES)], saturated=False)
        given = measure_disk(probe)["radius_px"]
    except UserError:
        return None
    if disk["radius_px"] < JUDGE_MIN_RADIUS_PX or disk["edge_px"] > JUDGE_MAX_EDGE_PX:
        return None
    ratio = given / disk["radius_px"]
    if 1.0 / PROBE_SIZE_TOLERANCE <= ratio <= PROBE_SIZE_TOLERANCE:
        return None
    return (f"the vacuum probe's disk ({given:.1f} px in radius) is {ratio:.2f} × the scan's own bright-field disk "
            f"({disk['radius_px']:.1f} px): a probe recorded at another camera length or aperture puts vectors "
            "where there are none; omit --probe to use the scan's own")
