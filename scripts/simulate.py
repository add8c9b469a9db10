"""Snakemake adapter of rule `simulate`: logic in fourdcrystal.shard (physics in fourdcrystal.simulate)."""
from fourdcrystal.shard import run
from fourdcrystal.smk import run_stage

run_stage(run, snakemake)  # noqa: F821 - injected by Snakemake
