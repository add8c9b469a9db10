"""What the network sees: a user's patterns and vacuum probe on the model's detector grid.

One owner for inference, training (learning.dataset) and evaluation: the direct beam of each pattern
is found by cross-correlation with the vacuum probe (``BeamFinder``), the pattern is resampled
bilinearly onto the model grid with that beam on the centre pixel (``resample``), and intensities are
put on the training data's scale (``ModelInput``). The vectors are then referenced to the beam placed by
its edge (``ModelInput.beam_centres``).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fourdcrystal.errors import UserError
from fourdcrystal.inference.evidence import disk_intensity, one_electron, read_noise
from fourdcrystal.inference.probe_synth import point_spread_px
from fourdcrystal.inference.refine import EDGE_SIGMA_RADII, SubpixelTemplate, hybrid_xcorr

# The direct beam's disk placed by its edge (``refine.SubpixelTemplate``, edge-weighted as the diffracted disks
# are) where it is at least BEAM_EDGE_MIN_RADIUS_PX (detector px) and holds at least BEAM_EDGE_MIN_ELECTRONS: off the
# zone axis the transmitted disk is brighter on one side, and the plain correlation's maximum follows that slope.
# SrTiO3, Si, MgO [001] 35 mrad off the axis, 200 kV, 2 mrad, 30 nm (3.5–4 px disks), noise-free: the plain
# correlation's beam 0.24–0.27 px off, the edge's 0.005–0.008 px; with 400–600 electrons in the beam 0.07 px against
# 0.26–0.29. The edge's few pixels carry more of the shot noise: on the axis (no slope), 64 draws, plain vs edge
# RMS 0.107 vs 0.160 px with ~170 electrons in the beam, 0.055 vs 0.065 with ~800, alike from ~2,000
# (benchmarks/RESULTS.md, "Off the zone axis"). A disk of a pixel or two has no edge to place it by.
BEAM_EDGE_MIN_RADIUS_PX = 2.0
BEAM_EDGE_MIN_ELECTRONS = 300.0
# ... and only within this distance (px) of the plain correlation's centre: the slope's pull measured ≤ 0.3 px; a
# larger move is a beam the template does not fit (a beam blooming at the detector's ceiling moved ~1 px)
BEAM_EDGE_MAX_MOVE_PX = 0.5
RIM_PX = 1.0  # a beam search's best match this close to its rim is followed uphill instead (``BeamFinder.find``)
# A dark-subtracted integrating detector (an EMPAD, a CMOS camera in linear mode) reads N(0, σ²) where no electron
# arrived (``evidence.read_noise``, σ from the pixels below zero); the network was trained on counted patterns, whose
# empty pixels are zero, and its log-compressed input takes that noise floor for faint electrons everywhere. So the
# network sees such a pattern with its pixels under READ_NOISE_FLOOR_SIGMA σ read as zero; the checks and the
# sub-pixel fit measure the pattern as recorded. A pattern without negative pixels (σ = 0) is seen as it is. On
# bench_accuracy's 200 kV / 2 mrad set with 0.3 e⁻ of read noise, 1e3 e⁻ F1 0.365 -> 0.40 (1σ to 2σ alike; 3σ 0.38;
# the floor subtracted instead of zeroed under 0.38–0.39); with 0.1 e⁻ 0.499 -> 0.491, within the draws
# (benchmarks/RESULTS.md, "The read-noise floor out of the network's view")
READ_NOISE_FLOOR_SIGMA = 2.0


def probe_center(probe: np.ndarray) -> tuple[float, float]:
    """Centre of mass of the bright disk (pixels above 10 % of the maximum)."""
    w = np.clip(probe - 0.1 * probe.max(), 0, None).astype(np.float64)
    if w.sum() <= 0:
        raise UserError("the vacuum probe image is empty (no positive pixels)", "pass a vacuum probe image")
    i, j = np.indices(w.shape)
    return float((i * w).sum() / w.sum()), float((j * w).sum() / w.sum())


def probe_radius_px(probe: np.ndarray) -> float:
    return float(np.sqrt((probe > 0.5 * probe.max()).sum() / np.pi))


def _parabolic(fm, f0, fp):
    den = fm - 2 * f0 + fp
    return torch.where(den < 0, 0.5 * (fm - fp) / den.clamp(max=-1e-30), torch.zeros_like(f0)).clamp(-0.5, 0.5)


class BeamFinder:
    """Direct-beam position of each pattern: peak of the cross-correlation with the vacuum probe,
    searched within ``radius`` px of a guess (the mean pattern's beam), refined by parabolas."""

    def __init__(self, probe: np.ndarray, device: str):
        self.shape = probe.shape
        self.c = probe_center(probe)
        self.kernel = torch.conj(torch.fft.rfft2(torch.from_numpy(probe.astype(np.float32)).to(device)))
        self.device = device
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None  # (batch, its correlation)
        # per pattern, the correlation's maximum reached uphill from the guess instead of the best one within the
        # search radius: for a beam dimmer than its neighbours (``predict.mean_beam``), whose disks would win there
        self.climb = False
        # (dx, dy) px from a bright diffracted disk to a nearly extinct beam (``predict.mean_beam``): each pattern's
        # beam is then that disk, found near the guess less this offset, plus the offset (the detector's descan moves
        # both alike); None: the beam is found itself
        self.extinct_offset: tuple[float, float] | None = None
        self.guessed_by: str | None = None  # which rule of ``predict.mean_beam`` placed the scan's mean beam

    @staticmethod
    def _climb(xc: torch.Tensor, i0: int, j0: int, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(i, j) correlation indices of each pattern's local maximum reached by steepest ascent over 3×3
        neighbourhoods from (i0, j0), at most ``radius`` steps, staying put on a tie (as
        ``refine.SubpixelTemplate.climb``, which climbs a window's correlation; this one the whole pattern's)."""
        B, Qx, Qy = xc.shape
        b = torch.arange(B, device=xc.device)
        i = torch.full((B,), i0, device=xc.device, dtype=torch.long)
        j = torch.full((B,), j0, device=xc.device, dtype=torch.long)
        off = torch.tensor([(a, c) for a in (-1, 0, 1) for c in (-1, 0, 1)], device=xc.device)
        for _ in range(int(math.ceil(radius))):
            vals = xc[b[:, None], (i[:, None] + off[None, :, 0]) % Qx, (j[:, None] + off[None, :, 1]) % Qy]
            step = off[torch.where(vals[:, 4] >= vals.amax(dim=1), 4, vals.argmax(dim=1))]
            if not bool(step.any()):
                break
            i, j = (i + step[:, 0]) % Qx, (j + step[:, 1]) % Qy
        return i, j

    def xcorr(self, cbed: torch.Tensor) -> torch.Tensor:
        """xc[s] = Σ_k cbed[k] probe[k - s]: maximal where the pattern's disk sits at probe shifted by s.
        The last batch's correlation is kept: refinement on the same batch (``detectors.MeasuredPattern``)
        reuses it instead of computing it again."""
        if self._last is not None and self._last[0] is cbed:
            return self._last[1]
        xc = hybrid_xcorr(cbed, self.kernel, 1.0)
        self._last = (cbed, xc)
        return xc

    def find(self, cbed: torch.Tensor, guess: tuple[float, float] | None, radius: float) -> torch.Tensor:
        beam, at_beam = self._find(cbed, guess, radius)
        if self.extinct_offset is None or guess is None:
            return beam
        # a pattern whose beam outshines the disk its beam is placed from (a thin part of the crystal, vacuum) keeps
        # its beam as found
        dx, dy = self.extinct_offset
        disk, at_disk = self._find(cbed, (guess[0] - dx, guess[1] - dy), radius)
        from_disk = disk + torch.tensor([dx, dy], dtype=disk.dtype, device=disk.device)
        return torch.where((at_disk > at_beam)[:, None], from_disk, beam)

    def _find(self, cbed: torch.Tensor, guess: tuple[float, float] | None, radius: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(each pattern's best match within ``radius`` of ``guess``, (B, 2) px; the correlation there)."""
        B, Qx, Qy = cbed.shape
        xc = self.xcorr(cbed)
        # signed shifts of each correlation pixel
        sx = torch.fft.fftfreq(Qx, 1.0 / Qx, device=cbed.device)
        sy = torch.fft.fftfreq(Qy, 1.0 / Qy, device=cbed.device)
        gx, gy = (0.0, 0.0) if guess is None else (guess[0] - self.c[0], guess[1] - self.c[1])
        b = torch.arange(B, device=cbed.device)
        if self.climb and guess is not None:
            i, j = self._climb(xc, int(round(gx)) % Qx, int(round(gy)) % Qy, radius)
        else:
            allowed = (sx[:, None] - gx) ** 2 + (sy[None, :] - gy) ** 2 <= radius ** 2
            xcm = torch.where(allowed[None], xc, torch.full_like(xc, -torch.inf))
            k = xcm.reshape(B, -1).argmax(dim=1)
            i, j = k // Qy, k % Qy
            if guess is not None:
                # a best match on the search's rim is no disk's centre but the slope up to a brighter disk beyond
                # (SrTiO3 [001], 300 kV / 2.5 mrad / 30 nm on 256 px at 0.011 Å⁻¹/px: a dim beam's 12 px disk touching
                # four {110} disks 5 × as bright, the reference row's beam 24 px off toward one of them, though the
                # mean pattern's was found): there the beam is followed uphill from the guess instead
                rim = torch.hypot(sx[i] - gx, sy[j] - gy) > radius - RIM_PX
                if bool(rim.any()):
                    i[rim], j[rim] = self._climb(xc[rim], int(round(gx)) % Qx, int(round(gy)) % Qy, radius)
        f0 = xc[b, i, j]
        di = _parabolic(xc[b, (i - 1) % Qx, j], f0, xc[b, (i + 1) % Qx, j])
        dj = _parabolic(xc[b, i, (j - 1) % Qy], f0, xc[b, i, (j + 1) % Qy])
        return torch.stack([self.c[0] + sx[i] + di, self.c[1] + sy[j] + dj], dim=1), f0


def resample(img: torch.Tensor, centers: torch.Tensor, scale: float, P: int, center_px: int) -> torch.Tensor:
    """Bilinear resampling of (B, Qx, Qy) onto a (B, P, P) grid whose pixel ``center_px`` sits on
    ``centers`` (B, 2) and whose pitch is ``scale`` input pixels.

    Where the grid reaches beyond the detector, the pattern is mirrored at the detector's edge, not set
    to zero: the network was trained on patterns that fill its field, and a detector that sees less than
    that field (fewer pixels × Å⁻¹/px than the model grid's 4 Å⁻¹) framed by zeros made it paint peaks on
    noise — on vacuum patterns of 1e3 e⁻ on 128 px at 0.02 Å⁻¹/px, 120 V_g peaks per pattern within the
    detector against 17 mirrored and 21 on a 256 px detector that fills the field (benchmarks/RESULTS.md,
    "A detector smaller than the network's field"). What the network proposes off the detector, in the
    mirror image, is dropped (``detectors.NetworkDetector``)."""
    x = img[:, None].float()
    c = centers.float()
    s = float(scale)
    if s >= 2.0:
        # average-pool first: plain bilinear sampling of a much coarser grid would alias
        f = int(s)
        x = torch.nn.functional.avg_pool2d(x, f, stride=f)
        c = (c - (f - 1) / 2.0) / f
        s = s / f
    B, _, H, W = x.shape
    r = (torch.arange(P, device=x.device, dtype=torch.float32) - center_px) * s
    ci = c[:, 0, None] + r[None]  # (B, P) axis-0 source coordinate
    cj = c[:, 1, None] + r[None]
    # grid_sample: grid[..., 0] indexes the last axis (W), grid[..., 1] the first (H)
    gx = (2 * cj / (W - 1) - 1)[:, None, :].expand(B, P, P)
    gy = (2 * ci / (H - 1) - 1)[:, :, None].expand(B, P, P)
    grid = torch.stack([gx, gy], dim=-1)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                                           align_corners=True)[:, 0]


# Disks too large for the network. The shipped model was trained with disks up to 4 mrad at 300 kV (6.5 px at
# 1/32 Å⁻¹). On a synthetic two-grain scan of clear disks its precision was 1.00 up to 5 px, then 0.70 / 0.28 /
# 0.11 at 5.8 / 6.2 / 6.7 px and 0.05–0.15 beyond its training (7–29 px); a real Merlin beam 11 × too large
# gave vectors on the beam's rim. A disk larger than VIEW_ABOVE_MODEL_PX (where that precision falls below
# 0.5), or beyond a model's trained range, is shown at MAX_DISK_MODEL_PX (there the same scan kept 1.00): the
# pattern is seen at a coarser pitch, the lattice shrinks with the disks, and the vectors are measured back on
# the detector. Showing every disk above 5 px at 5 px was tried: neutral on bench_accuracy's [001] set and worse
# on its rectangular one at 5.7 px (benchmarks/RESULTS.md, "Disks larger than the network knows").
MAX_DISK_MODEL_PX = 5.0
VIEW_ABOVE_MODEL_PX = 6.0
BEYOND_TRAINING = 1.05  # × the largest trained radius: a disk measured on a probe image is good to a few %


def largest_shown_disk_px(geometry) -> float:
    """The radius (model px) at which a too-large disk is shown to a model trained on ``geometry``."""
    return min(MAX_DISK_MODEL_PX, geometry.largest_disk_invA / geometry.dk_invA)


def view_pixel_invA(disk_radius_px: float, q_pixel_size_invA: float, geometry) -> float:
    """The calibration (Å⁻¹ per detector px) at which a model trained on ``geometry`` is shown the patterns:
    the true one, or, for a bright-field disk of ``disk_radius_px`` above ``VIEW_ABOVE_MODEL_PX`` model px or
    beyond the trained range, the one that shows it at ``largest_shown_disk_px``."""
    r_model = disk_radius_px * q_pixel_size_invA / geometry.dk_invA
    trained = geometry.largest_disk_invA / geometry.dk_invA
    if r_model <= min(VIEW_ABOVE_MODEL_PX, BEYOND_TRAINING * trained):
        return q_pixel_size_invA
    return q_pixel_size_invA * largest_shown_disk_px(geometry) / r_model


# A synthesized probe's spread is read off the scan's own bright-field disk, whose edge also holds the training's
# blur (0–0.7 px, drawn per pattern) and each pattern's sub-pixel misalignment in the median: through the detector
# augmentation without a camera spread it reads σ 0.7 px at 1e3 e⁻ (0 at 1e5), with a 1 px spread 0.86–1.14, with 1.5 px
# 1.42–1.49 (benchmarks/RESULTS.md, "A camera's point spread"). Undone only from this σ.
SYNTH_POINT_SPREAD_MIN_PX = 0.9


class ModelInput:
    """What the network sees, from a user's patterns and vacuum probe (one owner for predict and evaluate).

    The probe is resampled onto the model grid (pitch ``scale`` input pixels, its centre of mass on
    pixel ``center_px``) and scaled to max 1 — the training data's convention. Each CBED is resampled
    the same way with ITS direct beam (``BeamFinder``) on ``center_px``, then scaled so that its total
    equals the probe's (removing beam-current drift) on the same max-1 scale.
    """

    def __init__(self, probe: np.ndarray, scale: float, P: int, center_px: int, device: str = "cpu",
                 beam_by_edge: bool = True):
        self.finder = BeamFinder(probe, device)
        self.detector_probe = probe  # as recorded, in the detector's pixels (sub-pixel refinement's template)
        self.probe_radius_px = probe_radius_px(probe)  # the disk's radius in the detector's pixels
        self.radius_px = max(3.0, 2.0 * self.probe_radius_px)  # beam search radius around a guess
        self.beam_by_edge = beam_by_edge and self.probe_radius_px >= BEAM_EDGE_MIN_RADIUS_PX
        self._beam_edge: SubpixelTemplate | None = None  # made at the first ``beam_centres`` (training never asks)
        self._blur_px: float | None = None  # ``blur_px``, read off the probe at its first use (training never asks)
        self.probe_blurred = True  # the probe shows the camera's spread (a recording), not drawn sharp (``synthesized``)
        self.device = device
        self._electron: tuple[torch.Tensor, tuple] | None = None  # (batch, its ``one_electron``)
        self.scale, self.P, self.cp = float(scale), int(P), int(center_px)
        pt = torch.from_numpy(probe[None].astype(np.float32)).to(device)
        pr = resample(pt, torch.tensor([self.finder.c], device=device), self.scale, self.P, self.cp)
        self.probe_max, self.probe_sum = pr.max(), pr.sum()
        self.probe = pr / self.probe_max  # (1, P, P)

    @property
    def blur_px(self) -> float:
        """The detector's point spread (Gaussian σ, px) that the vacuum probe's edge shows, 0 where none worth undoing
        (``probe_synth.point_spread_px``): the edge-weighted sub-pixel templates undo it (``refine.SubpixelTemplate``)."""
        if self._blur_px is None:
            self._blur_px = point_spread_px(self.detector_probe)
        return self._blur_px

    def synthesized(self, edge_px: float) -> None:
        """The probe is drawn sharp from the scan's bright-field disk, whose edge (logistic width ``edge_px``) shows the
        camera's spread: undone from ``SYNTH_POINT_SPREAD_MIN_PX`` (a spread the drawn probe does not share)."""
        sigma = point_spread_px(self.detector_probe, edge_px)
        self._blur_px, self.probe_blurred = (sigma if sigma >= SYNTH_POINT_SPREAD_MIN_PX else 0.0), False

    def centres(self, patterns: torch.Tensor, guess: tuple[float, float] | None = None,
                radius_px: float | None = None) -> torch.Tensor:
        """Direct-beam position (input pixels) of each pattern, searched within ``radius_px`` (default:
        twice the probe radius) of ``guess`` (else of the probe's position): where the network's view is centred."""
        return self.finder.find(patterns, guess, self.radius_px if radius_px is None else radius_px)

    def beam_centres(self, patterns: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Where each pattern's direct beam is, to reference its vectors to: ``centres`` placed by the beam's edge
        where it holds enough electrons (``BEAM_EDGE_MIN_RADIUS_PX``; not with ``beam_by_edge`` False: a beam at
        the detector's ceiling has no edge of the probe's size), else ``centres`` as they are. The network's view
        keeps ``centres``, as in training; the checks, the sub-pixel fit and the lattice placement use these."""
        if not self.beam_by_edge:
            return centres
        if self._beam_edge is None:
            self._beam_edge = SubpixelTemplate(self.detector_probe, self.finder.c, self.probe_radius_px, self.device,
                                               EDGE_SIGMA_RADII, blur_px=self.blur_px,
                                               probe_blurred=self.probe_blurred)
        b = torch.arange(len(centres), device=centres.device)
        edge = torch.stack(self._beam_edge.refine(patterns, b, centres[:, 0], centres[:, 1]), dim=1).to(centres.dtype)
        one_e, _ = self.electron(patterns)
        beam_sum = disk_intensity(patterns, centres, b, centres[:, 0], centres[:, 1], self.probe_radius_px, 0.0)
        use = (beam_sum >= BEAM_EDGE_MIN_ELECTRONS * one_e) \
            & (torch.hypot(*(edge - centres).unbind(dim=1)) <= BEAM_EDGE_MAX_MOVE_PX)
        return torch.where(use[:, None], edge, centres)

    def electron(self, patterns: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``evidence.one_electron`` of this batch, computed once for the evidence check and ``beam_centres``."""
        if self._electron is None or self._electron[0] is not patterns:
            self._electron = (patterns, one_electron(patterns.float()))
        return self._electron[1]

    def __call__(self, patterns: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probe, cbed) batches (B, P, P) for ``model(probe, cbed)``; a pattern with read noise seen without its
        floor (``READ_NOISE_FLOOR_SIGMA``)."""
        cb = resample(without_read_noise_floor(patterns), centres, self.scale, self.P, self.cp)
        tot = cb.sum(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        cb = cb * (self.probe_sum / tot) / self.probe_max
        return self.probe.expand(len(cb), self.P, self.P), cb


def without_read_noise_floor(patterns: torch.Tensor, n_sigma: float = READ_NOISE_FLOOR_SIGMA) -> torch.Tensor:
    """``patterns`` (B, Qx, Qy) with each pixel under ``n_sigma`` × its pattern's read noise (``evidence.read_noise``)
    set to zero; a pattern without read noise (counts, simulations: no pixel below zero) as it is."""
    sigma = read_noise(patterns)  # zeros after one pass where no pixel is below zero
    if not bool((sigma > 0).any()):
        return patterns
    under = (sigma > 0)[:, None, None] & (patterns <= (n_sigma * sigma).to(patterns.dtype)[:, None, None])
    return torch.where(under, torch.zeros_like(patterns), patterns)
