"""Seed-scale DAG: time `snakemake -n --profile profiles/nersc --configfile config/seed_scale.yaml`
and count SLURM submissions (single jobs + groups).

The `select` checkpoint needs Materials Project structures (network, API key), so a scratch copy of
the workflow gets a synthetic results/crystals/selected.csv (+ cifs/) with 3,082 rows and older
upstream files: the checkpoint counts as done and the dry run expands supercells/simulate for every
crystal, exactly as after a real `select`. Nothing is submitted (-n).

    python benchmarks/bench_dag_scale.py [--crystals 3082]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def copy_workflow(work: Path) -> None:
    """The workflow's files in a scratch directory (src/ linked), so runs leave the checkout alone."""
    for name in ("Snakefile", "workflow", "scripts", "config", "profiles", "envs"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    (work / "src").symlink_to(ROOT / "src")


def scratch_workflow(work: Path, n_crystals: int) -> None:
    """copy_workflow plus a synthetic, up-to-date `select` checkpoint output of ``n_crystals`` crystals."""
    copy_workflow(work)
    crystals = work / "results" / "crystals"
    (crystals / "cifs").mkdir(parents=True)
    # Upstream outputs first (older), then the checkpoint's: nothing upstream looks out of date.
    for name in ("structures.parquet", "prototypes.csv"):
        (crystals / name).write_text("synthetic\n")
    rows = ["crystal_id,formula,prototype,spacegroup,source,source_id"]
    rows += [f"mp-{i:06d},X,A_cP1_221_a,221,materials_project,mp-{i}" for i in range(n_crystals)]
    time.sleep(0.01)
    (crystals / "selected.csv").write_text("\n".join(rows) + "\n")
    for i in range(n_crystals):
        (crystals / "cifs" / f"mp-{i:06d}.cif").touch()
    later = time.time() + 1
    os.utime(crystals / "selected.csv", (later, later))
    os.utime(crystals / "cifs", (later, later))


def dry_run(work: Path, extra=()) -> tuple[float, str]:
    cmd = [str(SNAKEMAKE), "-n", "--profile", "profiles/nersc", "--configfile", "config/seed_scale.yaml",
           "--rerun-triggers", "mtime"] + list(extra)  # synthetic inputs carry no provenance records
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"dry run failed:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return wall, proc.stdout + proc.stderr


def job_counts(log: str) -> dict[str, int]:
    table = log[log.index("Job stats:"):]
    counts = {}
    for line in table.splitlines()[3:]:
        parts = line.split()
        if len(parts) != 2 or parts[0] == "total":
            break
        counts[parts[0]] = int(parts[1])
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crystals", type=int, default=3082)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fourdcrystal-dag-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        scratch_workflow(work, args.crystals)
        t_setup = time.perf_counter() - t0
        wall, log = dry_run(work)
    counts = job_counts(log)
    profile = yaml.safe_load((ROOT / "profiles" / "nersc" / "config.yaml").read_text())
    grouped_rules = {g.split("=")[0] for g in profile["groups"]}
    per_group = int(dict(g.split("=") for g in profile["group-components"])["crystal"])
    # One submission per group of `per_group` crystals (each with its supercells + simulate shards);
    # every other rule is its own sbatch. `all` is a local rule.
    n_groups_expected = -(-args.crystals // per_group)
    # Measured, not assumed: the groups Snakemake printed, and that each grouped job is in exactly one
    # (Snakemake 9's group-components bug, worked around in workflow/rules/common.smk, re-merged
    # groups into ever larger, overlapping ones).
    blocks = log.split("Group job crystal")[1:]
    n_groups = len(blocks)
    members = [re.findall(r"rule (?:supercells|simulate):\n.*?jobid: (\d+).*?wildcards: crystal=([^,\s]+)", b, flags=re.S)
               for b in blocks]
    member_ids = [jobid for group in members for jobid, _ in group]
    max_crystals = max((len({c for _, c in group}) for group in members), default=0)
    singles = sum(n for rule, n in counts.items() if rule not in grouped_rules and rule != "all")
    # structures, prototypes, select: already "done" here (synthetic), one sbatch each in a real run
    crystal_stage = sum(1 for r in ("structures", "prototypes", "select") if r not in counts)
    singles += crystal_stage
    grouped_jobs = sum(n for rule, n in counts.items() if rule in grouped_rules)
    print(f"# Seed-scale DAG ({args.crystals} crystals), profiles/nersc + config/seed_scale.yaml\n")
    print("| quantity | value |\n| --- | --- |")
    print(f"| dry-run wall time (s) | {wall:.1f} |")
    print(f"| scratch setup (s) | {t_setup:.1f} |")
    for rule, n in counts.items():
        print(f"| jobs: {rule} | {n} |")
    print(f"| jobs total | {sum(counts.values())} |")
    print(f"| grouped jobs (supercells + simulate) | {grouped_jobs} |")
    print(f"| group submissions ({per_group} crystals each) | {n_groups} |")
    print(f"| group submissions expected (ceil crystals / {per_group}) | {n_groups_expected} |")
    print(f"| grouped jobs printed / distinct | {len(member_ids)} / {len(set(member_ids))} |")
    print(f"| most crystals in one group | {max_crystals} |")
    print(f"| single-job submissions (incl. {crystal_stage} crystal-stage jobs) | {singles} |")
    print(f"| **SLURM submissions** | **{n_groups + singles}** (goal <= 500) |")
    print(f"| dry run within 60 s | {'yes' if wall <= 60 else 'NO'} |")
    print(f"| submissions without groups | {grouped_jobs + singles} |")


if __name__ == "__main__":
    main()
