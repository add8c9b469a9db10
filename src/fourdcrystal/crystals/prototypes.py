"""Prototype labels for rule ``prototypes``: every structure gets an AFLOW prototype label, or, when it
matches none, a cluster id shared with the structures it matches anonymously.

Matching follows pymatgen's ``AflowPrototypeMatcher`` (``PrototypeDatabaseMatcher`` over
``AFLOW_PROTOTYPE_LIBRARY``): Niggli-reduced primitive cells, ``StructureMatcher.fit_anonymous`` with
the configured tolerances, tightened by 0.8× while several labels match. Two changes, both for speed
and determinism, neither changes which prototypes can match:

* Exact pre-filter. ``fit_anonymous`` with ``attempt_supercell=False`` can only succeed when both
  primitive cells have the same number of sites and the same fractional composition up to a
  permutation of species; we bucket prototypes by that key and only fit within the bucket (this
  turns ~288 fits per structure into a handful).
* Tightening stops at the last non-empty candidate set (pymatgen may tighten to zero matches and
  report none);
  ties left at ltol < 0.01 (e.g. pyrite FeS2 also fits the P1 description AB2_aP12_1_4a_8a) resolve
  to the label whose space group equals the structure's, then the most symmetric (highest space-group
  number), then alphabetically; the others are recorded in ``prototype_alternatives``.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import pandas as pd
from pymatgen.core import Structure
from pymatgen.core.structure_matcher import StructureMatcher

from fourdcrystal.crystals.table import structure_from_cif

log = logging.getLogger("fourdcrystal.crystals")

TIGHTEN = 0.8  # pymatgen's factor per step
MIN_LTOL = 0.01  # pymatgen's stop


def reduce_cell(s: Structure) -> Structure:
    """The same reduction as PrototypeDatabaseMatcher._preprocess_structure."""
    return s.get_reduced_structure(reduction_algo="niggli").get_primitive_structure()


def match_key(reduced: Structure) -> tuple:
    """Necessary condition for fit_anonymous (no supercells): site count + sorted fractional amounts."""
    frac = reduced.composition.fractional_composition
    return len(reduced), tuple(sorted(round(float(v), 6) for v in frac.values()))


def label_spacegroup(label: str) -> int:
    """Space-group number of an AFLOW label (formula_pearson_number_wyckoffs...)."""
    return int(label.split("_")[2])


def anonymous_formula(s: Structure) -> str:
    return s.composition.reduced_composition.anonymized_formula


class AflowLibrary:
    """The AFLOW prototype library, reduced once and bucketed by :func:`match_key`."""

    def __init__(self):
        from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

        self.buckets: dict[tuple, list[tuple[str, Structure]]] = defaultdict(list)
        for entry in AFLOW_PROTOTYPE_LIBRARY:
            reduced = reduce_cell(entry["snl"].structure)
            self.buckets[match_key(reduced)].append((entry["tags"]["aflow"], reduced))

    def match(self, structure: Structure, ltol: float, stol: float, angle_tol: float,
              spacegroup_number: int | None = None) -> dict:
        reduced = reduce_cell(structure)
        candidates = self.buckets.get(match_key(reduced), [])
        sm = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True)

        def labels_at(matcher, pool):
            return [(lab, ref) for lab, ref in pool
                    if matcher.fit_anonymous(ref, reduced, skip_structure_reduction=True)]

        found = labels_at(sm, candidates) if candidates else []
        ltol_used = sm.ltol
        # Tighten while several distinct labels match (duplicate labels in the library are one prototype).
        while len({lab for lab, _ in found}) > 1 and sm.ltol >= MIN_LTOL:
            sm.ltol *= TIGHTEN
            sm.stol *= TIGHTEN
            sm.angle_tol *= TIGHTEN
            tighter = labels_at(sm, found)
            if not tighter:
                break  # keep the last non-empty set rather than losing the match
            found, ltol_used = tighter, sm.ltol
        labels = sorted({lab for lab, _ in found},
                        key=lambda lab: (label_spacegroup(lab) != spacegroup_number, -label_spacegroup(lab), lab))
        return {"prototype": labels[0] if labels else None,
                "prototype_alternatives": ";".join(labels[1:]),
                "match_ltol": ltol_used if labels else None}


_LIBRARY: AflowLibrary | None = None


def _library() -> AflowLibrary:
    global _LIBRARY
    if _LIBRARY is None:
        _LIBRARY = AflowLibrary()
    return _LIBRARY


def _match_one(args):
    cif, tol, sg = args
    return _library().match(structure_from_cif(cif), *tol, spacegroup_number=sg)


def match_aflow(cifs: list[str], tol: tuple[float, float, float], spacegroup_numbers: list[int] | None = None,
                workers: int = 1) -> list[dict]:
    """AFLOW match for each structure (CIF texts, as in the structures table); ``workers`` processes."""
    sgs = list(spacegroup_numbers) if spacegroup_numbers is not None else [None] * len(cifs)
    jobs = [(c, tol, None if sg is None else int(sg)) for c, sg in zip(cifs, sgs, strict=True)]
    if workers <= 1 or len(jobs) < 8:
        return [_match_one(j) for j in jobs]
    # Each worker reduces the 288-entry library once (~1 s); chunks keep the pickling cheap.
    with ProcessPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(_match_one, jobs, chunksize=max(1, len(jobs) // (4 * workers))))


def cluster_unmatched(items: list[dict], tol: tuple[float, float, float]) -> dict[str, str]:
    """Greedy anonymous clustering of structures that match no AFLOW prototype.

    ``items``: dicts with structure_id, structure, spacegroup_number. Processing order is canonical
    (anonymous formula, space group, site count, structure_id), so ids do not depend on input order:
    ``cluster-<anonymous formula>-sg<number of the representative>`` plus ``-2``, ``-3``, ... when
    several clusters share that pattern.
    """
    ltol, stol, angle_tol = tol
    sm = StructureMatcher(ltol=ltol, stol=stol, angle_tol=angle_tol, primitive_cell=True)
    prepared = []
    for it in items:
        red = reduce_cell(it["structure"])
        prepared.append((anonymous_formula(red), int(it["spacegroup_number"]), len(red), it["structure_id"], red))
    prepared.sort(key=lambda p: p[:4])
    reps: dict[tuple, list[tuple[str, Structure]]] = defaultdict(list)  # match key -> [(cluster id, rep)]
    name_count: dict[str, int] = defaultdict(int)
    out = {}
    for anon, sg, _n, sid, red in prepared:
        key = match_key(red)
        for cid, rep in reps[key]:
            if sm.fit_anonymous(rep, red, skip_structure_reduction=True):
                out[sid] = cid
                break
        else:
            base = f"cluster-{anon}-sg{sg}"
            name_count[base] += 1
            cid = base if name_count[base] == 1 else f"{base}-{name_count[base]}"
            reps[key].append((cid, red))
            out[sid] = cid
    return out


def assign_prototypes(structures: pd.DataFrame, proto_cfg: dict, workers: int = 1) -> pd.DataFrame:
    """One row per structure: structure_id, prototype, prototype_kind (aflow|cluster), extras."""
    tol = (float(proto_cfg.get("ltol", 0.2)), float(proto_cfg.get("stol", 0.3)), float(proto_cfg.get("angle_tol", 5.0)))
    t0 = time.perf_counter()
    matches = match_aflow(list(structures["cif"]), tol, list(structures["spacegroup_number"]), workers=workers)
    t1 = time.perf_counter()
    df = structures[["structure_id", "formula", "spacegroup", "spacegroup_number", "source", "source_id", "n_sites"]].copy()
    df["prototype"] = [m["prototype"] for m in matches]
    df["prototype_kind"] = ["aflow" if m["prototype"] else "cluster" for m in matches]
    df["prototype_alternatives"] = [m["prototype_alternatives"] for m in matches]
    df["match_ltol"] = [m["match_ltol"] for m in matches]
    unmatched = df.index[df["prototype"].isna()]
    if len(unmatched):
        items = [{"structure_id": df.at[i, "structure_id"], "spacegroup_number": df.at[i, "spacegroup_number"],
                  "structure": structure_from_cif(structures.at[i, "cif"])} for i in unmatched]
        ids = cluster_unmatched(items, tol)
        df.loc[unmatched, "prototype"] = [ids[df.at[i, "structure_id"]] for i in unmatched]
    log.info("prototypes: %d structures, %d AFLOW-labelled, %d in %d new clusters; matching %.1f s with %d workers, total %.1f s",
             len(df), int((df.prototype_kind == "aflow").sum()), len(unmatched),
             df.loc[unmatched, "prototype"].nunique(), t1 - t0, workers, time.perf_counter() - t0)
    return df.reset_index(drop=True)
