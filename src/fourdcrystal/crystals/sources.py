"""Crystal sources for rule ``structures``: one table row per structure.

Output columns (docs/CONTRACTS.md): structure_id, formula, spacegroup, source, source_id, n_sites, cif
(+ spacegroup_number). ``n_sites`` counts the conventional standard cell, the cell that later stages
tile into supercells, so ``max_sites`` filters bound their cost.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.cif import CifParser

from fourdcrystal.crystals.table import safe_id, structure_row, to_table
from fourdcrystal.errors import UserError

log = logging.getLogger("fourdcrystal.crystals")

def builtin_structures(max_sites: int) -> pd.DataFrame:
    """The AFLOW prototype examples shipped with pymatgen (288), each with its example species."""
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    rows, skipped = [], 0
    for entry in AFLOW_PROTOTYPE_LIBRARY:
        s = entry["snl"].structure
        label = entry["tags"]["aflow"]
        row = structure_row(s, safe_id(f"aflow-{label}-{s.composition.reduced_formula}"), "builtin", label)
        if row["n_sites"] > max_sites:
            skipped += 1
            continue
        rows.append(row)
    log.info("builtin: %d AFLOW prototype examples kept, %d skipped (> %d conventional sites)",
             len(rows), skipped, max_sites)
    return to_table(rows)


def read_cif(path: Path) -> Structure:
    """First structure of a CIF; ValueError with a short reason when unusable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns per odd tag; the skip reason is logged instead
        try:
            structures = CifParser(str(path)).parse_structures(primitive=False)
        except Exception as exc:  # pymatgen raises ValueError/KeyError/... for malformed files
            raise ValueError(f"unreadable CIF ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not structures:
        raise ValueError("no structure in file")
    s = structures[0]
    if not s.is_ordered:
        raise ValueError("partial occupancies (disordered); multislice needs an ordered cell")
    if len(s) == 0:
        raise ValueError("no atoms")
    return s


def cif_dir_structures(path: str | None) -> pd.DataFrame:
    if not path:
        raise UserError("source.kind is cif_dir but source.cif_dir.path is not set",
                        "set source.cif_dir.path to a folder of *.cif files")
    folder = Path(path)
    if not folder.is_dir():
        raise UserError(f"source.cif_dir.path {folder} is not a folder", "point it at a folder of *.cif files")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".cif")
    rows = []
    for f in files:
        try:
            s = read_cif(f)
            rows.append(structure_row(s, safe_id(f"cif-{f.stem}"), "cif_dir", f.name))
        except ValueError as exc:
            log.warning("cif_dir: skipping %s: %s", f.name, exc)
        except Exception as exc:  # symmetry analysis of a nonsense cell: skip, never half-fail the stage
            log.warning("cif_dir: skipping %s: symmetry analysis failed (%s)", f.name, exc)
    if not rows:
        raise UserError(f"no usable structure among {len(files)} *.cif files in {folder}",
                        "add readable, ordered CIF files (reasons per file are in the log)")
    log.info("cif_dir: %d of %d CIF files usable", len(rows), len(files))
    return to_table(rows)


def load_structures(config: dict, mp_cache_dir: str | Path | None = None) -> pd.DataFrame:
    """Dispatch on ``config['source']['kind']``."""
    src = config["source"]
    kind = src["kind"]
    if kind == "builtin":
        return builtin_structures(int(src.get("builtin", {}).get("max_sites", 24)))
    if kind == "cif_dir":
        return cif_dir_structures(src.get("cif_dir", {}).get("path"))
    if kind == "materials_project":
        from fourdcrystal.crystals.materials_project import mp_structures

        return mp_structures(src.get("materials_project", {}), cache_dir=mp_cache_dir or "results/crystals/mp_cache")
    raise UserError(f"unknown source.kind {kind!r}", "use builtin, materials_project or cif_dir")
