"""Snakemake adapter of rule `structures` (logic: fourdcrystal.crystals.sources.run_structures)."""
from fourdcrystal.crystals.sources import run_structures
from fourdcrystal.workflow.smk import run_stage

run_stage(run_structures, snakemake)  # noqa: F821 - injected by Snakemake
