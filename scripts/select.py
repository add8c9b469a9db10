"""Snakemake adapter of rule `select`: logic in fourdcrystal.workflow.stages.select."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.select, snakemake)  # noqa: F821 - injected by Snakemake
