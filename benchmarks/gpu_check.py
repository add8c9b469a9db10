"""One prepared GPU check (``make gpu-check``): every GPU path of 4D>Crystal run once and measured.

GPU time comes in short windows, so this is one command that fits one (≤ 8 min on one H200) and
keeps going when a section fails (the error is recorded, the other sections still run). Sections:

* ``multislice``: one SrTiO3 [001] orientation at production settings (256² detector, 512² grid,
  exit planes every 10 nm down to 100 nm, 4 probes: 40 quartets) through
  ``fourdcrystal.simulation.multislice.simulate_orientation`` — the workflow's own code — on CuPy and on NumPy.
  Relative error max|gpu − cpu| / max|cpu| of probe, CBED, V_g and q_z (q_z over the pixels where
  V_g > 1 % of its maximum: elsewhere q_z is a ratio of two vanishing numbers), and quartets/s of
  both (GPU: best of 2 after a warm-up; CPU: one run on this machine's cores).
* ``train``: the seed-scale model (config/seed_scale.yaml ``model``) at 256², bf16 autocast, AdamW
  set up as training does, wrapped in DistributedDataParallel over a one-process NCCL group (gloo
  on CPU): samples/s of the whole step; then ``fourdcrystal.learning.train.train`` itself for a few steps on
  a small synthetic dataset written with the real Zarr store writer.
* ``predict``: a 256² SrTiO3 scan (the multislice patterns through the detector augmentation at
  1e5 e⁻) through ``fourdcrystal.inference.predict.predict_cube`` — read, beam finding, resampling, network,
  peaks, parquet + map + BraggVectors file — in bf16 and fp32, with the shipped model's weights on
  a 256² grid of the same pitch; the network alone for the shipped and the seed-scale model; peak
  GPU memory.

The same script runs on CPU with tiny sizes (``--smoke``; the CI test runs it) so that it cannot
rot between GPU windows. Output: one JSON (``--out``) and a short table printed last.

    python benchmarks/gpu_check.py --out gpu_check.json          # on a GPU node
    python benchmarks/gpu_check.py --smoke --out /tmp/smoke.json  # anywhere, ~1 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fourdcrystal.geometry import Geometry  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """Everything the check's run time depends on."""

    detector_px: int
    gpts: int
    thicknesses_A: tuple[float, ...]
    n_probes: int
    train_batch: int
    train_steps: int
    scan_px: int  # predict scan edge (scan_px² patterns)
    net_batch: int
    train_run_patterns: int


FULL = Sizes(detector_px=256, gpts=512, thicknesses_A=tuple(100.0 * i for i in range(1, 11)), n_probes=4,
             train_batch=32, train_steps=30, scan_px=64, net_batch=256, train_run_patterns=64)
SMOKE = Sizes(detector_px=64, gpts=128, thicknesses_A=(8.0, 16.0), n_probes=2, train_batch=2, train_steps=2,
              scan_px=4, net_batch=8, train_run_patterns=6)


