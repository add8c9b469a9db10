"""``fourdcrystal predict``: Bragg vectors for every pattern of a 4D-STEM datacube.

Probe: a vacuum probe file (``--probe``), the mean of vacuum scan positions (``--probe-from-region``),
or, with neither, a synthetic probe measured on the scan's own bright-field disk
(fourdcrystal.inference.probe_synth); summary.json and index.html say which.
Pipeline per batch of scan positions (the cube is streamed, never loaded whole):
  read patterns -> find the direct beam (cross-correlation with the vacuum probe, per pattern or
  once from the mean pattern) -> resample bilinearly onto the model's detector grid (pitch dk_invA,
  beam on the centre pixel) -> network -> V_g peaks (fourdcrystal.inference.peaks) -> back to Å⁻¹ and to the
  input's pixel coordinates -> kept where the pattern shows a disk, measured on it, and placed on the
  pattern's least-squares lattice (``detectors.MeasuredPattern``; ``--measured-positions``: not placed).
Peak settings: the relative V_g threshold and the non-maximum-suppression spacing come from the
command line, else from the model file (``meta["peak_settings"]``, if a distributor stamped the
values tuned by ``evaluate``), else peaks.DEFAULT_THRESHOLD / DEFAULT_MIN_SPACING_PX (= the config
defaults). The workflow's tuned values are in results/evaluation/metrics.json
(``network_peak_settings``); rule scan_demo uses them.
Speed (CPU): everything runs on whole batches (beam finding by one batched FFT, resampling by one
grid_sample, peaks by shifted-view maxima and sparse gathers); the weights are put in channels_last
(oneDNN's faster conv layout), the loop runs under torch.inference_mode, in fp32 unless bf16 is the
faster choice (``auto_bf16``). On Linux CPUs the batches are detected in forked worker processes of one
thread each, one per torch thread (``detection_workers``, ``--workers``): the checks after the network are
serial numpy, so one process leaves the other cores idle. benchmarks/RESULTS.md has the split between
network and pipeline.
Intensity scaling (``ModelInput``): the model was trained on probe-max = 1 data with the CBED on the
probe's scale, so the resampled probe is divided by its maximum and every CBED is scaled to the
probe's total intensity (which also removes beam-current drift across the scan).
Outputs (published together by one rename, so a failed run leaves none): bragg_vectors.parquet,
bragg_vector_map.npy/.png, braggvectors.h5 (py4DSTEM BraggVectors, reopened by py4DSTEM.read),
summary.json and index.html (patterns across the scan with their vectors, the map, the settings).
Start-up: py4DSTEM, pandas and matplotlib are not imported unless ``--baseline classical`` runs.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fourdcrystal.inference import peaks
from fourdcrystal.atomic import atomic_path, check_output_folder
from fourdcrystal.cli import number
from fourdcrystal.scan_region import check_region, parse_region
from fourdcrystal.inference.bad_pixels import find_bad_pixels, read_mask
from fourdcrystal.inference.descan import fit_descan, moved_back, relative_shifts
from fourdcrystal.inference.dark_level import check_given, exact_dark_level, floor_note, probe_floor
from fourdcrystal.inference.datacube_io import MIN_PATTERN_PX, Cube, open_datacube, open_probe
from fourdcrystal.errors import UserError
from fourdcrystal.inference.detectors import DEFAULT_BATCH, ClassicalDetector, NetworkDetector, auto_bf16
from fourdcrystal.inference.evidence import (clipped_read_noise, one_electron, read_noise, subtracted_floor,
                                             with_floor_restored)
from fourdcrystal.inference.model_input import ModelInput, largest_shown_disk_px, probe_radius_px, view_pixel_invA
from fourdcrystal.inference.calibration import DISK_CALIBRATION_TOLERANCE, invA_per_px_from_disk
from fourdcrystal.inference.probe_synth import (check_given_probe, given_probe_size_note, measure_disk, probe_from_scan,
                                                 sample_indices, sample_patterns, saturation_level, symmetry_centre)
from fourdcrystal.inference.writers import VectorWriter, write_index

log = logging.getLogger("fourdcrystal.inference.predict")

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "data" / "pretrained.pt"


# --- model -----------------------------------------------------------------------------------
def resolve_model(path: str | None) -> Path:
    if path is None:
        if not DEFAULT_MODEL.is_file():
            raise UserError(f"no --model given and the pretrained default {DEFAULT_MODEL} is not installed",
                            "pass --model results/model/model.pt (train one with `snakemake results/model/model.pt`)")
        return DEFAULT_MODEL
    return Path(path)


def load_model(path: str | None, device: str):
    from fourdcrystal.learning.model import load_checkpoint

    return load_checkpoint(resolve_model(path), map_location=device)


def peak_settings(meta: dict | None, threshold: float | None = None, min_spacing_px: float | None = None) -> dict:
    """Resolve the peak settings: explicit value > model file meta["peak_settings"] > bragg defaults."""
    stamped = (meta or {}).get("peak_settings") or {}
    # (the schema defaults are looked up only when needed: parsing the schema is start-up time)
    thr = threshold if threshold is not None else stamped.get("peak_threshold")
    thr = peaks.DEFAULT_THRESHOLD if thr is None else thr
    sp = min_spacing_px if min_spacing_px is not None else stamped.get("min_spacing_px")
    sp = peaks.DEFAULT_MIN_SPACING_PX if sp is None else sp
    if not 0 < float(thr) < 1:
        raise UserError(f"peak threshold {thr} is not in (0, 1)", "pass --threshold as a fraction of the direct beam's V_g, e.g. 0.02")
    if float(sp) < 0:
        raise UserError(f"minimum peak spacing {sp} px is negative", "pass --min-spacing >= 0 (pixels of the model grid)")
    return {"peak_threshold": float(thr), "min_spacing_px": float(sp)}


def parse_scan_shape(text: str) -> tuple[int, int]:
    """'RXxRY' (or 'RX,RY') -> (RX, RY)."""
    try:
        rx, ry = text.lower().replace(",", "x").split("x")
        return int(rx), int(ry)
    except ValueError:
        raise UserError(f"--scan-shape '{text}' is not of the form RXxRY", "give the scan's rows and columns, "
                        "e.g. --scan-shape 64x64") from None


# --- the prediction loop -------------------------------------------------------------------------
def predict_cube(cube: Cube, probe: np.ndarray | None, model, geometry, q_pixel_size_invA: float | None, out_dir,
                 *, semiangle_mrad: float | None = None, energy_eV: float | None = None,
                 batch: int | None = None, device: str = "cpu", center: str = "per-pattern",
                 threshold: float | None = None, min_spacing_px: float | None = None, baseline: str | None = None,
                 classical_settings: dict | None = None, precision: str = "auto",
                 meta: dict | None = None, probe_info: dict | None = None, progress: bool = True,
                 lattice_positions: bool = True, bad_pixels: str | np.ndarray = "auto",
                 workers: int | None = None, dark_level: str | float = "auto") -> dict:
    """Run ``model`` over every pattern of ``cube``; publish the outputs in ``out_dir`` atomically.

    ``probe``: the vacuum probe image on the input detector, or None to synthesize one from the scan's
    bright-field disk (``probe_synth.probe_from_scan``); ``probe_info`` describes a given probe.
    ``model(probe, cbed) -> (vg, qz)`` on the model grid (``geometry``); any callable with that
    signature works (tests use an oracle; one that keeps state between calls needs ``workers=1``: each worker
    process calls its own copy). Returns a summary dict (also written as summary.json).
    ``semiangle_mrad`` (with ``energy_eV``): the probe's convergence semi-angle, which with the bright-field disk's
    measured radius gives the calibration where ``q_pixel_size_invA`` is None, and else checks it
    (``calibration.invA_per_px_from_disk``; the summary's ``calibration_from_disk``).
    ``threshold`` / ``min_spacing_px``: peaks.find_peaks settings (the direct beam is kept as a vector;
    None: peaks.DEFAULT_THRESHOLD / DEFAULT_MIN_SPACING_PX).
    ``baseline="classical"``: py4DSTEM's disk detection instead of the network (same outputs, no q_z).
    ``precision``: "fp32", "bf16" (autocast; the model keeps its FFTs and output head in fp32) or
    "auto" (bf16 on CPUs with AMX tiles or AVX512-BF16, else fp32: ``detectors.auto_bf16``). On
    bench_accuracy's envelope bf16 scores the F1 of fp32 within 0.004 per dose and runs 1.4× faster end to
    end on 2-core CPUs with either (benchmarks/RESULTS.md, 2026-12-01 and 2026-12-02).
    ``lattice_positions``: each pattern's vectors placed on the least-squares lattice of its vectors
    through the beam (``refine.lattice_placed``); False: each where it was measured on its own disk.
    ``bad_pixels``: "auto" (dead lines and lines of another gain found in the scan, ``bad_pixels.find_bad_pixels``),
    a user's mask (True = bad; the lines found are added) or "none"; bad pixels of the patterns and of ``probe``
    are read as their neighbours' mean.
    ``dark_level``: a detector's dark level left in the patterns, subtracted from every pixel (and from a probe
    recorded with it): "auto" (a counting detector's, where it is unambiguous: ``dark_level.exact_dark_level``)
    or the level in the file's units (0: none). A beam that wanders across the detector over the scan (an uncorrected
    descan, ``descan.fit_descan`` on the sampled patterns) is taken out of every pattern as it is read.
    ``workers``: processes that detect the batches (``detection_workers``; None: one per thread torch may use, up to
    ``MAX_AUTO_WORKERS``). Runs with as many are identical; the network's sums, split over fewer threads per
    process, round otherwise (fp32: ≤ 1e-5 px; bf16 may move a marginal vector across the threshold), as on a
    machine with other cores.
    """
    _check_inputs(cube, probe, q_pixel_size_invA, precision, geometry, semiangle_mrad, energy_eV)
    threshold = peaks.DEFAULT_THRESHOLD if threshold is None else threshold
    min_spacing_px = peaks.DEFAULT_MIN_SPACING_PX if min_spacing_px is None else min_spacing_px
    cube.bad_pixels, cube.dark_level, cube.descan, samples = None, 0.0, None, None
    if not (isinstance(bad_pixels, str) and bad_pixels == "none"):
        samples = sample_patterns(cube)  # read once: the search, then the probe's synthesis
        cube.bad_pixels = find_bad_pixels(samples, None if isinstance(bad_pixels, str) else bad_pixels)
        samples = cube.bad_pixels.repair(samples)
        if probe is not None:
            probe = cube.bad_pixels.repair(np.array(probe, dtype=np.float32))
    if samples is None:
        samples = sample_patterns(cube)
    samples, dark = _dark_level(cube, samples, dark_level)
    samples, descan = _descan(cube, samples)
    floor = 0.0 if probe is None else probe_floor(probe)
    if floor:  # a vacuum probe recorded with its dark level gives it up
        probe = (np.asarray(probe, dtype=np.float32) - np.float32(floor)).astype(np.float32)
        probe_info = {**(probe_info or {"path": "given by the caller"}), "dark_level_subtracted": floor}
    sampled = torch.from_numpy(np.asarray(samples, dtype=np.float32))
    floors = int(subtracted_floor(sampled).sum())
    samples = with_floor_restored(sampled).numpy()  # the probe's synthesis sees the patterns as ``_detect`` does
    electrons = _electrons_read(samples)
    saturation = saturation_level(samples)  # a beam at the detector's ceiling (evidence: it is there)
    if probe is None:
        probe, probe_info = probe_from_scan(cube, samples, saturated=saturation is not None)
        if probe_info.get("hot_pixels") and cube.bad_pixels is not None:  # read as their neighbours, as found ones
            cube.bad_pixels = cube.bad_pixels.with_pixels(probe_info["hot_pixels"], "hot")
            saturation = saturation_level(cube.bad_pixels.repair(samples))  # a stuck pixel at the ceiling is no beam
    else:
        check_given_probe(probe)
        size_note = given_probe_size_note(probe, cube, samples, saturated=saturation is not None)
        if size_note:
            probe_info = {**(probe_info or {"path": "given by the caller"}), "size_note": size_note}
    dev_type = "cuda" if str(device).startswith("cuda") else "cpu"
    use_bf16 = precision == "bf16" or (precision == "auto" and auto_bf16(dev_type))
    from_disk = None
    if semiangle_mrad is not None:
        from_disk = _calibration_from_disk(probe, probe_info, semiangle_mrad, energy_eV, q_pixel_size_invA)
    dq = float(q_pixel_size_invA if q_pixel_size_invA is not None else from_disk["q_pixel_size_invA"])
    # the network sees no disk larger than it finds reliably: a larger one is shown at a coarser pitch
    disk_px = probe_radius_px(probe)
    dq_view = dq if baseline == "classical" else view_pixel_invA(disk_px, dq, geometry)
    _check_size(cube, dq_view, geometry)
    inputs = ModelInput(probe, geometry.dk_invA / dq_view, geometry.detector_px, geometry.center_px, device,
                        beam_by_edge=saturation is None)
    if probe_info is not None and "measured_edge_px" in probe_info:  # drawn sharp from the scan's disk
        inputs.synthesized(probe_info["measured_edge_px"])
    guess = mean_beam(cube, inputs, device)
    if baseline == "classical":
        detector = ClassicalDetector(probe, classical_settings, dq)
    else:
        detector = NetworkDetector(model, geometry, inputs, dq, threshold=threshold, min_spacing_px=min_spacing_px,
                                   device=device, use_bf16=use_bf16, lattice_positions=lattice_positions,
                                   view_pixel_invA=dq_view, saturation=saturation)
    run = {"probe": probe_info or {"path": "given by the caller"}, "center": center, "saturation": saturation,
           "calibration_from_disk": from_disk,
           "bad_pixels": (
               {"n": cube.bad_pixels.n, **cube.bad_pixels.found} if cube.bad_pixels is not None else "not searched"),
           "subtracted_floor": {"patterns": floors, "of_sampled": len(samples)}, "dark_level": dark, "descan": descan,
           "electrons": electrons,
           # the camera's point spread the probe's edge (or the scan's disk's) shows, undone by the sub-pixel fit
           "camera_point_spread_px": None if baseline else inputs.blur_px,
           "mean_beam_px": [guess[0], guess[1]], "mean_beam_found_by": inputs.finder.guessed_by,
           # a nearly extinct beam, each pattern's placed this far from its brightest disk (``mean_beam``)
           "beam_from_brightest_disk_px": inputs.finder.extinct_offset,
           "device": device, "precision": "bf16" if use_bf16 else "fp32",
           "threshold": threshold, "min_spacing_px": min_spacing_px, "detector": baseline or "network",
           "positions": "measured" if baseline or not lattice_positions else "placed on each pattern's lattice",
           "network_view": "as calibrated" if dq_view == dq else {
               "disk_radius_model_px": disk_px * dq / geometry.dk_invA,
               "shown_at_model_px": largest_shown_disk_px(geometry), "scale": dq_view / dq, "qz": "not given"}}
    cube.nonfinite_px = 0  # counted over the detector's reads only
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        summary, examples, bvm = _stream(cube, detector, inputs, guess, tmp, dq, int(batch or DEFAULT_BATCH[dev_type]),
                                         device, center, progress, workers)
        floor = dark.get("floor")
        if floor and (summary["n_vectors"] < FLOOR_NOTE_VECTORS * summary["n_patterns"]
                      or floor["floor"] >= FLOOR_NOTE_FLAT * floor["median"]):
            dark["note"] = _floor_note_text(dark["floor"], summary["n_vectors"] / max(1, summary["n_patterns"]))
        summary.update(q_pixel_size_invA=dq, model_dk_invA=geometry.dk_invA, model_detector_px=geometry.detector_px,
                       **run, input=cube.path, source=cube.source, scan_shape=list(cube.shape[:2]),
                       pattern_shape=list(cube.shape[2:]), scan_bin=cube.scan_bin,
                       nonfinite_pixels_read_as_0=cube.nonfinite_px, **(meta or {}))
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        write_index(tmp, examples, bvm, dq, page_settings(summary))
    return summary


def _dark_level(cube: Cube, samples: np.ndarray, dark_level: str | float) -> tuple:
    """(samples, summary entry) with the detector's dark level subtracted, which ``cube`` subtracts from every pattern
    it reads from now on (``dark_level.exact_dark_level``; a level given is checked, ``check_given``). The entry: the
    level and who set it, or, where none was subtracted, the level no sampled pixel reads below when it is positive
    (``floor_note``: for the note where the patterns show little, or that floor is flat)."""
    if isinstance(dark_level, str):
        if dark_level != "auto":
            raise UserError(f"--dark-level {dark_level} is neither auto nor a number", "pass auto, 0 or the counts "
                                                                                       "an unexposed pixel reads")
        level, by = exact_dark_level(samples), "found in the scan: most pixels of its patterns read it exactly"
    else:
        level, by = float(dark_level), "given (--dark-level)"
        check_given(level, samples)
    if not level:
        return samples, {"level": 0.0, "floor": floor_note(samples)}
    cube.dark_level = level
    return (samples - np.float32(level)).astype(np.float32), {"level": level, "by": by}


def _electrons_read(samples: np.ndarray) -> dict:
    """How the checks read the sampled patterns' pixels (summary ``electrons``): how many were judged counted
    (counts, or isolated electrons: Poisson's exact test applies), the median value of one electron, and any Gaussian
    read noise (``evidence.read_noise``; per pixel, the median over the patterns that show it) with where it was
    measured: the pixels below zero, or a floor clipped at zero (``evidence.clipped_read_noise``: whole counts stored
    unsigned, which without it were taken for counts of one count per electron)."""
    t = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    one_e, counted = one_electron(t)
    sigma, clipped = read_noise(t).numpy(), clipped_read_noise(t).numpy() > 0
    noisy = sigma > 0
    return {"counted_patterns": int(counted.sum()), "of_sampled": len(samples),
            "electron_median": float(np.median(one_e.numpy())),
            "read_noise": float(np.median(sigma[noisy])) if noisy.any() else 0.0,
            "read_noise_from": None if not noisy.any() else (
                CLIPPED_FLOOR if clipped[noisy].mean() >= 0.5 else "the pixels below zero"),
            "patterns_with_read_noise": int(noisy.sum())}


CLIPPED_FLOOR = "a floor clipped at zero"  # ``electrons.read_noise_from`` where ``evidence.clipped_read_noise`` found it


def _read_noise_text(e: dict) -> str:
    if e["read_noise_from"] != CLIPPED_FLOOR:
        return f"{e['read_noise']:.3g} per pixel (from {e['read_noise_from']})"
    return (f"the patterns' floor is Gaussian read noise clipped at zero (σ ≈ {e['read_noise']:.3g} per pixel on "
            f"{e['patterns_with_read_noise']} of {e['of_sampled']} sampled patterns; whole counts, none below zero: a "
            "dark-subtracted integrating camera's frames stored unsigned): read as read noise, not as counts")


def _probe_floor_text(floor: float) -> str:
    return f"its dark level, {floor:.6g} per pixel (its median pixel, off the disk), was subtracted"


def _descan(cube: Cube, samples: np.ndarray) -> tuple:
    """(samples, summary entry): where the sampled patterns' beam moves across the scan (``descan.fit_descan``),
    ``cube`` moves every pattern back from now on and the samples are read again so; the entry gives the plane's
    largest move (px) and its coefficients, or None."""
    Rx, Ry = cube.shape[:2]
    idx = sample_indices(Rx * Ry)
    d = fit_descan(samples, np.column_stack(np.divmod(idx, Ry)), (Rx, Ry), cube.scan_bin)
    if d is None:
        return samples, None
    cube.descan = d
    corners = d.shift_px(np.array([0, 0, Rx - 1, Rx - 1]), np.array([0, Ry - 1, 0, Ry - 1]))
    return sample_patterns(cube), {"largest_px": float(np.hypot(*corners.T).max()),
                                   "plane_px": {"per_rx": d.coef[1].tolist(), "per_ry": d.coef[2].tolist()}}


def _descan_text(d: dict) -> str:
    return (f"the direct beam moves across the detector by up to {d['largest_px']:.0f} px over the scan (the descan: "
            f"{d['plane_px']['per_rx'][0]:+.2f}, {d['plane_px']['per_rx'][1]:+.2f} px per scan row, "
            f"{d['plane_px']['per_ry'][0]:+.2f}, {d['plane_px']['per_ry'][1]:+.2f} px per scan column); each pattern "
            "was moved back by the fitted plane's whole pixels before detection, its vectors' pixels reported as "
            "recorded")


def _dark_level_text(d: dict) -> str:
    return f"a dark level of {d['level']:.6g} per pixel was subtracted from every pattern ({d['by']})"


# the note on a floor no pixel reads below, where the scan gave fewer vectors per pattern than this (the beam and
# less than one more), or where that floor is at least this share of the median pixel: flat as a pedestal under its
# read noise is (a floor of electrons spreads by their shot noise: its 0.1 % quantile reaches half its median only
# above ~38 electrons per pixel everywhere, 2.5e6 e⁻ per pattern on 256² pixels; a noise-free pattern's smooth
# background falls by orders of magnitude)
FLOOR_NOTE_VECTORS = 2.0
FLOOR_NOTE_FLAT = 0.5


def _floor_note_text(floor: dict, per_pattern: float) -> str:
    return (f"the patterns gave {per_pattern:.2g} vectors each, and no pixel of the sampled patterns reads below "
            f"{floor['floor']:.6g} (half of them {floor['median']:.6g} or less): if the detector left its dark level "
            f"in (a camera's pedestal), pass it as --dark-level (a dark frame's mean; where most pixels saw no "
            f"electron, about {floor['median']:.6g}); else the scan shows little but its "
            f"beam (vacuum, a film, or too few electrons per pattern) or a background that dense")


def _floor_text(floor: dict) -> str:
    """What a run's ``subtracted_floor`` (``evidence.subtracted_floor`` of the sampled patterns) tells the user."""
    return (f"{floor['patterns']} of {floor['of_sampled']} sampled patterns read below zero as a smooth floor, not "
            "as a detector's read noise: a background seems subtracted. The checks count a disk's electrons against "
            "the background about it, so it was added back as the empty pixels show it; better, give the patterns as "
            "recorded (only the detector's dark level subtracted)")


def _point_spread_text(sigma_px: float) -> str:
    """What a run's ``camera_point_spread_px`` (``ModelInput.blur_px``) tells the user."""
    return (f"the bright-field disk's edge is blurred as by a camera's point spread of σ ≈ {sigma_px:.2f} px (a "
            "scintillator, or a hybrid-pixel sensor at high kV); the sub-pixel fit undoes it, as the disks share it")


def page_settings(s: dict) -> dict:
    """What index.html lists about a run (from its summary)."""
    p = s["probe"]
    disk = f" (radius {p['radius_px']:.2f} px, edge {p['edge_px']:.2f} px)" if "radius_px" in p else ""
    out = {"input": f"{s['input']} [{s['source']}]" if s.get("source") else s["input"],
           "scan × pattern shape": f"{s['scan_shape']} × {s['pattern_shape']}" + (
               f" (each pattern the sum of {s['scan_bin']}×{s['scan_bin']} scan positions, --bin-scan)"
               if s.get("scan_bin", 1) > 1 else ""),
           "probe": p["path"] + disk + (f" — {p['size_note']}" if p.get("size_note") else "") + (
               f" — {_probe_floor_text(p['dark_level_subtracted'])}" if p.get("dark_level_subtracted") else ""),
           "calibration": f"{s['q_pixel_size_invA']:.6g} 1/Å per px ({s.get('calibration', 'given by the caller')})",
           "beam energy (eV)": s.get("energy_eV") or "not given", "detector": s["detector"],
           "bad detector pixels (read as their neighbours' mean)": _bad_pixel_text(s.get("bad_pixels")),
           **({"NaN or ±Inf pixels (read as 0)": s["nonfinite_pixels_read_as_0"]}
              if s.get("nonfinite_pixels_read_as_0") else {}),
           **({"below zero": _floor_text(s["subtracted_floor"])}
              if (s.get("subtracted_floor") or {}).get("patterns") else {}),
           **({"dark level": _dark_level_text(s["dark_level"])} if (s.get("dark_level") or {}).get("level") else {}),
           **({"descan": _descan_text(s["descan"])} if s.get("descan") else {}),
           **({"read noise": _read_noise_text(s["electrons"])} if (s.get("electrons") or {}).get("read_noise") else {}),
           **({"camera point spread": _point_spread_text(s["camera_point_spread_px"])}
              if s.get("camera_point_spread_px") else {}),
           **({"dark level?": s["dark_level"]["note"]} if (s.get("dark_level") or {}).get("note") else {}),
           **({"network": "not run (--baseline classical: py4DSTEM's find_Bragg_disks, with the settings tuned "
                          "on validation data that the model file carries, else the config's)"}
              if s["detector"] == "classical" else {
               "model": s.get("model", "given by the caller"),
               "model grid": f"{s['model_detector_px']} px at {s['model_dk_invA']:.6g} 1/Å per px",
               "peak threshold (fraction of the direct beam's V_g)": s["threshold"],
               "minimum peak spacing (model px)": s["min_spacing_px"],
               "network view": _view_text(s.get("network_view", "as calibrated")),
               "device / precision": f"{s['device']} / {s['precision']}"}),
           "direct beam": s["center"], "vector positions": s.get("positions", "measured"),
           "patterns / vectors": f"{s['n_patterns']} / {s['n_vectors']} "
                                 f"({s['n_vectors'] / max(1, s['n_patterns']):.1f} per pattern)",
           "speed": f"{s['patterns_per_s']:.1f} patterns/s" + (
               f" ({s['workers']} processes × {s['threads_per_worker']} threads)" if s.get("workers", 1) > 1 else "")}
    return out


def _view_text(v) -> str:
    if not isinstance(v, dict):
        return str(v)
    return (f"the bright-field disk ({v['disk_radius_model_px']:.1f} model px in radius) is larger than the network "
            f"finds reliably: the patterns were shown to it at {v['scale']:.3g} × their scale (the disk at "
            f"{v['shown_at_model_px']:.1f} px), and q_z is not given; if the beam's convergence is not that large, "
            f"the calibration is too coarse: check --q-pixel-size (1/Å per px)")


def _bad_pixel_text(b) -> str:
    if not isinstance(b, dict):
        return str(b)
    kinds = ", ".join(f"{v} {k}" for k, v in b.items() if k != "n" and v)
    return f"{b['n']}" + (f" ({kinds})" if kinds else "")


def _check_inputs(cube: Cube, probe: np.ndarray | None, q_pixel_size_invA: float | None, precision: str, geometry,
                  semiangle_mrad: float | None = None, energy_eV: float | None = None) -> None:
    if probe is not None and probe.shape != tuple(cube.shape[2:]):
        raise UserError(f"probe shape {probe.shape} differs from the pattern shape {tuple(cube.shape[2:])}",
                        "pass a vacuum probe recorded on the same detector (same binning / crop), or none")
    if semiangle_mrad is not None and not (semiangle_mrad > 0 and energy_eV and energy_eV > 0):
        raise UserError(f"--semiangle-mrad {semiangle_mrad} needs a positive semi-angle and the beam energy to "
                        "calibrate the detector", "pass --semiangle-mrad (mrad) with --energy (eV)")
    if q_pixel_size_invA is None and semiangle_mrad is None:
        raise UserError("no reciprocal pixel size", "pass --q-pixel-size in 1/Å per pixel, or --semiangle-mrad "
                                                    "with --energy")
    if q_pixel_size_invA is not None and not 0 < q_pixel_size_invA <= MAX_Q_PIXEL_INVA:
        raise UserError(f"reciprocal pixel size {q_pixel_size_invA:g} 1/Å per px is not in (0, {MAX_Q_PIXEL_INVA:g}]",
                        "pass --q-pixel-size in 1/Å per pixel (a file's calibration in other units: pass it yourself)")
    if semiangle_mrad is not None and not ENERGY_RANGE_EV[0] <= energy_eV <= ENERGY_RANGE_EV[1]:
        raise UserError(f"beam energy {energy_eV:g} eV is outside {ENERGY_RANGE_EV[0]:g}–{ENERGY_RANGE_EV[1]:g} eV",
                        "pass --energy in eV, e.g. 200e3 for 200 kV")
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision '{precision}' is not auto, fp32 or bf16", "pass --precision auto")
    if q_pixel_size_invA is not None:
        _check_size(cube, q_pixel_size_invA, geometry)


def _calibration_from_disk(probe: np.ndarray, probe_info: dict | None, semiangle_mrad: float, energy_eV: float,
                           stated_invA: float | None) -> dict:
    """The calibration the bright-field disk gives for the probe's semi-angle: the synthesized probe's radius as
    measured on the scan, or a given probe's (``probe_synth.measure_disk``), spans α / λ. Where a calibration is
    also stated, a ``note`` says where the two disagree beyond ``calibration.DISK_CALIBRATION_TOLERANCE``, and
    ``unchecked`` why they were not compared (a disk too small to measure)."""
    synthesized = probe_info is not None and "radius_px" in probe_info
    radius = float(probe_info["radius_px"] if synthesized else measure_disk(probe)["radius_px"])
    out = {"semiangle_mrad": float(semiangle_mrad), "energy_eV": float(energy_eV), "disk_radius_px": radius}
    try:
        q = out["q_pixel_size_invA"] = invA_per_px_from_disk(semiangle_mrad, energy_eV, radius)
    except UserError as exc:  # a disk too small to measure: it cannot check a stated calibration either
        if stated_invA is None:
            raise
        return dict(out, q_pixel_size_invA=None, unchecked=exc.problem)
    if stated_invA is not None and not (1 / DISK_CALIBRATION_TOLERANCE <= stated_invA / q
                                        <= DISK_CALIBRATION_TOLERANCE):
        out["note"] = (f"the bright-field disk ({radius:.2f} px) at {semiangle_mrad:g} mrad and {energy_eV:.0f} eV "
                       f"gives {q:.4g} 1/Å per px, {stated_invA / q:.2f} × the calibration used ({stated_invA:.4g}): "
                       "check the calibration's units and the semi-angle")
    return out


def _check_size(cube: Cube, q_pixel_size_invA: float, geometry) -> None:
    """The patterns must span a few model pixels at the calibration they are shown at."""
    # the model grid's pitch in input pixels; coarser than 2 px the patterns are averaged down by it
    step = max(1, int(geometry.dk_invA / q_pixel_size_invA))
    if min(cube.shape[2:]) < MIN_PATTERN_PX or min(cube.shape[2:]) // step < 4:
        raise UserError(f"patterns of {cube.shape[2]}×{cube.shape[3]} px at {q_pixel_size_invA:.4g} 1/Å per px are "
                        f"too small for the model (its pixel is {step} of yours)",
                        "check --q-pixel-size (1/Å per pixel) and that --dataset names the datacube")


# A disk at the mean pattern's centre of inversion symmetry is its direct beam if its match with the probe is
# a maximum inside the search about that centre and its electrons over its ring's level at least this share of
# the best match's: the transmitted beam of MgO [001] at 200 kV / 2 mrad / 10 nm holds a fifth of each {200}
# disk's electrons (benchmarks/RESULTS.md, "The direct beam where a diffracted disk outshines it")
SYMMETRIC_BEAM_MIN_MATCH = 0.1
# A dimmer disk there is a nearly extinct beam (Si [110] at 80 kV / 10 nm: 0.4 % of the pattern, each {111} disk
# 15–17 %) where the brightest disk's Friedel partner about it holds at least this share of the brightest disk's
# electrons: measured from the brightest disk instead, every vector was off by that disk's g (benchmarks/RESULTS.md,
# "A nearly extinct beam placed from its brightest disk")
EXTINCT_BEAM_MIN_PARTNER = 0.3
# Where neither holds (off the zone axis a pattern has no centre of symmetry on a disk), a disk where the vacuum probe
# lands that holds SYMMETRIC_BEAM_MIN_MATCH of the best match's electrons is the beam (the same least beam): Si [001]
# 2° off the axis at 80 kV / 1 mrad / 60 nm, the beam one of a cell of four bright disks on the Laue circle and the
# best match another, 64 px away (benchmarks/RESULTS.md, "A beam off the zone axis where the vacuum probe lands")
BEAM_EXCESS_MIN_RADIUS_PX = 2.5  # a disk's electrons summed at least this far out: a detector's blur spreads them
BEAM_CLIP_PERCENTILE = 99.9  # of a 256² pattern, its 66th brightest pixel: inside its brightest disks


def mean_beam(cube: Cube, inputs: ModelInput, device: str) -> tuple[float, float]:
    """The mean pattern's direct beam (input px): the disk at its centre of inversion symmetry
    (``probe_synth.symmetry_centre``: disks come in pairs ±g about the beam), else a disk where the vacuum probe lands,
    else the best match with the probe anywhere on the detector, which in a thick crystal may be a diffracted disk
    brighter than the beam. A strided sample of at most 256 patterns keeps this O(batch) in memory and time. The
    guess for every pattern's beam; where it is not the best match, ``inputs``' beam finder is set to follow each
    pattern's beam from it (``BeamFinder.climb``), or, where it is nearly extinct, to place it from the brightest disk
    (``BeamFinder.extinct_offset``); ``BeamFinder.guessed_by`` names the rule taken."""
    Rx, Ry, Qx, Qy = cube.shape
    n = Rx * Ry
    sample_idx = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(int))
    mean_dp = np.mean([cube.read(int(k), int(k) + 1)[0] for k in sample_idx], axis=0)
    mean_t = torch.from_numpy(np.asarray(mean_dp, np.float32)[None]).to(device)
    best = inputs.centres(mean_t, None, max(Qx, Qy))[0].cpu().numpy()
    # judged with the pattern clipped at its brightest disks' level: a hot pixel then weighs as one pixel of a disk
    clipped = np.minimum(mean_dp, np.percentile(mean_dp, BEAM_CLIP_PERCENTILE))
    centre = symmetry_centre(clipped)
    reach = max(3.0, inputs.probe_radius_px)
    at = inputs.centres(mean_t, centre, reach)[0].cpu().numpy()
    inside = np.hypot(at[0] - centre[0], at[1] - centre[1]) <= reach - 1.0
    r = inputs.probe_radius_px
    brightest = _excess(clipped, best, r)
    if inside and _excess(clipped, at, r) >= SYMMETRIC_BEAM_MIN_MATCH * brightest:
        # a beam dimmer than a disk elsewhere: each pattern's beam is then followed uphill from this one, not
        # taken as the best match within the search, where a brighter neighbour's disk may reach
        # (MgO [001], 300 kV / 3.5 mrad / 60 nm on 128 px at 0.02 Å⁻¹/px: 9 px off toward a {200} disk)
        inputs.finder.climb = bool(np.hypot(best[0] - at[0], best[1] - at[1]) > 1.0)
        inputs.finder.guessed_by = "the disk at the mean pattern's centre of symmetry"
        return float(at[0]), float(at[1])
    # a nearly extinct beam: midway between the brightest disk and its Friedel partner about the centre (both placed
    # by the probe's match, to a fraction of a pixel; the centre itself is known to half a pixel and the dim beam's
    # own match wanders in its halo). Each pattern's beam is then placed from its brightest disk, which its noise
    # does not hide, at the mean pattern's offset.
    # Off the zone axis the brightest disks lie on the Laue circle through the beam, whose intensities may be
    # symmetric about a point between the disks (Si [001] 2° off the axis at 80 kV / 60 nm: the middle of a cell of
    # four bright disks, the beam one of them): there the midpoint is no beam. The beam lands where the vacuum probe
    # does, give or take the descan, so the midpoint must lie nearer the vacuum probe's position than half its
    # distance to the brightest disk.
    mirror = 2.0 * np.asarray(centre) - best
    partner = inputs.centres(mean_t, (float(mirror[0]), float(mirror[1])), reach)[0].cpu().numpy()
    beam = 0.5 * (best + partner)
    vacuum = np.asarray(inputs.finder.c)
    if np.hypot(*(best - np.asarray(centre))) > reach and np.hypot(*(partner - mirror)) <= reach - 1.0 \
            and _excess(clipped, partner, r) >= EXTINCT_BEAM_MIN_PARTNER * brightest \
            and np.hypot(*(beam - vacuum)) < 0.5 * np.hypot(*(best - beam)):
        inputs.finder.extinct_offset = (float(beam[0] - best[0]), float(beam[1] - best[1]))
        inputs.finder.guessed_by = "midway between the brightest disk and its Friedel partner: a nearly extinct beam"
        return float(beam[0]), float(beam[1])
    # neither: the beam lands where the vacuum probe does, give or take the descan; a disk there is the beam though
    # another outshines it, and each pattern's beam is followed uphill from it. Without a vacuum probe, the probe
    # made from the scan sits on the disk it was cut from, so this changes nothing there.
    at_vacuum = inputs.centres(mean_t, (float(vacuum[0]), float(vacuum[1])), reach)[0].cpu().numpy()
    if np.hypot(*(best - vacuum)) > reach and np.hypot(*(at_vacuum - vacuum)) <= reach - 1.0 \
            and _excess(clipped, at_vacuum, r) >= SYMMETRIC_BEAM_MIN_MATCH * brightest:
        inputs.finder.climb = True
        inputs.finder.guessed_by = "the disk where the vacuum probe lands, though another outshines it"
        return float(at_vacuum[0]), float(at_vacuum[1])
    inputs.finder.guessed_by = "the best match with the probe"
    return float(best[0]), float(best[1])


