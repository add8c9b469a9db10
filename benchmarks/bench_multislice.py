"""Benchmark the per-orientation multislice (fourdcrystal.simulation.multislice) against a naive abTEM loop.

* quartets/s of ``simulate_orientation`` (potential built once, exit planes for every thickness,
  reused by every probe and by the labels) vs a naive loop that rebuilds the potential for every
  pattern (probe x thickness) and runs a separate multislice to each thickness — same patterns, same
  settings, in one run; the outputs are compared so the speed-up is for identical results;
* the label (V_g, q_z) time as a fraction of the multislice time;
* peak memory (ru_maxrss of a fresh subprocess) of one orientation at detector 256² (gpts 512);
* the FFTW planner: simulate_orientation with abTEM's measuring planner (FFTW_MEASURE) against the
  pinned FFTW_ESTIMATE (``multislice.FFTW_PLANNING``), each in fresh processes (plans are made once
  per process), interleaved: first orientation (planning included) and warm seconds, output hashes.

Usage: nice .venv/bin/python benchmarks/bench_multislice.py [--quick]
Prints markdown tables (default config geometry: box 32 Å, gpts 256, detector 128, 20/40/60 Å);
times are medians of 3 interleaved runs.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REPEATS = 3
sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402
from pymatgen.core import Lattice, Structure  # noqa: E402

from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.simulation import multislice  # noqa: E402
from fourdcrystal.simulation.multislice import (ProbeSetting, detector_intensity, simulate_orientation,  # noqa: E402
                                   vg_qz_labels)
from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell  # noqa: E402


def crystals():
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    sto = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                    [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    return [("Si [110]", si, (1, 1, 0)), ("SrTiO3 [001]", sto, (0, 0, 1))]


def naive_orientation(atoms, geo: Geometry, sim: dict, probes, lazy: bool = True):
    """Rebuild the potential for every (probe, thickness) pattern; one multislice per pattern.

    ``lazy=True`` is abTEM's default (dask graphs, computed per pattern); ``lazy=False`` is the same
    loop evaluated eagerly.  FFT, crop and labels use the same helpers as simulate_orientation, so the
    outputs are identical and only the loop structure differs.
    """
    import abtem

    out = {k: [] for k in ("probe", "cbed", "vg", "qz")}
    centre = (geo.box_A / 2, geo.box_A / 2)
    for ps in probes:
        for t in geo.thicknesses_A:
            g1 = Geometry(box_A=geo.box_A, gpts=geo.gpts, detector_px=geo.detector_px, thicknesses_A=(t,),
                          slice_thickness_A=geo.slice_thickness_A, energies_eV=geo.energies_eV,
                          semiangle_mrad_range=geo.semiangle_mrad_range)
            slab = atoms[atoms.positions[:, 2] < t]
            slab.set_cell([geo.box_A, geo.box_A, t])
            # the same FFTW planner as simulate_orientation (FFTW wisdom is process-wide)
            with abtem.config.set({**multislice._abtem_settings("cpu"), "dask.lazy": lazy}):
                pot = abtem.Potential(slab, gpts=g1.gpts, slice_thickness=g1.slice_thickness_A,
                                      parametrization=sim["parametrization"], projection=sim["projection"],
                                      box=(geo.box_A, geo.box_A, t))
                pa = pot.build(lazy=lazy).compute()
                probe = abtem.Probe(energy=ps.energy_eV, semiangle_cutoff=ps.semiangle_mrad, defocus=ps.defocus_A,
                                    gpts=geo.gpts, extent=geo.box_A)
                vac = detector_intensity(probe.build(scan=[centre], lazy=lazy).compute().array, geo).reshape(
                    geo.detector_px, geo.detector_px)
                cbed = detector_intensity(probe.multislice(pa, scan=[centre], lazy=lazy).compute().array, geo)
            scale = 1.0 / vac.max()
            vg, qz = vg_qz_labels(pa.array, g1, sim)
            out["probe"].append(vac * scale)
            out["cbed"].append(cbed.reshape(geo.detector_px, geo.detector_px) * scale)
            out["vg"].append(vg[0])
            out["qz"].append(qz[0])
    return {k: np.stack(v).astype(np.float32) for k, v in out.items()}


def memory_child(gpts: int, detector_px: int) -> None:
    """Run one orientation in this (fresh) process and print its peak RSS as JSON."""
    import resource
    import tracemalloc

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    g = cfg["geometry"]
    geo = Geometry(box_A=g["box_A"], gpts=gpts, detector_px=detector_px, thicknesses_A=g["thicknesses_A"],
                   slice_thickness_A=g["slice_thickness_A"], energies_eV=g["energies_eV"],
                   semiangle_mrad_range=g["semiangle_mrad_range"])
    name, s, uvw = crystals()[1]
    atoms = build_supercell(s, align_zone_to_z(s.lattice.matrix, uvw), geo)
    probes = [ProbeSetting(0, 300e3, 4.0, 0.0), ProbeSetting(1, 200e3, 3.0, 0.0)]
    # warm up imports and numba JIT on a tiny grid, so the baseline holds no full-size arrays
    tiny = Geometry(box_A=8.0, gpts=32, detector_px=16, thicknesses_A=(4.0,), slice_thickness_A=2.0)
    simulate_orientation(build_supercell(s, np.eye(3), tiny), tiny, cfg["simulation"], probes[:1])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    _, _, timings = simulate_orientation(atoms, geo, cfg["simulation"], probes)
    wall = time.perf_counter() - t0
    traced_peak = tracemalloc.get_traced_memory()[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"crystal": name, "gpts": gpts, "detector_px": detector_px, "n_atoms": len(atoms),
                      "baseline_MiB": base / 1024, "peak_MiB": peak / 1024, "traced_MiB": traced_peak / 2**20,
                      "wall_s": wall, **timings}))


def planner_child(effort: str) -> None:
    """Time simulate_orientation (Si [110], default config) with FFTW planner ``effort``; print JSON."""
    import hashlib

    multislice.FFTW_PLANNING = effort
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    geo = Geometry.from_config(cfg)
    probes = [ProbeSetting(0, 300e3, 4.0, 0.0), ProbeSetting(1, 200e3, 3.0, 0.0)]
    name, s, uvw = crystals()[0]
    atoms = build_supercell(s, align_zone_to_z(s.lattice.matrix, uvw), geo)
    # numba JIT of the scattering factors on another grid, so that the timed first orientation plans its FFTs
    small = Geometry(box_A=geo.box_A, gpts=geo.gpts // 2, detector_px=geo.detector_px // 2,
                     thicknesses_A=geo.thicknesses_A, slice_thickness_A=geo.slice_thickness_A,
                     energies_eV=geo.energies_eV, semiangle_mrad_range=geo.semiangle_mrad_range)
    simulate_orientation(atoms, small, cfg["simulation"], probes[:1])
    t0 = time.perf_counter()
    simulate_orientation(atoms, geo, cfg["simulation"], probes)
    first = time.perf_counter() - t0
    warm = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        arrays, _, _ = simulate_orientation(atoms, geo, cfg["simulation"], probes)
        warm.append(time.perf_counter() - t0)
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(arrays[k]).tobytes() for k in sorted(arrays))).hexdigest()
    print(json.dumps({"effort": effort, "first_s": first, "warm_s": float(np.median(warm)), "sha256": digest[:12]}))


def planner_comparison(rounds: int = 2) -> None:
    runs: dict[str, list[dict]] = {"FFTW_MEASURE": [], "FFTW_ESTIMATE": []}
    for _ in range(rounds):
        for effort in runs:
            res = subprocess.run([sys.executable, __file__, "--planner-child", effort], capture_output=True,
                                 text=True, check=True)
            runs[effort].append(json.loads(res.stdout.strip().splitlines()[-1]))
    med = {e: {k: float(np.median([r[k] for r in rs])) for k in ("first_s", "warm_s")} for e, rs in runs.items()}
    print(f"\n## FFTW planner: simulate_orientation, Si [110], 2 probes x 3 thicknesses, {rounds} fresh processes "
          f"each (medians)\n")
    print("| planner | first orientation s (FFTW planning included) | ratio to MEASURE | warm orientation s "
          "| ratio to MEASURE | output sha256 per process |")
    print("|---|---|---|---|---|---|")
    ref = med["FFTW_MEASURE"]
    for e, m in med.items():
        print(f"| {e} | {m['first_s']:.2f} | {m['first_s'] / ref['first_s']:.2f}x | {m['warm_s']:.3f} "
              f"| {m['warm_s'] / ref['warm_s']:.2f}x | "
              f"{', '.join(r['sha256'] for r in runs[e])} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="one crystal only")
    ap.add_argument("--memory-child", nargs=2, type=int, metavar=("GPTS", "DETECTOR_PX"))
    ap.add_argument("--planner-child", choices=("FFTW_MEASURE", "FFTW_ESTIMATE"))
    args = ap.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    if args.planner_child:
        planner_child(args.planner_child)
        return

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    sim = cfg["simulation"]
    geo = Geometry.from_config(cfg)
    probes = [ProbeSetting(0, 300e3, 4.0, 0.0), ProbeSetting(1, 200e3, 3.0, 0.0)]
    n_pat = len(probes) * len(geo.thicknesses_A)
    rows = []
    # warm-up: numba JIT of the scattering factors, FFTW plans
    name, s, uvw = crystals()[0]
    simulate_orientation(build_supercell(s, align_zone_to_z(s.lattice.matrix, uvw), geo)[:8], geo, sim, probes)
    for name, s, uvw in crystals()[: 1 if args.quick else None]:
        atoms = build_supercell(s, align_zone_to_z(s.lattice.matrix, uvw), geo)
        # median of REPEATS runs each, interleaved, so load from other processes hits all variants alike
        runs = {"fast": [], "lazy": [], "eager": []}
        phases = []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            fast, _, timings = simulate_orientation(atoms, geo, sim, probes)
            runs["fast"].append(time.perf_counter() - t0)
            phases.append(timings)
            t0 = time.perf_counter()
            slow = naive_orientation(atoms, geo, sim, probes, lazy=True)
            runs["lazy"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            naive_orientation(atoms, geo, sim, probes, lazy=False)
            runs["eager"].append(time.perf_counter() - t0)
        t_fast, t_slow, t_eager = (float(np.median(runs[k])) for k in ("fast", "lazy", "eager"))
        timings = {k: float(np.median([p[k] for p in phases])) for k in phases[0]}
        diff = {k: float(np.abs(fast[k] - slow[k]).max() / max(np.abs(slow[k]).max(), 1e-30)) for k in ("cbed", "vg")}
        rows.append((name, len(atoms), t_fast, t_slow, t_eager, timings, diff))

    print(f"## Multislice: one orientation, {len(probes)} probes x {len(geo.thicknesses_A)} thicknesses = "
          f"{n_pat} quartets (box {geo.box_A} Å, gpts {geo.gpts}, detector {geo.detector_px}², slice "
          f"{geo.slice_thickness_A} Å, {sim['parametrization']}/{sim['projection']})\n")
    print("| crystal | atoms | simulate_orientation s | quartets/s | naive loop (abTEM lazy default) s | quartets/s "
          "| speed-up | naive loop eager s | speed-up | potential s | multislice s | labels s | labels / multislice "
          "| max rel diff cbed, vg |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n_at, tf, ts, te, tim, diff in rows:
        print(f"| {name} | {n_at} | {tf:.2f} | {n_pat / tf:.1f} | {ts:.2f} | {n_pat / ts:.1f} | {ts / tf:.1f}x | "
              f"{te:.2f} | {te / tf:.1f}x | {tim['potential']:.2f} | {tim['multislice']:.2f} | {tim['labels']:.2f} | "
              f"{tim['labels'] / tim['multislice']:.0%} | {diff['cbed']:.1e}, {diff['vg']:.1e} |")

    res = subprocess.run([sys.executable, __file__, "--memory-child", "512", "256"], capture_output=True, text=True,
                         check=True)
    m = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"\n## Peak memory, one orientation at detector {m['detector_px']}² (gpts {m['gpts']}), "
          f"{m['crystal']}, 2 probes x 3 thicknesses\n")
    print("| atoms | wall s | potential s | multislice s | labels s | RSS after imports MiB | peak RSS MiB "
          "| peak traced allocations MiB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {m['n_atoms']} | {m['wall_s']:.2f} | {m['potential']:.2f} | {m['multislice']:.2f} | {m['labels']:.2f} | "
          f"{m['baseline_MiB']:.0f} | {m['peak_MiB']:.0f} | {m['traced_MiB']:.0f} |")
    planner_comparison()


if __name__ == "__main__":
    main()
