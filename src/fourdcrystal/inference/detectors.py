"""The two Bragg-vector detectors behind one call: ``detector(patterns, centres) -> vectors``.

``NetworkDetector``: the U-Net on what it was trained on (``ModelInput``), then V_g peaks
(``peaks.find_peaks``) mapped from the model grid back to Å⁻¹ and to the input's pixels.
``ClassicalDetector``: py4DSTEM's template matching (``classical.find_disks``) in the input's own
pixels, referenced to the same direct beam; no q_z (it has no out-of-plane information).
Both return one batch of vectors as arrays of equal length: ``pattern`` (index in the batch),
``qx``, ``qy`` (Å⁻¹ from the direct beam), ``qx_px``, ``qy_px`` (input pixels), ``intensity``, ``qz``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from fourdcrystal.analysis.lattice import INDEX_TOLERANCE, fewest_beyond_chance, find_basis, significant
from fourdcrystal.inference import classical, peaks
from fourdcrystal.inference.evidence import (BRIGHT_COMPLETION_MIN_SNR, COMPLETION_MIN_SNR, COMPLETION_REACH,
                                             HOT_PIXEL_MIN_RADIUS_PX, LATTICE_MIN_SNR, LATTICE_TOL_PX, LOW_DOSE_E,
                                             LONE_MIN_SNR, LOW_DOSE_THRESHOLD_FACTOR,
                                             MIN_LATTICE_VECTORS, MIN_SNR, RING_CLEAR_RADII, SEED_COMPLETION_REACH,
                                             SEED_LATTICE_VECTORS, WEAK_MIN_SNR,
                                             between_disks, bright_enough, disk_contrast, disk_intensity,
                                             friedel_folded, incident_beam, lattice_members_many, lattice_support_many,
                                             neighbour_spacing_px, one_electron,
                                             pattern_electrons, peak_thresholds, proposed_lattice_vectors,
                                             row_partners, small_disks)
from fourdcrystal.inference.model_input import ModelInput
from fourdcrystal.inference.probe_synth import SATURATED_MIN_PX
from fourdcrystal.inference.refine import (CLEAR_MIN_RADIUS_PX, CLEAR_SPACING_RADII, CLIP_MIN_SNR, DEFAULT_CORR_POWER,
                                           DEFAULT_SEARCH_PX, EDGE_CLIMB_MIN_SNR, EDGE_CLIMB_PX, EDGE_SIGMA_RADII,
                                           LOW_DOSE_EDGE_CLIMB_MIN_SNR, MIN_SPACING_RADII, PLAIN_BELOW_SNR,
                                           LATTICE_TOL_SEARCHES, SEARCH_RADII, SMALL_SEARCH_RADII,
                                           SPREAD_EDGE_CLIMB_MIN_SNR, SPREAD_EDGE_CLIMB_PX, SUM_EDGE_CLIMB_MIN_SNR,
                                           SubpixelTemplate,
                                           disk_and_ring_levels, fitted_lattices, hybrid_xcorr,
                                           lattice_evidences, lattice_likelihood, lattice_likelihoods,
                                           lattice_on_pattern, lattice_placed, on_lattice_of, probe_template_fft,
                                           refine_positions, summed_disk_brightness, summed_disk_z,
                                           weighed_lattice_points,
                                           without_diffuse_background, without_spikes)

# Patterns per network call. On CPU small batches keep the activations in cache: 16-32 patterns of
# 128² ran ~1.3x faster than 64-256 (2 cores, benchmarks/RESULTS.md); a GPU wants large batches.
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}
FRIEDEL_LIT_PAIRS = 2  # ±g pairs that show a crystal's pattern where its beam is nearly extinct (``_friedel_pairs``)
# ``MeasuredPattern._batch_lattice``: the batch's low-dose patterns without a lattice of their own, or of so few
# electrons that their own disks place it to a pixel or two (``_few_electrons``), are summed where they hold at least
# BATCH_LATTICE_MIN_E electrons together (a pattern whose lattice the network finds), and each
# is fitted to that lattice from BATCH_LATTICE_STARTS starts; it shows it where its electrons stand
# BATCH_LATTICE_MIN_Z standard deviations above their rings (``refine.lattice_evidence``: without disks at most 3.5
# of 96 patterns, with a 2 nm crystal's at 1e3 e⁻ 4.2–28, median 9.7; benchmarks/RESULTS.md, "A thin crystal's
# lattice from its batch")
BATCH_LATTICE_STARTS, BATCH_LATTICE_MIN_Z = 16, 5.0
# 3e3: a 2 × 2 scan's four patterns at 1e3 e⁻ (the network reads a 3e3 e⁻ pattern's lattice: F1 0.53 on the [001]
# envelope). Tried first with the likelihood's own size, its vectors sat 1–2 px off and precision fell 0.87 → 0.52;
# with the scan's one size factor (``measure_edge_scale``) it holds: 2 × 2 scans at 1e3 e⁻, the [001] envelope F1 0.42
# → 0.50, 200 kV / 2 mrad under shot noise 0.59 → 0.82 at precision 0.99, Au [001] 0.12 → 0.62; no negative moved
# (benchmarks/RESULTS.md, "A small scan's lattice from its few patterns, sized"). 2e4 before.
BATCH_LATTICE_MIN_E = 3e3
# "Without a lattice of their own": fewer vectors beside the beam than show a lattice beyond chance in `strain`'s fit
# (six; ``analysis.lattice.fewest_beyond_chance``): a pattern with four or five kept its own and no position was
# fit (bench_strain's 2 nm SrTiO3 at 1e3 e⁻ on 256 px at 0.0107 Å⁻¹/px: 54 → 96 % of positions fitted;
# benchmarks/RESULTS.md, "Faint patterns of four or five vectors on their batch's lattice"; with the patterns of few
# electrons that have a lattice of their own, 100 %: "A few-electron pattern's own lattice replaced by its batch's")
BATCH_LATTICE_OWN_VECTORS = fewest_beyond_chance()
# A pattern's vectors on its batch's lattice: points where the summed patterns show a disk at ``LATTICE_MIN_SNR``,
# out to this many times the farthest of the vectors on the sum that fixed the lattice, as far as a few bright disks'
# lattice is completed (``evidence.SEED_COMPLETION_REACH``: the {400} and {440} of the {220} that the network finds
# on the sum; ``_batch_lattice``). 1.25 and 1.5 (``evidence.COMPLETION_REACH``'s, and between) dropped true {420} and
# {440} of Si [001] at 300 kV / 3.5 mrad in bench_accuracy's 6 × 6 scans (benchmarks/RESULTS.md, "The batch's
# lattice within reach")
BATCH_LATTICE_REACH = SEED_COMPLETION_REACH


def auto_bf16(device_type: str) -> bool:
    """Whether ``--precision auto`` runs the network in bf16 here: on a CPU with native bf16 arithmetic
    (AMX tiles or AVX512-BF16), not on CUDA and not where bf16 is emulated.

    Measured with the shipped model (16 base channels, 128² grid; benchmarks/RESULTS.md): 2-core Intel Xeon
    VM with AMX, 2026-12-01: forward 749 vs 497 patterns/s, end to end 337 vs 244; 2-core AMD EPYC VM with
    AVX512-BF16 (no AMX), 2026-12-02, after the channels_last stem: forward 870 vs 631, end to end 359 vs
    264 ("bf16 where the CPU has AVX512-BF16"; before that stem bf16 had measured slower there, 243 vs 296).
    On both, the same accuracy on bench_accuracy's envelope as fp32 and the same vectors in every process
    (tests/test_pretrained.py). On an H200 the model is too small for bf16 to pay (end to end 1,000 vs 1,074).
    """
    if device_type != "cpu":
        return False
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without the probes: no native bf16 known
        return False


class MeasuredPattern:
    """What the measured pattern says about the network's vectors, in the detector's own pixels: each is
    kept only where the pattern shows a disk (large disks: not at a gap between them, ``evidence.between_disks``;
    ``evidence.disk_contrast``; by ``evidence.LATTICE_MIN_SNR`` only
    where it lies on the lattice of its pattern's kept vectors, ``_second_chance``; on a dense background also
    on a lattice with others, ``evidence.MIN_LATTICE_VECTORS``, or, where that leaves a bright pattern of large
    disks nothing beyond the beam, on its bright vectors' completed lattice, ``_seed_lattices``; a large disk among
    touching neighbours that the network did not propose, on that lattice alone, ``_crowded``;
    ``check_evidence=False``: all) and placed on that disk (``refine``: sub-pixel; ``corr_power`` None: the
    network's position).
    Every disk is judged from the nearest proposal in the same pattern, whose disk may lie in its background
    ring (``evidence.RING_CLEAR_RADII``): a larger disk is then judged against the circle about the beam through
    it instead, a small one (``evidence.small_disks``) against its ring without the neighbours' disks. Small
    disks are apart in any lattice of a few Å and each is placed on its own; a larger disk that overlaps a
    neighbour keeps the network's position (``refine.MIN_SPACING_RADII``: the correlation would pull it toward
    that neighbour). On a low-dose pattern the other points of its kept
    vectors' lattice where the pattern shows a disk are added (``_lattice_completed``). A disk smaller than a
    pixel stands only on its pattern's lattice (``_lattice_members``: it looks like a hot pixel). A low-dose
    pattern's only vector beside the beam needs ``evidence.LONE_MIN_SNR`` (``_lone_and_faint``). A faint pattern
    with no lattice of its own, or too few electrons to place its own, takes its batch's where its electrons show it
    (``_batch_lattice``). Last, each pattern's vectors are placed on the least-squares lattice of those on it
    (``refine.lattice_placed``; ``lattice_positions=False``: neither). The direct beam is always a vector where the
    pattern shows one, proposed by the network or not (``with_missed_beams``)."""

    def __init__(self, inputs: ModelInput, q_pixel_size_invA: float, model_pixel_invA: float, *,
                 check_evidence: bool = True, corr_power: float | None = DEFAULT_CORR_POWER, device: str = "cpu",
                 lattice_positions: bool = True, saturation: float | None = None):
        self.inputs, self.dq_invA, self.dk_invA = inputs, float(q_pixel_size_invA), float(model_pixel_invA)
        self.saturation = saturation  # the detector's ceiling where the scan's beams reach it (``_lit``)
        self.lattice_positions = lattice_positions
        self.disk_radius_px = inputs.probe_radius_px  # in the detector's pixels
        self.check_evidence, self.corr_power = check_evidence, corr_power
        self.small_disks = small_disks(self.disk_radius_px, self.dq_invA)
        # the network's own uncertainty, a model pixel, in the detector's pixels; half a radius for a large
        # disk clear of its neighbours (``refine.CLEAR_SPACING_RADII``)
        self.search_px = max(DEFAULT_SEARCH_PX, self.dk_invA / self.dq_invA)
        self.clear_search_px = max(self.search_px, SEARCH_RADII * self.disk_radius_px)
        # a small disk within its own radius: no neighbour is nearer than 3 radii (``refine.SMALL_SEARCH_RADII``)
        self.small_search_px = max(self.search_px, SMALL_SEARCH_RADII * self.disk_radius_px)
        # large disks of many pixels may be clear of their neighbours (``refine.CLEAR_MIN_RADIUS_PX``)
        self.may_be_clear = not self.small_disks and self.disk_radius_px >= CLEAR_MIN_RADIUS_PX
        # placed by their edges (below): a low-dose lattice keeps their vectors' size (``_place_on_lattice``)
        self.edge_placed = self.small_disks or self.may_be_clear
        # small disks and large clear ones are placed by their edges (``refine.SubpixelTemplate``), faint
        # small ones by the plain probe (``refine.PLAIN_BELOW_SNR``); a large disk that touches a neighbour
        # by the plain probe: the neighbour's edge would weigh as much as its own (measured: bench_strain,
        # 2.5 mrad at 300 kV)
        self.edge_template = self.plain_template = None
        # the vectors of one pattern, (pattern (1, P, Q), centre (1, 2)) -> vectors, or None: set by
        # ``NetworkDetector`` for the sum of a batch's faint patterns (``_batch_lattice``)
        self.vectors_of_sum = None
        self.edge_scale = None  # ``measure_edge_scale``: the scan's one size factor of its batches' lattices
        self.edge_scale_unsettled = False  # ``measure_edge_scale``: a later batch may show the factor
        self._whole_pattern_template: np.ndarray | None = None  # ``_probe_template_fft``
        if self.corr_power is not None:
            def template(sigma):
                return SubpixelTemplate(inputs.detector_probe, inputs.finder.c, self.disk_radius_px, device,
                                        edge_sigma_radii=sigma, blur_px=inputs.blur_px if sigma else 0.0,
                                        probe_blurred=inputs.probe_blurred)
            if self.small_disks or self.may_be_clear:
                self.edge_template = template(EDGE_SIGMA_RADII)
            self.plain_template = template(None)

    def __call__(self, patterns: torch.Tensor, centres: torch.Tensor, out: dict, electron=None, maps=None,
                 summed: bool = False) -> dict:
        """``out``: vectors (``pattern``, ``qx``, ``qy`` Å⁻¹ from the beam, ``qx_px``, ``qy_px`` detector px,
        any other columns); returns those kept, positions refined. A flat pattern (e.g. a detector read
        without beam) shows nothing: none of its vectors is kept. ``out["weak"]`` (optional): vectors the
        network proposed only under a lowered threshold, which need ``evidence.WEAK_MIN_SNR``;
        ``out["unsure"]`` (optional): those of them above the low-dose ramp (``thresholds``), which must also
        lie on the lattice of their pattern's other vectors (``evidence.lattice_members``).
        ``electron``: ``evidence.one_electron`` of ``patterns``, when already known. ``maps``: the network's
        (V_g, q_z, model centre px, model Å⁻¹/px) for the vectors added on a low-dose pattern's lattice
        (``_lattice_completed``; None: none added). ``summed``: the patterns are sums of a batch's faint patterns
        (``_sum_lattice``), whose low-dose disks climb from ``refine.SUM_EDGE_CLIMB_MIN_SNR`` (``_refine``)."""
        out = dict(out)
        out["crowded"] = np.zeros(len(out["pattern"]), bool)  # ``_crowded``: kept only on a lattice as measured
        for flag in ("weak", "unsure"):
            out[flag] = np.asarray(out.get(flag, np.zeros(len(out["pattern"]), bool)), bool)
        flat = (patterns.amax(dim=(1, 2)) <= patterns.amin(dim=(1, 2))).cpu().numpy()
        if flat.any() and len(out["pattern"]):
            out = {k: v[~flat[out["pattern"]]] for k, v in out.items()}
        r = self.disk_radius_px
        if self.check_evidence and self.may_be_clear and len(out["pattern"]):
            # first the gaps that nearly touching large disks leave (``evidence.between_disks``): among the
            # proposals they would make the disks look overlapping and index a finer lattice than the crystal's
            gap = between_disks(patterns, out["pattern"], out["qx_px"], out["qy_px"], r, electron).cpu().numpy()
            out = {k: v[~(gap & ~self._beam(out))] for k, v in out.items()}
        out["snr"] = np.full(len(out["pattern"]), np.nan)
        # the nearest other proposal (the beam's too, whatever the check keeps): within ``RING_CLEAR_RADII`` radii its
        # disk lies in this one's background ring, small disks' too where the lattice is coarser than ~4 Å (ZnO
        # [11-20] at 200 kV / 2 mrad: 5 px disks 12 px apart; benchmarks/RESULTS.md, "Zone axes not measured before")
        near = neighbour_spacing_px(out["pattern"], out["qx_px"], out["qy_px"])
        # small disks are otherwise apart, each judged on its own ring and refined on its own disk
        spacing = np.full(len(near), np.inf) if self.small_disks else near
        dense = np.zeros(len(out["pattern"]), bool)
        incident = np.ones(len(patterns))
        counted = self._counted(patterns, electron)
        low_dose = self._low_dose(counted, len(patterns))
        if self.check_evidence and len(out["pattern"]):
            contrast = disk_contrast(patterns, centres, out["pattern"], out["qx_px"], out["qy_px"], r,
                                     overlapping=spacing < RING_CLEAR_RADII * r, electron=electron,
                                     crowded=self.small_disks & (near < RING_CLEAR_RADII * r),
                                     blur_px=self.inputs.blur_px)
            snr, brightness, dense = (t.cpu().numpy() for t in contrast[:3])
            out["snr"] = snr.astype(np.float64)
            out["level"] = contrast.level.cpu().numpy().astype(np.float64)  # for the intensity, measured last
            incident = incident_beam(out["pattern"], brightness, len(patterns))
            bright = bright_enough(brightness, snr, incident[out["pattern"]])
            keep = (snr >= np.where(out["weak"], WEAK_MIN_SNR, MIN_SNR)) & bright
            keep |= self._beam(out)  # the direct beam is always a vector ...
            # ... and a proposal between LATTICE_MIN_SNR and MIN_SNR stands on its pattern's lattice, its brightness
            # that of its whole disk (``evidence.DiskContrast.disk_brightness``)
            bright_disk = bright_enough(_disk_brightness(contrast), snr, incident[out["pattern"]])
            keep |= self._second_chance(out, keep, snr, bright_disk)
            out["crowded"] = self._crowded(out, keep, brightness, dense, incident, low_dose)
            keep |= out["crowded"]
            if self.small_disks:  # ... of a pattern that shows one (its ring is background: no neighbour near)
                # or, where its transmitted beam is nearly extinct (a thick crystal), ±g pairs about it
                lit = self._lit(patterns, centres, electron)
                if not lit.all():
                    lit |= self._friedel_pairs(out, keep & ~lit[out["pattern"]], len(patterns))
                keep &= lit[out["pattern"]]
            out, spacing, dense = {k: v[keep] for k, v in out.items()}, spacing[keep], dense[keep]
        apart = spacing >= MIN_SPACING_RADII * r
        measured = patterns  # what the sub-pixel fit measures on
        refined = self.corr_power is not None
        proposed = out["qx"].copy(), out["qy"].copy()  # the network's positions, for the speckle rule below
        beam = self._beam(out)
        if refined:
            # the direct beam is the reference itself (``ModelInput.beam_centres``, placed by its edge), not
            # measured again: its correlation's maximum, climbing to an edge, moved a noise-free film's beam 2.4 px
            # onto its speckle, and a search on a pattern without one (noise only) would move it onto noise
            cc = centres.cpu().numpy().astype(np.float64)
            for axis, col in enumerate(("qx", "qy")):
                out[col + "_px"] = np.where(beam, cc[out["pattern"], axis], out[col + "_px"])
                out[col] = np.where(beam, 0.0, out[col])
        fitted = apart & ~beam  # the disks the sub-pixel fit measures on the pattern
        if refined and fitted.any():
            clear = (spacing >= CLEAR_SPACING_RADII * r) & ~beam if self.may_be_clear else \
                np.zeros(len(spacing), bool)
            # measured on the pattern less its diffuse background, where its vectors fix a lattice
            # (``refine.without_diffuse_background``): the background's slope moves a disk's edge
            q_px = np.column_stack([out["qx_px"] - cc[out["pattern"], 0], out["qy_px"] - cc[out["pattern"], 1]])
            measured = without_diffuse_background(patterns, centres, out["pattern"][~beam], q_px[~beam], r,
                                                  self.search_px, MIN_LATTICE_VECTORS)
            self._refine(measured, cc, out, fitted, clear=clear[fitted], low_dose=low_dose, summed=summed)
        if out["unsure"].any():
            # first the unsure proposals off the lattice of their pattern's other vectors: the speckle rule below
            # judges what is reported, and a film's faint speckles could lend its bright ones a chance lattice
            # that is gone once they are (128 px at 0.04 Å⁻¹/px, 80 kV / 3.5 mrad: 12 speckles on a lattice, then
            # 6 left that were on none; benchmarks/RESULTS.md, "Film negatives over many films")
            keep = ~out["unsure"] | self._on_lattice(out, LATTICE_TOL_PX if refined else self.search_px)
            out, dense, apart = {k: v[keep] for k, v in out.items()}, dense[keep], apart[keep]
            proposed = proposed[0][keep], proposed[1][keep]
        # a film's speckle (evidence.MIN_LATTICE_VECTORS), judged on the positions measured on the pattern:
        # a pattern's vectors stand on one lattice as measured or, large disks, as the network proposed them
        # (within its own uncertainty): the sub-pixel fit pulls large disks that touch on both sides off their
        # lattice (the demo's Ti5Te4 [111], 5 px disks 11 px apart: 0.77 px from the truth, the network's 0.58),
        # while a film's speckle fits no lattice either way (benchmarks/RESULTS.md, "The demo scan with one probe").
        # Within the network's looser uncertainty chance lattices are likelier: more vectors must share one
        # there, the more so the more vectors a pattern has (evidence.proposed_lattice_vectors).
        # A disk touching a neighbour keeps the network's position (not refined) and is judged on those alone;
        # it may also stand on a row through the beam with another vector (g and −g beside the beam's disk,
        # where the network finds no more of large overlapping disks), which a film's grain on the beam's
        # edge has not (benchmarks/RESULTS.md, "A speckle grain on the beam's edge")
        if out["crowded"].any():  # first those kept only on their lattice: the film rule below counts the rest
            off = self._no_lattice(out, ~self._beam(out), LATTICE_TOL_PX if refined else self.search_px,
                                   MIN_LATTICE_VECTORS, folded=True)
            keep = ~(out["crowded"] & off)
            out, dense, apart = {k: v[keep] for k, v in out.items()}, dense[keep], apart[keep]
            proposed = proposed[0][keep], proposed[1][keep]
        beam = self._beam(out)
        judged = dense & ~beam & (apart if refined else True)
        touching = dense & ~beam & ~apart if refined else np.zeros(len(beam), bool)
        if judged.any() or touching.any():
            if refined:
                off = self._no_lattice(out, ~beam, LATTICE_TOL_PX, MIN_LATTICE_VECTORS)  # as measured
                # small disks leave their ring free in any lattice (``evidence.small_disks``) and touch none: the fit
                # measures them where they are, and their lattice is judged as measured alone
                if not self.small_disks:
                    off_proposed = self._no_lattice(dict(out, qx=proposed[0], qy=proposed[1]), ~beam,
                                                    self.search_px, proposed_lattice_vectors, folded=True)
                    off = off & off_proposed
            else:
                off = self._no_lattice(out, ~beam, self.search_px, proposed_lattice_vectors)
            if touching.any():
                lone = off_proposed.copy()
                q_px = np.column_stack(proposed) / self.dq_invA
                lone[~beam] &= ~row_partners(out["pattern"][~beam], q_px[~beam], self.search_px)
                off = np.where(touching, lone, off)
            keep = ~((judged | touching) & off)
            emptied = self._emptied(out, keep, low_dose) if refined and maps is not None and self.lattice_positions \
                else None
            out = {k: v[keep] for k, v in out.items()}
            if emptied is not None:
                out = self._seed_lattices(patterns, centres, out, emptied, electron, maps, measured, incident, low_dose)
        if self.check_evidence and r < HOT_PIXEL_MIN_RADIUS_PX and len(out["pattern"]):
            # a disk smaller than a pixel is one bright pixel, as a hot pixel is (evidence.
            # HOT_PIXEL_MIN_RADIUS_PX): each stands only on the lattice of its pattern's vectors, whatever its
            # background (a pattern's lattice alone let the hot pixels of a crystal's pattern through)
            keep = self._beam(out) | self._lattice_members(out, LATTICE_TOL_PX if refined else self.search_px)
            out = {k: v[keep] for k, v in out.items()}
        # (not for vectors asked for as measured: a pattern that is no single crystal has no one lattice)
        if maps is not None and refined and self.check_evidence and self.lattice_positions and len(out["pattern"]):
            out = self._lattice_completed(patterns, centres, out, electron, maps, measured, incident, low_dose)
        del out["weak"], out["unsure"], out["crowded"]
        if self.check_evidence and len(out["pattern"]):
            keep = ~self._lone_and_faint(out, low_dose)
            out = {k: v[keep] for k, v in out.items()}
        few = self._few_electrons(counted, len(patterns))
        on_batch_lattice = np.zeros(len(patterns), bool)
        if refined and self.lattice_positions and self.check_evidence and maps is not None and low_dose.any():
            out, on_batch_lattice = self._batch_lattice(patterns, centres, out, low_dose, counted, electron, maps,
                                                        few)
        if refined and self.lattice_positions and len(out["pattern"]):
            # weighted by the network's V_g, which ``intensity`` holds here
            self._place_on_lattice(patterns, measured, centres, out, few & ~on_batch_lattice, electron,
                                   fixed=on_batch_lattice)
        if refined and len(out["pattern"]):
            out = _one_per_position(out)
        if "intensity" in out:
            out["vg"] = out["intensity"]  # the network's V_g at each vector: the weight of its q_z (analysis.strain)
        if "level" in out:
            # a vector's intensity is its disk's as the pattern shows it, where the vector now is, over the level the
            # evidence check found about it: ranked against the crystal's |F| it beat the network's V_g at every
            # dose (benchmarks/RESULTS.md, "Intensities measured on the disks")
            out["intensity"] = disk_intensity(patterns, centres, out["pattern"], out["qx_px"], out["qy_px"], r,
                                              out.pop("level"), self.inputs.blur_px).cpu().numpy().astype(np.float64)
        return out

    def _lone_and_faint(self, out: dict, low: np.ndarray) -> np.ndarray:
        """Per vector: the only non-beam vector of a low-dose pattern (``low``, ``_low_dose``) that stands out by
        less than ``evidence.LONE_MIN_SNR``: a chance blob is alone, a crystal's faint reflections are not."""
        b, beam = out["pattern"], self._beam(out)
        alone = np.bincount(b[~beam], minlength=len(low))[b] == 1
        return ~beam & alone & low[b] & (np.nan_to_num(out["snr"], nan=np.inf) < LONE_MIN_SNR)

    def _second_chance(self, out: dict, keep: np.ndarray, snr: np.ndarray, bright: np.ndarray) -> np.ndarray:
        """Per vector: whether a proposal at the stamped threshold that missed ``evidence.MIN_SNR`` (or its core's
        brightness floor) but stands out by ``evidence.LATTICE_MIN_SNR`` (``bright``: judged on its whole disk) lies
        within the network's uncertainty of a point of the lattice of its pattern's kept vectors
        (``refine.on_lattice_of``: at least ``MIN_LATTICE_VECTORS`` of them)."""
        maybe = ~keep & (snr >= LATTICE_MIN_SNR) & bright & ~out["weak"]
        ok = np.zeros(len(keep), bool)
        if not maybe.any():
            return ok
        b = out["pattern"]
        q_px = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        strong = keep & ~self._beam(out)
        ok[maybe] = on_lattice_of(b[strong], q_px[strong], b[maybe], q_px[maybe], self.search_px,
                                  MIN_LATTICE_VECTORS)
        return ok

    def _crowded(self, out: dict, keep: np.ndarray, brightness: np.ndarray, dense: np.ndarray, incident: np.ndarray,
                 low: np.ndarray) -> np.ndarray:
        """Per vector: a large disk's proposal that the contrast test refused though the disk is brighter than its
        level by the brightness floor (``MIN_BRIGHTNESS``, of the direct and the incident beam), on a dense
        background of a pattern that is not low-dose (``low``). Large disks that touch fill each other's rings:
        where the network proposes a disk but not its neighbours, its ring holds their disks, whose spread, not
        shot noise, sets the contrast's standard error (GaN [0001] at 300 kV / 3.5 mrad / 60 nm noise-free: five
        of the network's six {11-20} proposals, within 0.3–0.9 px of their disks, stood −1.5 to 1.9 σ out, and only
        the direct beam was kept; benchmarks/RESULTS.md, "Touching disks among neighbours the network missed"). Such a
        vector stands only where at least ``MIN_LATTICE_VECTORS`` of its pattern's vectors, as measured on the
        pattern and each ±g pair counted once, lie on one lattice through the beam. A film's speckle is dense too,
        but fits no lattice; under ``LOW_DOSE_E[1]`` electrons the counting test holds and decides alone."""
        if self.small_disks:  # their ring is background in any lattice (``evidence.small_disks``)
            return np.zeros(len(keep), bool)
        b = out["pattern"]
        floor = bright_enough(brightness, np.full(len(keep), np.inf), incident[b])  # no slack for noise
        return ~keep & dense & floor & ~low[b] & ~out["weak"] & ~self._beam(out)

    def _emptied(self, out: dict, keep: np.ndarray, low: np.ndarray) -> dict | None:
        """The vectors that the film's lattice rule refused (``~keep``) standing ``evidence.BRIGHT_COMPLETION_MIN_SNR``
        out, of bright patterns of large disks it left with no vector beyond the beam, with those patterns' beams
        (None where there are none): the seeds of ``_seed_lattices``."""
        if self.small_disks:
            return None
        b, beam = out["pattern"], self._beam(out)
        left = np.bincount(b[keep & ~beam], minlength=len(low))[b]
        seed = ~keep & (np.nan_to_num(out["snr"]) >= BRIGHT_COMPLETION_MIN_SNR) & (left == 0) & ~low[b]
        if not seed.any():
            return None
        return {k: v[seed | (beam & np.isin(b, b[seed]))] for k, v in out.items()}

    def _seed_lattices(self, patterns, centres, out: dict, seeds: dict, electron, maps, measured_patterns,
                       incident: np.ndarray, low: np.ndarray) -> dict:
        """``out`` and, for each pattern of ``seeds`` (``_emptied``), the lattice of its seed vectors completed
        (``_lattice_completed`` from ``evidence.SEED_LATTICE_VECTORS`` of them, out to
        ``evidence.SEED_COMPLETION_REACH`` × the farthest) where at least ``MIN_LATTICE_VECTORS`` ±g pairs of the
        seeds and the completed points, each pair counted once, lie on one lattice as measured: those vectors."""
        got = self._lattice_completed(patterns, centres, seeds, electron, maps, measured_patterns, incident, low,
                                      enough=SEED_LATTICE_VECTORS, reach=SEED_COMPLETION_REACH)
        beam = self._beam(got)
        on = ~beam & ~self._no_lattice(got, ~beam, LATTICE_TOL_PX, MIN_LATTICE_VECTORS, folded=True)
        if not on.any():
            return out
        both = {k: np.concatenate([v, got[k][on].astype(v.dtype)]) for k, v in out.items()}
        order = np.argsort(both["pattern"], kind="stable")  # the batch's vectors stay grouped by pattern
        return {k: v[order] for k, v in both.items()}

    def _lattice_completed(self, patterns, centres, out: dict, electron, maps, measured_patterns,
                           incident: np.ndarray, low: np.ndarray, enough: int = MIN_LATTICE_VECTORS,
                           reach: float = COMPLETION_REACH) -> dict:
        """``out`` and a vector at each other point of a pattern's lattice where its pattern shows a disk: on a
        low-dose pattern at ``evidence.COMPLETION_MIN_SNR``, on another pattern of large disks at
        ``evidence.BRIGHT_COMPLETION_MIN_SNR``, measured there on ``measured_patterns`` (``_refine``: the pattern the
        proposals were measured on, less its diffuse background where they fix a lattice); both at least
        ``MIN_BRIGHTNESS``. The lattice is fitted to the pattern's kept vectors (``refine.fitted_lattices``, at
        least ``enough``, by default ``MIN_LATTICE_VECTORS``); its points are tested out to ``reach`` (by default
        ``evidence.COMPLETION_REACH``) × the farthest of them, on the detector, clear of every vector by a disk
        radius, where the disks do not overlap. Such a
        vector's intensity is measured on its disk, as every checked vector's (``disk_intensity``), its weight in the
        lattice placement is the network's V_g map's there, and so is its q_z on a low-dose pattern; on a bright
        one its q_z is NaN (not measured). ``low``: the low-dose patterns (``_low_dose``)."""
        b = out["pattern"]
        fit = ~self._beam(out) & (low[b] | (not self.small_disks))
        if fit.sum() < enough:
            return out
        q_px = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        pats, G, good = fitted_lattices(b[fit], q_px[fit], LATTICE_TOL_PX, enough)
        c = centres.cpu().numpy().astype(np.float64)
        found = [self._lattice_points(p, G[i], q_px[b == p], c[p], patterns.shape[-2:], reach)
                 for i, p in enumerate(pats) if good[i]]
        found = [f for f in found if len(f[0])]
        if not found:
            return out
        cb, cq, spacing = (np.concatenate(f) for f in zip(*found))
        x, y = c[cb, 0] + cq[:, 0], c[cb, 1] + cq[:, 1]
        r = self.disk_radius_px
        contrast = disk_contrast(patterns, centres, cb, x, y, r, overlapping=spacing < RING_CLEAR_RADII * r,
                                 electron=electron, blur_px=self.inputs.blur_px)
        snr, level = contrast.snr.cpu().numpy(), contrast.level.cpu().numpy()
        brightness = _disk_brightness(contrast)
        keep = (snr >= np.where(low[cb], COMPLETION_MIN_SNR, BRIGHT_COMPLETION_MIN_SNR)) & \
            bright_enough(brightness, snr, incident[cb])
        if not keep.any():
            return out
        cb, cq = cb[keep], cq[keep]
        new = self._new_vectors(c, cb, cq, snr[keep], level[keep], maps)
        both = {k: np.concatenate([v, new[k].astype(v.dtype) if k in new else np.zeros(len(cb), v.dtype)])
                for k, v in out.items()}
        # on a bright pattern each is measured on its disk: its lattice point is extrapolated from a few vectors
        measured = np.concatenate([np.zeros(len(out["pattern"]), bool), ~low[cb]])
        if measured.any():
            spacing = np.concatenate([np.zeros(len(out["pattern"])), spacing[keep]])[measured]
            clear = spacing >= CLEAR_SPACING_RADII * r if self.may_be_clear else np.zeros(len(spacing), bool)
            self._refine(measured_patterns, c, both, measured, clear=clear, low_dose=low)
            if "qz" in both:  # where the network showed no peak its q_z map measures nothing (bench_strain's
                both["qz"][measured] = np.nan  # tilts, noise-free: 1.06 -> 1.20 mrad off with the map's value)
        order = np.argsort(both["pattern"], kind="stable")  # the batch's vectors stay grouped by pattern
        return {k: v[order] for k, v in both.items()}

    def _lattice_points(self, p: int, g: np.ndarray, mine: np.ndarray, centre: np.ndarray, shape,
                        reach_factor: float = COMPLETION_REACH) -> tuple:
        """(pattern, points (N, 2) px from the beam, the lattice's shortest spacing per point) of lattice ``g``
        (rows g1, g2) that ``_lattice_completed`` tests on pattern ``p`` with vectors ``mine``, out to
        ``reach_factor`` × the farthest of them."""
        r = self.disk_radius_px
        none = (np.zeros(0, int), np.zeros((0, 2)), np.zeros(0))
        spacing = min(np.hypot(*v) for v in (g[0], g[1], g[0] + g[1], g[0] - g[1]))
        if spacing < MIN_SPACING_RADII * r:  # overlapping disks: a lattice point's test would see its neighbours
            return none
        edge = min(centre[0], centre[1], shape[0] - 1 - centre[0], shape[1] - 1 - centre[1]) - r - 1
        reach = min(reach_factor * np.hypot(mine[:, 0], mine[:, 1]).max(), edge)
        # enough orders that every point within reach is on the grid: reach over the rows' spacing
        n = min(int(np.ceil(reach * np.hypot(g[:, 0], g[:, 1]).max() / abs(np.linalg.det(g)))), 20)
        ax = np.arange(-n, n + 1)
        pts = np.stack(np.meshgrid(ax, ax, indexing="ij"), -1).reshape(-1, 2) @ g
        pts = pts[(np.hypot(pts[:, 0], pts[:, 1]) <= reach) & (np.hypot(pts[:, 0], pts[:, 1]) > r)]
        apart = np.hypot(pts[:, None, 0] - mine[None, :, 0], pts[:, None, 1] - mine[None, :, 1]).min(axis=1) > r
        pts = pts[apart]
        return np.full(len(pts), p), pts, np.full(len(pts), spacing)

    def _place_on_lattice(self, patterns: torch.Tensor, measured: torch.Tensor, centres: torch.Tensor, out: dict,
                          few: np.ndarray, electron=None, fixed: np.ndarray | None = None) -> None:
        """Move every non-beam vector onto its pattern's least-squares lattice through the beam
        (``refine.lattice_placed``; in place), the fit weighted by the vectors' intensities; those of the ``fixed``
        patterns, on a lattice already (``_batch_lattice``), stay. On a pattern of ``few``
        electrons (``_few_electrons``) that lattice is then refitted to the whole pattern — the few electrons of many
        far disks fix a lattice better than the network's few near vectors: its shape and orientation to every
        disk's correlation maximum (``refine.lattice_on_pattern`` on ``measured``, the pattern less its diffuse
        background), then

        * disks that touch a neighbour, which the sub-pixel fit places by the plain probe (``_refine``): all of it,
          size included, to the likelihood of the pattern's electrons (``refine.lattice_likelihood``), each lattice
          point weighed by its disk's brightness in the batch's ``few`` patterns (``_batch_levels``): pooled before
          they are maximised, the electrons place the lattice better than disk by disk (bench_strain at 1e3 e⁻,
          SrTiO3 and GaN at 60 Å: mean |error| e_xx 1.55 → 0.80 %, 0.73 → 0.52 %; benchmarks/RESULTS.md, "A
          low-dose lattice by its likelihood");
        * small disks and large clear ones, which it places by their edges: the vectors' size kept (the basis'
          determinant). The plain probe's likelihood follows a thick crystal's disk, brighter on its inner side,
          inward (bench_accuracy's 200 kV / 2 mrad / 30 nm at 1e3 e⁻: F1 0.35 → 0.19), and with the edge-weighted
          template it was noisier than the vectors' own size (bench_strain at 200 kV / 2 mrad, 60 Å, 1e3 e⁻: e_xx
          0.73 → 0.93 %). The plain correlation's inward pull changes with the thickness (noise-free, SrTiO3 [001]
          at 2–20 nm: −0.3 to −1.6 % in scale, against −0.2 to −1.0 % for the vectors' lattice), where a square or
          hexagonal lattice's shape is unbiased by symmetry (a rectangular one's is not: Si [110] ≤ 0.15 % to 15 nm,
          0.8–2 % at 20–80 nm, the vectors' 0.1–1 %)."""
        c = centres.cpu().numpy().astype(np.float64)
        if fixed is not None and fixed.any():
            stay = fixed[out["pattern"]]
            if (~stay).any():
                moved = {k: v[~stay] for k, v in out.items()}
                self._place_on_lattice(patterns, measured, centres, moved, few, electron)
                for k in ("qx_px", "qy_px", "qx", "qy"):
                    out[k][~stay] = moved[k]
            return
        b, beam = out["pattern"], self._beam(out)
        q = np.column_stack([out["qx_px"] - c[b, 0], out["qy_px"] - c[b, 1]])
        # weighted by intensity, as `fourdcrystal strain` weighs its per-position fit (analysis.strain):
        # unweighted, the faint high orders had raised bench_strain's errors at 1e5 e⁻ (RESULTS.md)
        w = np.clip(np.nan_to_num(out["intensity"]), 1e-12, None)[~beam] if "intensity" in out else None
        tol = LATTICE_TOL_SEARCHES * self.search_px
        if few.any():  # a noise-free pattern's "electron" is tiny and its count arbitrary: its disks need no refit
            electron = one_electron(patterns.float()) if electron is None else electron
            few = few & ~electron.noise_free.cpu().numpy()
        if not few.any():  # no pattern to refit (every bright one): the placement alone
            q[~beam] = lattice_placed(b[~beam], q[~beam], tol, weights=w)[0]
            return self._set_positions(out, c, q)
        placed, on, hk, basis = lattice_placed(b[~beam], q[~beam], tol, weights=w, lattices=True)
        q[~beam] = placed
        rows = np.flatnonzero(~beam)
        if not self.edge_placed:
            levels, shift, one_e = self._batch_levels(patterns, c, few, electron)
        for k in np.unique(b[rows[on]]):
            if not few[k]:
                continue
            mine = on & (b[rows] == k)
            G_vectors = basis[mine][0]
            o_whole, G_whole = lattice_on_pattern(measured[k].cpu().numpy(), self._probe_template_fft(), c[k],
                                                  G_vectors, self.disk_radius_px)
            if self.edge_placed:  # the vectors' size (docstring)
                G_whole = G_whole * math.sqrt(abs(np.linalg.det(G_vectors) / np.linalg.det(G_whole)))
            else:
                G_whole = lattice_likelihood(without_spikes(patterns[k].cpu().numpy(), one_e[k]),
                                             self._probe_template_fft(), o_whole, G_whole, self.disk_radius_px,
                                             levels, shift[k], one_e[k])[1]
            # a refit that moves a vector beyond the tolerance that put it on the lattice has left it (noise)
            if np.abs(hk[mine] @ (G_whole - G_vectors)).max() <= tol:
                q[rows[mine]] = hk[mine] @ G_whole
        self._set_positions(out, c, q)

    def _batch_lattice(self, patterns: torch.Tensor, centres: torch.Tensor, out: dict, low_dose: np.ndarray,
                       counted: np.ndarray, electron, maps, fewest: np.ndarray) -> tuple[dict, np.ndarray]:
        """(``out``, (B,) bool: the patterns now on the batch's lattice). A thin crystal at ~1e3 e⁻ sends ~100
        electrons beyond the beam: the network proposes one or two disks per pattern, no lattice (bench_strain's 2 nm
        rows fitted no position). The batch's ``low_dose`` patterns (under ``LOW_DOSE_E[1]``) with a beam and either
        fewer than ``BATCH_LATTICE_OWN_VECTORS`` vectors beside it (too few to show a lattice by themselves) or
        ``fewest`` electrons (``_few_electrons``: too few for its disks to place its own) are summed on their beams;
        where they hold ``BATCH_LATTICE_MIN_E`` electrons together (``counted``, ``_counted``) its vectors
        (``vectors_of_sum``: the network's) fix a lattice (``_sum_lattice``), and each such pattern's own is the
        likeliest near it (``refine.lattice_likelihood`` from ``BATCH_LATTICE_STARTS`` starts), kept where its
        electrons show it (``refine.lattice_evidence`` ≥ ``BATCH_LATTICE_MIN_Z``) and its own vectors show no other
        lattice (``_another_lattice``): its vectors are then the points where the batch shows a disk
        (``refine.weighed_lattice_points``, ``refine.summed_disk_z`` ≥ ``LATTICE_MIN_SNR``) out to
        ``BATCH_LATTICE_REACH`` × the farthest vector on the sum, the beam kept, the ones it had before dropped. Small
        disks too, though the likelihood's flat disk is the plain probe's: a 2 nm crystal's small disks are flat, and
        its patterns had no lattice at all (bench_strain's 20 Å at 200 kV / 2 mrad on 256 px at 1e3 e⁻: 22 → 100 % of
        SrTiO3's positions fitted, 28 → 99 % of GaN's). A thick crystal's few-electron patterns, which have a lattice
        of their own, too (SrTiO3 100 Å at 300 kV / 2.5 mrad on 256 px at 0.0107 Å⁻¹/px, 1e3 e⁻: 41 → 100 % of
        positions fitted, mean |error| e_xx / e_yy 1.35 / 1.39 → 0.80 / 0.57 %; benchmarks/RESULTS.md). A pattern of
        another grain, of film or of vacuum in the same batch shows no such lattice and keeps what it had."""
        B = len(patterns)
        none = np.zeros(B, bool)
        if self.vectors_of_sum is None:
            return out, none
        electron = one_electron(patterns.float()) if electron is None else electron
        b, beam = out["pattern"], self._beam(out)
        lit_beam = np.bincount(b[beam], minlength=B) > 0
        beside = np.bincount(b[~beam], minlength=B)  # each pattern's vectors beside its beam
        own = beside >= BATCH_LATTICE_OWN_VECTORS
        idx = np.flatnonzero(low_dose & lit_beam & ~electron.noise_free.cpu().numpy() & (~own | fewest))
        c = centres.cpu().numpy().astype(np.float64)
        one_e = electron[0].cpu().numpy().astype(np.float64)
        if len(idx) < 2 or counted[idx].sum() < BATCH_LATTICE_MIN_E:
            return out, none
        shift = _beams_to_middle(patterns, c)
        mean, _, G0, _, n_summed, farthest = self._sum_lattice(patterns, centres.dtype, c, shift, idx, counted,
                                                               proposing=beside > 0)
        if G0 is None:
            return out, none
        levels, r = disk_and_ring_levels(mean, self.disk_radius_px), self.disk_radius_px
        found, cb, cq = none.copy(), [], []
        images, origins, bases, shown = self._showing_lattice(patterns, c, idx, G0, levels, shift, one_e)
        # a point's disk is judged (significance, brightness floor) on the mean of the patterns that show the lattice:
        # where a batch crosses a crystal's edge, its vacuum or film patterns in the mean halved the crystal's disks
        # against a vacuum beam brighter than its own (Si [001] 10 nm at 1e4 e⁻ beside as many vacuum positions: 12 of
        # its 20 reflections, 20 alone; benchmarks/RESULTS.md, "A pixel sample that missed the beam; a batch across a
        # crystal's edge")
        if 0 < shown.sum() < len(idx):
            n_summed = int(shown.sum())
            levels = disk_and_ring_levels(_summed_on_beams(patterns, shift, idx[shown]) / n_summed, r)
        if self.edge_scale is not None:  # the size the disks' edges show (``measure_edge_scale``)
            bases = bases * self.edge_scale
        for k, o, Gk in zip(idx[shown], origins[shown], bases[shown]):
            mine = (b == k) & ~beam
            if own[k] and _another_lattice(np.column_stack([out["qx_px"][mine], out["qy_px"][mine]]) - c[k],
                                           out["intensity"][mine], Gk):
                continue  # its own vectors show another grain's lattice: kept
            hk = weighed_lattice_points(o, Gk, images.shape[1:], r, levels, shift[k], one_e[k])[0]
            hk = hk[np.abs(hk).sum(axis=1) > 0]  # the beam is a vector already
            # a vector only where the summed patterns show a disk at LATTICE_MIN_SNR, as a proposal on its pattern's
            # lattice needs: a point's electron above its ring lets it weigh in the likelihood, but off the zone axis
            # most points are dark, and a mean of a few patterns lifts a third of them over one electron by its noise
            # (Si [110] 2° off at 300 kV / 1 mrad / 60 nm, a 2 × 2 scan at 1e3 e⁻: 32 and 38 points, 9 and 8 of them
            # reflections; benchmarks/RESULTS.md, "A beam off the zone axis where the vacuum probe lands")
            # and out to BATCH_LATTICE_REACH × the farthest of the vectors that fixed the lattice: a basis fitted on
            # near disks drifts off the far ones (Si [110] as above, a draw of the detector augmentation: the sum's
            # lattice 4 % small, its far points 2–4 px off at 110 px; 53 vectors on four patterns, 26 of them
            # reflections, 40 and 26 within reach; benchmarks/RESULTS.md, "The batch's lattice within reach")
            q = hk @ Gk  # through the beam: its reference, placed by its edge (``ModelInput.beam_centres``)
            q = q[np.hypot(q[:, 0], q[:, 1]) <= BATCH_LATTICE_REACH * farthest]
            z = summed_disk_z(o + q + shift[k], levels, r, one_e[k], n_summed)
            q, z = q[z >= LATTICE_MIN_SNR], z[z >= LATTICE_MIN_SNR]
            # and as bright as a proposal must be (``evidence.bright_enough``, the truth's floor), on the patterns' mean:
            # a sum shows disks fainter than any one pattern, real but below the floor the vectors are reported to
            # (bench_accuracy's 200 kV / 2 mrad on the model's grid at 3e3 e⁻: 0.29 of the vectors; benchmarks/
            # RESULTS.md, "A low-dose pattern's small disks on their batch's lattice")
            bright = summed_disk_brightness(o + q + shift[k], o + shift[k], levels)
            q = q[bright_enough(bright, z, np.full(len(q), 1.0 + np.clip(bright, 0.0, None).sum()))]
            found[k] = True
            cb.append(np.full(len(q), k))
            cq.append(q)
        if not found.any():
            return out, none
        cb, cq = np.concatenate(cb), np.concatenate(cq)
        spacing = min(np.hypot(*v) for v in (G0[0], G0[1], G0[0] + G0[1], G0[0] - G0[1]))
        contrast = disk_contrast(patterns, centres, cb, c[cb, 0] + cq[:, 0], c[cb, 1] + cq[:, 1], r,
                                 overlapping=np.full(len(cb), spacing < RING_CLEAR_RADII * r), electron=electron,
                                 blur_px=self.inputs.blur_px)
        new = self._new_vectors(c, cb, cq, contrast.snr.cpu().numpy(), contrast.level.cpu().numpy(), maps)
        kept = ~(found[b] & ~beam)
        both = {k: np.concatenate([v[kept], new[k].astype(v.dtype) if k in new else np.zeros(len(cb), v.dtype)])
                for k, v in out.items()}
        order = np.argsort(both["pattern"], kind="stable")  # the batch's vectors stay grouped by pattern
        return {k: v[order] for k, v in both.items()}, found

    def _showing_lattice(self, patterns: torch.Tensor, c: np.ndarray, idx: np.ndarray, G0: np.ndarray,
                         levels: np.ndarray, shift: np.ndarray, one_e: np.ndarray) -> tuple:
        """(the patterns ``idx`` without spikes, each one's likeliest lattice near ``G0`` — origins (K, 2), bases (K, 2, 2)
        px, ``refine.lattice_likelihood`` from ``BATCH_LATTICE_STARTS`` starts —, (K,) whether its electrons show it:
        ``refine.lattice_evidence`` ≥ ``BATCH_LATTICE_MIN_Z``), weighed by the batch's mean ``levels``
        (``refine.disk_and_ring_levels``) onto which ``shift`` (B, 2) moves each pattern; beams ``c``, electrons
        ``one_e`` (B,)."""
        r = self.disk_radius_px
        images = np.stack([without_spikes(patterns[k].cpu().numpy(), one_e[k]) for k in idx])
        origins, bases = lattice_likelihoods(images, self._probe_template_fft(), c[idx],
                                             np.repeat(G0[None], len(idx), 0), r, levels, shift[idx], one_e[idx],
                                             starts=BATCH_LATTICE_STARTS)
        shown = lattice_evidences(images, origins, bases, r, levels, shift[idx], one_e[idx]) >= BATCH_LATTICE_MIN_Z
        return images, origins, bases, shown

    def measure_edge_scale(self, patterns: torch.Tensor, centres: torch.Tensor, electron) -> float | None:
        """Sets and returns ``edge_scale``, the one factor by which every batch of the scan multiplies the lattices
        its few-electron patterns take (``_batch_lattice``), from one batch of it (``patterns``, their beams
        ``centres``; `predict` gives the scan's first, before its workers start, and the next while
        ``edge_scale_unsettled``: the batch held low-dose patterns whose sum showed no lattice, vacuum or film where
        a scan begins off the crystal, so a later batch may show it): the size of the lattice that the
        network's vectors on the sum of its low-dose patterns show (``_sum_lattice``; placed by the disks' edges)
        over the size of the likelihood's lattice of that sum (``refine.lattice_likelihood``: the plain probe's
        correlation, which peaks inward of a disk brighter on its inner side). Disks of every size: a thick crystal's
        small disks are not flat either (bench_accuracy's 200 kV / 2 mrad MgO [001] at 30 nm, 4 px disks, 6 × 6 at 1e3
        e⁻: its batches' lattices 3 % small, 231 of 825 vectors within 1 px; factor 1.031, 853 of 857; at 10 nm 1.009;
        benchmarks/RESULTS.md, "A thick crystal's small disks on their batch's lattice, sized"). None (no factor)
        where the batch holds no such sum or no lattice.
        Why: each pattern's likelihood lattice carries that bias, 1–2 px on 8–9 px disks (bench_accuracy's 6 × 6
        scans at 300 kV / 3.5 mrad, 10 nm, 1e3 e⁻: MgO [001] −2.5 % in scale, F1 0.31); one factor per scan, not one
        per batch: a batch's sum of 32 patterns at 1e3 e⁻ fixes it to ±0.4 % only, a step between batches that
        strain reads (bench_strain's GaN 100 Å on 12 px disks: e_xx 1.03 → 1.33 %; benchmarks/RESULTS.md, "The
        batch's lattice by the disks' edges")."""
        self.edge_scale, self.edge_scale_unsettled = None, False
        if not (self.check_evidence and self.lattice_positions) or self.vectors_of_sum is None:
            return None
        electron = one_electron(patterns.float()) if electron is None else electron
        counted = self._counted(patterns, electron)
        idx = np.flatnonzero(self._low_dose(counted, len(patterns)) & ~electron.noise_free.cpu().numpy())
        self.edge_scale_unsettled = len(idx) > 0  # until a factor is measured below
        if len(idx) < 2 or counted[idx].sum() < BATCH_LATTICE_MIN_E:
            return None
        c = centres.cpu().numpy().astype(np.float64)
        mean, centre, G0, G_vectors, _, _ = self._sum_lattice(patterns, centres.dtype, c,
                                                              _beams_to_middle(patterns, c), idx, counted)
        if G0 is None:
            return None
        one_e = float(np.median(electron[0].cpu().numpy()[idx]))
        G_sum = lattice_likelihoods(mean[None], self._probe_template_fft(), centre[None], G0[None],
                                    self.disk_radius_px, disk_and_ring_levels(mean, self.disk_radius_px),
                                    np.zeros((1, 2)), np.array([one_e]))[1][0]
        if abs(np.linalg.det(G_sum)) > 1e-9:
            self.edge_scale = math.sqrt(abs(np.linalg.det(G_vectors) / np.linalg.det(G_sum)))
            self.edge_scale_unsettled = False
        return self.edge_scale

    def _sum_lattice(self, patterns: torch.Tensor, dtype, c: np.ndarray, shift: np.ndarray, idx: np.ndarray,
                     counted: np.ndarray, proposing: np.ndarray | None = None) -> tuple:
        """(the mean of the patterns ``idx`` moved by ``shift`` onto the detector's middle, its beam's px, the lattice
        basis (2, 2) px that the network's vectors on their sum fix placed on its disks, that basis as the vectors fix
        it, how many patterns the mean holds, the farthest of those vectors from the beam, px), or six None. Tried on
        all of them and, where they show none, on those of them that the network proposed a vector beside the beam on
        (``proposing``, (B,) bool, where given), then on each half in scan order, each try holding
        ``BATCH_LATTICE_MIN_E`` electrons (the lattice of more vectors kept): where a batch crosses a crystal's edge its
        vacuum dilutes the whole sum's disks under the network's threshold, while the crystal's patterns show them — a
        half in scan order where the edge runs between the scan's rows, the proposing ones wherever it runs (the [001]
        envelope at 1e3 e⁻ with `bench_accuracy.py --edge vacuum`, whose every scan row crosses the edge: 0.549 → 0.578,
        the crystal alone 0.598; benchmarks/RESULTS.md, "… a batch across a crystal's edge"). (A half's lattice where the
        whole shows one too weighs its points by fewer patterns: bench_strain's SrTiO3 20 Å at 1e3 e⁻, e_xx 1.05 →
        1.16 %.)"""
        centre = (c[idx] + shift[idx]).mean(axis=0)
        half = len(idx) // 2
        first, second = _summed_on_beams(patterns, shift, idx[:half]), _summed_on_beams(patterns, shift, idx[half:])
        tries = [[(idx, first + second)]]
        if proposing is not None and 2 <= proposing[idx].sum() < len(idx):
            some = idx[proposing[idx]]
            tries.append([(some, _summed_on_beams(patterns, shift, some))])
        for tried in tries + [[(idx[:half], first), (idx[half:], second)]]:
            tried = [(members, total) for members, total in tried
                     if len(members) >= 2 and counted[members].sum() >= BATCH_LATTICE_MIN_E]
            if not tried:
                continue
            sums = np.stack([total for _, total in tried])
            got = self.vectors_of_sum(torch.from_numpy(sums).to(patterns.dtype),
                                      torch.from_numpy(np.repeat(centre[None], len(tried), axis=0)).to(dtype),
                                      summed=True)
            beside = ~self._beam(got)
            best, most = None, MIN_LATTICE_VECTORS - 1
            for n, (members, total) in enumerate(tried):
                q = np.column_stack([got["qx_px"], got["qy_px"]])[beside & (got["pattern"] == n)] - centre
                if len(q) <= most:
                    continue
                _, G, good = fitted_lattices(np.zeros(len(q), int), q, LATTICE_TOL_PX, MIN_LATTICE_VECTORS)
                if len(G) and good[0]:
                    best, most = (members, total, G[0], float(np.hypot(q[:, 0], q[:, 1]).max())), len(q)
            if best is not None:
                members, total, G, farthest = best
                # placed on the sum's disks: a bright pattern (the network's positions were fitted within
                # LATTICE_TOL_PX)
                return (total / len(members), centre,
                        lattice_on_pattern(total, self._probe_template_fft(), centre, G, self.disk_radius_px)[1], G,
                        len(members), farthest)
        return None, None, None, None, None, None

    def _new_vectors(self, c: np.ndarray, cb: np.ndarray, cq: np.ndarray, snr, level, maps) -> dict:
        """Vectors at ``cq`` (N, 2) px from the beams ``c`` of patterns ``cb``, their disks' ``snr`` and ``level``
        (for the intensity measured last), the network's V_g and q_z maps (``maps``) there."""
        vg, qz, cp, dk = maps
        qx, qy = cq[:, 0] * self.dq_invA, cq[:, 1] * self.dq_invA
        mi = np.clip(np.round(cp + qx / dk).astype(int), 0, vg.shape[-2] - 1)
        mj = np.clip(np.round(cp + qy / dk).astype(int), 0, vg.shape[-1] - 1)
        return {"pattern": cb, "qx": qx, "qy": qy, "qx_px": c[cb, 0] + cq[:, 0], "qy_px": c[cb, 1] + cq[:, 1],
                "snr": np.asarray(snr, np.float64), "intensity": vg[cb, mi, mj].cpu().numpy(),
                "qz": qz[cb, mi, mj].cpu().numpy(), "level": np.asarray(level, np.float64)}

    def _batch_levels(self, patterns: torch.Tensor, c: np.ndarray, few: np.ndarray, electron) -> tuple:
        """For ``refine.lattice_likelihood``: (``refine.disk_and_ring_levels`` of the mean of the batch's ``few``
        patterns, each moved so that its beam (``c``) sits on the detector's middle pixel; (B, 2) the shift from each
        pattern's px to that mean's; (B,) one electron of each pattern, ``evidence.one_electron``). Neighbouring scan
        positions show the same reflections: their mean tells which lattice points hold a disk, and how bright,
        where one pattern's few electrons do not (bench_strain's SrTiO3 [001] 60 Å at 1e3 e⁻, fitted from the true
        lattice: the pattern's own brightness gave mean |error| 1.13 / 1.06 / 0.76 % / 0.49° against 0.79 / 0.77 /
        0.55 % / 0.28° from a batch of 32)."""
        one_e = electron[0].cpu().numpy()
        shift = _beams_to_middle(patterns, c)
        idx = np.flatnonzero(few)
        mean = _summed_on_beams(patterns, shift, idx) / len(idx)
        return disk_and_ring_levels(mean, self.disk_radius_px), shift.astype(float), one_e

    def _set_positions(self, out: dict, c: np.ndarray, q: np.ndarray) -> None:
        """``out``'s positions (detector px and Å⁻¹) set from ``q`` (N, 2), px from each pattern's beam ``c``."""
        b = out["pattern"]
        out["qx_px"], out["qy_px"] = c[b, 0] + q[:, 0], c[b, 1] + q[:, 1]
        out["qx"], out["qy"] = q[:, 0] * self.dq_invA, q[:, 1] * self.dq_invA

    def _probe_template_fft(self) -> np.ndarray:
        """The probe's ``refine.probe_template_fft`` (made once)."""
        if self._whole_pattern_template is None:
            self._whole_pattern_template = probe_template_fft(self.inputs.detector_probe, self.inputs.finder.c)
        return self._whole_pattern_template

    def _few_electrons(self, counted: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) bool: patterns of so few ``counted`` electrons (``_counted``) that each disk's few place it to a pixel
        or so: their lattice is refitted to the whole pattern (``_place_on_lattice``). Under ``evidence.LOW_DOSE_E[1]``
        where the disks touch (fitted to the likelihood of all the pattern's electrons): on bench_strain's SrTiO3 [001]
        60 Å draws at 3e3 and 1e4 e⁻ (~5e3 and ~2e4 electrons with the background) that fit took mean |error| e_xx
        from 0.69 / 0.43 % to 0.53 / 0.34 %, while at 1e5 e⁻ it doubled it (0.19 → 0.36 %): there each disk's own
        edge is sharper than the likelihood's flat disk (benchmarks/RESULTS.md, "A low-dose lattice by its
        likelihood"). Small disks too, which keep their vectors' size where they are not on their batch's lattice
        (``_batch_lattice``): under ``LOW_DOSE_E[0]`` only, a thick crystal's small disks at 1e3 e⁻ with the detector's
        background (2e3–2e4 electrons) kept their own vectors, each placed from the network's proposal, 0.4–0.6 px
        inward (bench_accuracy's [001] envelope at 1e3 e⁻: F1 0.516 → 0.60; benchmarks/RESULTS.md, "A low-dose
        pattern's small disks on their batch's lattice"). Large clear disks under ``LOW_DOSE_E[0]`` only: their
        batch's lattice lost the rectangular set's 300 kV / 3.5 mrad / 10 nm at 1e3 (F1 0.076 → 0.041)."""
        if counted is None or not (self.lattice_positions and self.corr_power is not None):
            return np.zeros(n, bool)
        return counted < LOW_DOSE_E[0 if self.may_be_clear else 1]

    def _lit(self, patterns: torch.Tensor, centres: torch.Tensor, electron) -> np.ndarray:
        """(B,) whether each pattern's direct beam, where the beam finder put it, passes the contrast test of
        any disk (``evidence.MIN_SNR``): a detector read without beam (noise only) shows no disks, though a few
        of its noise blobs pass that test (512 px at 1e3 e⁻: 0.75 false vectors per pattern, its beams at 0–3.8σ;
        benchmarks/RESULTS.md). (At 6σ thick crystals' faint beams at 1e3 e⁻ failed: 80 kV / 1 mrad / 60 nm.)"""
        c = centres.cpu().numpy().astype(np.float64)
        snr = disk_contrast(patterns, centres, np.arange(len(c)), c[:, 0], c[:, 1], self.disk_radius_px,
                            electron=electron).snr
        lit = snr.cpu().numpy() >= MIN_SNR
        if self.saturation is not None:  # a beam at the detector's ceiling is there, whatever its contrast:
            # against its own bright halo a saturated beam stood out by 2.1–2.5 σ on a real precession scan
            i = torch.arange(patterns.shape[-2], device=patterns.device)[None, :, None].float()
            j = torch.arange(patterns.shape[-1], device=patterns.device)[None, None, :].float()
            near = torch.hypot(i - centres[:, 0, None, None].float(), j - centres[:, 1, None, None].float()) <= \
                max(self.disk_radius_px, 2.0)
            at_top = ((patterns >= self.saturation * (1 - 1e-6)) & near).sum(dim=(1, 2))
            lit |= (at_top >= SATURATED_MIN_PX).cpu().numpy()
        return lit

    def with_missed_beams(self, patterns: torch.Tensor, centres: torch.Tensor, out: dict, electron, vg: torch.Tensor,
                          qz: torch.Tensor, center_px: int) -> dict:
        """``out`` with the direct beam added, at ``centres``, to each pattern whose beam the network did not propose
        but the pattern shows (``_lit``): the beam is always a vector (``__call__``). A large beam, saturated and
        cut by the detector's edge, drew the network's peaks onto its rim, 3.4–4.3 model px from its centre, and
        none at it: `predict` lost the beam of 5 of 8 patterns of a real Merlin scan without a crystal, and of
        all 8 of the same scan cropped to 128 rows (benchmarks/RESULTS.md, "A beam the network did not propose").
        Its V_g and q_z are the network's at the model grid's centre. Unchecked vectors (``check_evidence`` False)
        stay the network's own."""
        if not self.check_evidence:
            return out
        missed = np.ones(len(patterns), bool)
        missed[out["pattern"][self._beam(out)]] = False
        if not missed.any():
            return out
        k = np.flatnonzero(missed & self._lit(patterns, centres, electron))
        if not len(k):
            return out
        c = centres[k].cpu().numpy().astype(np.float64)
        add = {"pattern": k, "qx": np.zeros(len(k)), "qy": np.zeros(len(k)), "qx_px": c[:, 0], "qy_px": c[:, 1],
               "intensity": peaks.direct_beam_vg(vg[k], center_px).cpu().numpy(),
               "qz": qz[k, center_px, center_px].cpu().numpy()}
        both = {}
        for key, v in out.items():  # flags (weak, unsure) False for the beams added
            v = np.asarray(v)
            both[key] = np.concatenate([v, np.asarray(add[key], v.dtype) if key in add else np.zeros(len(k), v.dtype)])
        order = np.argsort(both["pattern"], kind="stable")
        return {key: v[order] for key, v in both.items()}

    def _friedel_pairs(self, out: dict, keep: np.ndarray, n_patterns: int) -> np.ndarray:
        """(n_patterns,) whether at least ``FRIEDEL_LIT_PAIRS`` pairs of a pattern's ``keep`` vectors lie at ±g about
        its beam within the network's uncertainty: a crystal's pattern whose transmitted beam is nearly extinct
        (Si [110] at 80 kV, 10 nm: 0.3 % of the electrons, each {111} disk 30 %) shows them; a detector's noise
        without beam, whose "beam" is wherever the finder stopped, does not."""
        b = out["pattern"]
        q = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        mine = keep & ~self._beam(out)
        pairs = np.zeros(n_patterns, int)
        for k in np.unique(b[mine]):
            qk = q[mine & (b == k)]
            partner = np.hypot(qk[:, None, 0] + qk[None, :, 0], qk[:, None, 1] + qk[None, :, 1]) <= self.search_px
            pairs[k] = int(partner.any(axis=1).sum()) // 2
        return pairs >= FRIEDEL_LIT_PAIRS

    def thresholds(self, patterns: torch.Tensor, threshold: float, electron=None):
        """The network's V_g threshold for each of ``patterns`` above which a vector needs no lattice: lower
        where few electrons make the disks faint (``evidence.peak_thresholds``), where the pattern's evidence
        judges the vectors and its disks are small (the ring test); else ``threshold``."""
        if not (self.check_evidence and self.small_disks):
            return threshold
        return peak_thresholds(patterns.float(), threshold, electron)

    def proposal_threshold(self, threshold: float) -> float:
        """The network's V_g threshold for proposals: ``evidence.LOW_DOSE_THRESHOLD_FACTOR`` × ``threshold``
        where the evidence judges small disks (``__call__``: weak and unsure vectors), else ``threshold``."""
        return threshold * LOW_DOSE_THRESHOLD_FACTOR if self.check_evidence and self.small_disks else threshold

    def flags(self, pk: dict, vg, center_px: int, threshold: float, ramp) -> dict:
        """``weak`` and ``unsure`` (``__call__``) of the peaks ``pk`` found on ``vg`` at
        ``proposal_threshold(threshold)``, given the ramp ``thresholds(...)``."""
        if self.proposal_threshold(threshold) == threshold:
            return {}
        return {"weak": peaks.below_threshold(pk, vg, center_px, threshold),
                "unsure": peaks.below_threshold(pk, vg, center_px, ramp)}

    @staticmethod
    def _placed(template, patterns, b, x, y, moved) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) with the vectors that found their disk (``moved``) placed by ``template``'s sub-pixel fit."""
        x, y = x.clone(), y.clone()
        if bool(moved.any()):
            x[moved], y[moved] = template.refine(patterns, b[moved], x[moved], y[moved])
        return x, y

    def _no_lattice(self, out: dict, kept: np.ndarray, tol_px: float, enough, folded: bool = False) -> np.ndarray:
        """Per vector: whether fewer than ``enough`` (a count, or a function of the pattern's number of kept
        non-beam vectors) of its pattern's ``kept`` non-beam vectors lie within ``tol_px`` on one lattice
        through the beam (``evidence.lattice_support``); ``folded``: counted as ±g pairs, each pair once
        (``evidence.friedel_folded``)."""
        b = out["pattern"]
        q_px = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        bk, qk = (friedel_folded(b[kept], q_px[kept], tol_px) if folded else (b[kept], q_px[kept]))
        support = lattice_support_many(bk, qk, tol_px, enough)
        n = int(b.max()) + 1 if len(b) else 0
        per_pattern = np.zeros(n, int)
        per_pattern[list(support)] = list(support.values())
        counts = np.bincount(bk, minlength=n)
        need = enough(counts) if callable(enough) else np.full(n, enough)
        return per_pattern[b] < need[b]

    def _on_lattice(self, out: dict, tol_px: float) -> np.ndarray:
        """Per vector: whether it lies on the lattice of its pattern's vectors that are neither unsure nor the
        beam (``evidence.lattice_members_many``)."""
        b = out["pattern"]
        q_px = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        strong = ~out["unsure"] & ~self._beam(out)
        ok = np.zeros(len(b), bool)
        unsure = out["unsure"]
        ok[unsure] = lattice_members_many(b[strong], q_px[strong], b[unsure], q_px[unsure], tol_px)
        return ok

    def _lattice_members(self, out: dict, tol_px: float) -> np.ndarray:
        """Per vector: whether it lies within ``tol_px`` on the best lattice of its pattern's non-beam vectors
        (``evidence.lattice_members_many``, at least ``MIN_LATTICE_VECTORS`` of them on it)."""
        b = out["pattern"]
        q_px = np.column_stack([out["qx"], out["qy"]]) / self.dq_invA
        mine = ~self._beam(out)
        ok = np.zeros(len(b), bool)
        ok[mine] = lattice_members_many(b[mine], q_px[mine], b[mine], q_px[mine], tol_px)
        return ok

    def _beam(self, out: dict) -> np.ndarray:
        return np.hypot(out["qx"], out["qy"]) < 1.5 * self.dk_invA

    def _locate_clear(self, patterns: torch.Tensor, b, x, y, snr: np.ndarray):
        """(x, y, moved): the integer positions of large disks clear of their neighbours, searched for within
        ``clear_search_px``, on the edge-weighted correlation. A bright one (``snr`` ≥ ``refine.CLIP_MIN_SNR``, or
        unchecked) on its pattern clipped at the disk's median (``SubpixelTemplate.locate``), then up the
        unclipped correlation to its nearest maximum (``refine.EDGE_CLIMB_PX``)."""
        bright = torch.as_tensor(~(snr < CLIP_MIN_SNR), device=patterns.device)
        x, y, moved = x.clone(), y.clone(), torch.zeros(len(b), dtype=torch.bool, device=patterns.device)
        for m, clip in ((bright, True), (~bright, False)):
            if bool(m.any()):
                x[m], y[m], moved[m] = self.edge_template.locate(patterns, b[m], x[m], y[m], self.clear_search_px,
                                                                 clip=clip)
        climb = bright & moved
        if bool(climb.any()):
            x[climb], y[climb], _ = self.edge_template.climb(patterns, b[climb], x[climb], y[climb], EDGE_CLIMB_PX)
        return x, y, moved

    def _counted(self, patterns: torch.Tensor, electron) -> np.ndarray | None:
        """(B,) the electrons each pattern holds (``evidence.pattern_electrons``); None where the evidence is not
        checked (their disks' SNR is unknown)."""
        return pattern_electrons(patterns.float(), electron).cpu().numpy() if self.check_evidence else None

    def _low_dose(self, counted: np.ndarray | None, n: int) -> np.ndarray:
        """(n,) bool: patterns of fewer than ``evidence.LOW_DOSE_E[1]`` ``counted`` electrons (``_counted``; none
        where not counted)."""
        return np.zeros(n, bool) if counted is None else counted < LOW_DOSE_E[1]

    def _refine(self, patterns: torch.Tensor, c: np.ndarray, out: dict, which: np.ndarray, clear: np.ndarray,
                low_dose: np.ndarray, summed: bool = False) -> None:
        """Move the vectors ``which`` onto their disks' correlation maxima in the measured pattern (in place);
        ``clear`` (one per vector of ``which``): large disks clear of their neighbours, searched for and
        placed on the edge-weighted correlation (``refine``); ``low_dose`` (one per pattern): where a small disk
        climbs to its edge only from ``refine.LOW_DOSE_EDGE_CLIMB_MIN_SNR`` (through a camera's spread from
        ``refine.SPREAD_EDGE_CLIMB_MIN_SNR``, a faint one too; ``summed``, a sum of faint patterns, from
        ``refine.SUM_EDGE_CLIMB_MIN_SNR``)."""
        dev = patterns.device
        b = torch.as_tensor(out["pattern"][which], device=dev)
        x = torch.as_tensor(out["qx_px"][which], device=dev, dtype=torch.float32)
        y = torch.as_tensor(out["qy_px"][which], device=dev, dtype=torch.float32)
        clear = torch.as_tensor(clear, device=dev)
        if bool(clear.any()):
            snr = out["snr"][which][clear.cpu().numpy()]
            xe, ye, moved = self._locate_clear(patterns, b[clear], x[clear], y[clear], snr)
            x[clear], y[clear] = self._placed(self.edge_template, patterns, b[clear], xe, ye, moved)
        rest = ~clear
        if bool(rest.any()):  # on the beam finder's correlation with the probe
            finder = self.inputs.finder
            xc = finder.xcorr(patterns) if self.corr_power == 1.0 else \
                hybrid_xcorr(patterns, finder.kernel, self.corr_power)
            search = self.small_search_px if self.small_disks else self.search_px  # small disks within their radius
            xp, yp, moved = refine_positions(xc, finder.c, b[rest], x[rest], y[rest], search)
            if self.small_disks:  # by their edges, the faint ones by the whole disk (refine.PLAIN_BELOW_SNR)
                snr = out["snr"][which][rest.cpu().numpy()]
                # through a camera's spread a low-dose pattern's disks, the faint ones too, by their (deblurred) edges,
                # climbing from SPREAD_EDGE_CLIMB_MIN_SNR up to SPREAD_EDGE_CLIMB_PX: the plain correlation's maximum,
                # which follows a disk's brighter inner side, then lies beyond the sub-pixel fit's reach
                spread = self.inputs.blur_px > 0
                low = low_dose[out["pattern"][which][rest.cpu().numpy()]]
                faint = torch.as_tensor(snr < np.where(low & spread, 0.0, PLAIN_BELOW_SNR), device=dev)
                # the bright ones first up to their edge's nearest maximum (refine.EDGE_CLIMB_PX); NaN: unchecked
                low_dose_climb = SPREAD_EDGE_CLIMB_MIN_SNR if spread else \
                    SUM_EDGE_CLIMB_MIN_SNR if summed else LOW_DOSE_EDGE_CLIMB_MIN_SNR
                climb_snr = np.where(low, low_dose_climb, EDGE_CLIMB_MIN_SNR)
                climb = moved & torch.as_tensor(~(snr < climb_snr), device=dev)
                near = torch.as_tensor(low & spread, device=dev)
                for part, steps in ((climb & near, SPREAD_EDGE_CLIMB_PX), (climb & ~near, EDGE_CLIMB_PX)):
                    if bool(part.any()):
                        xp[part], yp[part], _ = self.edge_template.climb(patterns, b[rest][part], xp[part], yp[part],
                                                                          steps)
                xp, yp = self._placed(self.edge_template, patterns, b[rest], xp, yp, moved & ~faint)
                x[rest], y[rest] = self._placed(self.plain_template, patterns, b[rest], xp, yp, moved & faint)
            else:
                x[rest], y[rest] = self._placed(self.plain_template, patterns, b[rest], xp, yp, moved)
        qx_px, qy_px = out["qx_px"].copy(), out["qy_px"].copy()
        qx_px[which], qy_px[which] = x.cpu().numpy(), y.cpu().numpy()
        out["qx_px"], out["qy_px"] = qx_px, qy_px
        bb = out["pattern"]
        out["qx"], out["qy"] = (qx_px - c[bb, 0]) * self.dq_invA, (qy_px - c[bb, 1]) * self.dq_invA


class NetworkDetector:
    """The network on ``ModelInput``'s grid, V_g peaks above ``threshold`` × the direct beam's (for small
    disks down to a quarter of it, ``MeasuredPattern.proposal_threshold``), then checked and placed on the
    measured pattern (``MeasuredPattern``: what only the lower threshold proposes needs more evidence)."""

    def __init__(self, model, geometry, inputs: ModelInput, q_pixel_size_invA: float, *, threshold: float,
                 min_spacing_px: float, device: str = "cpu", use_bf16: bool = False, check_evidence: bool = True,
                 corr_power: float | None = DEFAULT_CORR_POWER, lattice_positions: bool = True,
                 view_pixel_invA: float | None = None, saturation: float | None = None):
        """``view_pixel_invA``: the calibration the patterns are shown and checked at (``inputs`` built with
        it; ``model_input.view_pixel_invA``) when it is not ``q_pixel_size_invA``: the vectors are reported
        in the true Å⁻¹ and without q_z, which the network gave for a pattern of another scale. ``saturation``:
        the detector's ceiling where the scan's beams reach it (``probe_synth.saturation_level``), or None."""
        if isinstance(model, torch.nn.Module) and device == "cpu":
            # oneDNN runs convolutions faster in NHWC; activations follow the weights' layout
            model = model.to(memory_format=torch.channels_last)
        self.model, self.inputs = model, inputs
        self.center_px, self.dk_invA = geometry.center_px, geometry.dk_invA
        self.true_dq_invA = float(q_pixel_size_invA)
        self.dq_invA = float(view_pixel_invA or q_pixel_size_invA)
        self.threshold, self.min_spacing_px = threshold, min_spacing_px
        self.device_type = "cuda" if str(device).startswith("cuda") else "cpu"
        self.use_bf16 = use_bf16
        self.measured = MeasuredPattern(inputs, self.dq_invA, self.dk_invA, check_evidence=check_evidence,
                                        corr_power=corr_power, device=device, lattice_positions=lattice_positions,
                                        saturation=saturation)
        self.measured.vectors_of_sum = self  # the sum of a batch's faint patterns (``MeasuredPattern._batch_lattice``)

    def measure_edge_scale(self, patterns: torch.Tensor, centres: torch.Tensor, beams: torch.Tensor) -> float | None:
        """``MeasuredPattern.measure_edge_scale`` of one batch (the network's view centred on ``centres``, the
        patterns measured from ``beams``, as ``__call__`` takes them)."""
        electron = self.inputs.electron(patterns) if self.measured.check_evidence else None
        return self.measured.measure_edge_scale(patterns, beams, electron)

    @property
    def edge_scale_unsettled(self) -> bool:
        """``MeasuredPattern.edge_scale_unsettled``: the last batch measured held low-dose patterns but no factor."""
        return self.measured.edge_scale_unsettled

    def __call__(self, patterns: torch.Tensor, centres: torch.Tensor, beams: torch.Tensor | None = None,
                 summed: bool = False) -> dict[str, np.ndarray]:
        """Vectors of a batch: the network sees each pattern centred on ``centres`` (its view, as in training);
        the proposals are checked, measured and referenced on the pattern from ``beams`` (default ``centres``:
        where the direct beam is, ``ModelInput.beam_centres``). ``summed``: sums of a batch's faint patterns
        (``MeasuredPattern.__call__``)."""
        cp, dk = self.center_px, self.dk_invA
        pr, cb = self.inputs(patterns, centres)
        electron = self.inputs.electron(patterns) if self.measured.check_evidence else None
        ramp = self.measured.thresholds(patterns, self.threshold, electron)
        with torch.inference_mode(), torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=self.use_bf16):
            vg, qz = self.model(pr, cb)
            pk = peaks.find_peaks(vg.float(), qz.float(), center_px=cp,
                                  threshold=self.measured.proposal_threshold(self.threshold),
                                  min_spacing_px=self.min_spacing_px)
        qx, qy = (pk["qx_px"] - cp) * dk, (pk["qy_px"] - cp) * dk
        b = pk["pattern"]
        c = centres.cpu().numpy().astype(np.float64)
        beams = centres if beams is None else beams
        bm = beams.cpu().numpy().astype(np.float64)
        x, y = c[b, 0] + qx / self.dq_invA, c[b, 1] + qy / self.dq_invA  # detector px
        out = _on_detector({"pattern": b, "qx": (x - bm[b, 0]) * self.dq_invA, "qy": (y - bm[b, 1]) * self.dq_invA,
                            "qx_px": x, "qy_px": y, "intensity": pk["intensity"], "qz": pk["qz"],
                            **self.measured.flags(pk, vg, cp, self.threshold, ramp)}, patterns.shape[-2:])
        out = _one_per_disk(out, self.measured.disk_radius_px, self.measured._beam(out))
        out = self.measured.with_missed_beams(patterns, beams, out, electron, vg.float(), qz.float(), cp)
        kept = self.measured(patterns, beams, out, electron, maps=(vg.float(), qz.float(), cp, dk), summed=summed)
        if self.dq_invA != self.true_dq_invA:
            f = self.true_dq_invA / self.dq_invA
            kept["qx"], kept["qy"] = kept["qx"] * f, kept["qy"] * f
            kept["qz"] = np.full(len(kept["qx"]), np.nan)
        return kept


def _another_lattice(q_px: np.ndarray, intensity: np.ndarray, G: np.ndarray) -> bool:
    """Whether a pattern's vectors beside its beam (``q_px`` (N, 2), px from the beam) show a lattice of their own
    beyond chance (`strain`'s test: ``analysis.lattice.find_basis``, ``significant``, at ``INDEX_TOLERANCE``) on which
    lattice ``G`` (2, 2) px through the beam does not index most of them: another grain's pattern (a random vector
    indexes with p0 ≈ 0.07–0.08, a crystal's placed to a pixel or two nearly always)."""
    own, n = find_basis(q_px, intensity, INDEX_TOLERANCE)
    if own is None or not significant(n, len(q_px), own, INDEX_TOLERANCE):
        return False
    frac = q_px @ np.linalg.inv(G)
    on = np.hypot(*((frac - np.round(frac)) @ G).T) < INDEX_TOLERANCE * np.hypot(*G).min()
    return 2 * int(on.sum()) <= len(q_px)


def _beams_to_middle(patterns: torch.Tensor, c: np.ndarray) -> np.ndarray:
    """(B, 2) int: the whole-pixel shift that moves each pattern's beam (``c``, px) onto the detector's middle pixel."""
    middle = np.array([patterns.shape[1] // 2, patterns.shape[2] // 2])
    return middle - np.round(c).astype(int)


def _summed_on_beams(patterns: torch.Tensor, shift: np.ndarray, members) -> np.ndarray:
    """The sum (float64, a running one: one pattern's memory) of the patterns ``members``, each moved by ``shift``
    (``_beams_to_middle``): neighbouring scan positions' disks on one another."""
    return sum(np.roll(patterns[k].cpu().numpy().astype(np.float64), tuple(shift[k]), axis=(0, 1)) for k in members)


def _one_per_disk(out: dict, radius_px: float, beam: np.ndarray) -> dict:
    """The network's proposals with those of one pattern closer than a disk's radius (detector px) merged into the
    strongest of them, at their V_g-weighted mean position: two disks' centres are a radius apart only where each
    half covers the other. A large disk of a thick crystal shown to the network at a coarser pitch (its inner
    contrast a ring or a crescent) drew two peaks 3 model px apart, each 5 px off its centre (MgO [001], 300 kV /
    3.5 mrad / 60 nm, 18 px disks on 256 px at 0.0107 Å⁻¹/px); the pair then read as touching disks, kept the
    network's positions, fit no lattice and was dropped (benchmarks/RESULTS.md, "Two peaks on one large disk").
    The direct beam is left as it is."""
    n = len(out["pattern"])
    merged_into = np.arange(n)
    idx = np.flatnonzero(~beam)
    idx = idx[np.lexsort((-np.asarray(out["intensity"], float)[idx], out["pattern"][idx]))]  # strongest first
    if len(idx) < 2:
        return out
    # every pattern's proposals at once, padded to the most of any (NaN: no pair), strongest first in each row
    starts = np.r_[True, np.diff(out["pattern"][idx]) != 0]
    first, row = np.flatnonzero(starts), np.cumsum(starts) - 1
    rank = np.arange(len(idx)) - first[row]
    slot = np.full((len(first), rank.max() + 1), -1)
    slot[row, rank] = idx
    d2 = np.zeros(slot.shape + slot.shape[1:])
    for col in ("qx_px", "qy_px"):
        c = np.full(slot.shape, np.nan)
        c[row, rank] = out[col][idx]
        d = c[:, :, None] - c[:, None, :]
        d2 += d * d
    close = np.triu(d2 < radius_px ** 2, k=1)
    for g, a in zip(*np.nonzero(close.any(axis=2))):  # in order: each takes the weaker ones not yet taken
        if merged_into[slot[g, a]] == slot[g, a]:
            near = slot[g][close[g, a]]
            merged_into[near[merged_into[near] == near]] = slot[g, a]
    if (merged_into == np.arange(n)).all():
        return out
    out = {k: np.array(v, copy=True) for k, v in out.items()}
    w = np.asarray(out["intensity"], float)
    for k in np.unique(merged_into[merged_into != np.arange(n)]):
        group = np.flatnonzero(merged_into == k)
        for col in ("qx", "qy", "qx_px", "qy_px"):
            out[col][k] = np.average(out[col][group], weights=w[group])
    keep = merged_into == np.arange(n)
    return {k: v[keep] for k, v in out.items()}


# Two vectors of one pattern closer than this (detector px) after the sub-pixel fit are one disk measured twice.
SAME_POSITION_PX = 0.05


def _one_per_position(out: dict) -> dict:
    """``out`` with each pattern's vectors that ended on one position (``SAME_POSITION_PX``) reported once, the one of
    the highest V_g (``intensity`` here, where given): two proposals more than a disk's radius apart
    (``_one_per_disk``) can climb to one correlation maximum, and were then written twice (a scan whose dark level
    was over-subtracted: 70 of 972 rows)."""
    strength = np.asarray(out["intensity"], float) if "intensity" in out else np.zeros(len(out["pattern"]))
    order = np.lexsort((-strength, out["qy_px"], out["qx_px"], out["pattern"]))
    b, x, y = out["pattern"][order], out["qx_px"][order], out["qy_px"][order]
    same = np.zeros(len(order), bool)
    same[1:] = (b[1:] == b[:-1]) & (np.hypot(x[1:] - x[:-1], y[1:] - y[:-1]) < SAME_POSITION_PX)
    if not same.any():
        return out
    drop = np.zeros(len(order), bool)
    drop[order[same]] = True  # (sorted by position, the stronger first: a vector is compared with the one before)
    return {k: v[~drop] for k, v in out.items()}


def _disk_brightness(contrast) -> np.ndarray:
    """``contrast``'s brightness of a disk its pattern's lattice predicts (numpy)."""
    b = contrast.brightness if contrast.disk_brightness is None else contrast.disk_brightness
    return b.cpu().numpy()


def _on_detector(out: dict, shape) -> dict:
    """The network's vectors whose position lies on the detector: beyond it the model grid holds the pattern's
    mirror image (``model_input.resample``), whose peaks are no reflections of this pattern."""
    x, y = out["qx_px"], out["qy_px"]
    on = (x >= 0) & (x <= shape[0] - 1) & (y >= 0) & (y <= shape[1] - 1)
    return out if on.all() else {k: v[on] for k, v in out.items()}


class ClassicalDetector:
    """py4DSTEM disk detection with the vacuum probe's kernel (made once)."""

    def __init__(self, probe: np.ndarray, settings: dict | None, q_pixel_size_invA: float):
        self.probe, self.settings = probe, settings
        self.kernel = classical.make_kernel(probe, classical.settings_from(settings))
        self.dq_invA = float(q_pixel_size_invA)

    def __call__(self, patterns: torch.Tensor, centres: torch.Tensor, beams: torch.Tensor | None = None
                 ) -> dict[str, np.ndarray]:
        """py4DSTEM's vectors of a batch, referenced to ``beams`` (default ``centres``)."""
        df = classical.find_disks(patterns.cpu().numpy(), self.probe, self.settings, kernel=self.kernel)
        b = df["pattern"].to_numpy(dtype=int)
        px, py = df["qx_px"].to_numpy(np.float64), df["qy_px"].to_numpy(np.float64)
        c = (centres if beams is None else beams).cpu().numpy().astype(np.float64)
        return {"pattern": b, "qx": (px - c[b, 0]) * self.dq_invA, "qy": (py - c[b, 1]) * self.dq_invA,
                "qx_px": px, "qy_px": py, "intensity": df["intensity"].to_numpy(np.float64),
                "vg": np.full(len(df), np.nan), "qz": np.full(len(df), np.nan), "snr": np.full(len(df), np.nan)}
