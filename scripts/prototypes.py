"""Snakemake adapter of rule `prototypes`: logic in fourdcrystal.workflow.stages.prototypes."""
from fourdcrystal.workflow import stages
from fourdcrystal.workflow.smk import run_stage

run_stage(stages.prototypes, snakemake)  # noqa: F821 - injected by Snakemake
