"""Evaluation on a tiny synthetic dataset written with the real store writer.

Synthetic quartets: probe = a disk, CBED = disks at the reflections, V_g = Gaussian peaks at the
reflections (what the physics produces, without the multislice cost), q_z known per reflection.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fourdcrystal.evaluation import evaluate, scoring
from fourdcrystal.evaluation import truth as eval_truth
from fourdcrystal.geometry import Geometry
from fourdcrystal.simulation.store import write_shard

GEO = Geometry(box_A=16.0, gpts=128, detector_px=64, thicknesses_A=(10.0, 20.0), slice_thickness_A=2.0)


def _disk(P, c, r=2.5):
    i, j = np.indices((P, P))
    return 1.0 / (1.0 + np.exp((np.hypot(i - c[0], j - c[1]) - r) / 0.4))


def _gauss(P, c, s=0.8):
    i, j = np.indices((P, P))
    return np.exp(-((i - c[0]) ** 2 + (j - c[1]) ** 2) / (2 * s * s))


def make_shard(path, crystal, theta, n=3):
    P, cp = GEO.detector_px, GEO.center_px
    arrays = {k: np.zeros((n, P, P), np.float32) for k in ("probe", "cbed", "vg", "qz")}
    pats, refl = [], []
    for i in range(n):
        th = theta + 0.3 * i
        arrays["probe"][i] = _disk(P, (cp, cp))
        arrays["cbed"][i] = 0.5 * _disk(P, (cp, cp))
        arrays["vg"][i] = _gauss(P, (cp, cp))
        for h in range(-3, 4):
            for k in range(-3, 4):
                if h == k == 0:
                    continue
                x = cp + 8.0 * (h * np.cos(th) - k * np.sin(th))
                y = cp + 8.0 * (h * np.sin(th) + k * np.cos(th))
                if not (3 <= x <= P - 4 and 3 <= y <= P - 4):
                    continue
                v = 0.3 / (1 + abs(h) + abs(k))
                qz = 0.01 * (h - k)
                arrays["cbed"][i] += 0.2 * v * _disk(P, (x, y))
                arrays["vg"][i] += v * _gauss(P, (x, y))
                refl.append({"index": i, "h": h, "k": k, "l": 0, "qx_invA": (x - cp) * GEO.dk_invA,
                             "qy_invA": (y - cp) * GEO.dk_invA, "qz_invA": qz, "qx_px": x, "qy_px": y,
                             "vg_abs": v, "excitation_error_invA": 0.0, "laue_zone": 0, "shown": True})
                arrays["qz"][i] += qz * (_gauss(P, (x, y), 1.2) > 0.3)
        pats.append({"crystal_id": crystal, "orientation_id": i, "prototype": f"proto-{crystal}", "thickness_A": GEO.thicknesses_A[i % 2],
                     "tilt_x_mrad": 10.0 * i, "tilt_y_mrad": 0.0, "energy_eV": 200e3, "semiangle_mrad": 3.0})
    write_shard(path, arrays, pd.DataFrame(pats), pd.DataFrame(refl), GEO)
    return pd.DataFrame(pats), pd.DataFrame(refl)


@pytest.fixture
def dataset(tmp_path, default_config):
    man, refl = [], []
    for crystal, split, theta in [("A", "val", 0.1), ("B", "test", 0.5), ("C", "test", 1.1)]:
        rel = f"sim/{crystal}/quartets.zarr"
        p, r = make_shard(tmp_path / "sim" / crystal, crystal, theta)
        man.append(p.assign(store=rel, index=np.arange(len(p)), split=split))
        refl.append(r.assign(store=rel))
    pd.concat(man).to_parquet(tmp_path / "manifest.parquet")
    pd.concat(refl).to_parquet(tmp_path / "reflections.parquet")
    cfg = default_config
    cfg["geometry"].update(box_A=16.0, gpts=128, detector_px=64, thicknesses_A=[10.0, 20.0])
    cfg["evaluate"].update(doses_e_per_pattern=[1e3, 1e6], max_patterns=10, negatives_per_kind=2,
                           amorphous_film_thickness_A=40.0)
    cfg["evaluate"]["tune_classical"] = {"enabled": True, "max_patterns": 3,
                                         "grid": {"minRelativeIntensity": [0.01, 0.05], "sigma": [0.0]}}
    cfg["evaluate"]["tune_network"] = {"enabled": True, "max_patterns": 3, "grid": {"peak_threshold": [0.02, 0.1, 0.5]}}
    return tmp_path, cfg


def test_evaluate_oracle_classical_network(dataset):
    import torch
    from fourdcrystal.learning.model import build_model, save_checkpoint

    root, cfg = dataset
    torch.manual_seed(0)
    mp = save_checkpoint(root / "m.pt", build_model({"base_channels": 4, "depth": 2}), GEO)
    out = root / "eval"
    m = evaluate.run_evaluation(cfg, root / "manifest.parquet", root / "reflections.parquet", out,
                                model_path=mp, root=root)
    assert json.loads((out / "metrics.json").read_text())["n_patterns"] == 6
    rows = {(r["detector"], r["dose"]): r for r in m["by_dose"]}
    # the oracle sees the true V_g (the truth rendered): every reflection found exactly, at 1 px
    o = rows[("oracle", 1e6)]
    assert o["f1"] == pytest.approx(1.0) and o["f1_2px"] == pytest.approx(1.0) and o["rms_px"] < 0.05
    assert o["qz_sign_accuracy"] == pytest.approx(1.0) and o["qz_mae_invA"] < 0.005
    # the truth does not depend on the dose: the same reflections count at 1e3 electrons
    lo_o = rows[("oracle", 1e3)]
    assert lo_o["n_true"] == o["n_true"] and lo_o["f1"] == pytest.approx(1.0)
    # py4DSTEM at high dose finds the disks; at 1e3 electrons it finds fewer
    hi, lo = rows[("classical", 1e6)], rows[("classical", 1e3)]
    assert hi["recall_2px"] > 0.8 and hi["rms_px"] < 0.5
    assert lo["f1_2px"] < hi["f1_2px"]
    # negatives: every kind at every dose for both detectors, counted per pattern
    neg = {(r["detector"], r["kind"], r["dose"]): r for r in m["negatives"]}
    assert len(neg) == 2 * 3 * 2 and all(r["n_patterns"] == 2 for r in m["negatives"])
    assert all(0 <= r["false_vectors_per_pattern"] <= r["max_false_vectors"] for r in m["negatives"])
    assert ("network", 1e6) in rows  # untrained network: only that it ran and was scored
    assert m["classical_tuning"]["split"] == "val" and len(pd.read_csv(out / "classical_tuning.csv")) == 2
    nt = m["network_tuning"]
    assert nt["split"] == "val" and nt["chosen"]["peak_threshold"] in nt["grid"]["peak_threshold"]
    assert m["network_peak_settings"]["peak_threshold"] == nt["chosen"]["peak_threshold"]
    assert len(pd.read_csv(out / "network_tuning.csv")) == 2 * len(nt["grid"]["peak_threshold"])  # network + oracle
    assert {r["thickness_A"] for r in m["by_thickness"]} == {10.0, 20.0}
    assert {r["prototype"] for r in m["by_prototype"]} == {"proto-B", "proto-C"}
    for f in ("f1_vs_dose.png", "rms_bias_vs_thickness.png", "overlays.png"):
        assert (out / f).stat().st_size > 5000

    # the scan demo (mosaic of test patterns -> predict) and the report on top of this evaluation
    from fourdcrystal.inference import predict
    from fourdcrystal.workflow import report
    from fourdcrystal.workflow import scan_demo
    from fourdcrystal.inference.datacube_io import open_datacube, open_probe

    cube_path, probe_path, info = scan_demo.make_demo_scan(cfg, root / "manifest.parquet", root / "scan", root=root,
                                                         scan_px=5, n_grains=3)
    cube = open_datacube(cube_path)
    assert cube.shape == (5, 5, 64, 64) and len(info["grains"]) == 3
    assert len({tuple(np.round(cube.read(k, k + 1)[0, 20:24, 20:24].ravel(), 6)) for k in range(25)}) == 25
    model, geo, _ = predict.load_model(str(mp), "cpu")
    probe, _ = open_probe(probe_path)
    s = predict.predict_cube(cube, probe, model, geo, GEO.dk_invA, root / "scan" / "predict", progress=False)
    assert s["n_patterns"] == 25
    report.build_report(root / "report.html", out / "metrics.json",
                        {"f1_vs_dose": out / "f1_vs_dose.png", "overlays": out / "overlays.png",
                         "scan_map": root / "scan" / "predict" / "bragg_vector_map.png"},
                        scan_summary=root / "scan" / "predict" / "summary.json")
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "missing:" in page  # quartets/loss not given here
    assert "oracle (upper bound)" in page and "<td>classical</td>" in page


def test_demo_scan_grains_share_one_probe():
    """A scan has one probe: the demo's grains are the test patterns of one energy and semiangle (2 %)."""
    from fourdcrystal.workflow.scan_demo import one_probe

    rows = [("a", 0, 200e3, 4.085), ("a", 0, 300e3, 3.66), ("a", 1, 200e3, 4.079), ("a", 1, 300e3, 4.71),
            ("a", 2, 300e3, 3.85), ("a", 2, 200e3, 4.91), ("b", 0, 300e3, 4.08), ("c", 0, 200e3, 4.12)]
    patterns = pd.DataFrame(rows, columns=["crystal_id", "orientation_id", "energy_eV", "semiangle_mrad"])
    same = one_probe(patterns)
    assert set(zip(same["crystal_id"], same["orientation_id"])) == {("a", 0), ("a", 1), ("c", 0)}
    assert set(same["energy_eV"]) == {200e3} and np.ptp(same["semiangle_mrad"]) <= 0.02 * 4.12
    # the first probe shared by `enough` pairs ends the search (a seed-scale split holds ~1e5 probes)
    two_then_three = pd.DataFrame([("x", 0, 300e3, 3.0), ("y", 0, 300e3, 3.01), ("a", 0, 200e3, 4.0),
                                   ("b", 0, 200e3, 4.01), ("c", 0, 200e3, 4.02)], columns=patterns.columns)
    assert set(one_probe(two_then_three, enough=2)["crystal_id"]) == {"x", "y"}
    assert set(one_probe(two_then_three)["crystal_id"]) == {"a", "b", "c"}  # else the most pairs


