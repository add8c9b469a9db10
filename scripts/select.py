"""Snakemake adapter of rule `select` (logic: fourdcrystal.crystals.selection.run_select)."""
from fourdcrystal.crystals.selection import run_select
from fourdcrystal.workflow.smk import run_stage

run_stage(run_select, snakemake)  # noqa: F821 - injected by Snakemake
