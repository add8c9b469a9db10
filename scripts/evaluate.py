"""Snakemake adapter of rule `evaluate`: logic in fourdcrystal.workflow.stages.evaluate."""
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # fair single-core timing of py4DSTEM; before numpy loads

from fourdcrystal.workflow import stages  # noqa: E402
from fourdcrystal.workflow.smk import run_stage  # noqa: E402

run_stage(stages.evaluate, snakemake)  # noqa: F821 - injected by Snakemake
