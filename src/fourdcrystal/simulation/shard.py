"""One `simulate` job: simulate a shard of a crystal's orientations and publish its store.

The physics lives in :mod:`fourdcrystal.simulation.multislice` (multislice quartets) and
:mod:`fourdcrystal.simulation.kinematic` (kinematic truth); this module only orchestrates: pick the shard's
orientation rows (:func:`fourdcrystal.simulation.plan.shard_rows`), draw each orientation's probe settings
from its own RNG, collect the metadata rows of docs/CONTRACTS.md and hand everything to
:func:`fourdcrystal.simulation.store.write_shard`, which publishes the shard directory atomically.

Determinism: the probe settings of orientation o of crystal c depend only on (seed, c, o) through a
SHA-256-derived seed (never Python's salted ``hash()``), so a rerun after a killed job, or a job
run with a different shard size, gives bit-identical settings.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.seeds import stable_seed
from fourdcrystal.simulation import plan, supercells
from fourdcrystal.config import digest, fingerprint
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.simulation.store import ARRAY_NAMES, write_shard

log = logging.getLogger(__name__)

# orientations.csv columns copied into every pattern row (CONTRACTS: patterns.parquet)
ROTATION_COLUMNS = [f"r{i}{j}" for i in range(3) for j in range(3)]
ORIENTATION_COLUMNS = [c for c in supercells.ORIENTATION_COLUMNS if c != "crystal_id" and c not in ROTATION_COLUMNS]


# The config sections that determine a shard's content (the crystal itself enters through its CIF and
# supercell files, which Snakemake tracks); changing the split fractions must not invalidate shards.
SHARD_SECTIONS = ("seed", "geometry", "orientations", "simulation")


def shard_fingerprint(config: dict) -> str:
    # plus the spacing below which the truth keeps only the brighter of two reflections (labels.py)
    return digest([fingerprint(config, sections=SHARD_SECTIONS), config["evaluate"]["network_min_spacing_px"]])


def orientation_rng(seed: int, crystal_id: str, orientation_id: int, purpose: str = "probes") -> np.random.Generator:
    return np.random.default_rng(stable_seed(seed, crystal_id, int(orientation_id), purpose))


def _read_orientations(path, config, crystal_id) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise UserError(f"orientation table {path} does not exist", "run the supercells rule for this crystal first")
    df = pd.read_csv(path)
    expected = plan.n_orientations(config)
    if len(df) not in (0, expected):
        raise UserError(f"{path} has {len(df)} orientations but the config asks for {expected}",
                        f"delete results/supercells/{crystal_id} and rerun snakemake (the config changed)")
    missing = [c for c in ORIENTATION_COLUMNS + ROTATION_COLUMNS if c not in df.columns]
    if len(df) and missing:
        raise UserError(f"{path} lacks columns {missing}", "rerun the supercells rule with this version")
    return df


def _read_frames(path, rows: range) -> list:
    import ase.io

    frames = ase.io.read(str(path), index=f"{rows.start}:{rows.stop}", format="extxyz")
    if len(frames) != len(rows):
        raise UserError(f"{path} has fewer frames than orientation rows {rows.start}..{rows.stop - 1}",
                        "delete the crystal's supercells folder and rerun snakemake")
    return frames


def _prototype(selected_csv, crystal_id) -> str | None:
    if selected_csv is None or not Path(selected_csv).exists():
        return None
    sel = pd.read_csv(selected_csv)
    row = sel[sel["crystal_id"].astype(str) == str(crystal_id)]
    return str(row["prototype"].iloc[0]) if len(row) and "prototype" in row else None


def _read_physics_inputs(cifs_dir, supercells_extxyz, crystal_id, rows: range):
    """The crystal's structure (for the kinematic truth) and the shard's oriented supercells."""
    from pymatgen.core import Structure  # imported only when there is work: an empty shard needs no physics

    cif = Path(cifs_dir) / f"{crystal_id}.cif"
    if not cif.exists():
        raise UserError(f"CIF {cif} does not exist", "rerun the select checkpoint (snakemake results/crystals/selected.csv)")
    return Structure.from_file(str(cif)), _read_frames(supercells_extxyz, rows)


def _simulate_orientation_rows(config: dict, geometry: Geometry, crystal_id: str, row: pd.Series, atoms,
                               structure, base: int, shard: int, prototype: str | None):
    """One orientation: its quartets (labels rendered from its truth), its pattern and reflection rows
    (indices from ``base``) and timings."""
    from fourdcrystal.simulation.kinematic import mean_inner_potential_V
    from fourdcrystal.simulation.labels import orientation_truth
    from fourdcrystal.simulation.kinematic import shortest_spacing_invA
    from fourdcrystal.simulation.multislice import draw_probe_settings, simulate_orientation

    sim = config["simulation"]
    oid = int(row["orientation_id"])
    t0 = time.perf_counter()
    R = row[ROTATION_COLUMNS].to_numpy(float).reshape(3, 3)
    zone = tuple(int(row[c]) for c in ("zone_u", "zone_v", "zone_w")) if row["kind"] == "zone" else None
    shortest_g = (shortest_spacing_invA(structure, R, geometry, max(geometry.energies_eV), zone_uvw=zone,
                                        parametrization=sim["parametrization"])
                  if sim.get("overlap_fraction") else None)
    probes = draw_probe_settings(sim, geometry, orientation_rng(config["seed"], crystal_id, oid),
                                 int(sim["probes_per_orientation"]), shortest_g_invA=shortest_g)
    arrays, meta, timings = simulate_orientation(atoms, geometry, sim, probes, device=sim["device"], labels=False,
                                                 seed=stable_seed(config["seed"], crystal_id, oid, "phonons") % 2**32)
    t1 = time.perf_counter()
    frames, arrays["vg"], arrays["qz"] = orientation_truth(
        structure, R, zone, meta, arrays, geometry, sim, mean_inner_potential_V(structure, sim["parametrization"]),
        float(config["evaluate"]["network_min_spacing_px"]))
    pattern_rows, reflection_frames = [], []
    for j, m in enumerate(meta):
        e = float(m["energy_eV"])
        reflection_frames.append(frames[j].assign(index=base + j))
        pattern_rows.append({"index": base + j, "crystal_id": crystal_id, "prototype": prototype,
                             **{c: row[c] for c in ORIENTATION_COLUMNS},
                             "thickness_A": float(m["thickness_A"]), "energy_eV": e,
                             "semiangle_mrad": float(m["semiangle_mrad"]), "defocus_A": float(m["defocus_A"]),
                             "probe_id": int(m["probe_id"]), "shard": shard})
    t2 = time.perf_counter()
    timings = {**{k: float(v) for k, v in timings.items()}, "kinematic": t2 - t1, "orientation_total": t2 - t0}
    return arrays, meta, pattern_rows, reflection_frames, timings


def _simulate_rows(config, geometry, crystal_id, orient, rows: range, structure, frames, shard, prototype,
                   arrays, supercells_extxyz) -> tuple[list[dict], list[pd.DataFrame], dict[str, float]]:
    """Simulate orientation rows ``rows`` into ``arrays`` (preallocated); the metadata rows and summed timings."""
    from tqdm import tqdm

    per_orientation = plan.patterns_per_orientation(config)
    pattern_rows: list[dict] = []
    reflection_frames: list[pd.DataFrame] = []
    totals: dict[str, float] = {}
    for k, (row_i, atoms) in enumerate(tqdm(list(zip(rows, frames)), desc=f"{crystal_id} shard {shard:04d}",
                                            unit="orientation", file=sys.stderr, mininterval=5.0)):
        row = orient.iloc[row_i]
        oid = int(row["orientation_id"])
        if int(atoms.info.get("orientation_id", oid)) != oid:
            raise UserError(f"{supercells_extxyz} frame {row_i} is orientation {atoms.info.get('orientation_id')}, "
                            f"expected {oid}", "delete the crystal's supercells folder and rerun snakemake")
        base = k * per_orientation
        arr, meta, p_rows, r_frames, timings = _simulate_orientation_rows(
            config, geometry, crystal_id, row, atoms, structure, base, shard, prototype)
        if len(meta) != per_orientation:
            raise RuntimeError(f"simulate_orientation returned {len(meta)} patterns, expected {per_orientation}")
        for name in ARRAY_NAMES:
            arrays[name][base:base + per_orientation] = np.asarray(arr[name])
        pattern_rows += p_rows
        reflection_frames += r_frames
        for key, v in timings.items():
            totals[key] = totals.get(key, 0.0) + v
        log.info("%s orientation %d (%d/%d): %d patterns, %s", crystal_id, oid, k + 1, len(rows), per_orientation,
                 ", ".join(f"{key} {v:.2f} s" for key, v in timings.items()))
    return pattern_rows, reflection_frames, totals


def _metadata_tables(pattern_rows: list[dict], reflection_frames: list[pd.DataFrame]):
    """patterns.parquet and reflections.parquet tables (typed and empty for an empty shard)."""
    patterns = pd.DataFrame(pattern_rows)
    if not len(patterns):
        patterns = pd.DataFrame({"index": pd.Series(dtype="int64"), "crystal_id": pd.Series(dtype="str")})
    reflections = (pd.concat(reflection_frames, ignore_index=True) if reflection_frames
                   else pd.DataFrame({"index": pd.Series(dtype="int64")}))
    if len(reflections):
        reflections = reflections[["index"] + [c for c in reflections.columns if c != "index"]]
    return patterns, reflections


def simulate_shard(config: dict, crystal_id: str, cifs_dir, orientations_csv, supercells_extxyz, shard: int,
                   out_dir, selected_csv=None) -> dict:
    """Simulate orientation rows ``plan.shard_rows(config, shard)`` of one crystal into ``out_dir``.

    Returns a summary (n_patterns, seconds per phase).  A crystal skipped by the supercell stage
    (header-only orientations.csv) or a shard past its last orientation gives a valid empty shard.
    """
    shard = int(shard)
    geometry = Geometry.from_config(config)
    sim = config["simulation"]
    orient = _read_orientations(orientations_csv, config, crystal_id)
    rows = plan.shard_rows(config, shard) if len(orient) else range(0)
    n = len(rows) * plan.patterns_per_orientation(config)
    p = geometry.detector_px
    arrays = {k: np.zeros((n, p, p), dtype=sim["dtype"]) for k in ARRAY_NAMES}
    pattern_rows, reflection_frames, totals = [], [], {}
    if n:
        structure, frames = _read_physics_inputs(cifs_dir, supercells_extxyz, crystal_id, rows)
        slot = contextlib.nullcontext()
        if sim["device"] == "gpu":
            from fourdcrystal.simulation.gpu_slots import gpu_slot  # lazily: CPU runs never touch GPU locking

            slot = gpu_slot()
        with slot:
            pattern_rows, reflection_frames, totals = _simulate_rows(
                config, geometry, crystal_id, orient, rows, structure, frames, shard,
                _prototype(selected_csv, crystal_id), arrays, supercells_extxyz)
    else:
        log.info("%s shard %d: no orientations to simulate (crystal skipped or shard empty); writing an empty shard",
                 crystal_id, shard)
    patterns, reflections = _metadata_tables(pattern_rows, reflection_frames)
    t_write = time.perf_counter()
    attrs = {"config_fingerprint": shard_fingerprint(config), "crystal_id": str(crystal_id), "shard": shard,
             "timings_s": totals}
    write_shard(out_dir, arrays, patterns, reflections, geometry, attrs=attrs, dtype=sim["dtype"],
                compressor=sim["compressor"], level=int(sim["compression_level"]))
    totals["write"] = time.perf_counter() - t_write
    log.info("%s shard %d: %d patterns written to %s (write %.2f s)", crystal_id, shard, n, out_dir, totals["write"])
    return {"n_patterns": n, "timings_s": totals}
