"""Snakemake adapter of rule `dataset`: logic in fourdcrystal.workflow.stages.dataset."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.dataset, snakemake)  # noqa: F821 - injected by Snakemake
