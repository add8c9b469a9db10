"""Zarr v3 shard stores of simulated quartets: the one writer and the readers.

One simulate job publishes one directory (docs/CONTRACTS.md, "Simulation")::

    shard-0000/
      quartets.zarr/        Zarr v3 group; arrays probe, cbed, vg, qz, each (N, P, P)
      patterns.parquet      one metadata row per pattern (column ``index`` = position along N)
      reflections.parquet   kinematic truth, one row per (pattern index, reflection)

Every array uses the sharding codec with an inner chunk of one pattern ``(1, P, P)`` and one shard
holding all N patterns: a training sample is then one small compressed read (the inner chunk) while
the file system sees four files per job instead of 4·N, which matters on Lustre/GPFS at the seed's
scale (millions of patterns).  The directory is built in a temporary sibling and published by one
rename (:mod:`fourdcrystal.atomic`), so a killed job leaves nothing that looks complete.

Readers open stores lazily and keep the opened arrays per process (keyed by PID, so DataLoader
workers forked after the parent opened a store re-open their own handles; zarr resets its IO loop
after fork itself).  Nothing reads a whole store into memory.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.atomic import atomic_path
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry

log = logging.getLogger(__name__)

ARRAY_NAMES = ("probe", "cbed", "vg", "qz")
STORE_NAME = "quartets.zarr"
PATTERNS_NAME = "patterns.parquet"
REFLECTIONS_NAME = "reflections.parquet"
SPLITS = ("train", "val", "test")
DTYPES = ("float32", "float16")
COMPRESSORS = ("zstd", "blosc", "none")


def _compressors(compressor: str, level: int):
    """The compression codec applied to every inner chunk inside the shard."""
    from zarr.codecs import BloscCodec, ZstdCodec

    if compressor == "zstd":
        return [ZstdCodec(level=int(level))]
    if compressor == "blosc":
        # blosc's own level scale is 0-9; byte shuffle helps smooth float images.
        return [BloscCodec(cname="zstd", clevel=min(int(level), 9), shuffle="shuffle")]
    if compressor == "none":
        return None
    raise UserError(f"unknown compressor '{compressor}'", f"use one of {', '.join(COMPRESSORS)} in simulation.compressor")


def _check_arrays(arrays: dict, geometry: Geometry) -> int:
    missing = [k for k in ARRAY_NAMES if k not in arrays]
    if missing:
        raise ValueError(f"write_shard: arrays lack {missing}; need {list(ARRAY_NAMES)}")
    p = geometry.detector_px
    shapes = {k: np.shape(arrays[k]) for k in ARRAY_NAMES}
    n = shapes["probe"][0] if len(shapes["probe"]) == 3 else -1
    for k, s in shapes.items():
        if s != (n, p, p):
            raise ValueError(f"write_shard: array '{k}' has shape {s}; expected ({n}, {p}, {p}) "
                             f"(N patterns on the {p}x{p} detector of the geometry)")
    for k in ARRAY_NAMES:
        if n and not np.isfinite(arrays[k]).all():
            raise ValueError(f"write_shard: array '{k}' holds NaN or inf values")
    return n


def write_shard(out_dir, arrays: dict, patterns: pd.DataFrame, reflections: pd.DataFrame,
                geometry, attrs: dict | None = None, dtype: str = "float32",
                compressor: str = "zstd", level: int = 3) -> Path:
    """Write one shard directory atomically and return its path.

    ``arrays``: dict of (N, P, P) arrays probe/cbed/vg/qz (N may be 0: a skipped crystal gives a
    valid empty shard).  ``patterns``: N rows (an ``index`` column 0..N-1 is added if absent).
    ``reflections``: rows with an ``index`` column in [0, N).  ``geometry``: a Geometry or its dict.
    ``attrs``: extra group attributes (config_fingerprint, crystal_id, shard, ...).
    """
    import zarr

    geometry = geometry if isinstance(geometry, Geometry) else Geometry.from_dict(geometry)
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'", f"use one of {', '.join(DTYPES)} in simulation.dtype")
    codecs = _compressors(compressor, level)
    n = _check_arrays(arrays, geometry)
    p = geometry.detector_px

    patterns = patterns.reset_index(drop=True).copy()
    if len(patterns) != n:
        raise ValueError(f"write_shard: {len(patterns)} pattern rows for {n} patterns")
    if "index" not in patterns.columns:
        patterns.insert(0, "index", np.arange(n, dtype=np.int64))
    elif not np.array_equal(patterns["index"].to_numpy(), np.arange(n)):
        raise ValueError("write_shard: patterns.index must be 0..N-1 in order")
    reflections = reflections.reset_index(drop=True)
    if len(reflections):
        if "index" not in reflections.columns:
            raise ValueError("write_shard: reflections need an 'index' column (pattern index)")
        idx = reflections["index"].to_numpy()
        if idx.min() < 0 or idx.max() >= n:
            raise ValueError(f"write_shard: reflection index outside [0, {n})")
    elif "index" not in reflections.columns:
        reflections = reflections.assign(index=pd.Series(dtype=np.int64))

    group_attrs = {"geometry": geometry.to_dict(), "n_patterns": int(n), "config_fingerprint": None,
                   "crystal_id": None, "shard": None, "format": "fourdcrystal-quartets",
                   "format_version": 1}
    group_attrs.update(attrs or {})
    group_attrs["complete"] = True  # only ever visible after the rename below

    out_dir = Path(out_dir)
    with atomic_path(out_dir) as tmp:
        tmp = Path(tmp)
        tmp.mkdir(parents=True)
        root = zarr.open_group(zarr.storage.LocalStore(str(tmp / STORE_NAME)), mode="w", zarr_format=3)
        def write(name):
            arr = root.create_array(
                name, shape=(n, p, p), dtype=dtype, chunks=(1, p, p),
                # one shard holds all N patterns (the shard shape must be >= 1 even when N == 0)
                shards=(max(n, 1), p, p), compressors=codecs, fill_value=0.0,
                dimension_names=("pattern", "kx", "ky"),
            )
            if n:
                arr[...] = np.asarray(arrays[name]).astype(dtype, copy=False)

        # the four arrays are independent: overlapping their compression and IO saves ~25 % of the write time
        with ThreadPoolExecutor(len(ARRAY_NAMES)) as pool:
            list(pool.map(write, ARRAY_NAMES))
        patterns.to_parquet(tmp / PATTERNS_NAME, index=False)
        reflections.to_parquet(tmp / REFLECTIONS_NAME, index=False)
        # attributes last, in one metadata write (attrs.update would rewrite zarr.json per key)
        root.update_attributes(group_attrs)
    return out_dir


# --- readers ------------------------------------------------------------------------------------
_OPEN: dict = {"pid": None, "stores": {}}


def _store_path(store) -> Path:
    p = Path(store)
    return p if p.name.endswith(".zarr") else p / STORE_NAME


def open_store(store) -> dict:
    """Opened arrays of a quartets store (path of quartets.zarr or of its shard directory), cached
    per process."""
    import zarr

    if _OPEN["pid"] != os.getpid():  # a forked worker: never reuse the parent's handles
        _OPEN["pid"], _OPEN["stores"] = os.getpid(), {}
    key = str(_store_path(store).resolve())
    hit = _OPEN["stores"].get(key)
    if hit is None:
        if not Path(key).is_dir():
            raise UserError(f"quartets store {store} does not exist",
                            "run `snakemake results/dataset/manifest.parquet` to simulate the data")
        g = zarr.open_group(zarr.storage.LocalStore(key, read_only=True), mode="r")
        hit = {"attrs": dict(g.attrs), **{k: g[k] for k in ARRAY_NAMES}}
        _OPEN["stores"][key] = hit
    return hit


def read_pattern(store, index: int) -> dict:
    """One quartet as float32 arrays: dict(probe, cbed, vg, qz), each (P, P)."""
    arrs = open_store(store)
    index = int(index)
    n = arrs["probe"].shape[0]
    if not 0 <= index < n:
        raise IndexError(f"pattern index {index} outside store {store} with {n} patterns")
    return {k: np.asarray(arrs[k][index], dtype=np.float32) for k in ARRAY_NAMES}


def store_attrs(store) -> dict:
    return dict(open_store(store)["attrs"])


def load_manifest(path, split: str | None = None) -> pd.DataFrame:
    """The dataset manifest (one row per pattern), optionally one split only."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"manifest {path} does not exist", "run `snakemake results/dataset/manifest.parquet` first")
    df = pd.read_parquet(path)
    if split is not None:
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
        df = df[df["split"] == split].reset_index(drop=True)
    return df


