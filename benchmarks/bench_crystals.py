"""Crystal stage timings: AFLOW prototype matching over the 288 builtin examples, and the whole
structures -> prototypes -> select chain on the default config. Prints a markdown table.

    nice .venv/bin/python benchmarks/bench_crystals.py [--subset 24]

pymatgen's own AflowPrototypeMatcher fits every structure against all 288 prototypes, so it is timed on
a --subset (every k-th example) and compared per structure with our pre-filtered matcher on the
same subset, in this one run.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fourdcrystal.crystals import prototypes as P  # noqa: E402
from fourdcrystal.crystals import selection as S  # noqa: E402
from fourdcrystal.crystals import sources  # noqa: E402


def timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--subset", type=int, default=288, help="structures for the pymatgen comparison (every k-th)")
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    tol = (cfg["prototypes"]["ltol"], cfg["prototypes"]["stol"], cfg["prototypes"]["angle_tol"])

    all288, t_load = timed(sources.builtin_structures, 10_000)
    _, t_lib = timed(P.AflowLibrary)
    res1, t_ser = timed(P.assign_prototypes, all288, cfg["prototypes"], 1)
    _, t_par = timed(P.assign_prototypes, all288, cfg["prototypes"], 2)
    self_match = int((res1.prototype == res1.source_id).sum())

    step = max(1, len(all288) // args.subset)
    sub = all288.iloc[::step].head(args.subset)
    from pymatgen.analysis.prototypes import AflowPrototypeMatcher
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref, t_ref_build = timed(AflowPrototypeMatcher, *tol)
    structs = [sources.structure_from_cif(c) for c in sub.cif]
    t0 = time.perf_counter()
    ref_labels = [{d["tags"]["aflow"] for d in (ref.get_prototypes(s) or [])} for s in structs]
    t_ref = time.perf_counter() - t0
    lib = P._library()
    t0 = time.perf_counter()
    ours = [lib.match(s, *tol, spacegroup_number=int(sg))["prototype"] for s, sg in zip(structs, sub.spacegroup_number)]
    t_ours = time.perf_counter() - t0
    agree = sum(o in r for o, r in zip(ours, ref_labels) if r)

    n_sel = cfg["selection"]["n_crystals"]
    t0 = time.perf_counter()
    st = sources.builtin_structures(cfg["source"]["builtin"]["max_sites"])
    pr = P.assign_prototypes(st, cfg["prototypes"], 2)
    sel = S.select(st, pr, n_sel, cfg["seed"])
    t_chain = time.perf_counter() - t0

    n = len(all288)
    print("| step | structures | time (s) | per structure (ms) | note |")
    print("|---|---|---|---|---|")
    print(f"| builtin load + symmetry | {n} | {t_load:.2f} | {1e3 * t_load / n:.1f} | spglib, conventional cells |")
    print(f"| reduce AFLOW library | 288 | {t_lib:.2f} | | once per process |")
    print(f"| prototypes, ours, 1 process | {n} | {t_ser:.2f} | {1e3 * t_ser / n:.1f} | self-match {self_match}/{n} |")
    print(f"| prototypes, ours, 2 processes | {n} | {t_par:.2f} | {1e3 * t_par / n:.1f} | speedup x{t_ser / t_par:.2f} |")
    print(f"| pymatgen AflowPrototypeMatcher | {len(sub)} | {t_ref:.2f} | {1e3 * t_ref / len(sub):.1f} | + {t_ref_build:.2f} s build |")
    print(f"| ours, same subset | {len(sub)} | {t_ours:.3f} | {1e3 * t_ours / len(sub):.1f} | x{t_ref / t_ours:.0f} faster; agree {agree}/{sum(1 for r in ref_labels if r)} |")
    print(f"| chain structures+prototypes+select (default config) | {len(st)} | {t_chain:.2f} | | {len(sel)} selected, {pr.prototype.nunique()} prototypes |")


if __name__ == "__main__":
    main()
