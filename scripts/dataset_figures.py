"""Snakemake adapter of rule `dataset_figures`: logic in fourdcrystal.simulation.figures."""
from fourdcrystal.simulation.figures import run
from fourdcrystal.workflow.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
