"""Snakemake glue: the stage adapters that scripts/*.py call, logging, the HTML report; library modules never import Snakemake."""
