"""Snakemake adapter of rule `report`: logic in fourdcrystal.workflow.report."""
from fourdcrystal.workflow.report import run_rule
from fourdcrystal.workflow.smk import run_stage

run_stage(run_rule, snakemake)  # noqa: F821 - injected by Snakemake
