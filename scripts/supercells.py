"""Snakemake adapter of rule `supercells`: logic in fourdcrystal.simulation.supercells."""
from fourdcrystal.workflow.smk import run_stage
from fourdcrystal.simulation.supercells import run

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