def test_aggregate_known_errors():
    pats = pd.DataFrame({"n_pred": [4, 2], "n_true": [5, 2], "n_match_1px": [2, 1], "n_match_2px": [3, 2],
                         "pattern_id": [0, 1]})
    pairs = pd.DataFrame({"pattern_id": [0, 0, 0, 1, 1], "dx_px": [0.3, 0.0, -0.3, 0.4, 0.0],
                          "dy_px": [0.4, 0.5, 0.4, 0.3, 0.5], "dr_px": [0.5, 0.5, 0.5, 0.5, 0.5],
                          "intensity": [3, 2, 1, 1, 2], "vg_abs": [0.3, 0.2, 0.1, 0.5, 0.4],
                          "qz_pred": [0.1, -0.1, 0.0, 0.05, 0.05], "qz_true": [0.1, 0.1, 0.0, 0.05, -0.05]})
    a = scoring.aggregate(pats, pairs, dk_invA=0.1, qz_sign_min_invA=0.02)
    assert a["precision_2px"] == pytest.approx(5 / 6) and a["recall_2px"] == pytest.approx(5 / 7)
    assert a["precision"] == a["precision_1px"] == pytest.approx(3 / 6) and a["recall"] == pytest.approx(3 / 7)
    assert a["f1"] == pytest.approx(2 * (1 / 2) * (3 / 7) / (1 / 2 + 3 / 7))
    assert a["rms_px"] == pytest.approx(0.5) and a["radial_bias_invA"] == pytest.approx(0.05)
    assert a["intensity_spearman"] == pytest.approx(1.0)  # pattern 1 has < 3 pairs: not counted
    assert a["qz_sign_accuracy"] == pytest.approx(2 / 4) and a["qz_mae_invA"] == pytest.approx(0.06)


