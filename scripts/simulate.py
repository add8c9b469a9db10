"""Snakemake adapter of rule `simulate`: logic in fourdcrystal.simulation.shard (physics in fourdcrystal.simulation.multislice)."""
from fourdcrystal.simulation.shard import run
from fourdcrystal.workflow.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