def validate_shard(shard_dir, check_values: bool = True) -> dict:
    """Open a published shard directory and check it against the contract.

    Returns a summary dict (n_patterns, crystal_id, shard, geometry, config_fingerprint).  Raises a
    one-line UserError naming the shard and what is wrong.  ``check_values`` scans every pattern
    for NaN/inf one inner chunk at a time (bounded memory).
    """
    import zarr

    shard_dir = Path(shard_dir)

    def broken(why):
        return UserError(f"shard {shard_dir} is broken ({why})",
                         f"delete {shard_dir} and rerun snakemake to simulate it again")

    zpath = shard_dir / STORE_NAME
    for p in (zpath, shard_dir / PATTERNS_NAME, shard_dir / REFLECTIONS_NAME):
        if not p.exists():
            raise broken(f"missing {p.name}")
    try:
        g = zarr.open_group(zarr.storage.LocalStore(str(zpath), read_only=True), mode="r")
        attrs = dict(g.attrs)
        arrs = {k: g[k] for k in ARRAY_NAMES}
    except Exception as exc:  # any zarr failure means the store cannot be used
        raise broken(f"cannot open quartets.zarr: {type(exc).__name__}: {exc}") from None
    if attrs.get("complete") is not True:
        raise broken("group attribute complete is not true")
    try:
        geometry = Geometry.from_dict(attrs["geometry"])
    except Exception as exc:
        raise broken(f"bad geometry attribute: {exc}") from None
    n = attrs.get("n_patterns")
    p = geometry.detector_px
    for k, a in arrs.items():
        if a.shape != (n, p, p):
            raise broken(f"array {k} has shape {a.shape}, expected ({n}, {p}, {p})")
        if a.chunks != (1, p, p) or a.shards is None:
            raise broken(f"array {k} is not sharded with inner chunks (1, {p}, {p})")
    pats = pd.read_parquet(shard_dir / PATTERNS_NAME)
    if len(pats) != n:
        raise broken(f"patterns.parquet has {len(pats)} rows for {n} patterns")
    if n and not np.array_equal(pats["index"].to_numpy(), np.arange(n)):
        raise broken("patterns.parquet index is not 0..N-1")
    refl = pd.read_parquet(shard_dir / REFLECTIONS_NAME)
    if len(refl) and (refl["index"].min() < 0 or refl["index"].max() >= n):
        raise broken("reflections.parquet refers to patterns outside the store")
    if check_values and n:
        step = max(1, int(2**24 // (p * p * 4)))  # ~16 MB slabs
        for k, a in arrs.items():
            for i in range(0, n, step):
                if not np.isfinite(a[i:i + step]).all():
                    raise broken(f"array {k} holds NaN/inf values near pattern {i}")
    return {"n_patterns": int(n), "crystal_id": attrs.get("crystal_id"), "shard": attrs.get("shard"),
            "geometry": attrs["geometry"], "config_fingerprint": attrs.get("config_fingerprint")}
