"""Snakemake adapter of rule `simulate`: logic in fourdcrystal.workflow.stages.simulate."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.simulate, snakemake)  # noqa: F821 - injected by Snakemake
