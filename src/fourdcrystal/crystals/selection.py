"""Checkpoint ``select``: choose ``selection.n_crystals`` structures, spread over prototypes by the
square-root law of the seed paper (a prototype with c members gets a share ∝ √c).

* n ≥ number of prototypes P: every prototype gets ≥ 1 and ≤ c; shares are ``clip(λ√c, 1, c)`` with
  λ chosen so they sum to n, rounded by largest remainder (ties: larger c, then table order).
* n < P: n prototypes get one each, drawn without replacement with probability ∝ √c
  (Efraimidis–Spirakis keys u^(1/√c), u ~ U(0,1) from ``numpy.random.default_rng(seed)``, top n).
* Members within a prototype: a seeded random draw over structures sorted by structure_id.
Everything is a function of (tables, n, seed), so reruns select the same crystals.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.io.cif import CifWriter

from fourdcrystal.atomic import atomic_path, write_table
from fourdcrystal.errors import UserError
from fourdcrystal.crystals.table import conventional_cell, safe_id, structure_from_cif, unique_ids

log = logging.getLogger("fourdcrystal.crystals")


def sqrt_shares(counts, n: int) -> np.ndarray:
    """Integer shares ∝ √c summing to ``n`` with 1 ≤ share ≤ c, for ``n`` in [len(counts), sum(counts)].

    Largest-remainder apportionment of the real quotas ``clip(λ√c, 1, c)``; λ by bisection (the sum
    is continuous and non-decreasing in λ).
    """
    c = np.asarray(counts, dtype=float)
    if c.ndim != 1 or len(c) == 0 or np.any(c < 1) or np.any(c != np.round(c)):
        raise ValueError("counts must be a non-empty list of positive integers")
    if not len(c) <= n <= c.sum():
        raise ValueError(f"n={n} must lie between the number of groups ({len(c)}) and their total ({int(c.sum())})")
    root = np.sqrt(c)

    def total(lam):
        return np.clip(lam * root, 1.0, c).sum()

    lo, hi = 0.0, float(c.max())  # total(0) = len(c) <= n <= total(max c) = sum(c)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if total(mid) < n else (lo, mid)
    quota = np.clip(hi * root, 1.0, c)
    base = np.minimum(np.floor(quota + 1e-9), c).astype(int)
    remaining = n - int(base.sum())
    frac = quota - base
    order = sorted(range(len(c)), key=lambda i: (-frac[i], -c[i], i))
    for i in order:
        if remaining <= 0:
            break
        if base[i] < c[i]:
            base[i] += 1
            remaining -= 1
    if remaining < 0:  # floating-point overshoot: take back from the smallest remainders
        for i in reversed(order):
            if remaining == 0:
                break
            if base[i] > 1:
                base[i] -= 1
                remaining += 1
    assert base.sum() == n
    return base


def weighted_pick(weights, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` items drawn without replacement, P ∝ weight (Efraimidis–Spirakis)."""
    w = np.asarray(weights, dtype=float)
    keys = rng.random(len(w)) ** (1.0 / w)
    return np.sort(np.argsort(-keys, kind="stable")[:k])


def choose(prototypes: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """Rows of ``prototypes`` (one per structure; columns structure_id, prototype) chosen by the √ law."""
    if n > len(prototypes):
        raise UserError(f"selection.n_crystals={n} exceeds the {len(prototypes)} structures available",
                        "lower selection.n_crystals or widen the source filters (e.g. source.builtin.max_sites)")
    df = prototypes.sort_values("structure_id", kind="stable").reset_index(drop=True)
    groups = df.groupby("prototype", sort=True).indices  # prototype -> row indices (sorted by structure_id)
    names = sorted(groups)
    counts = np.array([len(groups[p]) for p in names])
    rng = np.random.default_rng(seed)
    if n < len(names):
        shares = np.zeros(len(names), dtype=int)
        shares[weighted_pick(np.sqrt(counts), n, rng)] = 1
    else:
        shares = sqrt_shares(counts, n)
    chosen = []
    for name, share in zip(names, shares):
        if share:
            rows = groups[name]
            chosen.extend(rows[np.sort(rng.choice(len(rows), size=share, replace=False))])
    out = df.loc[sorted(chosen)].copy()
    out["prototype_size"] = out["prototype"].map(dict(zip(names, counts)))
    return out.reset_index(drop=True)


def crystal_ids(table: pd.DataFrame) -> list[str]:
    """Stable, unique, filesystem-safe: ``<source_id>-<formula>`` (AFLOW label / material id / file stem)."""
    stems = []
    for _, r in table.iterrows():
        sid = str(r["source_id"])
        if r["source"] == "cif_dir":
            sid = Path(sid).stem
        stems.append(safe_id(f"{sid}-{r['formula']}"))
    return unique_ids(stems)


def select(structures: pd.DataFrame, prototypes: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    chosen = choose(prototypes[["structure_id", "prototype", "prototype_kind"]], n, seed)
    meta = structures.drop(columns=["cif"]).set_index("structure_id")
    table = chosen.join(meta, on="structure_id")
    table.insert(0, "crystal_id", crystal_ids(table))
    cols = ["crystal_id", "formula", "prototype", "spacegroup", "source", "source_id",
            "structure_id", "prototype_kind", "prototype_size", "spacegroup_number", "n_sites"]
    return table[cols].sort_values("crystal_id", kind="stable").reset_index(drop=True)


def write_selection(structures: pd.DataFrame, table: pd.DataFrame, table_path, cifs_dir) -> None:
    """CIFs of the conventional standard cells, then the table; each published atomically."""
    cif_by_id = dict(zip(structures["structure_id"], structures["cif"]))
    with atomic_path(cifs_dir) as tmp:
        Path(tmp).mkdir(parents=True)
        for cid, sid in zip(table["crystal_id"], table["structure_id"]):
            conv = conventional_cell(structure_from_cif(cif_by_id[sid]))
            (Path(tmp) / f"{cid}.cif").write_text(str(CifWriter(conv)))
    write_table(table_path, table)
