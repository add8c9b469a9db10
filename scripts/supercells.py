"""Snakemake adapter of rule `supercells`: logic in fourdcrystal.supercells."""
from fourdcrystal.smk import run_stage
from fourdcrystal.supercells import run

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