def _config(name: str) -> dict:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _section(results: dict, out: Path, name: str, fn, *args) -> None:
    """Run one section; record its figures or its error, rewrite ``out`` (a later time-out keeps what
    ran) and go on."""
    t0 = time.perf_counter()
    print(f"[gpu_check] {name} ...", flush=True)
    try:
        results[name] = {**fn(*args), "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as exc:  # noqa: BLE001 - a failed section must not stop the others
        traceback.print_exc()
        results[name] = {"error": f"{type(exc).__name__}: {exc}", "seconds": round(time.perf_counter() - t0, 1)}
    print(f"[gpu_check] {name}: {json.dumps(results[name], default=str)[:400]}", flush=True)
    out.write_text(json.dumps(results, indent=1, default=str))


# --- environment ------------------------------------------------------------------------------------
def environment() -> dict:
    env = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
           "cpu_cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), cuda_runtime=torch.version.cuda,
                   gpu_memory_GiB=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    for mod in ("cupy", "abtem", "zarr", "pymatgen.core"):
        try:
            env[mod] = getattr(__import__(mod, fromlist=["_"]), "__version__", "?")
        except ImportError:
            env[mod] = None
    return env


# --- multislice --------------------------------------------------------------------------------------
def simulation_geometry(s: Sizes) -> Geometry:
    return Geometry(box_A=32.0, gpts=s.gpts, detector_px=s.detector_px, thicknesses_A=s.thicknesses_A,
                    slice_thickness_A=2.0, energies_eV=(200e3,), semiangle_mrad_range=(1.0, 4.0))


def srtio3_atoms(geo: Geometry):
    from fourdcrystal.simulation.examples import srtio3
    from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell

    sto = srtio3()
    return build_supercell(sto, align_zone_to_z(sto.lattice.matrix, (0, 0, 1)), geo)


def _rel_err(a: np.ndarray, b: np.ndarray, where: np.ndarray | None = None) -> float:
    if where is not None:
        a, b = a[where], b[where]
    return float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def multislice(s: Sizes, gpu: bool, shared: dict) -> dict:
    from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation

    geo = simulation_geometry(s)
    atoms = srtio3_atoms(geo)
    sim = {"parametrization": "lobato", "projection": "infinite", "qz_sigma_invA": 0.075, "tukey_alpha": 0.25}
    probes = [ProbeSetting(i, 200e3, 1.0 + 3.0 * i / max(1, s.n_probes - 1), 0.0) for i in range(s.n_probes)]
    n_q = s.n_probes * len(geo.thicknesses_A)
    out = {"atoms": len(atoms), "slices": geo.n_slices, "quartets_per_orientation": n_q,
           "detector_px": geo.detector_px, "gpts": geo.gpts, "max_thickness_nm": geo.max_thickness_A / 10}
    t0 = time.perf_counter()
    cpu, _, cpu_t = simulate_orientation(atoms, geo, sim, probes, device="cpu")
    out["cpu_quartets_per_s"] = n_q / (time.perf_counter() - t0)
    out["cpu_phase_s"] = {k: round(v, 2) for k, v in cpu_t.items()}
    shared["patterns"] = cpu  # the predict section's scan is built from these
    shared["geometry"] = geo
    if not gpu:
        return out
    small = simulation_geometry(SMOKE)  # warm-up: CuPy kernel compilation, cuFFT plans
    simulate_orientation(srtio3_atoms(small), small, sim, probes[:1], device="gpu")
    best, gpu_arr, gpu_t = np.inf, None, None
    for _ in range(2):
        t0 = time.perf_counter()
        gpu_arr, _, gpu_t = simulate_orientation(atoms, geo, sim, probes, device="gpu")
        best = min(best, time.perf_counter() - t0)
    out["gpu_quartets_per_s"] = n_q / best
    out["gpu_phase_s"] = {k: round(v, 2) for k, v in gpu_t.items()}
    out["gpu_vs_cpu"] = out["gpu_quartets_per_s"] / out["cpu_quartets_per_s"]
    sig = cpu["vg"] > 0.01 * cpu["vg"].max(axis=(1, 2), keepdims=True)
    out["rel_err"] = {"probe": _rel_err(gpu_arr["probe"], cpu["probe"]), "cbed": _rel_err(gpu_arr["cbed"], cpu["cbed"]),
                      "vg": _rel_err(gpu_arr["vg"], cpu["vg"]), "qz": _rel_err(gpu_arr["qz"], cpu["qz"], sig)}
    out["rel_err_ok"] = max(out["rel_err"].values()) <= 1e-3
    return out


# --- training ------------------------------------------------------------------------------------------
def _one_process_group(dev: str):
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29517")
    backend = "nccl" if dev == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1)
    return dist, backend


