"""Benchmark: `fourdcrystal predict` patterns/s vs py4DSTEM find_Bragg_disks (multicorr), same scan.

Scan: SrTiO3 [001] (40 Å, 300 kV, 4 mrad; one real multislice pattern, fourdcrystal.simulation.examples) on
the model's detector grid (128², 1/32 Å⁻¹ per px), put through the detector augmentation at every
scan position (1e5 e⁻, fresh shot noise, descan ±1 px, background, blur), written as .npy
(32×32 = 1,024 patterns). Network: the shipped pretrained model (what `predict` uses without
--model; the forward cost does not depend on the weights, the number of peaks does) with its
stamped peak settings; the first pass warms
up (oneDNN primitives), then best of two. `predict` runs as users get it (one forked worker process per
core, one torch thread each: ``predict.detection_workers``) and as one process of both threads
(``--workers 1``); py4DSTEM runs with OPENBLAS_NUM_THREADS=1 (its CPU disk detection is serial), in
one process and with the scan split over two worker processes (measured, started before the clock), best of two each,
with the settings tuned for the model's grid (stamped in the model file). The CLI row times a fresh
`fourdcrystal predict` process from start to exit. Memory, for two scan sizes (flat = streaming works),
with the default workers and with one process: the peak RSS of the largest process and the peak PSS of
all of them together (shared pages counted once). GPU section (bf16, 256² detector) only with CUDA.
``--startup``: only the start-up figures — whole-process wall time of `fourdcrystal predict` on a
2×2 scan (4 patterns, the same SrTiO3 pattern, default model and precision, vacuum probe given) and
of `fourdcrystal --help`, median of ``--repeats`` fresh processes; with ``--before-src DIR`` (a
``src/`` folder of another revision, e.g. ``git archive <rev> src | tar -x -C /tmp/before``) the same
commands of that revision run interleaved with this one's, so both see the same machine load.
Usage: python benchmarks/bench_predict.py [--quick] [--semiangle-mrad A] | --startup [--before-src DIR] [--repeats N]
"""
from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
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
from fourdcrystal.inference import classical  # noqa: E402
from fourdcrystal.inference import predict  # noqa: E402
from fourdcrystal.inference import detectors  # noqa: E402
from fourdcrystal.learning.augment import Augmenter  # noqa: E402
from fourdcrystal.inference.datacube_io import open_datacube  # noqa: E402
from fourdcrystal.simulation.examples import srtio3, zone_axis_cbed  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.learning.model import build_model  # noqa: E402


def simulated_pattern(geo, semiangle_mrad: float = 4.0):
    """SrTiO3 [001], 40 Å, 300 kV, 4 mrad (overlapping disks: judged against the circle about the beam,
    no refinement on the pattern) or ``semiangle_mrad``: one real multislice CBED on the model's detector grid."""
    return zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=40.0, semiangle_mrad=semiangle_mrad)


def write_scan(path, R, ex, augment_cfg, dose=1e5, seed=0):
    """An R×R scan of the example pattern through the detector augmentation (dose, fresh shot noise,
    descan ±1 px, background, blur, bad pixels): every position differs, as on a real camera."""
    rng = np.random.default_rng(seed)
    aug = Augmenter(augment_cfg)
    P = ex["cbed"].shape[-1]
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(R, R, P, P))
    for rx in range(R):
        arr[rx] = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=dose) for _ in range(R)])
    arr.flush()
    del arr
    np.save(Path(path).with_name("probe.npy"), ex["probe"].astype(np.float32))


def model_file(arg):
    """The shipped pretrained model (what `predict` uses without --model), or the one given."""
    mp = Path(arg) if arg else predict.DEFAULT_MODEL
    return mp, (str(mp.relative_to(ROOT)) if mp.is_relative_to(ROOT) else str(mp))


def _classical_rate(pats, probe, settings, kern, procs):
    """py4DSTEM patterns/s over ``pats``, split over ``procs`` worker processes (real, not ideal)."""
    if procs == 1:
        t0 = time.perf_counter()
        classical.find_disks(pats, probe, settings, kernel=kern)
        return len(pats) / (time.perf_counter() - t0)
    from concurrent.futures import ProcessPoolExecutor

    parts = np.array_split(pats, procs)
    with ProcessPoolExecutor(procs) as ex:  # workers start (and import py4DSTEM) before the clock
        list(ex.map(classical.find_disks, [p[:1] for p in parts], [probe] * procs, [settings] * procs,
                    [kern] * procs))
        t0 = time.perf_counter()
        list(ex.map(classical.find_disks, parts, [probe] * procs, [settings] * procs, [kern] * procs))
        return len(pats) / (time.perf_counter() - t0)


