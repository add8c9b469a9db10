"""Store overhead of a simulate job: label + write time as a fraction of the multislice time.

Simulates one shard of diamond Si at the default config (config/config.yaml: box 32 Å, gpts 256,
detector 128², 3 thicknesses, 2 probes per orientation) through the real `simulate` orchestration
(fourdcrystal.simulation.shard.simulate_shard), once to warm imports up and once measured; then rewrites the
same arrays with each compressor/dtype to compare write throughput, and measures random-access
read_pattern speed (what a training DataLoader sees).  Prints markdown tables.

    .venv/bin/python benchmarks/bench_store.py
    .venv/bin/python benchmarks/bench_store.py --overrides config/seed_scale.yaml --phases-only

``--overrides`` deep-merges a config on top of config/config.yaml (as ``snakemake --configfile`` does)
to measure the phases at production settings; the device is forced to cpu and the shard cut to one
orientation so that it runs on a laptop.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fourdcrystal.simulation import store  # noqa: E402
from fourdcrystal.config import load as config_load  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.simulation.shard import simulate_shard  # noqa: E402
from fourdcrystal.simulation.supercells import build_crystal  # noqa: E402


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    import argparse

    from pymatgen.core import Lattice, Structure

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overrides", help="config overlay, e.g. config/seed_scale.yaml")
    ap.add_argument("--phases-only", action="store_true", help="skip the write-throughput and read tables")
    args_cli = ap.parse_args()
    overlays = [args_cli.overrides] if args_cli.overrides else []
    cfg = config_load(ROOT / "config" / "config.yaml", *overlays)
    label = "default config"
    if args_cli.overrides:
        cfg["simulation"]["device"] = "cpu"
        cfg["orientations"].update(n_zone_axes=1, n_free=0, n_inplane=1, n_tilts=1)
        label = f"{args_cli.overrides} on CPU, one orientation"
    work = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        (work / "cifs").mkdir()
        si = Structure(Lattice.cubic(5.431), ["Si"] * 8,
                       [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.25, .25, .25], [.25, .75, .75],
                        [.75, .25, .75], [.75, .75, .25]])
        si.to(filename=str(work / "cifs" / "si.cif"))
        build_crystal(si, "si", cfg, work / "o.csv", work / "s.extxyz")
        args = (cfg, "si", work / "cifs", work / "o.csv", work / "s.extxyz", 0)
        simulate_shard(*args, work / "warm")  # imports, FFT plans
        res = simulate_shard(*args, work / "shard-0000")
        t = res["timings_s"]
        n = res["n_patterns"]
        ms = t["multislice"]
        print(f"## Simulate-job phases ({label}, Si, {n} patterns in one shard)\n")
        print("| phase | s per shard | fraction of multislice |")
        print("|---|---:|---:|")
        for k in ("potential", "multislice", "labels", "kinematic", "write"):
            print(f"| {k} | {t[k]:.3f} | {t[k] / ms:.2f} |")
        print(f"| store part: kinematic + write | {t['kinematic'] + t['write']:.3f} | "
              f"{(t['kinematic'] + t['write']) / ms:.2f} |")
        print(f"| labels + kinematic + write | {t['labels'] + t['kinematic'] + t['write']:.3f} | "
              f"{(t['labels'] + t['kinematic'] + t['write']) / ms:.2f} |")
        print(f"| write vs potential + multislice | | {t['write'] / (t['potential'] + ms):.2f} |\n")
        if args_cli.phases_only:
            return

        g = store.open_store(work / "shard-0000")
        arrays = {k: g[k][:] for k in store.ARRAY_NAMES}
        geometry = Geometry.from_dict(g["attrs"]["geometry"])
        pats = pd.read_parquet(work / "shard-0000" / "patterns.parquet")
        refl = pd.read_parquet(work / "shard-0000" / "reflections.parquet")
        # 4 copies: a shard of 12 orientations, closer to a production shard than the demo's 3
        big = {k: np.concatenate([v] * 4) for k, v in arrays.items()}
        big_pats = pd.concat([pats] * 4, ignore_index=True).drop(columns="index")
        raw_mb = sum(v.astype(np.float32).nbytes for v in big.values()) / 1e6
        print(f"## write_shard throughput ({len(big_pats)} patterns, {raw_mb:.1f} MB as float32, best of 3)\n")
        print("| compressor | dtype | write s | MB/s (float32 in) | on disk MB | ratio |")
        print("|---|---|---:|---:|---:|---:|")
        for comp in ("zstd", "blosc", "none"):
            for dtype in ("float32", "float16"):
                best = 1e9
                for _ in range(3):
                    t0 = time.perf_counter()
                    store.write_shard(work / f"w-{comp}-{dtype}", big, big_pats, refl, geometry,
                                      dtype=dtype, compressor=comp, level=3)
                    best = min(best, time.perf_counter() - t0)
                size = _dir_bytes(work / f"w-{comp}-{dtype}" / "quartets.zarr") / 1e6
                print(f"| {comp} | {dtype} | {best:.3f} | {raw_mb / best:.0f} | {size:.1f} | {raw_mb / size:.2f} |")

        path = work / "w-zstd-float32"
        m = len(big_pats)
        rng = np.random.default_rng(0)
        store.read_pattern(path, 0)  # open once (cached per process)
        idx = rng.integers(0, m, 200)
        t0 = time.perf_counter()
        for i in idx:
            store.read_pattern(path, int(i))
        dt = time.perf_counter() - t0
        print(f"\n## read_pattern random access (zstd float32): {len(idx) / dt:.0f} quartets/s "
              f"({dt / len(idx) * 1e3:.1f} ms per quartet of 4 × {geometry.detector_px}²)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
