"""Snakemake adapter of rule `structures`: logic in fourdcrystal.workflow.stages.structures."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.structures, snakemake)  # noqa: F821 - injected by Snakemake