def _excess(pattern: np.ndarray, at, radius_px: float) -> float:
    """The electrons of a disk at ``at`` (``radius_px``, at least ``BEAM_EXCESS_MIN_RADIUS_PX``) over the median level
    of its ring (r + 1 … 2 r + 2): a diffuse halo about a beam that is nearly extinct (Si [110] at 80 kV, 10 nm:
    0.3 % of the pattern) is no disk, though a probe's correlation there collects it."""
    r = max(radius_px, BEAM_EXCESS_MIN_RADIUS_PX)
    i, j = np.indices(pattern.shape)
    d = np.hypot(i - at[0], j - at[1])
    disk = d <= r
    ring = (d > r + 1.0) & (d <= 2.0 * r + 2.0)
    return float((pattern[disk] - np.median(pattern[ring])).sum())


N_EXAMPLES = 4  # patterns shown in index.html, evenly spread over the scan
# without --workers: one process per torch thread up to this many (each holds a batch's activations)
MAX_AUTO_WORKERS = 16
IN_FLIGHT_PER_WORKER = 2  # batches read ahead per worker: enough to keep each busy, few enough to keep memory flat
# The scan's one size factor of its batches' lattices (``MeasuredPattern.measure_edge_scale``) from its first batch, or
# from the next where that one's low-dose patterns showed no lattice (a scan that begins on vacuum or film), up to this
# many batches: a bright scan's first batch settles it at once, and a scan with no crystal this early costs only these
SIZE_FACTOR_BATCHES = 8

