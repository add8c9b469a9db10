"""Snakemake adapter of rule `report`: logic in fourdcrystal.workflow.stages.report."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.report, snakemake)  # noqa: F821 - injected by Snakemake
