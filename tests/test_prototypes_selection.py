"""Prototype labels (AFLOW matching + clustering of the rest) and the √-law selection."""
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifParser

from fourdcrystal.workflow import stages
from fourdcrystal.crystals import prototypes as P
from fourdcrystal.crystals import selection as S
from fourdcrystal.crystals import table as crystal_table
from fourdcrystal.errors import UserError

TOL = (0.2, 0.3, 5.0)


def _aflow(label, formula=None):
    from pymatgen.analysis.prototypes import AFLOW_PROTOTYPE_LIBRARY

    return next(e["snl"].structure.copy() for e in AFLOW_PROTOTYPE_LIBRARY if e["tags"]["aflow"] == label
                and (formula is None or e["snl"].structure.composition.reduced_formula == formula))


def _random_abc2(seed, species=("Ga", "Ge", "Se")):
    """A triclinic A B C2 cell with random coordinates: matches no AFLOW prototype."""
    rng = np.random.default_rng(seed)
    lat = Lattice.from_parameters(4.1, 5.3, 6.7, 81, 97, 104)
    return Structure(lat, [species[0], species[1], species[2], species[2]], rng.random((4, 3)))


def test_builtin_examples_match_their_own_label_and_pymatgen():
    """Our pre-filtered matcher agrees with pymatgen's AflowPrototypeMatcher, also for strained,
    species-substituted copies."""
    from pymatgen.analysis.prototypes import AflowPrototypeMatcher

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = AflowPrototypeMatcher()
    lib = P._library()
    for label, formula in [("AB_cF8_225_a_b", "NaCl"), ("AB3C_cP5_221_a_c_b", None), ("A2B_tP6_136_f_a", None)]:
        s = _aflow(label, formula)
        assert lib.match(s, *TOL)["prototype"] == label
        strained = s.copy()
        strained.apply_strain([0.02, -0.01, 0.015])
        sub = dict(zip(sorted(strained.composition.elements, key=str), ["Mg", "O", "Sr"]))
        strained.replace_species(sub)
        ours = lib.match(strained, *TOL, spacegroup_number=int(label.split("_")[2]))["prototype"]
        theirs = {d["tags"]["aflow"] for d in reference.get_prototypes(strained) or []}
        assert ours == label and label in theirs


def test_no_match_clusters_stably_and_independent_of_order():
    x = _random_abc2(1)
    y = x.copy()
    y.replace_species({"Ga": "Al", "Ge": "Si", "Se": "S"})
    y.scale_lattice(x.volume * 0.95)  # same arrangement, other species and size: same cluster
    z = _random_abc2(2)  # another random arrangement: its own cluster
    table = pd.DataFrame([crystal_table.structure_row(s, sid, "cif_dir", f"{sid}.cif")
                          for s, sid in [(x, "x"), (y, "y"), (z, "z"), (_aflow("AB_cF8_225_a_b", "NaCl"), "nacl")]])
    out = P.assign_prototypes(table, {"ltol": 0.2, "stol": 0.3, "angle_tol": 5.0}).set_index("structure_id")
    assert out.at["nacl", "prototype"] == "AB_cF8_225_a_b" and out.at["nacl", "prototype_kind"] == "aflow"
    assert (out.loc[["x", "y", "z"], "prototype_kind"] == "cluster").all()
    assert out.at["x", "prototype"] == out.at["y", "prototype"] != out.at["z", "prototype"]
    assert out.at["x", "prototype"].startswith("cluster-ABC2-sg1")
    again = P.assign_prototypes(table.iloc[::-1].reset_index(drop=True), {}).set_index("structure_id")
    assert again.prototype.to_dict() == out.prototype.to_dict()


def test_sqrt_shares_hand_computed():
    # √c = 10, 5, 2, 1 -> λ = 16/17 with the last clipped to 1 -> quotas 9.41, 4.71, 1.88, 1
    assert S.sqrt_shares([100, 25, 4, 1], 17).tolist() == [9, 5, 2, 1]
    assert S.sqrt_shares([1, 1, 1, 1000], 10).tolist() == [1, 1, 1, 7]  # floors of 1 come first
    assert S.sqrt_shares([2, 2, 100], 104).tolist() == [2, 2, 100]  # caps: everything
    assert S.sqrt_shares([3, 3, 3], 3).tolist() == [1, 1, 1]
    with pytest.raises(ValueError):
        S.sqrt_shares([3, 3], 7)
    with pytest.raises(ValueError):
        S.sqrt_shares([3, 3], 1)


