"""Glue for the thin Snakemake ``script:`` adapters in scripts/.

``run_stage(fn, snakemake)`` sets up one log file per job (``snakemake.log[0]``), calls
``fn(snakemake)`` and turns a :class:`UserError` into a one-line message and exit status 2.
"""
from __future__ import annotations

import logging
import sys
import time

from fourdcrystal.errors import UserError, print_error

log = logging.getLogger("fourdcrystal")


def setup_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_stage(fn, snakemake) -> None:
    logfile = snakemake.log[0] if len(snakemake.log) else None
    setup_logging(logfile)
    t0 = time.perf_counter()
    log.info("rule %s: start (wildcards %s)", snakemake.rule, dict(snakemake.wildcards))
    try:
        fn(snakemake)
    except UserError as err:
        log.error("%s", err)
        print_error(err)
        sys.exit(2)
    log.info("rule %s: done in %.1f s", snakemake.rule, time.perf_counter() - t0)
