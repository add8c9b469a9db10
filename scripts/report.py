"""Snakemake adapter of rule `report`: logic in fourdcrystal.report."""
from fourdcrystal.report import run_rule
from fourdcrystal.smk import run_stage

run_stage(run_rule, snakemake)  # noqa: F821 - injected by Snakemake
