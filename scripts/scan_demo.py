"""Snakemake adapter of rule `scan_demo`: a simulated polycrystal scan through `fourdcrystal predict`."""
from fourdcrystal.inference.predict import run_scan_demo
from fourdcrystal.workflow.smk import run_stage

run_stage(run_scan_demo, snakemake)  # noqa: F821 - injected by Snakemake
