"""Benchmark: `fourdcrystal predict` patterns/s vs py4DSTEM find_Bragg_disks (multicorr), same scan.

Scan: a synthetic polycrystal datacube at the default detector (128², pitch 1/box_A) — disks on two
rotated lattices, per-position descan — written as .npy and read memory-mapped. Network: the model
of results/model/model.pt if it exists, else an untrained network of the config's model section
(speed does not depend on the weights); peak settings = network_peak_settings of
results/evaluation/metrics.json if present (the tuned ones), else the defaults. torch uses both cores; py4DSTEM runs with
OPENBLAS_NUM_THREADS=1 in one process (its CPU disk detection is serial), so its 2-core ideal
(×2, perfect process parallelism) is shown too. Memory: peak RSS of the CLI in a fresh subprocess
for two scan sizes (flat = streaming works). GPU section (bf16, 256² detector) only with CUDA.
Usage: python benchmarks/bench_predict.py [--quick]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fourdcrystal import classical, predict  # noqa: E402
from fourdcrystal.datacube_io import open_datacube  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.model import build_model, save_checkpoint  # noqa: E402


def disk(P, c, r):
    i, j = np.indices((P, P))
    return 1.0 / (1.0 + np.exp((np.hypot(i - c[0], j - c[1]) - r) / 0.4))


def write_scan(path, R, P, spacing_px=12.0, r=3.0, seed=0):
    rng = np.random.default_rng(seed)
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(R, R, P, P))
    c = P // 2
    for rx in range(R):
        for ry in range(R):
            th = 0.3 if ry < R // 2 else 1.0
            cc = np.array([c, c]) + rng.uniform(-1, 1, 2)
            dp = disk(P, cc, r)
            for h in range(-4, 5):
                for k in range(-4, 5):
                    if h or k:
                        q = spacing_px * np.array([h * np.cos(th) - k * np.sin(th), h * np.sin(th) + k * np.cos(th)])
                        if np.hypot(*q) < P / 2 - 6:
                            dp = dp + 0.2 * disk(P, cc + q, r)
            arr[rx, ry] = rng.poisson(dp * 200) / 200.0
    arr.flush()
    del arr
    np.save(Path(path).with_name("probe.npy"), disk(P, (c, c), r).astype(np.float32))


def model_file(cfg, geo, tmp):
    mp = ROOT / "results" / "model" / "model.pt"
    if mp.is_file():
        return mp, "results/model/model.pt"
    torch.manual_seed(0)
    return save_checkpoint(Path(tmp) / "untrained.pt", build_model(cfg["model"]), geo), "untrained (config model section)"


def peak_rss_mb(argv):
    code = ("import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,"
            "stderr=subprocess.DEVNULL);print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)")
    return float(subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True,
                                text=True).stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    geo = Geometry.from_config(cfg)
    P = geo.detector_px
    torch.set_num_threads(2)
    R = 6 if a.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mp, which = model_file(cfg, geo, tmp)
        write_scan(tmp / "scan.npy", R, P)
        cube = open_datacube(tmp / "scan.npy")
        probe = np.load(tmp / "probe.npy")
        mj = ROOT / "results" / "evaluation" / "metrics.json"
        ps = json.loads(mj.read_text()).get("network_peak_settings", {}) if mj.is_file() else {}
        ps = predict.peak_settings(None, ps.get("peak_threshold"), ps.get("min_spacing_px"))
        model, mgeo, _ = predict.load_model(str(mp), "cpu")
        plain = copy.deepcopy(model)  # contiguous (NCHW) weights; predict_cube switches to channels_last
        kw = dict(batch=32, progress=False, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
        e2e = {}
        for rep in range(2):  # interleaved repeats: the VM is shared, best of 2 per variant
            for prec in ("fp32", "bf16"):
                s = predict.predict_cube(cube, probe, model, mgeo, geo.dk_invA, tmp / f"net-{prec}-{rep}",
                                         precision=prec, **kw)
                e2e[prec] = max(e2e.get(prec, 0.0), s["patterns_per_s"])
                if prec == "fp32":
                    nvec = s["n_vectors"] / s["n_patterns"]
        net = e2e["fp32"]
        pats = cube.read(0, R * R)
        x = torch.from_numpy(pats[:32])
        fwd = {}
        for rep in range(3):
            for name, m, bf in (("nchw", plain, False), ("cl", model, False), ("cl_bf16", model, True)):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                    t0 = time.perf_counter()
                    m(x, x)
                    fwd[name] = max(fwd.get(name, 0.0), len(x) / (time.perf_counter() - t0))
        settings = classical.settings_from(cfg["evaluate"]["classical"])
        kern = classical.make_kernel(probe, settings)
        t0 = time.perf_counter()
        classical.find_disks(pats, probe, settings, kernel=kern)
        cls = R * R / (time.perf_counter() - t0)
        print(f"## predict vs py4DSTEM multicorr ({R}x{R} scan, {P}² px, model: {which}, {nvec:.0f} vectors/pattern, "
              f"threshold {ps['peak_threshold']}, NMS {ps['min_spacing_px']} px)\n")
        print("| method | threads | patterns/s | ratio network/method |")
        print("|---|---|---|---|")
        print(f"| fourdcrystal predict fp32 (end to end: read, centre, resample, network, peaks, write) | 2 | {net:.1f} | 1.0 |")
        print(f"| fourdcrystal predict --precision bf16 (end to end) | 2 | {e2e['bf16']:.1f} | {net / e2e['bf16']:.2f} |")
        print(f"| network forward only, fp32 NCHW weights (batch 32) | 2 | {fwd['nchw']:.1f} | {net / fwd['nchw']:.2f} |")
        print(f"| network forward only, fp32 channels_last (as in predict) | 2 | {fwd['cl']:.1f} | {net / fwd['cl']:.2f} |")
        print(f"| network forward only, bf16 channels_last | 2 | {fwd['cl_bf16']:.1f} | {net / fwd['cl_bf16']:.2f} |")
        print(f"| py4DSTEM find_Bragg_disks multicorr (kernel made once) | 1 | {cls:.1f} | {net / cls:.1f} |")
        print(f"| py4DSTEM, ideal 2-process parallel (x2) | 2 | {2 * cls:.1f} | {net / (2 * cls):.1f} |")

        sizes = [8, 16] if a.quick else [8, 24]
        rows = []
        for n in sizes:
            d = tmp / f"s{n}"
            d.mkdir()
            write_scan(d / "scan.npy", n, P, seed=n)
            rss = peak_rss_mb([sys.executable, "-m", "fourdcrystal.cli", "predict", str(d / "scan.npy"), "--probe",
                               str(d / "probe.npy"), "--out", str(d / "out"), "--model", str(mp), "--q-pixel-size",
                               str(geo.dk_invA), "--batch", "32", "--quiet", "--threshold", str(ps["peak_threshold"]),
                               "--min-spacing", str(ps["min_spacing_px"])])
            rows.append((n, (d / "scan.npy").stat().st_size / 2**20, rss))
        print("\n## peak RSS of `fourdcrystal predict` (fresh process, batch 32)\n")
        print("| scan | cube size (MiB) | peak RSS (MiB) |")
        print("|---|---|---|")
        for n, mb, rss in rows:
            print(f"| {n}x{n} | {mb:.0f} | {rss:.0f} |")

        if torch.cuda.is_available():
            g = Geometry(box_A=64.0, gpts=512, detector_px=256, thicknesses_A=(20.0,), slice_thickness_A=2.0)
            m = build_model(cfg["model"]).cuda().eval()
            x = torch.rand(64, 256, 256, device="cuda")
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    m(x, x)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(10):
                    m(x, x)
                torch.cuda.synchronize()
            print(f"\n## GPU ({torch.cuda.get_device_name()}): network bf16 at 256² ({g.detector_px} px): "
                  f"{640 / (time.perf_counter() - t0):.0f} patterns/s (batch 64, forward only)")


if __name__ == "__main__":
    main()