# what each worker process runs on: set just before the pool forks, so every worker inherits it (model included,
# its weights shared copy-on-write) instead of pickling it
_JOB: tuple | None = None


def detection_workers(requested: int | None, n_batches: int, device: str) -> tuple[int, int]:
    """(processes, torch threads each) that detect the scan's batches. On CPU one process of one thread per thread
    torch may use (its intra-op threads: the cores, or OMP_NUM_THREADS; ``requested`` None: up to
    ``MAX_AUTO_WORKERS`` processes). The network's forward scales with threads, but the checks after it are
    serial numpy and leave the other cores idle in one process: two processes of one thread ran bench_predict's
    1.5 mrad scan 1.2× faster than one of two (benchmarks/RESULTS.md, "Worker processes"). One thread each: GNU
    OpenMP (torch's CPU threads) hangs in a forked child that asks for more than one thread once the parent has
    used its threads (measured: two workers of two threads never returned).
    CUDA, a single batch, or not Linux (the workers are forked, which only Linux does safely beside torch's
    threads): one process, torch's threads as they are (threads 0)."""
    if device != "cpu" or not sys.platform.startswith("linux"):
        return 1, 0
    workers = min(requested or min(torch.get_num_threads(), MAX_AUTO_WORKERS), n_batches)
    return (workers, 1) if workers > 1 else (1, 0)