def peak_memory_mb(argv) -> tuple[float, float]:
    """(peak RSS of its largest process, peak PSS of the process and its workers together), MiB, of a fresh
    ``argv`` process. PSS shares each page among the processes that map it: the forked workers' copy-on-write
    model and libraries count once (Linux /proc, sampled every 50 ms; NaN elsewhere)."""
    code = ("import resource,subprocess,sys;subprocess.run(sys.argv[1:],check=True,stdout=subprocess.DEVNULL,"
            "stderr=subprocess.DEVNULL);print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024)")
    wrapper = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, text=True)
    samples = []
    while wrapper.poll() is None:  # the wrapper's own few MiB left out: its children only
        samples.append(_tree_pss_kb(wrapper.pid) - _tree_pss_kb(wrapper.pid, children=False))
        time.sleep(0.05)
    if wrapper.returncode:
        raise subprocess.CalledProcessError(wrapper.returncode, argv)
    samples = [x for x in samples if np.isfinite(x)]  # a process that ended while it was read
    return float(wrapper.stdout.read().strip()), max(samples, default=float("nan")) / 1024


def _tree_pss_kb(pid: int, children: bool = True) -> float:
    """PSS (kB) of ``pid`` and (``children``) its descendants now; NaN where /proc does not tell."""
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split() if children else []
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return float("nan")
    return pss + sum(_tree_pss_kb(int(k)) for k in kids)


