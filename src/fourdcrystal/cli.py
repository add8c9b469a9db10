"""``fourdcrystal`` command line: predict Bragg vectors, inspect config and calibration.

Each subcommand's parser and runner live beside its logic (``add_arguments`` / ``run`` in the module).
Only the module of the subcommand being run is imported (``fourdcrystal --help`` imports none):
start-up time is most of a short call, and torch alone takes about a second to import.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys

from fourdcrystal.errors import UserError, print_error

# subcommand -> (module, help)
SUBCOMMANDS = {
    "predict": ("fourdcrystal.inference.predict", "Bragg vectors from a 4D-STEM datacube"),
    "check-config": ("fourdcrystal.cli", "validate a workflow config and print its geometry"),
    "export-model": ("fourdcrystal.learning.export", "stamp tuned peak settings into a model for distribution"),
    "strain": ("fourdcrystal.analysis.command", "strain, rotation and tilt maps from Bragg vectors"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:  # for check-config
    p.add_argument("config", nargs="?", default="config/config.yaml")


def run(args: argparse.Namespace) -> int:  # for check-config
    from fourdcrystal import config as cfgmod
    from fourdcrystal.geometry import Geometry

    cfg = cfgmod.load(args.config)
    g = Geometry.from_config(cfg)
    print(json.dumps({"geometry": g.to_dict(), "fingerprint": cfgmod.fingerprint(cfg)}, indent=2))
    return 0


class OneLineParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors are one line and exit 2, as every other bad input's are
    (argparse prints the whole usage block first)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message}", f"see `{self.prog} --help`")


def number(lo: float = 0.0, hi: float = float("inf"), *, above: bool = True, unit: str = ""):
    """An argparse type: a finite number in (lo, hi] (``above``) or [lo, hi]; a wrong one is a one-line usage error
    (``OneLineParser``)."""
    import math

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(v) or not ((v > lo) if above else (v >= lo)) or v > hi:
            bound = " and ".join(b for b in (f"{'>' if above else '>='} {lo:g}" if math.isfinite(lo) else "",
                                             f"<= {hi:g}" if math.isfinite(hi) else "") if b)
            raise argparse.ArgumentTypeError(f"{text} is not a finite number {bound}{unit}".replace("  ", " "))
        return v
    return parse


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)  # `timeout` and SLURM's time limit; Ctrl-C
_HANDLER_PID = None  # the process that installed ``_stopped`` (``main``)


def _stopped(signum, frame):
    """SIGTERM or SIGINT: the half-written output folder is removed (``atomic.remove_unfinished``) and the process
    ends at once with 128 + the signal, as one ended by it does. Not by unwinding: the same signal reaches
    ``predict``'s worker processes (their process group's), and a pool whose workers died can block its teardown.
    A worker forked with this handler, whose signal came before it reset its own (``predict._one_worker``), ends
    silently: the line and the removal are the main process's (two lines had run into one)."""
    if os.getpid() != _HANDLER_PID:
        os._exit(128 + signum)
    from fourdcrystal.atomic import remove_unfinished

    remove_unfinished()
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    print(f"fourdcrystal: {word}; nothing was written", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="fourdcrystal", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)  # the subcommand (no top-level options)
    for name, (modname, helptext) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=helptext, description=helptext)
        if name == chosen:
            importlib.import_module(modname).add_arguments(sp)
    try:
        args = parser.parse_args(argv)
    except UserError as err:
        print_error(err)
        return 2
    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    global _HANDLER_PID
    _HANDLER_PID = os.getpid()
    previous = {s: signal.signal(s, _stopped) for s in STOP_SIGNALS} if main_thread else {}
    try:
        return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)
    except UserError as err:
        print_error(err)
        return 2
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def entry() -> None:
    """The ``fourdcrystal`` console script (and ``python -m fourdcrystal.cli``): ``main``, then the process
    ends without tearing its modules down. Freeing torch's state at interpreter exit took 0.3 s of a 1.2 s
    ``import torch`` process (benchmarks/RESULTS.md, "Start-up: no teardown at exit"), a sixth of a short
    ``predict``. Every subcommand has published and closed its outputs when ``main`` returns (atomically:
    ``fourdcrystal.atomic``) and has no worker threads or processes left (``predict``'s workers end with its
    pool), so only the streams and log handlers are left to flush. An exception still ends the process the
    usual way (traceback, exit 1)."""
    rc = main()
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


if __name__ == "__main__":
    entry()
