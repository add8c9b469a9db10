"""The HPC profiles: consistency checks (always) and the demo workflow through real SLURM (marker
`slurm`; runs when .ci/run has started the single-node cluster and exported FOURDCRYSTAL_SLURM=1)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fourdcrystal.simulation import plan
from fourdcrystal.config import load as load_config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_dag_scale import copy_workflow, scratch_workflow  # noqa: E402  (one owner of the scratch set-up)
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


def _profile(name):
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def _kv(items):
    return dict(item.split("=", 1) for item in items)


def _rules():
    names = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        names |= set(re.findall(r"^(?:rule|checkpoint)\s+(\w+)\s*:", smk.read_text(), flags=re.M))
    return names


def _merged(overrides_file):
    return load_config(ROOT / "config" / "config.yaml", ROOT / "config" / overrides_file)


def test_ci_profile_mirrors_nersc_profile():
    nersc, ci = _profile("nersc"), _profile("ci-slurm")
    for key in ("executor", "groups", "set-resource-scopes", "slurm-status-command"):
        assert ci[key] == nersc[key], f"profiles/ci-slurm differs from profiles/nersc in {key}"
    assert set(_kv(ci["group-components"])) == set(_kv(nersc["group-components"]))  # sizes may differ
    assert set(ci["set-resources"]) == set(nersc["set-resources"])
    for rule, res in nersc["set-resources"].items():
        # the same GPU requests, so CI exercises what NERSC gets
        ci_res = ci["set-resources"][rule]
        assert ("gpu" in res) == ("gpu" in ci_res) and ("gres" in res) == ("gres" in ci_res), rule
    assert _kv(ci["resources"])["gpu"] == _kv(nersc["resources"])["gpu"]


def test_nersc_profile_covers_every_rule_and_respects_the_plugin():
    nersc = _profile("nersc")
    missing = _rules() - set(nersc["set-resources"]) - {"all"}
    assert not missing, f"profiles/nersc has no set-resources for {sorted(missing)}"
    for rule, res in nersc["set-resources"].items():
        if res.get("gpu") or "gpu" in res.get("gres", ""):
            # the plugin turns `tasks` into --ntasks-per-gpu for GPU jobs
            assert "tasks" not in res, rule
        if "gres" in res:
            # a gpu request beside it would be clamped to the per-submission gpu limit
            assert "gpu" not in res, rule
    for key in ("slurm_account", "qos", "constraint", "runtime", "mem_mb"):
        assert key in nersc["default-resources"]
    assert nersc["slurm-status-command"] == "squeue" and nersc["rerun-incomplete"] and nersc["latency-wait"] >= 30


def test_profiles_hold_the_cluster_sizes():
    """The profiles are the one owner of the SLURM sizes (no config section repeats them)."""
    nersc, interactive = _profile("nersc"), _profile("nersc-interactive")
    assert int(_kv(nersc["group-components"])["crystal"]) == 8
    assert int(_kv(interactive["resources"])["gpu"]) == 4  # one Perlmutter GPU node
    assert "executor" not in interactive  # local processes inside the allocation


def test_seed_scale_config_is_the_abstracts_scale():
    seed = _merged("seed_scale.yaml")
    assert seed["selection"]["n_crystals"] == 3082
    assert seed["source"]["kind"] == "materials_project"
    assert seed["geometry"]["detector_px"] == 256
    per_crystal = plan.n_orientations(seed) * plan.patterns_per_orientation(seed)
    assert 1800 <= per_crystal <= 2200
    assert 5.5e6 <= plan.n_patterns(seed) <= 6.5e6


def test_ci_config_is_tiny():
    ci = _merged("ci_slurm.yaml")
    assert plan.n_patterns(ci) <= 10 and ci["train"]["epochs"] <= 2


def _cluster_up():
    if os.environ.get("FOURDCRYSTAL_SLURM") != "1" or not shutil.which("sbatch"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(s in out for s in ("idle", "mix", "alloc"))


@pytest.mark.slurm
@pytest.mark.skipif(not _cluster_up(), reason="no SLURM cluster (run .ci/slurm/setup.sh, set FOURDCRYSTAL_SLURM=1)")
def test_demo_workflow_through_real_slurm(tmp_path, capsys):
    work = tmp_path / "wf"
    work.mkdir()
    copy_workflow(work)
    env = dict(os.environ, PATH=f"{SNAKEMAKE.parent}:{os.environ['PATH']}", PYTHONPATH=str(ROOT / "src"))
    # Snakemake ignores SIGTERM: stop it with SIGINT so it cancels its SLURM jobs and releases its lock.
    cmd = ["timeout", "-s", "INT", "420", str(SNAKEMAKE), "--profile", "profiles/ci-slurm",
           "--configfile", "config/ci_slurm.yaml"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]

    assert (work / "results" / "report" / "report.html").exists()
    # the demo scan's strain pages: this run's model, py4DSTEM's vectors and the shipped model's
    strain = work / "results" / "scan_demo" / "strain"
    assert all((strain / sub / "index.html").exists() for sub in (".", "classical", "pretrained"))
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) >= 6, log[-3000:]  # structures, prototypes, select, groups, dataset, train, ...
    assert "Group job crystal" in log
    group_logs = list((work / "logs" / "slurm").glob("group_crystal*/**/*.log"))
    assert group_logs, "no grouped SLURM submission"
    # 3 crystals, 2 per group -> 2 group submissions instead of 6 single jobs
    group_ids = {p.stem for p in group_logs}
    assert len(group_ids) == 2, group_ids
    # GPU requests reached SLURM: the job records (kept MinJobAge seconds) show the gres and feature
    train_ids = {p.stem for p in (work / "logs" / "slurm").glob("rule_train/**/*.log")}
    assert len(train_ids) == 1
    gpu_lines = []
    for jid in sorted(group_ids | train_ids):
        rec = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True).stdout
        assert re.search(r"TresPer(Job|Node)=.*gres(/|:)gpu", rec), rec
        assert "Features=gpu" in rec, rec
        gpu_lines.append(f"  job {jid}: " + " ".join(re.findall(r"(?:TresPer\w+|Features|JobName)=\S+", rec)))
    # The CI log shows what SLURM really did (pytest -q hides a passing test's output otherwise).
    with capsys.disabled():
        print(f"\n[slurm] {len(submitted)} sbatch submissions (jobids {', '.join(submitted)});"
              f" {len(group_ids)} grouped submissions of the crystal stages; GPU requests:")
        print("\n".join(gpu_lines))
        print("\n".join("[slurm] " + line for line in log.splitlines()
                        if "submitted with SLURM jobid" in line or "Group job crystal" in line))


def test_nersc_groups_pack_each_job_once(tmp_path):
    """`snakemake -n --profile profiles/nersc` after the `select` checkpoint: every supercells/simulate
    job is in exactly one `crystal` group of `group-components` crystals. Guards the Snakemake 9
    group-components workaround (fourdcrystal.workflow.snakemake_compat) (without it, groups re-merge on every
    DAG pass into ever larger, overlapping groups and the seed-scale dry run takes > 7 min)."""
    n_crystals = 20
    work = tmp_path / "wf"
    work.mkdir()
    scratch_workflow(work, n_crystals)
    cmd = [str(SNAKEMAKE), "-n", "--profile", "profiles/nersc", "--configfile", "config/seed_scale.yaml",
           "--rerun-triggers", "mtime"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    per_group = int(_kv(_profile("nersc")["group-components"])["crystal"])
    shards = plan.n_shards(_merged("seed_scale.yaml"))
    blocks = log.split("Group job crystal")[1:]
    assert len(blocks) == -(-n_crystals // per_group), len(blocks)
    seen = []
    for block in blocks:
        members = re.findall(r"rule (?:supercells|simulate):\n.*?jobid: (\d+).*?wildcards: crystal=(mp-\d+)",
                             block, flags=re.S)
        seen += [jobid for jobid, _ in members]
        assert 0 < len({c for _, c in members}) <= per_group, block[:2000]
    assert len(seen) == len(set(seen)) == n_crystals * (1 + shards)
