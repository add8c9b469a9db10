"""Snakemake adapter of rule `supercells`: logic in fourdcrystal.workflow.stages.supercells."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.supercells, snakemake)  # noqa: F821 - injected by Snakemake
