"""Crystal sources for rule ``structures``: one table row per structure.

Output columns (docs/CONTRACTS.md): structure_id, formula, spacegroup, source, source_id, n_sites, cif
(+ spacegroup_number). ``n_sites`` counts the conventional standard cell, the cell that later stages
tile into supercells, so ``max_sites`` filters bound their cost.
"""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.cif import CifParser, CifWriter
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from fourdcrystal.errors import UserError

log = logging.getLogger("fourdcrystal.crystals")

# Symmetry tolerance (Å) for space groups and conventional cells. 0.01 Å recovers the AFLOW label's
# space group for 285 of the 288 builtin examples (0.1 Å over-symmetrises 9 of them).
SYMPREC_A = 0.01
COLUMNS = ["structure_id", "formula", "spacegroup", "spacegroup_number", "source", "source_id", "n_sites", "cif"]


def symmetry_info(structure: Structure) -> tuple[str, int, int]:
    """(space-group symbol, number, conventional-standard-cell site count)."""
    sga = SpacegroupAnalyzer(structure, symprec=SYMPREC_A)
    return sga.get_space_group_symbol(), sga.get_space_group_number(), len(sga.get_conventional_standard_structure())


def conventional_cell(structure: Structure) -> Structure:
    return SpacegroupAnalyzer(structure, symprec=SYMPREC_A).get_conventional_standard_structure()


def safe_id(text: str) -> str:
    """Filesystem- and Snakemake-wildcard-safe id: keep [A-Za-z0-9._-], replace the rest by '_'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def unique_ids(ids: list[str]) -> list[str]:
    """Make ids unique by suffixing -2, -3, ... to repeats, in list order (callers pass a stable order)."""
    seen: dict[str, int] = {}
    out = []
    taken = set(ids)
    for i in ids:
        n = seen.get(i, 0) + 1
        seen[i] = n
        if n == 1:
            out.append(i)
            continue
        cand = f"{i}-{n}"
        while cand in taken:
            n += 1
            cand = f"{i}-{n}"
        seen[i] = n
        taken.add(cand)
        out.append(cand)
    return out


def structure_row(structure: Structure, structure_id: str, source: str, source_id: str) -> dict:
    symbol, number, n_conv = symmetry_info(structure)
    return {
        "structure_id": structure_id,
        "formula": structure.composition.reduced_formula,
        "spacegroup": symbol,
        "spacegroup_number": int(number),
        "source": source,
        "source_id": source_id,
        "n_sites": int(n_conv),
        "cif": str(CifWriter(structure)),
    }


def to_table(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["structure_id"] = unique_ids(list(df["structure_id"]))
    return df.sort_values("structure_id", kind="stable").reset_index(drop=True)


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


def structure_from_cif(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser.from_str(cif).parse_structures(primitive=False)[0]
