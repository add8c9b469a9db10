"""Snakemake adapter of rule `scan_demo`: logic in fourdcrystal.workflow.stages.scan_demo."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.scan_demo, snakemake)  # noqa: F821 - injected by Snakemake
