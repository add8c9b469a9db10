"""Snakemake adapter of rule `prototypes` (logic: fourdcrystal.crystals.prototypes.run_prototypes)."""
from fourdcrystal.crystals.prototypes import run_prototypes
from fourdcrystal.workflow.smk import run_stage

run_stage(run_prototypes, snakemake)  # noqa: F821 - injected by Snakemake
