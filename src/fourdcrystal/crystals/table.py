"""The structures table (rule ``structures``' output, docs/CONTRACTS.md): one row per crystal, and what
every source needs to make a row — symmetry, conventional cell, safe unique ids, CIF text in and out.

Its own module so that the sources (builtin, CIF folder, Materials Project) share it without importing
each other.
"""
from __future__ import annotations

import re
import warnings

import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.cif import CifParser, CifWriter
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

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


def structure_from_cif(cif: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CifParser.from_str(cif).parse_structures(primitive=False)[0]