@pytest.mark.parametrize("n", [40, 77, 150, 400])
def test_sqrt_shares_law_on_synthetic_counts(n):
    rng = np.random.default_rng(7)
    counts = np.concatenate([rng.integers(1, 4, 20), rng.integers(5, 60, 15), [400, 900, 1600]])
    shares = S.sqrt_shares(counts, n)
    assert shares.sum() == n and np.all(shares >= 1) and np.all(shares <= counts)
    # Proportionality: away from the floor/cap, shares follow λ√c within rounding (< 1).
    free = (shares > 1) & (shares < counts)
    lam = shares[free].sum() / np.sqrt(counts[free]).sum()
    assert np.all(np.abs(shares[free] - lam * np.sqrt(counts[free])) < 1.0 + 1e-9)
    # Monotone: a strictly larger prototype never gets fewer than a smaller one.
    i, j = np.nonzero(counts[:, None] > counts[None, :])
    assert np.all(shares[i] >= shares[j])
    if n >= 150:  # enough to spread: 1600 members get 4/3 the share of 900 (√ law), not 16/9
        assert shares[-1] / shares[-2] == pytest.approx(4 / 3, rel=0.1)


def test_weighted_pick_frequencies_follow_weights():
    rng = np.random.default_rng(0)
    hits = np.zeros(3)
    for _ in range(3000):
        hits[S.weighted_pick([1.0, 2.0, 3.0], 1, rng)] += 1
    assert np.allclose(hits / hits.sum(), [1 / 6, 2 / 6, 3 / 6], atol=0.03)


def _proto_table():
    rows = []
    for p, c in [("P_big", 9), ("P_mid", 4), ("P_one", 1), ("P_two", 2)]:
        rows += [{"structure_id": f"{p}-{i}", "prototype": p, "prototype_kind": "aflow"} for i in range(c)]
    return pd.DataFrame(rows)


def test_choose_is_deterministic_and_follows_shares():
    t = _proto_table()
    a = S.choose(t, 8, seed=5)
    assert list(a.structure_id) == list(S.choose(t.sample(frac=1, random_state=3), 8, seed=5).structure_id)
    assert a.prototype.value_counts().to_dict() == dict(zip(["P_big", "P_mid", "P_two", "P_one"], [3, 2, 2, 1]))
    assert a.structure_id.is_unique
    few = S.choose(t, 2, seed=5)  # fewer crystals than prototypes: distinct prototypes, one each
    assert few.prototype.is_unique and len(few) == 2
    picks = {tuple(S.choose(t, 2, seed=s).prototype) for s in range(12)}
    assert len(picks) > 1  # the seed matters
    with pytest.raises(UserError, match="exceeds the 16 structures"):
        S.choose(t, 17, seed=0)


def test_select_writes_conventional_cifs_and_table(tmp_path):
    prim = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).get_primitive_structure()
    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.43), ["Si"], [[0, 0, 0]]).get_primitive_structure()
    structures = pd.DataFrame([crystal_table.structure_row(prim, "s-nacl", "materials_project", "mp-22862"),
                               crystal_table.structure_row(si, "s-si", "materials_project", "mp-149")])
    protos = P.assign_prototypes(structures, {})
    smk = SimpleNamespace(input=SimpleNamespace(structures=str(tmp_path / "s.parquet"), prototypes=str(tmp_path / "p.csv")),
                          output=SimpleNamespace(table=str(tmp_path / "sel.csv"), cifs=str(tmp_path / "cifs")),
                          config={"selection": {"n_crystals": 2}, "seed": 1})
    structures.to_parquet(smk.input.structures)
    protos.to_csv(smk.input.prototypes, index=False)
    stages.select(smk)
    table = pd.read_csv(smk.output.table)
    assert {"crystal_id", "formula", "prototype", "spacegroup", "source", "source_id"} <= set(table.columns)
    assert list(table.crystal_id) == ["mp-149-Si", "mp-22862-NaCl"]
    assert set(table.prototype) == {"A_cF8_227_a", "AB_cF8_225_a_b"}
    for cid, n_conv in [("mp-22862-NaCl", 8), ("mp-149-Si", 8)]:
        s = CifParser(str(tmp_path / "cifs" / f"{cid}.cif")).parse_structures(primitive=False)[0]
        assert len(s) == n_conv and s.lattice.is_orthogonal  # conventional cubic cell, not the primitive one