def train_step_rate(s: Sizes, dev: str) -> dict:
    from fourdcrystal.learning.model import build_model
    from fourdcrystal.learning.train import pattern_losses

    mcfg = _config("seed_scale.yaml")["model"]
    P = s.detector_px
    model = build_model({**_config("config.yaml")["model"], **mcfg}).to(dev)
    dist, backend = _one_process_group(dev)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0] if dev == "cuda" else None)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        g = torch.Generator(device="cpu").manual_seed(0)
        probe = torch.rand(s.train_batch, P, P, generator=g).to(dev)
        cbed, vg, qz = (torch.rand(s.train_batch, P, P, generator=g).to(dev) for _ in range(3))

        def step():
            with torch.autocast(device_type=dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
                vg_p, qz_p = ddp(probe, cbed)
            lv, lq = pattern_losses(vg_p.float(), qz_p.float(), vg, qz, 0.05, 0.1)
            loss = (lv + 0.02 * lq).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        for _ in range(3):
            step()
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(s.train_steps):
            loss = step()
        _sync(dev)
        rate = s.train_steps * s.train_batch / (time.perf_counter() - t0)
    finally:
        dist.destroy_process_group()
    return {"backend": backend, "ddp_world_size": 1, "model": {k: mcfg[k] for k in ("base_channels", "depth")},
            "detector_px": P, "batch": s.train_batch, "bf16_autocast": dev == "cuda",
            "samples_per_s": rate, "finite_loss": bool(torch.isfinite(loss))}


def train_run(s: Sizes, dev: str) -> dict:
    """fourdcrystal.learning.train.train itself (data loader, augmentation, checkpoints) for a few steps."""
    import pandas as pd

    from fourdcrystal.simulation import store as qstore
    from fourdcrystal.learning.train import train

    sys.path.insert(0, str(ROOT / "tests"))
    from test_model import synth_quartets

    P, n = s.detector_px, s.train_run_patterns
    geo = Geometry(box_A=32.0, gpts=2 * P, detector_px=P, thicknesses_A=(20.0,), slice_thickness_A=2.0)
    cfg = _config("config.yaml")
    cfg["train"].update(batch_size=min(16, n), max_steps=max(4, 2 * s.train_steps // 3), epochs=1,
                        checkpoint_every=1000, backend="auto")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = []
        for c, split in enumerate(("train", "val")):
            shard = tmp / f"c{c}" / "shard-0000"
            qstore.write_shard(shard, synth_quartets(n, P, seed=c), pd.DataFrame({"crystal_id": [f"c{c}"] * n}),
                               pd.DataFrame({"index": pd.Series(dtype="int64")}), geo)
            rows += [{"store": str(shard / "quartets.zarr"), "index": i, "split": split} for i in range(n)]
        pd.DataFrame(rows).to_parquet(tmp / "manifest.parquet", index=False)
        t0 = time.perf_counter()
        path = train(cfg, tmp / "manifest.parquet", tmp / "model", root="/")
        wall = time.perf_counter() - t0
        steps = pd.read_csv(tmp / "model" / "metrics_steps.csv")
    return {"device": dev, "steps": int(steps["step"].max()), "model_written": path is not None,
            "median_samples_per_s": float(steps["samples_per_s"].iloc[1:].median()), "wall_s": wall,
            "final_loss": float(steps["loss"].iloc[-1])}


# --- predict -----------------------------------------------------------------------------------------
def _write_scan(path: Path, patterns: dict, s: Sizes) -> np.ndarray:
    """scan_px² patterns: the multislice CBEDs through the detector augmentation (1e5 e⁻), cycled."""
    from fourdcrystal.learning.augment import Augmenter

    aug = Augmenter(_config("config.yaml")["augment"])
    rng = np.random.default_rng(0)
    cbed, probe = patterns["cbed"], patterns["probe"][0]
    unique = np.stack([aug.apply(cbed[i % len(cbed)], probe, rng, dose=1e5) for i in range(min(256, s.scan_px**2))])
    P = cbed.shape[-1]
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(s.scan_px, s.scan_px, P, P))
    flat = arr.reshape(-1, P, P)
    for k in range(0, len(flat), len(unique)):
        flat[k:k + len(unique)] = unique[:len(flat) - k]
    arr.flush()
    return probe


def _forward_rate(model, P: int, batch: int, dev: str, bf16: bool, repeats: int) -> float:
    x = torch.rand(batch, P, P, device=dev)
    with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=bf16):
        for _ in range(2):
            model(x, x)
        _sync(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x, x)
        _sync(dev)
    return repeats * batch / (time.perf_counter() - t0)


