"""Rule `dataset`: validate every shard and write the manifest, the reflection table and dataset.json.

Splits are made over whole crystals (``dataset.split_by: crystal``) or whole prototypes
(``prototype``), so no crystal (or structure type) is seen in training and then again in testing.
The assignment is a seeded permutation of the sorted unit names: it depends only on the seed and
the set of units, not on the order shards are listed in or on the machine.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.atomic import write_table, write_text
from fourdcrystal.config import fingerprint
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.seeds import stable_seed
from fourdcrystal.simulation.shard import shard_fingerprint
from fourdcrystal.simulation.store import PATTERNS_NAME, REFLECTIONS_NAME, SPLITS, STORE_NAME, validate_shard

log = logging.getLogger(__name__)


def assign_splits(units, seed: int, val_fraction: float, test_fraction: float) -> dict:
    """Map each unit (crystal or prototype name) to train/val/test.

    With n >= 3 units every split with a positive fraction gets at least one unit and train keeps at
    least one; with fewer units, train is filled first, then test, then val (and a warning says so).
    """
    units = sorted({str(u) for u in units})
    n = len(units)
    if val_fraction + test_fraction >= 1:
        raise UserError(f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction:.2f} leaves no training data",
                        "make their sum < 1")
    order = [units[i] for i in np.random.default_rng(stable_seed(seed, "dataset-split")).permutation(n)]
    if n >= 3:
        n_test = max(1 if test_fraction > 0 else 0, int(round(test_fraction * n)))
        n_val = max(1 if val_fraction > 0 else 0, int(round(val_fraction * n)))
        while n_test + n_val > n - 1:  # keep one unit for training
            if n_val >= n_test and n_val > 1:
                n_val -= 1
            else:
                n_test -= 1
    else:
        n_test = 1 if n == 2 else 0
        n_val = 0
        log.warning("only %d split unit(s): the val%s split(s) will be empty; simulate at least 3 crystals "
                    "(selection.n_crystals) for train/val/test", n, "" if n == 2 else " and test")
    out = {}
    for i, u in enumerate(order):
        out[u] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def build_dataset(config: dict, shard_dirs, manifest_path, reflections_path, info_path, root=".") -> dict:
    """Validate ``shard_dirs`` and write the manifest, reflections and dataset.json (all atomically)."""
    root = Path(root)
    geometry = Geometry.from_config(config)
    fp = fingerprint(config)
    shard_fp = shard_fingerprint(config)
    split_by = config["dataset"]["split_by"]
    patterns, reflections, skipped = [], [], []
    for d in sorted(str(s) for s in shard_dirs):
        summary = validate_shard(d)  # one-line UserError naming a broken shard
        if Geometry.from_dict(summary["geometry"]) != geometry:
            raise UserError(f"shard {d} was simulated with a different geometry than the config",
                            f"delete {d} and rerun snakemake")
        if summary["config_fingerprint"] not in (None, shard_fp):
            raise UserError(f"shard {d} was simulated with another configuration (fingerprint "
                            f"{summary['config_fingerprint']} != {shard_fp})", f"delete {d} and rerun snakemake")
        store = os.path.relpath(Path(d) / STORE_NAME, root)
        if summary["n_patterns"] == 0:
            skipped.append(store)
            continue
        patterns.append(pd.read_parquet(Path(d) / PATTERNS_NAME).assign(store=store))
        reflections.append(pd.read_parquet(Path(d) / REFLECTIONS_NAME).assign(store=store))
    if not patterns:
        raise UserError("every shard is empty: no crystal fitted the simulation box",
                        "raise geometry.box_A or select other crystals")
    manifest = pd.concat(patterns, ignore_index=True)
    if split_by == "prototype" and manifest["prototype"].isna().any():
        raise UserError("dataset.split_by is 'prototype' but some patterns have no prototype",
                        "use dataset.split_by: crystal, or rerun the select checkpoint so selected.csv has prototypes")
    unit_col = "crystal_id" if split_by == "crystal" else "prototype"
    ds = config["dataset"]
    splits = assign_splits(manifest[unit_col].astype(str).unique(), int(config["seed"]),
                           float(ds["val_fraction"]), float(ds["test_fraction"]))
    manifest["split"] = manifest[unit_col].astype(str).map(splits)
    front = ["store", "index", "split"]
    manifest = manifest[front + [c for c in manifest.columns if c not in front]]
    manifest = manifest.sort_values(["store", "index"], kind="stable").reset_index(drop=True)
    refl = pd.concat(reflections, ignore_index=True)
    refl = refl[["store", "index"] + [c for c in refl.columns if c not in ("store", "index")]]

    crystals_per_split = {s: sorted(manifest.loc[manifest["split"] == s, "crystal_id"].astype(str).unique())
                          for s in SPLITS}
    seen = [c for s in SPLITS for c in crystals_per_split[s]]
    assert len(seen) == len(set(seen)), "a crystal landed in two splits"  # guaranteed by assign_splits
    info = {
        "format": "fourdcrystal-dataset", "format_version": 1,
        "geometry": geometry.to_dict(), "config_fingerprint": fp, "shard_fingerprint": shard_fp, "seed": int(config["seed"]),
        "split_by": split_by,
        "n_patterns": int(len(manifest)), "n_reflections": int(len(refl)),
        "n_stores": int(manifest["store"].nunique()), "empty_stores": skipped,
        "counts": {s: {"patterns": int((manifest["split"] == s).sum()), "crystals": len(crystals_per_split[s]),
                       "prototypes": int(manifest.loc[manifest["split"] == s, "prototype"].nunique())}
                   for s in SPLITS},
        "crystals": crystals_per_split,
    }
    write_table(manifest_path, manifest)
    write_table(reflections_path, refl)
    write_text(info_path, json.dumps(info, indent=2, default=str) + "\n")
    log.info("dataset: %d patterns in %d stores (%s); %d empty shards", len(manifest), info["n_stores"],
             ", ".join(f"{s} {info['counts'][s]['patterns']}" for s in SPLITS), len(skipped))
    return info
