"""Snakemake adapter of rule `dataset`: logic in fourdcrystal.dataset."""
from fourdcrystal.dataset import run
from fourdcrystal.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