def _detect(x: np.ndarray) -> tuple[np.ndarray, dict]:
    """One batch of patterns -> (their direct beams (B, 2) input px, ``detector``'s vectors referenced to them),
    by ``_JOB``. The detector sees each pattern centred on its beam as the correlation finds it (the network's
    view, as in training) and measures it from the beam placed by its edge (``ModelInput.beam_centres``): off the
    zone axis the correlation's centre lies up to ~0.3 px toward the transmitted disk's bright side, and every
    vector's reference and the lattice placement's origin with it."""
    detector, inputs, guess, center, device = _JOB
    x, cen, beam = _centred(x, inputs, guess, center, device)
    return beam.cpu().numpy().astype(np.float64), detector(x, cen, beam)


def _centred(x: np.ndarray, inputs: ModelInput, guess, center: str, device: str) -> tuple:
    """(the batch ``x`` as a tensor, a background subtracted by hand added back; the network's centres; the beams
    the vectors are measured from): ``_detect``'s view of a batch."""
    x = with_floor_restored(torch.from_numpy(x).to(device))
    if center == "mean":
        cen = torch.tensor([guess] * len(x), device=device)
        return x, cen, cen
    cen = inputs.centres(x, guess)
    return x, cen, inputs.beam_centres(x, cen)


_THREAD_LIMITS = None  # a worker's limits on the threads of its native libraries (kept for its lifetime)


