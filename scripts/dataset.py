"""Snakemake adapter of rule `dataset`: logic in fourdcrystal.simulation.dataset."""
from fourdcrystal.simulation.dataset import run
from fourdcrystal.workflow.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
