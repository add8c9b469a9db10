"""Snakemake adapter of rule `dataset_figures`: logic in fourdcrystal.workflow.stages.dataset_figures."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.dataset_figures, snakemake)  # noqa: F821 - injected by Snakemake