def _one_worker(threads: int) -> None:
    """A worker's threads: ``threads`` for torch and for numpy's BLAS (the checks' and py4DSTEM's matrix
    products), which after the fork would still start the parent's many: each worker's BLAS on two threads
    beside the other's (2 cores) made `predict --baseline classical` slower with two workers than with one."""
    global _THREAD_LIMITS
    import signal

    from threadpoolctl import threadpool_limits

    # SIGTERM (as the pool ends its workers) and Ctrl-C end a worker at once, silently: the CLI's handler
    # (``cli._stopped``) is the parent's, which removes the unfinished output
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    torch.set_num_threads(threads)
    _THREAD_LIMITS = threadpool_limits(limits=threads, user_api="blas")


@contextlib.contextmanager
def _worker_pool(job: tuple, workers: int, threads: int):
    """``job`` for ``_detect`` set for this process and, when ``workers`` > 1, a pool of that many processes
    forked now (before any other thread starts) that inherit it; yields the pool or None."""
    global _JOB
    _JOB = job
    try:
        if workers == 1:
            yield None
            return
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers, initializer=_one_worker, initargs=(threads,)) as pool:
            yield pool
    finally:
        _JOB = None


def _detected(cube: Cube, n: int, batch: int, pool, read_ahead: int):
    """Per batch in scan order: (first position, patterns, beams, vectors); in ``pool``'s processes when one is
    given, the parent reading at most ``read_ahead`` batches ahead."""
    starts = range(0, n, batch)
    if pool is None:
        for s in starts:
            x = cube.read(s, min(n, s + batch))
            yield (s, x, *_detect(x))
        return
    from collections import deque

    pending = deque()
    for s in starts:
        x = cube.read(s, min(n, s + batch))
        pending.append((s, x, pool.apply_async(_detect, (x,))))
        if len(pending) >= read_ahead:
            s0, x0, job = pending.popleft()
            yield (s0, x0, *job.get())
    while pending:
        s0, x0, job = pending.popleft()
        yield (s0, x0, *job.get())


