"""Benchmark of rule `supercells`: orientation tables and oriented supercells at the default box.

Prints a markdown table: per crystal, the time to draw the orientation table (symmetry analysis
included), to build one supercell (mean over the orientations), to write the extxyz, and the whole
`build_crystal` call; plus, side by side in the same run, the vectorised builder against a plain
Python loop over lattice points doing the same crop (the ratio is the speed-up).

    nice .venv/bin/python benchmarks/bench_supercells.py [--orientations N]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from pymatgen.core import Lattice, Structure

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fourdcrystal.simulation import plan  # noqa: E402
from fourdcrystal.simulation import supercells as sc  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402


def crystals() -> dict:
    return {
        "Si (Fd-3m, 8 sites)": Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]]),
        "SrTiO3 (Pm-3m, 5)": Structure.from_spacegroup(
            "Pm-3m", Lattice.cubic(3.905), ["Sr", "Ti", "O"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0]]),
        "ZnO (P6_3mc, 4)": Structure.from_spacegroup(
            "P6_3mc", Lattice.hexagonal(3.25, 5.207), ["Zn", "O"], [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]]),
        "monoclinic (P2_1/c, 8)": Structure.from_spacegroup(
            "P2_1/c", Lattice.monoclinic(5.1, 6.3, 7.2, 103.0), ["Ca", "O"], [[0.12, 0.21, 0.33], [0.41, 0.07, 0.18]]),
        "Al2O3 (R-3c, 30)": Structure.from_spacegroup(
            "R-3c", Lattice.hexagonal(4.759, 12.991), ["Al", "O"], [[0, 0, 0.3521], [0.3064, 0, 0.25]]),
    }


def loop_supercell(structure, R, geometry) -> int:
    """Reference: the same tiling and half-open crop, one Python iteration per lattice point."""
    L, T = geometry.box_A, geometry.max_thickness_A
    lat = structure.lattice.matrix @ R.T
    frac = np.mod(structure.frac_coords, 1.0)
    corners = np.array([[x, y, z] for x in (0, L) for y in (0, L) for z in (0, T)])
    cf = corners @ np.linalg.inv(lat)
    lo, hi = np.floor(cf.min(0)).astype(int) - 1, np.floor(cf.max(0)).astype(int) + 1
    n = 0
    for i in range(lo[0], hi[0] + 1):
        for j in range(lo[1], hi[1] + 1):
            for k in range(lo[2], hi[2] + 1):
                p = (frac + (i, j, k)) @ lat
                n += int(((p[:, 0] >= 0) & (p[:, 0] < L) & (p[:, 1] >= 0) & (p[:, 1] < L)
                          & (p[:, 2] >= 0) & (p[:, 2] < T)).sum())
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orientations", type=int, default=16, help="orientations per crystal (approx.)")
    args = ap.parse_args()
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    n_half = max(1, args.orientations // 4)
    config["orientations"].update(n_zone_axes=n_half, n_free=n_half, n_inplane=2, n_tilts=1)
    geometry = Geometry.from_config(config)
    n_orient = plan.n_orientations(config)
    print(f"box {geometry.box_A:g} x {geometry.box_A:g} x {geometry.max_thickness_A:g} Å, "
          f"{n_orient} orientations per crystal\n")
    print("| crystal | atoms/supercell | orientations table (s) | build per orientation (ms) | "
          "python-loop build (ms) | loop / vectorised | extxyz write per orientation (ms) | "
          "build_crystal total (s) | extxyz MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    structures = crystals()
    sc.make_orientations(next(iter(structures.values())), "warm-up", config)  # spglib/scipy imports
    for name, s in structures.items():
        t0 = time.perf_counter()
        table = sc.make_orientations(s, "bench", config)
        t_table = time.perf_counter() - t0
        Rs = [sc.rotation_of(r) for _, r in table.iterrows()]
        sc.build_supercell(s, Rs[0], geometry)  # warm-up (imports)
        t0 = time.perf_counter()
        frames = [sc.build_supercell(s, R, geometry) for R in Rs]
        t_build = (time.perf_counter() - t0) / len(Rs)
        k = min(4, len(Rs))
        t0 = time.perf_counter()
        counts = [loop_supercell(s, R, geometry) for R in Rs[:k]]
        t_loop = (time.perf_counter() - t0) / k
        # The loop keeps seam near-duplicates that the vectorised builder removes: counts differ by a few.
        assert all(abs(c - len(f)) <= 0.03 * c for c, f in zip(counts, frames))
        with tempfile.TemporaryDirectory() as tmp:
            from ase.io import write

            t0 = time.perf_counter()
            write(f"{tmp}/x.extxyz", frames, format="extxyz")
            t_write = (time.perf_counter() - t0) / len(frames)
            t0 = time.perf_counter()
            sc.build_crystal(s, "bench", config, f"{tmp}/o.csv", f"{tmp}/s.extxyz")
            t_total = time.perf_counter() - t0
            mb = Path(f"{tmp}/s.extxyz").stat().st_size / 1e6
        n_atoms = np.mean([len(f) for f in frames])
        print(f"| {name} | {n_atoms:.0f} | {t_table:.3f} | {1e3 * t_build:.1f} | {1e3 * t_loop:.1f} | "
              f"{t_loop / t_build:.1f}x | {1e3 * t_write:.1f} | {t_total:.2f} | {mb:.1f} |")


if __name__ == "__main__":
    main()
