# Shared helpers: config validation, the path layout (one owner), and job lists derived from config.
import sys
from pathlib import Path

from snakemake.utils import validate

# The package holds all logic; make the in-tree copy importable even before `pip install -e .`.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from fourdcrystal.simulation import plan  # noqa: E402
from fourdcrystal.config import fill_defaults, validate as validate_fourdcrystal  # noqa: E402
from fourdcrystal.workflow.snakemake_compat import fresh_group_jobs  # noqa: E402

# ours first: one line naming the key and the fix; then the schema's defaults for every key the
# config files leave out (the same filling as the CLI's); then Snakemake's own check
validate_fourdcrystal(config)
config.update(fill_defaults(config))
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
STRAIN_DEMO = f"{RESULTS}/scan_demo/strain"  # fourdcrystal strain of the demo scan: maps, index.html
SHIPPED_MODEL = str(Path(workflow.basedir) / "src/fourdcrystal/data/pretrained.pt")  # `make pretrained`'s model


def selected_crystals(wildcards=None):
    """Crystal ids chosen by the `select` checkpoint (re-evaluated once it has run)."""
    import csv

    with open(checkpoints.select.get().output.table) as fh:
        return [row["crystal_id"] for row in csv.DictReader(fh)]


def shard_ids():
    return [f"{k:04d}" for k in range(plan.n_shards(config))]


def all_shards(wildcards=None):
    return expand(SHARD, crystal=selected_crystals(), shard=shard_ids())


def get_final_output(wildcards=None):
    """Everything `snakemake` builds by default: the report (which pulls in evaluation and the scan
    demo), the dataset figures, the model and the training figures, the strain maps of the scan demo."""
    return [SELECTED, MANIFEST, f"{FIGURES}/quartets.png", f"{FIGURES}/dataset_summary.png", MODEL,
            f"{FIGURES}/loss.png", f"{FIGURES}/validation.png", REPORT, STRAIN_DEMO]
