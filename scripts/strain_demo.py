"""Snakemake adapter of rule `strain_demo`: logic in fourdcrystal.workflow.stages.strain_demo."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.strain_demo, snakemake)  # noqa: F821 - injected by Snakemake
