# Shared helpers: config validation, the path layout (one owner), and job lists derived from config.
import sys
from pathlib import Path

from snakemake.utils import validate

# The package holds all logic; make the in-tree copy importable even before `pip install -e .`.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from fourdcrystal import plan  # noqa: E402
from fourdcrystal.config import validate as validate_fourdcrystal  # noqa: E402

validate(config, schema="../schemas/config.schema.yaml")
validate_fourdcrystal(config)


def _fresh_group_jobs():
    """Work around a Snakemake 9 bug that breaks `group-components` (profiles/nersc).

    GroupJobFactory caches a GroupJob per (group id, member jobs), and DAG._update_group_components
    merges N components *in place* into the first one. Every later DAG postprocess (after the
    `select` checkpoint, at start-up) gets the already-merged object back for its first member set
    and merges again: groups of 8 crystals become 64, 512, ..., overlap, and the scheduler re-runs
    them (seed scale: dry run > 7 min, GBs of log). A cached group whose members changed since it
    was cached is stale; build a fresh one. Equal member sets still give equal (==, hash) groups,
    so running/ready bookkeeping is unaffected."""
    from snakemake.jobs import GroupJob, GroupJobFactory

    if getattr(GroupJobFactory.new, "_fourdcrystal_fresh", False):
        return

    def new(self, id, jobs, resources):
        jobs = frozenset(jobs)
        key = (id, jobs)
        obj = self.cache.get(key)
        if obj is None or obj.jobs != jobs:
            obj = self.cache[key] = GroupJob(id, jobs, resources)
        return obj

    new._fourdcrystal_fresh = True
    GroupJobFactory.new = new


_fresh_group_jobs()

RESULTS = "results"
LOGS = "logs"

# --- crystals -------------------------------------------------------------------------------
STRUCTURES = f"{RESULTS}/crystals/structures.parquet"
PROTOTYPES = f"{RESULTS}/crystals/prototypes.csv"
SELECTED = f"{RESULTS}/crystals/selected.csv"
CIFS = f"{RESULTS}/crystals/cifs"
# --- supercells (one job per crystal) ---------------------------------------------------------
ORIENTATIONS = "results/supercells/{crystal}/orientations.csv"
SUPERCELLS = "results/supercells/{crystal}/supercells.extxyz"
# --- simulation (one job per crystal and shard of orientations) -------------------------------
SHARD = "results/simulate/{crystal}/shard-{shard}"
MANIFEST = f"{RESULTS}/dataset/manifest.parquet"
REFLECTIONS = f"{RESULTS}/dataset/reflections.parquet"
DATASET_INFO = f"{RESULTS}/dataset/dataset.json"
FIGURES = f"{RESULTS}/figures"
# --- model, evaluation, report ---------------------------------------------------------------
MODEL = f"{RESULTS}/model/model.pt"
EVAL_METRICS = f"{RESULTS}/evaluation/metrics.json"
REPORT = f"{RESULTS}/report/report.html"


def selected_crystals(wildcards=None):
    """Crystal ids chosen by the `select` checkpoint (re-evaluated once it has run)."""
    import csv

    with open(checkpoints.select.get().output.table) as fh:
        return [row["crystal_id"] for row in csv.DictReader(fh)]


def shard_ids():
    return [f"{k:04d}" for k in range(plan.n_shards(config))]


def all_shards(wildcards=None):
    return expand(SHARD, crystal=selected_crystals(), shard=shard_ids())


def all_targets(wildcards=None):
    targets = [SELECTED, MANIFEST]
    for name in TARGET_EXTRAS:
        targets.append(name)
    return targets


# Later stages append their final outputs here (in their own .smk files).
TARGET_EXTRAS = []
