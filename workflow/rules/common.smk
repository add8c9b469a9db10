# Shared helpers: config validation, the path layout (one owner), and job lists derived from config.
import sys
from pathlib import Path

from snakemake.utils import validate

# The package holds all logic; make the in-tree copy importable even before `pip install -e .`.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from fourdcrystal.simulation import plan  # noqa: E402
from fourdcrystal.config import validate as validate_fourdcrystal  # noqa: E402
from fourdcrystal.workflow.snakemake_compat import fresh_group_jobs  # noqa: E402

# ours first: one line naming the key and the fix; then Snakemake's own (fills schema defaults)
validate_fourdcrystal(config)
validate(config, schema="../schemas/config.schema.yaml")


# Snakemake 9 group-components bug workaround (see fourdcrystal.workflow.snakemake_compat).
fresh_group_jobs()

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