def predict_rates(s: Sizes, dev: str, shared: dict) -> dict:
    from fourdcrystal.inference import predict
    from fourdcrystal.inference.datacube_io import open_datacube
    from fourdcrystal.learning.model import build_model, save_checkpoint

    geo = shared["geometry"]
    shipped, _, meta = predict.load_model(None, "cpu")
    ps = predict.peak_settings(meta)
    out = {"detector_px": geo.detector_px, "scan_patterns": s.scan_px**2, "peak_settings": ps}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the shipped weights (fully convolutional) on a 256² grid of the same pitch (1/32 Å⁻¹)
        save_checkpoint(tmp / "model.pt", shipped, geo)
        model, mgeo, _ = predict.load_model(str(tmp / "model.pt"), dev)
        probe = _write_scan(tmp / "scan.npy", shared["patterns"], s)
        cube = open_datacube(tmp / "scan.npy")
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for prec in ("bf16", "fp32"):
            rates = []
            for rep in range(2):  # the first pass warms up (cuDNN autotuning, allocator)
                summ = predict.predict_cube(cube, probe, model, mgeo, geo.dk_invA, tmp / f"out-{prec}-{rep}",
                                            device=dev, precision=prec, progress=False,
                                            threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
                rates.append(summ["patterns_per_s"])
            out[f"end_to_end_{prec}_patterns_per_s"] = rates[-1]
            out[f"vectors_per_pattern_{prec}"] = summ["n_vectors"] / summ["n_patterns"]
        cube.close()
        if dev == "cuda":
            out["peak_gpu_memory_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    reps = 10 if dev == "cuda" else 1
    seed_model = build_model({**_config("config.yaml")["model"], **_config("seed_scale.yaml")["model"]}).to(dev).eval()
    for name, m in (("shipped", model), ("seed_scale", seed_model)):
        for prec in ("bf16", "fp32"):
            out[f"network_{name}_{prec}_patterns_per_s"] = _forward_rate(m, geo.detector_px, s.net_batch, dev,
                                                                          prec == "bf16", reps)
    out["goal_5000_end_to_end_bf16"] = out["end_to_end_bf16_patterns_per_s"] >= 5000
    return out


# --- report --------------------------------------------------------------------------------------------
def table(results: dict) -> str:
    rows = []

    def row(name, value, unit=""):
        rows.append(f"| {name} | {value} {unit} |".replace("  |", " |"))

    env = results["environment"]
    row("device", env.get("gpu") or f"CPU ({env['cpu_cores']} cores)")
    ms, tr, run, pr = (results.get(k, {}) for k in ("multislice", "train_step", "train_run", "predict"))
    for sec in (ms, tr, run, pr):
        if "error" in sec:
            row("error", sec["error"][:120])
    if "cpu_quartets_per_s" in ms:
        row("multislice NumPy (CPU)", f"{ms['cpu_quartets_per_s']:.2f}", "quartets/s")
    if "gpu_quartets_per_s" in ms:
        row("multislice CuPy (GPU)", f"{ms['gpu_quartets_per_s']:.2f}", f"quartets/s ({ms['gpu_vs_cpu']:.1f}x CPU)")
        row("CuPy vs NumPy max rel. error", ", ".join(f"{k} {v:.1e}" for k, v in ms["rel_err"].items()))
    if "samples_per_s" in tr:
        row(f"train step ({tr['backend']} DDP, world 1)", f"{tr['samples_per_s']:.0f}", "samples/s")
    if "median_samples_per_s" in run:
        row("fourdcrystal.learning.train.train", f"{run['median_samples_per_s']:.0f}", "samples/s")
    for key, value in pr.items():
        if key.endswith("patterns_per_s"):
            row(f"predict {key.removesuffix('_patterns_per_s').replace('_', ' ')}", f"{value:.0f}", "patterns/s")
    if "peak_gpu_memory_GiB" in pr:
        row("predict peak GPU memory", f"{pr['peak_gpu_memory_GiB']:.2f}", "GiB")
    return "| check | result |\n|---|---|\n" + "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, CPU allowed (CI)")
    ap.add_argument("--out", default="gpu_check.json", help="JSON file to write")
    a = ap.parse_args(argv)
    s = SMOKE if a.smoke else FULL
    gpu = torch.cuda.is_available()
    if not gpu and not a.smoke:
        print("gpu_check: no CUDA device is visible — run on a GPU node, or pass --smoke to exercise the "
              "script on CPU", file=sys.stderr)
        return 2
    dev = "cuda" if gpu else "cpu"
    torch.manual_seed(0)
    results: dict = {"mode": "smoke" if a.smoke else "full", "sizes": s.__dict__, "environment": environment()}
    shared: dict = {}
    out = Path(a.out)
    _section(results, out, "multislice", multislice, s, gpu, shared)
    _section(results, out, "train_step", train_step_rate, s, dev)
    _section(results, out, "train_run", train_run, s, dev)
    if "patterns" in shared:
        _section(results, out, "predict", predict_rates, s, dev, shared)
    print(json.dumps(results, indent=1, default=str))
    print(table(results))
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed or "predict" not in results else 0


if __name__ == "__main__":
    sys.exit(main())