def test_vectors_on_faint_real_reflections_count_only_in_precision_real_and_f1_real():
    """A vector on a real reflection below the truth's floor is not counted false by ``precision_real``
    and is out of ``f1_real``'s count; strict precision, recall and F1 are unchanged, and a vector on
    nothing stays false in all."""
    truth = pd.DataFrame({"qx_px": [10.0, 20.0], "qy_px": [10.0, 10.0], "vg_abs": 1.0, "qz_invA": 0.0})
    faint = pd.DataFrame({"qx_px": [30.0], "qy_px": [10.0]})
    pred = pd.DataFrame({"qx_px": [10.2, 30.3, 30.1, 50.0], "qy_px": [10.0, 10.0, 10.2, 50.0], "intensity": 1.0,
                         "qz": 0.0})
    c, _ = scoring.score_pattern(pred, truth, 64.0, faint)
    assert c["n_match_1px"] == 1 and c["n_faint_1px"] == 1  # one-to-one: the second vector on it is false
    a = scoring.aggregate(*scoring.score_patterns([pred], [truth], 64.0, [faint]), dk_invA=0.1, qz_sign_min_invA=0.02)
    assert a["precision"] == pytest.approx(1 / 4) and a["precision_real"] == pytest.approx(2 / 4)
    assert a["recall"] == pytest.approx(1 / 2)
    assert a["f1"] == pytest.approx(2 * 1 / (4 + 2))
    assert a["f1_real"] == pytest.approx(2 * 1 / (4 - 1 + 2))  # the faint match neither found nor false
    assert "precision_real" not in scoring.aggregate(*scoring.score_patterns([pred], [truth], 64.0), 0.1, 0.02)