def _stream(cube: Cube, detector, inputs: ModelInput, guess, out: Path, dq: float, batch: int, device: str,
            center: str, progress: bool, workers: int | None = None) -> tuple[dict, list, np.ndarray]:
    """Batches of patterns -> direct beams -> ``detector`` (``detection_workers`` processes) -> ``VectorWriter``
    in ``out``. Returns (summary, index.html's example patterns with their vectors, the Bragg vector map)."""
    from tqdm import tqdm

    Rx, Ry, Qx, Qy = cube.shape
    n = Rx * Ry
    n_batches = -(-n // batch)
    n_workers, threads = detection_workers(workers, n_batches, device)
    origin = np.zeros((2, Rx, Ry))
    writer = VectorWriter(out, (Rx, Ry), (Qx, Qy), dq)
    shown = set(np.unique(np.linspace(0, n - 1, min(n, N_EXAMPLES)).astype(int)).tolist())
    examples = []
    t0 = time.perf_counter()
    size_factor = None  # one size factor for every batch's lattice, measured before the workers fork
    if isinstance(detector, NetworkDetector):  # from the first batch, or the next while it shows no lattice
        for start in range(0, min(n, SIZE_FACTOR_BATCHES * batch), batch):
            counted_so_far = cube.nonfinite_px
            patterns = cube.read(start, min(n, start + batch))
            cube.nonfinite_px = counted_so_far  # its pixels are counted when the batch is detected
            size_factor = detector.measure_edge_scale(*_centred(patterns, inputs, guess, center, device))
            if not detector.edge_scale_unsettled:
                break
    try:
        with _worker_pool((detector, inputs, guess, center, device), n_workers, threads) as pool, \
                tqdm(total=n_batches, disable=not progress, desc="predict", unit="batch") as bar:
            for s, x, cen, vec in _detected(cube, n, batch, pool, IN_FLIGHT_PER_WORKER * n_workers):
                rx, ry = np.divmod(np.arange(s, s + len(x)), Ry)
                for k in sorted(shown.intersection(range(s, s + len(x)))):  # the patterns as detected
                    m = (vec["pattern"] == k - s) & writer.on_detector(vec)
                    examples.append((int(rx[k - s]), int(ry[k - s]), np.asarray(x[k - s]),
                                     np.stack([vec["qx_px"][m], vec["qy_px"][m]], axis=1)))
                if cube.descan is not None:  # the detector's pixels as recorded, before the descan was taken out
                    d = cube.descan.logical_px(rx, ry)
                    cen = cen + d
                    vec = {**vec, "qx_px": vec["qx_px"] + d[vec["pattern"], 0],
                           "qy_px": vec["qy_px"] + d[vec["pattern"], 1]}
                origin[:, rx, ry] = cen.T
                writer.write(rx, ry, vec)
                bar.update()
    finally:
        writer.close()
    elapsed = time.perf_counter() - t0
    writer.finish(origin)
    return ({"n_patterns": n, "n_vectors": writer.n_vectors, "seconds": elapsed,
             "patterns_per_s": n / max(elapsed, 1e-9), "workers": n_workers,
             "threads_per_worker": threads or torch.get_num_threads(),
             **({"batch_lattice_size_factor": size_factor} if size_factor is not None else {})}, examples, writer.map)


# --- CLI -------------------------------------------------------------------------------------------
# Beam energies a microscope records 4D-STEM at: from an SEM's 1 keV to a high-voltage TEM's 3 MeV. Outside it the
# number is in other units (200 for 200 kV) or mistyped.
ENERGY_RANGE_EV = (1e3, 3e6)
# No detector samples reciprocal space coarser than this (a 128 px detector at 1 1/Å per px spans 128 1/Å, an
# atomic spacing of 0.008 Å): a larger calibration is in other units.
MAX_Q_PIXEL_INVA = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="4D-STEM scan (Rx, Ry, Qx, Qy; singleton axes are dropped) or a pattern stack "
                                "(N, Qx, Qy) with --scan-shape: .npy, .zarr, .h5/.emd (py4DSTEM), .blo, .mib, .dm4 ...")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--probe", help="vacuum probe image (same formats; a stack is averaged). Without --probe or "
                                   "--probe-from-region the probe is synthesized from the scan's bright-field disk")
    g.add_argument("--probe-from-region", metavar="RX0:RX1,RY0:RY1",
                   help="average the patterns of these vacuum scan positions as the probe")
    p.add_argument("--scan-shape", metavar="RXxRY", default=None, help="scan shape of a 3-D pattern stack, e.g. 64x64")
    p.add_argument("--bin-scan", type=int, default=1, metavar="N",
                   help="sum each N×N block of scan positions into one pattern before detection (low-dose scans: "
                        "N² times the electrons per pattern, a scan N times coarser); --probe-from-region still "
                        "names recorded positions")
    p.add_argument("--bad-pixels", default="auto", metavar="auto|none|MASK",
                   help="detector pixels read as their neighbours' mean: auto = dead rows or columns and rows or "
                        "columns of another gain (a quad detector's cross) found in the scan; MASK = a 2-D file of "
                        "the detector's shape, nonzero where bad, plus what auto finds; none = read every pixel as is")
    p.add_argument("--dark-level", type=dark_level_arg, default="auto", metavar="auto|COUNTS",
                   help="a detector's dark level left in the patterns (the value an unexposed pixel reads, e.g. a dark "
                        "frame's mean), subtracted from every pixel and from a probe recorded with it: auto = a "
                        "counting detector's offset where most pixels read it exactly; 0 = none")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--model", default=None, help=f"model checkpoint (default: {DEFAULT_MODEL})")
    p.add_argument("--q-pixel-size", type=number(0.0, MAX_Q_PIXEL_INVA, unit=" (1/Å per pixel)"), default=None,
                   help="reciprocal pixel size (1/Å per pixel)")
    p.add_argument("--energy", type=number(*ENERGY_RANGE_EV, above=False, unit=" eV (e.g. 200e3 for 200 kV)"),
                   default=None, help="beam energy (eV); needed for mrad calibrations")
    p.add_argument("--semiangle-mrad", type=number(0.0, 1e3, unit=" mrad"), default=None, metavar="ALPHA",
                   help="the probe's convergence semi-angle (mrad; with --energy): calibrates a detector that has no "
                        "calibration from the bright-field disk's radius (α / λ), or checks a stated one")
    p.add_argument("--dataset", default=None,
                   help="array inside an HDF5/Zarr file (default: the one array shaped like a datacube)")
    p.add_argument("--batch", type=int, default=None,
                   help=f"patterns per network call (default {DEFAULT_BATCH['cpu']} on CPU, {DEFAULT_BATCH['cuda']} on CUDA)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help=f"processes of one thread each that detect the patterns on Linux CPUs (default: as many as "
                        f"torch's threads, i.e. the cores or OMP_NUM_THREADS, at most {MAX_AUTO_WORKERS}); runs with "
                        f"as many give identical vectors")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--center", default="per-pattern", choices=["per-pattern", "mean"],
                   help="find the direct beam in every pattern, or once in the mean pattern")
    p.add_argument("--threshold", type=float, default=None,
                   help="V_g peaks above this fraction of the direct beam (default: the model file's tuned value "
                        "if stamped, else config evaluate.peak_threshold's default; the workflow's tuned value is "
                        "network_peak_settings in results/evaluation/metrics.json)")
    p.add_argument("--min-spacing", type=number(0.0), default=None,
                   help="non-maximum suppression: no two vectors within this many model-grid px "
                        "(default: model file's value, else config evaluate.network_min_spacing_px's default)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network arithmetic: auto = bf16 on CPUs with AMX or AVX512-BF16, else fp32 "
                        "(measured faster for this model)")
    p.add_argument("--measured-positions", action="store_true",
                   help="report each vector where it was measured on its own disk; by default the vectors on a "
                        "pattern's (dominant) lattice are placed on its least-squares fit, which averages their "
                        "errors, and vectors off it stay as measured")
    p.add_argument("--baseline", choices=["classical"], default=None, help="run py4DSTEM disk detection (vacuum-probe kernel, multicorr) instead of the network; same outputs, qz empty")
    p.add_argument("--quiet", action="store_true")


