"""Crystal sources: builtin AFLOW examples and a CIF folder (the Materials Project path: test_mp_api.py)."""
import logging
from types import SimpleNamespace

import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.structure_matcher import StructureMatcher
from pymatgen.io.cif import CifWriter

from fourdcrystal.workflow import stages
from fourdcrystal.crystals import sources, table
from fourdcrystal.errors import UserError

CONTRACT_COLUMNS = {"structure_id", "formula", "spacegroup", "source", "source_id", "n_sites", "cif"}


@pytest.fixture(scope="module")
def builtin8():
    return sources.builtin_structures(max_sites=8)


def test_builtin_respects_max_sites_and_labels(builtin8):
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    df = builtin8
    assert CONTRACT_COLUMNS <= set(df.columns)
    assert df.structure_id.is_unique and (df.source == "builtin").all()
    assert df.n_sites.max() <= 8 and 40 < len(df) < 288
    labels = {e["tags"]["aflow"] for e in AFLOW_PROTOTYPE_LIBRARY}
    assert set(df.source_id) <= labels
    by_label = dict(zip(df.source_id, df.formula))
    assert by_label["A_cF4_225_a"] == "Cu" and by_label["AB_cF8_225_a_b"] == "NaCl"  # 4 and 8 conventional sites
    assert "AB3C_cP5_221_a_c_b" in by_label  # cubic perovskite, 5 sites
    assert "A_cF8_227_a" in by_label  # diamond: 8 conventional sites, 2 primitive
    assert "AB2_cF12_225_a_c" not in by_label  # fluorite: 12 conventional sites > 8
    # spglib at SYMPREC_A recovers each example's labelled space group (3 of all 288 come out higher).
    sg_from_label = df.source_id.str.split("_").str[2].astype(int)
    assert (sg_from_label == df.spacegroup_number).mean() > 0.97


def test_cif_column_round_trips(builtin8):
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    original = {e["tags"]["aflow"]: e["snl"].structure for e in AFLOW_PROTOTYPE_LIBRARY}
    sm = StructureMatcher()
    for _, row in builtin8.head(5).iterrows():
        s = table.structure_from_cif(row.cif)
        assert sm.fit(s, original[row.source_id]) and s.composition.reduced_formula == row.formula


def _write_cifs(folder):
    nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]])
    disordered = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    folder.mkdir()
    (folder / "nacl.cif").write_text(str(CifWriter(nacl)))
    (folder / "Si diamond.cif").write_text(str(CifWriter(si)))
    (folder / "alloy.cif").write_text(str(CifWriter(disordered)))
    (folder / "garbage.cif").write_text("this is not a CIF\n_cell_length_a oops\n")
    (folder / "empty.cif").write_text("")
    (folder / "notes.txt").write_text("ignored: not a .cif")


def test_cif_dir_skips_bad_files_with_reasons(tmp_path, caplog):
    _write_cifs(tmp_path / "cifs")
    with caplog.at_level(logging.WARNING, logger="fourdcrystal.crystals"):
        df = sources.cif_dir_structures(str(tmp_path / "cifs"))
    assert sorted(df.source_id) == ["Si diamond.cif", "nacl.cif"]
    assert set(df.structure_id) == {"cif-Si_diamond", "cif-nacl"}
    assert dict(zip(df.formula, df.spacegroup_number)) == {"NaCl": 225, "Si": 227}
    assert dict(zip(df.formula, df.n_sites)) == {"NaCl": 8, "Si": 8}
    for name in ("alloy.cif", "garbage.cif", "empty.cif"):
        assert f"skipping {name}" in caplog.text
    assert "disordered" in caplog.text


def test_cif_dir_errors(tmp_path):
    with pytest.raises(UserError, match="cif_dir.path is not set"):
        sources.load_structures({"source": {"kind": "cif_dir", "cif_dir": {"path": None}}})
    with pytest.raises(UserError, match="is not a folder"):
        sources.cif_dir_structures(str(tmp_path / "missing"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.cif").write_text("garbage")
    with pytest.raises(UserError, match="no usable structure among 1"):
        sources.cif_dir_structures(str(tmp_path / "bad"))


def test_run_structures_writes_parquet_atomically(tmp_path):
    _write_cifs(tmp_path / "cifs")
    out = tmp_path / "results" / "structures.parquet"
    smk = SimpleNamespace(config={"source": {"kind": "cif_dir", "cif_dir": {"path": str(tmp_path / "cifs")}}},
                          params=SimpleNamespace(mp_cache=str(tmp_path / "cache")), output=[str(out)])
    stages.structures(smk)
    df = pd.read_parquet(out)
    assert CONTRACT_COLUMNS <= set(df.columns) and len(df) == 2
    assert [p.name for p in out.parent.iterdir()] == ["structures.parquet"]


def test_safe_and_unique_ids():
    assert table.safe_id("A2B_oP12/62 (x)") == "A2B_oP12_62_x"
    assert table.unique_ids(["a", "b", "a", "a", "a-2"]) == ["a", "b", "a-3", "a-4", "a-2"]
