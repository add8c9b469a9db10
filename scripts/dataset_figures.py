"""Snakemake adapter of rule `dataset_figures`: logic in fourdcrystal.figures."""
from fourdcrystal.figures import run
from fourdcrystal.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
