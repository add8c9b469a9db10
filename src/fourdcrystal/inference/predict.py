"""``fourdcrystal predict``: Bragg vectors for every pattern of a 4D-STEM datacube.

Pipeline per batch of scan positions (the cube is streamed, never loaded whole):
  read patterns -> find the direct beam (cross-correlation with the vacuum probe, per pattern or
  once from the mean pattern) -> resample bilinearly onto the model's detector grid (pitch dk_invA,
  beam on the centre pixel) -> network -> V_g peaks (fourdcrystal.inference.peaks) -> back to Å⁻¹ and to the
  input's pixel coordinates.
Peak settings: the relative V_g threshold and the non-maximum-suppression spacing come from the
command line, else from the model file (``meta["peak_settings"]``, if a distributor stamped the
values tuned by ``evaluate``), else peaks.DEFAULT_THRESHOLD / DEFAULT_MIN_SPACING_PX (= the config
defaults). The workflow's tuned values are in results/evaluation/metrics.json
(``network_peak_settings``); rule scan_demo uses them.
Speed (CPU): everything runs on whole batches (beam finding by one batched FFT, resampling by one
grid_sample, peaks by max_pool2d and sparse gathers); the weights are put in channels_last (oneDNN's
faster conv layout), the loop runs under torch.inference_mode, and bf16 is used where the CPU has it
natively (``native_bf16``). benchmarks/RESULTS.md has the split between network and pipeline.
Intensity scaling (``ModelInput``): the model was trained on probe-max = 1 data with the CBED on the
probe's scale, so the resampled probe is divided by its maximum and every CBED is scaled to the
probe's total intensity (which also removes beam-current drift across the scan).
Outputs (published together by one rename, so a failed run leaves none): bragg_vectors.parquet,
bragg_vector_map.npy/.png, braggvectors.h5 (py4DSTEM BraggVectors, reopened by py4DSTEM.read).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from fourdcrystal.inference import peaks
from fourdcrystal.atomic import atomic_path
from fourdcrystal.inference.datacube_io import Cube, open_datacube, open_probe
from fourdcrystal.errors import UserError

log = logging.getLogger("fourdcrystal.inference.predict")

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "data" / "pretrained.pt"
VECTOR_COLUMNS = ["rx", "ry", "qx", "qy", "qx_px", "qy_px", "intensity", "qz"]
# Patterns per network call. On CPU small batches keep the activations in cache: 16-32 patterns of
# 128² ran ~1.3x faster than 64-256 (2 cores, benchmarks/RESULTS.md); a GPU wants large batches.
DEFAULT_BATCH = {"cpu": 32, "cuda": 256}


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
    thr = threshold if threshold is not None else stamped.get("peak_threshold", peaks.DEFAULT_THRESHOLD)
    sp = min_spacing_px if min_spacing_px is not None else stamped.get("min_spacing_px", peaks.DEFAULT_MIN_SPACING_PX)
    if not 0 < float(thr) < 1:
        raise UserError(f"peak threshold {thr} is not in (0, 1)", "pass --threshold as a fraction of the direct beam's V_g, e.g. 0.02")
    if float(sp) < 0:
        raise UserError(f"minimum peak spacing {sp} px is negative", "pass --min-spacing >= 0 (pixels of the model grid)")
    return {"peak_threshold": float(thr), "min_spacing_px": float(sp)}


def native_bf16(device_type: str) -> bool:
    """Whether bf16 arithmetic is native (fast) here: CUDA, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and usually no faster than fp32, so ``--precision auto`` stays fp32.
    """
    if device_type == "cuda":
        return True
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # a torch without these probes: assume no native bf16
        return False


# --- geometry helpers --------------------------------------------------------------------------
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

    def xcorr(self, cbed: torch.Tensor) -> torch.Tensor:
        # xc[s] = Σ_k cbed[k] probe[k - s]: maximal where the pattern's disk sits at probe shifted by s
        return torch.fft.irfft2(torch.fft.rfft2(cbed) * self.kernel, s=self.shape)

    def find(self, cbed: torch.Tensor, guess: tuple[float, float] | None, radius: float) -> torch.Tensor:
        B, Qx, Qy = cbed.shape
        xc = self.xcorr(cbed)
        # signed shifts of each correlation pixel
        sx = torch.fft.fftfreq(Qx, 1.0 / Qx, device=cbed.device)
        sy = torch.fft.fftfreq(Qy, 1.0 / Qy, device=cbed.device)
        gx, gy = (0.0, 0.0) if guess is None else (guess[0] - self.c[0], guess[1] - self.c[1])
        allowed = (sx[:, None] - gx) ** 2 + (sy[None, :] - gy) ** 2 <= radius ** 2
        xcm = torch.where(allowed[None], xc, torch.full_like(xc, -torch.inf))
        k = xcm.reshape(B, -1).argmax(dim=1)
        i, j = k // Qy, k % Qy
        b = torch.arange(B, device=cbed.device)
        f0 = xc[b, i, j]
        di = _parabolic(xc[b, (i - 1) % Qx, j], f0, xc[b, (i + 1) % Qx, j])
        dj = _parabolic(xc[b, i, (j - 1) % Qy], f0, xc[b, i, (j + 1) % Qy])
        return torch.stack([self.c[0] + sx[i] + di, self.c[1] + sy[j] + dj], dim=1)


def resample(img: torch.Tensor, centers: torch.Tensor, scale: float, P: int, center_px: int) -> torch.Tensor:
    """Bilinear resampling of (B, Qx, Qy) onto a (B, P, P) grid whose pixel ``center_px`` sits on
    ``centers`` (B, 2) and whose pitch is ``scale`` input pixels."""
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
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


class ModelInput:
    """What the network sees, from a user's patterns and vacuum probe (one owner for predict and evaluate).

    The probe is resampled onto the model grid (pitch ``scale`` input pixels, its centre of mass on
    pixel ``center_px``) and scaled to max 1 — the training data's convention. Each CBED is resampled
    the same way with ITS direct beam (``BeamFinder``) on ``center_px``, then scaled so that its total
    equals the probe's (removing beam-current drift) on the same max-1 scale.
    """

    def __init__(self, probe: np.ndarray, scale: float, P: int, center_px: int, device: str = "cpu"):
        self.finder = BeamFinder(probe, device)
        self.radius_px = max(3.0, 2.0 * probe_radius_px(probe))  # beam search radius around a guess
        self.scale, self.P, self.cp = float(scale), int(P), int(center_px)
        pt = torch.from_numpy(probe[None].astype(np.float32)).to(device)
        pr = resample(pt, torch.tensor([self.finder.c], device=device), self.scale, self.P, self.cp)
        self.probe_max, self.probe_sum = pr.max(), pr.sum()
        self.probe = pr / self.probe_max  # (1, P, P)

    def centres(self, patterns: torch.Tensor, guess: tuple[float, float] | None = None,
                radius_px: float | None = None) -> torch.Tensor:
        """Direct-beam position (input pixels) of each pattern, searched within ``radius_px`` (default:
        twice the probe radius) of ``guess`` (else of the probe's position)."""
        return self.finder.find(patterns, guess, self.radius_px if radius_px is None else radius_px)

    def __call__(self, patterns: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probe, cbed) batches (B, P, P) for ``model(probe, cbed)``."""
        cb = resample(patterns, centres, self.scale, self.P, self.cp)
        tot = cb.sum(dim=(1, 2), keepdim=True).clamp_min(1e-30)
        cb = cb * (self.probe_sum / tot) / self.probe_max
        return self.probe.expand(len(cb), self.P, self.P), cb


def parse_region(text: str) -> tuple[slice, slice]:
    """'rx0:rx1,ry0:ry1' -> slices."""
    try:
        a, b = text.split(",")
        sl = []
        for part in (a, b):
            lo, hi = part.split(":")
            sl.append(slice(int(lo), int(hi)))
        return sl[0], sl[1]
    except ValueError:
        raise UserError(f"--probe-from-region '{text}' is not of the form rx0:rx1,ry0:ry1",
                        "give scan ranges of vacuum positions, e.g. 0:4,0:8") from None


# --- the prediction loop -------------------------------------------------------------------------
def predict_cube(cube: Cube, probe: np.ndarray, model, geometry, q_pixel_size_invA: float, out_dir,
                 *, batch: int | None = None, device: str = "cpu", center: str = "per-pattern",
                 threshold: float = peaks.DEFAULT_THRESHOLD, min_spacing_px: float = peaks.DEFAULT_MIN_SPACING_PX,
                 baseline: str | None = None, classical_settings: dict | None = None, precision: str = "auto",
                 meta: dict | None = None, progress: bool = True) -> dict:
    """Run ``model`` over every pattern of ``cube``; publish the outputs in ``out_dir`` atomically.

    ``model(probe, cbed) -> (vg, qz)`` on the model grid (``geometry``); any callable with that
    signature works (tests use an oracle). Returns a summary dict (also written as summary.json).
    ``threshold`` / ``min_spacing_px``: peaks.find_peaks settings (the direct beam is kept as a vector).
    ``precision``: "fp32", "bf16" (autocast; the model keeps its FFTs and output head in fp32) or
    "auto" (bf16 where it is native — CUDA, CPUs with AVX512-BF16/AMX — else fp32). On the pretrained
    model's test crystals bf16 scores the same F1 as fp32 to two decimals and RMS within 0.01 px
    (docs/pretrained/metrics_bf16.json), and runs 1.3× faster end to end on a 2-core AVX512-BF16 CPU.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    Rx, Ry, Qx, Qy = cube.shape
    if probe.shape != (Qx, Qy):
        raise UserError(f"probe shape {probe.shape} differs from the pattern shape {(Qx, Qy)}",
                        "pass a vacuum probe recorded on the same detector (same binning / crop)")
    if not (q_pixel_size_invA and q_pixel_size_invA > 0):
        raise UserError("reciprocal pixel size must be > 0", "pass --q-pixel-size in 1/Å per pixel")
    if precision not in ("auto", "fp32", "bf16"):
        raise UserError(f"precision '{precision}' is not auto, fp32 or bf16", "pass --precision auto")
    dev_type = "cuda" if str(device).startswith("cuda") else "cpu"
    batch = int(batch or DEFAULT_BATCH[dev_type])
    use_bf16 = precision == "bf16" or (precision == "auto" and native_bf16(dev_type))
    P, cp, dk = geometry.detector_px, geometry.center_px, geometry.dk_invA
    dq = float(q_pixel_size_invA)
    scale = dk / dq  # input pixels per model pixel
    n = Rx * Ry
    inputs = ModelInput(probe, scale, P, cp, device)

    # the mean pattern's beam (a strided sample keeps this O(batch) in memory and time)
    sample_idx = np.unique(np.linspace(0, n - 1, min(n, 256)).astype(int))
    mean_dp = np.mean([cube.read(int(k), int(k) + 1)[0] for k in sample_idx], axis=0)
    mean_c = inputs.centres(torch.from_numpy(mean_dp[None]).to(device), None, max(Qx, Qy))[0].cpu().numpy()
    guess = (float(mean_c[0]), float(mean_c[1]))

    if baseline == "classical":
        from fourdcrystal.inference import classical

        kernel = classical.make_kernel(probe, classical.settings_from(classical_settings))
    if isinstance(model, torch.nn.Module) and device == "cpu":
        # oneDNN runs convolutions faster in NHWC; activations follow the weights' layout
        model = model.to(memory_format=torch.channels_last)
    origin = np.zeros((2, Rx, Ry))
    bvm = np.zeros((Qx, Qy))
    n_vec = 0
    t0 = time.perf_counter()

    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        schema = pa.schema([(c, pa.int32() if c in ("rx", "ry") else pa.float64()) for c in VECTOR_COLUMNS])
        writer = pq.ParquetWriter(tmp / "bragg_vectors.parquet", schema)
        kept: list[np.ndarray] = []  # per batch: (5, n) rx, ry, qx_px, qy_px, intensity
        try:
            for s in tqdm(range(0, n, batch), disable=not progress, desc="predict", unit="batch"):
                e = min(n, s + batch)
                raw = cube.read(s, e)
                x = torch.from_numpy(raw).to(device)
                if center == "mean":
                    cen = torch.tensor([guess] * len(x), device=device)
                else:
                    cen = inputs.centres(x, guess)
                cen_np = cen.cpu().numpy().astype(np.float64)
                idx = np.arange(s, e)
                rx, ry = np.divmod(idx, Ry)
                origin[0, rx, ry], origin[1, rx, ry] = cen_np[:, 0], cen_np[:, 1]
                if baseline == "classical":
                    # py4DSTEM's disks in the input's own pixels, instead of the network (same outputs;
                    # no q_z: the classical detector has no out-of-plane information)
                    df = classical.find_disks(raw, probe, classical_settings, kernel=kernel)
                    b = df["pattern"].to_numpy(dtype=int)
                    px, py = df["qx_px"].to_numpy(np.float64), df["qy_px"].to_numpy(np.float64)
                    qx, qy = (px - cen_np[b, 0]) * dq, (py - cen_np[b, 1]) * dq
                    inten, qz_v = df["intensity"].to_numpy(np.float64), np.full(len(df), np.nan)
                else:
                    pr, cb = inputs(x, cen)
                    with torch.inference_mode(), torch.autocast(dev_type, dtype=torch.bfloat16, enabled=use_bf16):
                        vg, qz = model(pr, cb)
                        pk = peaks.find_peaks(vg.float(), qz.float(), center_px=cp, threshold=threshold,
                                              min_spacing_px=min_spacing_px)
                    qx = (pk["qx_px"] - cp) * dk
                    qy = (pk["qy_px"] - cp) * dk
                    b = pk["pattern"]
                    px = cen_np[b, 0] + qx / dq
                    py = cen_np[b, 1] + qy / dq
                    inten, qz_v = pk["intensity"], pk["qz"]
                inside = (px >= 0) & (px <= Qx - 1) & (py >= 0) & (py <= Qy - 1)
                cols = {"rx": rx[b].astype(np.int32), "ry": ry[b].astype(np.int32), "qx": qx, "qy": qy,
                        "qx_px": px, "qy_px": py, "intensity": inten, "qz": qz_v}
                cols = {k: v[inside] for k, v in cols.items()}
                writer.write_table(pa.table(cols, schema=schema))
                n_vec += int(inside.sum())
                # Bragg vector map: vector counts on the input pixel grid, beam moved to the centre
                bi = np.rint(Qx // 2 + cols["qx"] / dq).astype(int)
                bj = np.rint(Qy // 2 + cols["qy"] / dq).astype(int)
                ok = (bi >= 0) & (bi < Qx) & (bj >= 0) & (bj < Qy)
                np.add.at(bvm, (bi[ok], bj[ok]), 1.0)
                kept.append(np.stack([cols["rx"], cols["ry"], cols["qx_px"], cols["qy_px"], cols["intensity"]]))
        finally:
            writer.close()
        elapsed = time.perf_counter() - t0
        np.save(tmp / "bragg_vector_map.npy", bvm)
        _bvm_png(bvm, tmp / "bragg_vector_map.png", dq)
        _write_braggvectors(tmp / "braggvectors.h5", (Rx, Ry), (Qx, Qy),
                            np.concatenate(kept, axis=1) if kept else np.zeros((5, 0)), origin, dq)
        summary = {"n_patterns": n, "n_vectors": n_vec, "seconds": elapsed, "patterns_per_s": n / max(elapsed, 1e-9),
                   "q_pixel_size_invA": dq, "model_dk_invA": dk, "model_detector_px": P, "center": center,
                   "mean_beam_px": [guess[0], guess[1]], "device": device, "precision": "bf16" if use_bf16 else "fp32", "threshold": threshold,
                   "min_spacing_px": min_spacing_px, "detector": baseline or "network",
                   "input": cube.path, **(meta or {})}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _bvm_png(bvm: np.ndarray, path: Path, dq: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Qx, Qy = bvm.shape
    ext = [-(Qy // 2) * dq, (Qy - 1 - Qy // 2) * dq, (Qx - 1 - Qx // 2) * dq, -(Qx // 2) * dq]
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(np.log1p(bvm), cmap="inferno", extent=ext)
    ax.set_xlabel("q_y (1/Å)")
    ax.set_ylabel("q_x (1/Å)")
    ax.set_title("Bragg vector map (log(1 + count))")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_braggvectors(path: Path, Rshape, Qshape, vectors: np.ndarray, origin: np.ndarray, dq: float) -> None:
    """py4DSTEM BraggVectors file (raw vectors in detector pixels, origin and pixel size in its
    calibration), written without importing py4DSTEM (fourdcrystal.braggvectors_file)."""
    from .braggvectors_file import write_braggvectors

    write_braggvectors(path, Rshape, Qshape, vectors, origin, dq)


# --- CLI -------------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="4-D datacube (Rx, Ry, Qx, Qy): .npy, .zarr, .h5/.emd (py4DSTEM), .blo, .mib, .dm4 ...")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--probe", help="vacuum probe image (same formats; a stack is averaged)")
    g.add_argument("--probe-from-region", metavar="RX0:RX1,RY0:RY1",
                   help="average the patterns of these vacuum scan positions as the probe")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--model", default=None, help=f"model checkpoint (default: {DEFAULT_MODEL})")
    p.add_argument("--q-pixel-size", type=float, default=None, help="reciprocal pixel size (1/Å per pixel)")
    p.add_argument("--energy", type=float, default=None, help="beam energy (eV); needed for mrad calibrations")
    p.add_argument("--dataset", default=None, help="array inside an HDF5/Zarr file")
    p.add_argument("--batch", type=int, default=None,
                   help=f"patterns per network call (default {DEFAULT_BATCH['cpu']} on CPU, {DEFAULT_BATCH['cuda']} on CUDA)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--center", default="per-pattern", choices=["per-pattern", "mean"],
                   help="find the direct beam in every pattern, or once in the mean pattern")
    p.add_argument("--threshold", type=float, default=None,
                   help="V_g peaks above this fraction of the direct beam (default: the model file's tuned value "
                        f"if stamped, else {peaks.DEFAULT_THRESHOLD}; the workflow's tuned value is "
                        "network_peak_settings in results/evaluation/metrics.json)")
    p.add_argument("--min-spacing", type=float, default=None,
                   help="non-maximum suppression: no two vectors within this many model-grid px "
                        f"(default: model file's value, else {peaks.DEFAULT_MIN_SPACING_PX})")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="network arithmetic: auto = bf16 where native (CUDA, CPUs with AVX512-BF16/AMX), else fp32")
    p.add_argument("--baseline", choices=["classical"], default=None, help="run py4DSTEM disk detection (vacuum-probe kernel, multicorr) instead of the network; same outputs, qz empty")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch {args.batch} must be >= 1", "pass a positive batch size")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA device is visible", "use --device cpu")
    cube = open_datacube(args.data, args.dataset)
    if args.probe is not None:
        probe, pcube = open_probe(args.probe)
        pcube.close()
    else:
        sx, sy = parse_region(args.probe_from_region)
        block = np.asarray(cube.array[sx, sy], dtype=np.float64)
        if block.size == 0:
            raise UserError(f"--probe-from-region {args.probe_from_region} selects no scan positions",
                            f"choose ranges inside the scan {cube.shape[:2]}")
        probe = block.reshape((-1,) + block.shape[-2:]).mean(axis=0).astype(np.float32)
    q = args.q_pixel_size or cube.q_pixel_size_invA
    if q is None:
        raise UserError(f"{args.data} carries no reciprocal-space calibration",
                        "pass --q-pixel-size (1/Å per pixel; with an mrad calibration also --energy)")
    model, geometry, meta = load_model(args.model, args.device)
    energy = args.energy or cube.energy_eV
    if energy and geometry.energies_eV and not (0.5 * min(geometry.energies_eV) <= energy <= 2 * max(geometry.energies_eV)):
        log.warning("beam energy %.0f eV is far from the training energies %s", energy, geometry.energies_eV)
    ps = peak_settings(meta, args.threshold, args.min_spacing)
    summary = predict_cube(cube, probe, model, geometry, float(q), args.out, batch=args.batch, device=args.device,
                           center=args.center, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"],
                           baseline=args.baseline, precision=args.precision,
                           classical_settings=meta.get("classical_settings"),
                           meta={"model": str(resolve_model(args.model)), "energy_eV": energy},
                           progress=not args.quiet)
    cube.close()
    print(f"{summary['n_vectors']} Bragg vectors from {summary['n_patterns']} patterns "
          f"({summary['patterns_per_s']:.1f} patterns/s) -> {args.out}")
    return 0


# --- the simulated-scan demo (rule scan_demo) ------------------------------------------------------
def make_demo_scan(config: dict, manifest_path, out_dir, root=".", scan_px: int = 12, n_grains: int = 4,
                   dose: float = 1e5) -> tuple[Path, Path, dict]:
    """A polycrystal 4D-STEM scan assembled from test-split quartets (not a new multislice run).

    ``n_grains`` test patterns of distinct (crystal, orientation) become grains of a Voronoi mosaic
    over a ``scan_px``² scan; every position gets its grain's CBED through the detector augmentation
    (dose ``dose``, fresh noise, origin shift = descan) so no two patterns are equal. Written as a
    memory-mapped .npy cube + probe; returns (cube path, probe path, info).
    """
    from fourdcrystal.learning.augment import Augmenter
    from fourdcrystal.simulation.store import load_manifest, read_pattern

    root = Path(root)
    test = load_manifest(manifest_path, "test")
    if test.empty:
        raise UserError("the test split is empty", "simulate more crystals (selection.n_crystals >= 3)")
    pick = test.drop_duplicates(["crystal_id", "orientation_id"]).sort_values("thickness_A")
    pick = pick.groupby(["crystal_id", "orientation_id"]).tail(1).head(n_grains).reset_index(drop=True)
    quartets = [read_pattern(root / r["store"], int(r["index"])) for _, r in pick.iterrows()]
    rng = np.random.default_rng([int(config.get("seed", 0)), 7])
    seeds = rng.uniform(0, scan_px, (len(quartets), 2))
    i, j = np.indices((scan_px, scan_px))
    grain = np.argmin((i[..., None] - seeds[:, 0]) ** 2 + (j[..., None] - seeds[:, 1]) ** 2, axis=-1)
    aug = Augmenter(config["augment"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    P = quartets[0]["cbed"].shape[-1]
    cube_path, probe_path = out_dir / "scan.npy", out_dir / "probe.npy"
    with atomic_path(cube_path) as tmp:
        with open(tmp, "wb") as fh:  # np.save appends .npy to names without it; write through a handle
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (scan_px, scan_px, P, P)})
            for rx in range(scan_px):
                row = np.stack([aug.apply(quartets[g]["cbed"], quartets[g]["probe"], rng, dose=dose) for g in grain[rx]])
                fh.write(row.astype("<f4").tobytes())
    with atomic_path(probe_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, quartets[0]["probe"].astype(np.float32))
    info = {"scan_px": scan_px, "dose_e_per_pattern": dose, "grains": pick[["crystal_id", "orientation_id",
                                                                             "thickness_A"]].to_dict("records"),
            "grain_map": grain.tolist()}
    return cube_path, probe_path, info


def run_scan_demo(snakemake) -> None:
    import shutil

    from fourdcrystal.geometry import Geometry

    cfg = dict(snakemake.config)
    out = Path(snakemake.output.vectors)
    cube_path, probe_path, info = make_demo_scan(cfg, snakemake.input.manifest, Path(snakemake.output.cube).parent,
                                                 scan_px=int(snakemake.params.scan_px))
    model, geometry, _ = load_model(snakemake.input.model, "cpu")
    dq = Geometry.from_config(cfg).dk_invA  # the scan is on the simulation grid
    cube = open_datacube(cube_path)
    probe, _ = open_probe(probe_path)
    # the peak settings evaluate tuned on val (what a user of the trained model should pass)
    ps = json.loads(Path(snakemake.input.metrics).read_text()).get("network_peak_settings") or {}
    ps = peak_settings(None, ps.get("peak_threshold", cfg["evaluate"]["peak_threshold"]),
                       ps.get("min_spacing_px", cfg["evaluate"].get("network_min_spacing_px")))
    s = predict_cube(cube, probe, model, geometry, dq, out, meta={"scan": info, "peak_settings": ps},
                     progress=False, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
    cube.close()
    with atomic_path(snakemake.output.map_png) as tmp:
        shutil.copyfile(out / "bragg_vector_map.png", tmp)
    log.info("scan demo: %d vectors from %d patterns (%.1f patterns/s)", s["n_vectors"], s["n_patterns"],
             s["patterns_per_s"])