def test_truth_is_the_shown_reflections_and_negatives_show_none():
    rows = pd.DataFrame({"h": [1, 2, 3], "qx_px": [1.0, 2.0, 3.0], "shown": [True, False, True]})
    assert eval_truth.shown_truth(rows)["h"].tolist() == [1, 3]
    assert eval_truth.shown_truth(rows.drop(columns="shown")).empty  # a store without the column: no truth
    probe, film = np.ones((4, 4)), np.full((4, 4), 0.5)
    assert np.array_equal(eval_truth.negative_cbed("vacuum", probe, film), probe)
    assert np.array_equal(eval_truth.negative_cbed("amorphous_film", probe, film), film)
    assert not eval_truth.negative_cbed("noise_only", probe, film).any()
    with pytest.raises(ValueError):
        eval_truth.negative_cbed("crystal", probe, film)


def test_truth_follows_the_elliptical_distortion_the_detector_recorded():
    """Spots recorded through the augmentation's elliptical distortion sit where ``as_recorded`` puts the
    truth (relative to the recorded beam, within 0.02 px), not on the calibrated grid (up to 0.45 px off
    at 90 px for 1 %): evaluation judges a detector by where the detector shows the disks."""
    from fourdcrystal.learning.augment import Augmenter

    P, c = 256, 128
    truth = pd.DataFrame({"qx_px": [c + 90.0, c, c - 64.0, c + 50.0], "qy_px": [c, c + 90.0, c + 64.0, c - 70.0]})
    i, j = np.indices((P, P), dtype=np.float64)
    spots = np.vstack([[c, c], truth[["qx_px", "qy_px"]].to_numpy()])
    cbed = sum(np.exp(-((i - x) ** 2 + (j - y) ** 2) / (2 * 2.0**2)) for x, y in spots)
    cfg = {"dose_e_per_pattern": [1e15, 1e15], "background_const": [0.0, 0.0], "background_diffuse": [0.0, 0.0],
           "blur_px": [0.0, 0.0], "origin_shift_px": 1.0, "ellipticity": 0.01, "hot_pixel_fraction": 0.0,
           "dead_pixel_fraction": 0.0}
    img, A = Augmenter(cfg).apply_recorded(cbed, cbed, np.random.default_rng(9))  # draws 0.92 % ellipticity
    assert abs(A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0] - 1) < 1e-4 and not np.allclose(A, np.eye(2))

    def centroid(x, y):
        w = img * (np.hypot(i - x, j - y) < 8)
        return np.array([(w * i).sum(), (w * j).sum()]) / w.sum()

    beam = centroid(c, c)
    seen = np.array([centroid(x, y) - beam + c for x, y in spots[1:]])
    expect = eval_truth.as_recorded(truth, A, c)[["qx_px", "qy_px"]].to_numpy()
    assert np.abs(seen - expect).max() < 0.02
    assert np.abs(seen - truth[["qx_px", "qy_px"]].to_numpy()).max() > 0.3  # the distortion was there to follow
    assert eval_truth.as_recorded(truth, np.eye(2), c) is truth