def dark_level_arg(text: str) -> str | float:
    """``--dark-level``: auto, or a non-negative number of counts."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is neither auto nor a non-negative number of counts")
    return value


def run(args: argparse.Namespace) -> int:
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch {args.batch} must be >= 1", "pass a positive batch size")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers} must be >= 1", "pass a positive number of processes")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible", "use --device cpu")
    check_output_folder(args.out, "bragg_vectors.parquet", (args.data, args.probe, args.model, args.bad_pixels
                                                             if args.bad_pixels not in ("auto", "none") else None))
    scan_shape = parse_scan_shape(args.scan_shape) if args.scan_shape else None
    cube = open_datacube(args.data, args.dataset, scan_shape)
    try:
        return _run(args, cube)
    finally:
        cube.close()


def _probe(args: argparse.Namespace, cube: Cube) -> tuple[np.ndarray | None, dict | None]:
    """The probe the user chose (file or vacuum region) with its description; (None, None): synthesize."""
    if args.probe is not None:
        probe, pcube = open_probe(args.probe)
        pcube.close()
        return probe, {"path": f"vacuum probe {args.probe}"}
    if args.probe_from_region is None:
        return None, None
    region = parse_region(args.probe_from_region, "--probe-from-region", "of vacuum positions, e.g. 0:4,0:8")
    check_region(region, cube.recorded_shape[:2], "--probe-from-region")  # recorded positions, before --bin-scan
    block = cube.region(*region)
    # each on the middle one's beam first: over a wide region the descan moves the beam (descan.py), and a mean of
    # moving beams is a smeared disk
    shifts = relative_shifts(block) if len(block) > 1 else np.zeros((len(block), 2))
    moved = np.abs(shifts).max() >= REGION_ALIGN_MIN_PX
    if moved:
        block = moved_back(block, shifts)
    return block.mean(axis=0, dtype=np.float64).astype(np.float32), {
        "path": f"mean of the {len(block)} patterns of scan region {args.probe_from_region} (--probe-from-region"
                + (", each moved onto the middle one's beam" if moved else "") + ")"}


# a vacuum region's patterns whose beams lie this far apart (px) are aligned before their mean is the probe
REGION_ALIGN_MIN_PX = 2.0


def _run(args: argparse.Namespace, cube: Cube) -> int:
    probe, probe_info = _probe(args, cube)  # a vacuum region in the scan's recorded positions
    if args.bin_scan != 1:
        cube.bin_scan(args.bin_scan)
    energy = args.energy or cube.energy_eV
    if args.semiangle_mrad is not None and not energy:
        raise UserError(f"--semiangle-mrad {args.semiangle_mrad} needs the beam energy, which {args.data} does not "
                        "state", "pass --energy (eV)")
    # the semi-angle given, or the file's own (with its energy): it calibrates, or checks the calibration
    semiangle = args.semiangle_mrad or (cube.semiangle_mrad if energy else None)
    try:
        q = args.q_pixel_size or cube.q_pixel_size(energy)
    except UserError:  # units that cannot be converted (a .blo's camera-plane cm): the semi-angle calibrates
        if semiangle is None:
            raise
        q = None
    if q is None and semiangle is None:
        raise UserError(f"{args.data} carries no reciprocal-space calibration",
                        "pass --q-pixel-size (1/Å per pixel; with an mrad calibration also --energy), or the probe's "
                        "--semiangle-mrad with --energy")
    calibration = "--q-pixel-size" if args.q_pixel_size else (
        f"file metadata: {cube.q_scale:.6g} {cube.q_units} per px" + (f" at {energy:.0f} eV" if energy else "")
        if q is not None else f"the bright-field disk at {semiangle:g} mrad, " + (
            "--semiangle-mrad" if args.semiangle_mrad else "the file's convergence angle"))
    model, geometry, meta = load_model(args.model, args.device)
    if energy and geometry.energies_eV and not (0.5 * min(geometry.energies_eV) <= energy <= 2 * max(geometry.energies_eV)):
        log.warning("beam energy %.0f eV is far from the training energies %s", energy, geometry.energies_eV)
    ps = peak_settings(meta, args.threshold, args.min_spacing)
    bad = args.bad_pixels if args.bad_pixels in ("auto", "none") else read_mask(args.bad_pixels, cube.shape[2:])
    summary = predict_cube(cube, probe, model, geometry, None if q is None else float(q), args.out,
                           semiangle_mrad=semiangle, energy_eV=energy, batch=args.batch, device=args.device,
                           center=args.center, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"],
                           baseline=args.baseline, precision=args.precision,
                           classical_settings=meta.get("classical_settings"), probe_info=probe_info,
                           meta={"model": str(resolve_model(args.model)), "energy_eV": energy,
                                 "calibration": calibration},
                           progress=not args.quiet, lattice_positions=not args.measured_positions, bad_pixels=bad,
                           workers=args.workers, dark_level=args.dark_level)
    print(f"input: {cube.source or cube.path}; probe: {summary['probe']['path']}; calibration: "
          f"{summary['q_pixel_size_invA']:.6g} 1/Å per px ({calibration})")
    if summary["nonfinite_pixels_read_as_0"]:
        print(f"note: {summary['nonfinite_pixels_read_as_0']} pixels of the scan were NaN or ±Inf and were read as 0 "
              "(masked or defective detector pixels)")
    from_disk = summary["calibration_from_disk"] or {}
    if q is None:
        print(f"note: calibration from the bright-field disk: {from_disk['disk_radius_px']:.2f} px spans "
              f"{from_disk['semiangle_mrad']:g} mrad at {from_disk['energy_eV']:.0f} eV (good to about ±15 %, as "
              "the disk's radius is measured; relative strain does not depend on it)")
    if from_disk.get("note"):
        print(f"note: {from_disk['note']}")
    if from_disk.get("unchecked") and args.semiangle_mrad:
        print(f"note: the calibration was not checked: {from_disk['unchecked']}")
    if summary["probe"].get("size_note"):
        print(f"note: {summary['probe']['size_note']}")
    if summary["probe"].get("dark_level_subtracted"):
        print(f"note: the vacuum probe: {_probe_floor_text(summary['probe']['dark_level_subtracted'])}")
    if summary["subtracted_floor"]["patterns"]:
        print(f"note: {_floor_text(summary['subtracted_floor'])}")
    if summary["dark_level"]["level"]:
        print(f"note: {_dark_level_text(summary['dark_level'])}")
    if summary["descan"]:
        print(f"note: {_descan_text(summary['descan'])}")
    if summary["electrons"]["read_noise_from"] == CLIPPED_FLOOR:
        print(f"note: {_read_noise_text(summary['electrons'])}")
    if summary["dark_level"].get("note"):
        print(f"note: {summary['dark_level']['note']}")
    if summary.get("camera_point_spread_px"):
        print(f"note: {_point_spread_text(summary['camera_point_spread_px'])}")
    if isinstance(summary["network_view"], dict):
        print(f"note: {_view_text(summary['network_view'])}")
    if isinstance(summary["bad_pixels"], dict) and summary["bad_pixels"]["n"]:
        print(f"note: {_bad_pixel_text(summary['bad_pixels'])} bad detector pixels were read as their neighbours' "
              "mean (--bad-pixels)")
    nv, n = summary["n_vectors"], summary["n_patterns"]
    print(f"{nv} Bragg vector{'s' * (nv != 1)} from {n} pattern{'s' * (n != 1)} "
          f"({summary['patterns_per_s']:.1f} patterns/s) -> {args.out} (open {args.out}/index.html)")
    return 0
