"""The shipped pretrained model finds Bragg vectors on the kinematic positions of a crystal it never saw.

SrTiO3 (cubic perovskite, prototype AB3C_cP5_221) is not among the pretrained model's training crystals
(config/pretrained.yaml; its splits are listed in docs/pretrained/metrics.json). We simulate a real
multislice CBED of SrTiO3 [001] at 40 Å, 300 kV, 3 mrad (disks just touching; the model trained since
2026-11-30 loses heavily overlapping 4 mrad disks, benchmarks/RESULTS.md) with abTEM, add Poisson noise at 1e5 e⁻ per pattern, run
`fourdcrystal predict` with the default model, and compare with crystallography (kinematic
reflections from the structure, independent of the simulation and the network).
"""
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from fourdcrystal import cli
from fourdcrystal.simulation.examples import srtio3, zone_axis_cbed
from fourdcrystal.learning.model import load_checkpoint
from fourdcrystal.inference.predict import DEFAULT_MODEL

DOSE = 1e5


@pytest.fixture(scope="module")
def srtio3_scan(tmp_path_factory):
    _, model_geo, meta = load_checkpoint(DEFAULT_MODEL)
    assert meta.get("peak_settings"), "the shipped model carries evaluate's tuned peak settings"
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), model_geo, thickness_A=40.0, semiangle_mrad=3.0)
    cbed, probe, truth, geo = ex["cbed"], ex["probe"], ex["truth"], ex["geometry"]
    assert geo.dk_invA == model_geo.dk_invA and 0.95 * geo.detector_px / 2 * geo.dk_invA == pytest.approx(1.9)
    rng = np.random.default_rng(7)
    per_e = probe.sum() / DOSE  # the Augmenter's dose definition: electrons in the incident probe
    cube = np.stack([np.stack([rng.poisson(cbed / per_e) * per_e for _ in range(2)]) for _ in range(2)])
    d = tmp_path_factory.mktemp("sto")
    np.save(d / "cube.npy", cube.astype(np.float32))
    np.save(d / "probe.npy", probe)
    vectors = {}
    for precision in ("fp32", "bf16"):
        out = d / f"out-{precision}"
        assert cli.main(["predict", str(d / "cube.npy"), "--probe", str(d / "probe.npy"), "--out", str(out),
                         "--q-pixel-size", str(geo.dk_invA), "--precision", precision, "--quiet"]) == 0
        vectors[precision] = pd.read_parquet(out / "bragg_vectors.parquet")
    return vectors, truth, geo, d


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pretrained_vectors_sit_on_kinematic_positions(srtio3_scan, precision):
    vectors, truth, geo, _ = srtio3_scan
    vectors = vectors[precision]
    assert set(map(tuple, vectors[["rx", "ry"]].drop_duplicates().to_numpy())) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    t = truth[["qx_invA", "qy_invA"]].to_numpy()
    # Distances of the 20 strongest vectors (after the beam) to the nearest kinematic reflection.
    # Measured with the 2026-11-24 model at 4 mrad on 2 x 16 noise draws: 83-84 % within 1 px on average, 70 %
    # for the worst single pattern, medians <= 0.75 px (the previous full-grid model: 83-85 %, worst
    # 70 %). A per-pattern 80 % bar is within one vector of that noise, so the bar is pooled over the
    # four patterns, with a per-pattern floor.
    pooled = []
    for (rx, ry), v in vectors.groupby(["rx", "ry"]):
        v = v.sort_values("intensity", ascending=False)
        beam = v.iloc[0]  # the direct beam is the strongest V_g and sits on the centre
        assert np.hypot(beam.qx, beam.qy) < 0.5 * geo.dk_invA
        strong = v.iloc[1:21][["qx", "qy"]].to_numpy()
        dist_px = np.array([np.hypot(*(t - q).T).min() for q in strong]) / geo.dk_invA
        pooled.append(dist_px)
        assert np.mean(dist_px < 1.0) >= 0.7, (rx, ry, np.round(dist_px, 2))
        assert np.median(dist_px) < 0.8
        # the four {200} reflections (strong, |g| = 0.51 Å⁻¹) are all found
        g200 = t[np.abs(np.hypot(*t.T) - 2 / 3.905) < 0.01]
        assert len(g200) == 4
        for q in g200:
            assert np.hypot(*(v[["qx", "qy"]].to_numpy() - q).T).min() / geo.dk_invA < 1.5  # evaluate matches at 2 px
    pooled = np.concatenate(pooled)
    assert np.mean(pooled < 1.0) >= 0.8, np.round(pooled, 2)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_predict_repeats_exactly_in_fresh_processes(srtio3_scan, precision):
    """Same scan, model and settings: identical vectors from two fresh processes in either precision that
    ``--precision auto`` may choose (bf16 where the CPU has native bf16, whose oneDNN kernels must repeat
    as well as fp32's)."""
    _, _, geo, d = srtio3_scan
    runs = []
    for k in range(2):
        out = d / f"repeat-{precision}-{k}"
        subprocess.run([sys.executable, "-m", "fourdcrystal.cli", "predict", str(d / "cube.npy"), "--probe",
                        str(d / "probe.npy"), "--out", str(out), "--q-pixel-size", str(geo.dk_invA), "--quiet",
                        "--precision", precision], check=True, stdout=subprocess.DEVNULL)
        runs.append(pd.read_parquet(out / "bragg_vectors.parquet"))
    assert len(runs[0]) > 4
    pd.testing.assert_frame_equal(runs[0], runs[1], check_exact=True)


def test_the_shipped_model_was_trained_on_its_recipes_grid():
    # `make pretrained` must reproduce the shipped model: the recipe's simulation grid is the model's
    import yaml
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    recipe = yaml.safe_load((root / "config" / "config.yaml").read_text())["geometry"]
    recipe.update(yaml.safe_load((root / "config" / "pretrained.yaml").read_text())["geometry"])
    _, model_geo, _ = load_checkpoint(DEFAULT_MODEL)
    assert (model_geo.box_A, model_geo.gpts, model_geo.detector_px) == \
        (recipe["box_A"], recipe["gpts"], recipe["detector_px"])