def startup(cfg, before_src: str | None, repeats: int) -> None:
    """Median wall time of fresh `fourdcrystal predict` (4 patterns) and `fourdcrystal --help` processes."""
    import statistics

    _, mgeo, _ = predict.load_model(None, "cpu")
    trees = ([("before", Path(before_src))] if before_src else []) + [("this revision", ROOT / "src")]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_scan(tmp / "scan.npy", 2, simulated_pattern(mgeo), cfg["augment"])
        cmds = {"predict, 4 patterns": ["predict", str(tmp / "scan.npy"), "--probe", str(tmp / "probe.npy"), "--out",
                                        str(tmp / "out"), "--q-pixel-size", str(mgeo.dk_invA), "--quiet"],
                "--help": ["--help"]}
        times = {(t, c): [] for t, _ in trees for c in cmds}
        for _ in range(repeats):
            for (tree, src), (name, argv) in ((t, c) for t in trees for c in cmds.items()):
                env = {**os.environ, "PYTHONPATH": str(src)}
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *argv], check=True, env=env,
                               stdout=subprocess.DEVNULL)
                times[(tree, name)].append(time.perf_counter() - t0)
    print(f"## start-up: whole-process wall time, median of {repeats} fresh processes (s)\n")
    print("| command | " + " | ".join(t for t, _ in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for name in cmds:
        cells = [f"{statistics.median(times[(t, name)]):.2f} (min {min(times[(t, name)]):.2f})" for t, _ in trees]
        print(f"| `fourdcrystal {name}` | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--model", default=None, help="model file (default: the shipped pretrained model)")
    ap.add_argument("--startup", action="store_true", help="only the start-up figures")
    ap.add_argument("--before-src", default=None, help="with --startup: a src/ folder of another revision to compare")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--semiangle-mrad", type=float, default=4.0,
                    help="probe of the simulated scan (≤ 1.9 mrad: separate disks, checked and refined on the pattern)")
    a = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if a.startup:
        return startup(cfg, a.before_src, a.repeats)
    geo = Geometry.from_config(cfg)
    P = geo.detector_px
    torch.set_num_threads(2)
    R = 12 if a.quick else 32
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mp, which = model_file(a.model)
        model, mgeo, meta = predict.load_model(str(mp), "cpu")
        if mgeo.detector_px != P or abs(mgeo.dk_invA - geo.dk_invA) > 1e-12:
            sys.exit(f"model grid {mgeo.detector_px} px at {mgeo.dk_invA} 1/Å differs from config/config.yaml's")
        ex = simulated_pattern(mgeo, a.semiangle_mrad)
        write_scan(tmp / "scan.npy", R, ex, cfg["augment"])
        cube = open_datacube(tmp / "scan.npy")
        probe = np.load(tmp / "probe.npy")
        ps = predict.peak_settings(meta)  # the model file's tuned settings, as `predict` uses them
        plain = copy.deepcopy(model)  # contiguous (NCHW) weights; predict_cube switches to channels_last
        kw = dict(progress=False, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
        e2e, procs = {}, {}
        # the default (one worker process per core, ``predict.detection_workers``) and one process of both threads
        runs = (("fp32", None), ("bf16", None), ("bf16", 1))
        for rep in range(3):  # rep 0 warms up (oneDNN primitives, allocator); best of the other 2
            for prec, workers in runs:
                s = predict.predict_cube(cube, probe, model, mgeo, geo.dk_invA, tmp / f"net-{prec}-{workers}-{rep}",
                                         precision=prec, workers=workers, **kw)
                if rep:
                    e2e[prec, workers] = max(e2e.get((prec, workers), 0.0), s["patterns_per_s"])
                procs[prec, workers] = f"{s['workers']} x {s['threads_per_worker']}"
                if prec == "fp32":
                    nvec = s["n_vectors"] / s["n_patterns"]
        net = e2e["fp32", None]
        # the CLI as a user runs it: fresh process, imports, model load, outputs incl. BraggVectors h5
        argv = [sys.executable, "-m", "fourdcrystal.cli", "predict", str(tmp / "scan.npy"), "--probe",
                str(tmp / "probe.npy"), "--out", str(tmp / "cli"), "--model", str(mp), "--q-pixel-size",
                str(geo.dk_invA), "--quiet"]
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        cli = R * R / (time.perf_counter() - t0)
        pats = cube.read(0, R * R)
        x = torch.from_numpy(pats[:detectors.DEFAULT_BATCH["cpu"]])
        fwd = {}
        for rep in range(7):
            for name, m, bf in (("nchw", plain, False), ("cl", model, False), ("cl_bf16", model, True)):
                with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf):
                    t0 = time.perf_counter()
                    m(x, x)
                    if rep:
                        fwd[name] = max(fwd.get(name, 0.0), len(x) / (time.perf_counter() - t0))
        # py4DSTEM with the settings tuned for this model's grid (stamped in the model file), else config's
        settings = classical.settings_from(meta.get("classical_settings") or cfg["evaluate"]["classical"])
        kern = classical.make_kernel(probe, settings)
        # best of two, as for predict (the first predict pass is a warm-up besides)
        cls1 = max(_classical_rate(pats, probe, settings, kern, 1) for _ in range(2))
        cls2 = max(_classical_rate(pats, probe, settings, kern, 2) for _ in range(2))
        print(f"## predict vs py4DSTEM multicorr ({R}x{R} scan = {R * R} patterns of SrTiO3 [001], 40 Å, 1e5 e⁻, "
              f"{P}² px, model: {which}, "
              f"{nvec:.0f} vectors/pattern, threshold {ps['peak_threshold']}, NMS {ps['min_spacing_px']} px)\n")
        print("| method | processes x threads | patterns/s | vs py4DSTEM 1 process | vs py4DSTEM 2 processes |")
        print("|---|---|---|---|---|")

        def row(name, pt, rate):
            print(f"| {name} | {pt} | {rate:.1f} | {rate / cls1:.1f}x | {rate / cls2:.1f}x |")

        row("fourdcrystal predict --precision fp32 (read, centre, resample, network, checks, parquet; default "
            "worker processes)", procs["fp32", None], net)
        row("fourdcrystal predict --precision bf16 (same)", procs["bf16", None], e2e["bf16", None])
        row("fourdcrystal predict --precision bf16 --workers 1 (one process)", procs["bf16", 1], e2e["bf16", 1])
        auto = "bf16" if detectors.auto_bf16("cpu") else "fp32"
        row(f"`fourdcrystal predict` CLI, default precision (auto = {auto} here) and workers, wall time of a fresh "
            "process (imports, model load, all outputs incl. BraggVectors h5)", procs[auto, None], cli)
        row("network forward only, fp32 NCHW weights (same batch)", "1 x 2", fwd["nchw"])
        row("network forward only, fp32 channels_last (as in predict)", "1 x 2", fwd["cl"])
        row("network forward only, bf16 channels_last", "1 x 2", fwd["cl_bf16"])
        row("py4DSTEM find_Bragg_disks multicorr (kernel made once, OPENBLAS_NUM_THREADS=1)", "1 x 1", cls1)
        row("py4DSTEM, same, scan split over 2 worker processes (measured)", "2 x 1", cls2)

        sizes = [8, 16] if a.quick else [16, 48]
        rows = []
        for n in sizes:
            d = tmp / f"s{n}"
            d.mkdir()
            write_scan(d / "scan.npy", n, ex, cfg["augment"], seed=n)
            for workers in ([], ["--workers", "1"]):
                rss, pss = peak_memory_mb([sys.executable, "-m", "fourdcrystal.cli", "predict", str(d / "scan.npy"),
                                           "--probe", str(d / "probe.npy"), "--out", str(d / f"out{len(workers)}"),
                                           "--model", str(mp), "--q-pixel-size", str(geo.dk_invA), "--batch", "32",
                                           "--quiet", *workers])
                rows.append((n, (d / "scan.npy").stat().st_size / 2**20, " ".join(workers) or "default", rss, pss))
        print("\n## peak memory of `fourdcrystal predict` (fresh process, batch 32)\n")
        print("| scan | cube size (MiB) | workers | largest process, peak RSS (MiB) | all processes, peak PSS (MiB) |")
        print("|---|---|---|---|---|")
        for n, mb, w, rss, pss in rows:
            print(f"| {n}x{n} | {mb:.0f} | {w} | {rss:.0f} | {pss:.0f} |")

        if torch.cuda.is_available():
            g = Geometry(box_A=64.0, gpts=512, detector_px=256, thicknesses_A=(20.0,), slice_thickness_A=2.0)
            m = build_model(cfg["model"]).cuda().eval().to(memory_format=torch.channels_last)
            nb = detectors.DEFAULT_BATCH["cuda"]
            x = torch.rand(nb, 256, 256, device="cuda")
            with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
                for _ in range(3):
                    m(x, x)
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(10):
                    m(x, x)
                torch.cuda.synchronize()
            print(f"\n## GPU ({torch.cuda.get_device_name()}): network bf16 at 256² ({g.detector_px} px): "
                  f"{10 * nb / (time.perf_counter() - t0):.0f} patterns/s (batch {nb}, forward only; goal >= 5,000)")


if __name__ == "__main__":
    main()
