"""How the work is cut into jobs: the one owner of orientation and shard counts.

The workflow must know every job before it runs (Snakemake builds the DAG from these counts), so the
number of orientations per crystal follows from config alone; the supercell stage produces exactly
this many rows (or none, for a crystal that cannot fit the box).
"""
from __future__ import annotations

import math


def n_orientations(config: dict) -> int:
    o = config["orientations"]
    return (int(o["n_zone_axes"]) + int(o["n_free"])) * int(o["n_inplane"]) * int(o["n_tilts"])


def n_shards(config: dict) -> int:
    return max(1, math.ceil(n_orientations(config) / int(config["simulation"]["orientations_per_shard"])))


def shard_rows(config: dict, shard: int) -> range:
    """Orientation-table row indices simulated by shard ``shard`` of a crystal."""
    per = int(config["simulation"]["orientations_per_shard"])
    return range(shard * per, min((shard + 1) * per, n_orientations(config)))


def patterns_per_orientation(config: dict) -> int:
    return int(config["simulation"]["probes_per_orientation"]) * len(config["geometry"]["thicknesses_A"])


def n_patterns(config: dict, n_crystals: int | None = None) -> int:
    n = n_crystals if n_crystals is not None else int(config["selection"]["n_crystals"])
    return n * n_orientations(config) * patterns_per_orientation(config)
