"""The shipped model on what users bring: patterns without a crystal, and detectors unlike its grid.

* Negatives (vacuum probe, an amorphous carbon film simulated by multislice, detector noise without a
  beam), each as a 2×2 scan through the detector augmentation at 1e5 e⁻, 1 and 2 mrad disks at 300 kV:
  `predict` must report the direct beam and (nearly) nothing else — at most 0.5 vectors per pattern
  beyond the beam (issue: "≤ 0.5 false vectors per pattern on every negative"; not met yet everywhere
  in bench_accuracy, e.g. the film with 3.5 mrad disks: benchmarks/RESULTS.md).
* Resampling invariance: one SrTiO3 [001] multislice pattern on a fine detector (256 px at 1/62.5 Å⁻¹,
  a box of 16 whole cells), and the same pattern binned 2×2 (128 px at 1/31.2 Å⁻¹, next to the model's
  own 1/32: what a coarser camera records). The strong vectors `predict` reports must be the same in
  both within 0.1 model pixel in Å⁻¹, every one (the issue's goal; measured median 0.04, max 0.08 with
  the edge-weighted sub-pixel template, 0.17 / 0.31 before it).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from fourdcrystal.evaluation.scoring import match
from fourdcrystal.evaluation.truth import NEGATIVE_KINDS, negative_cbed
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.inference import detectors, predict
from fourdcrystal.inference.datacube_io import Cube
from fourdcrystal.learning.augment import DEFAULTS, Augmenter
from fourdcrystal.simulation.examples import amorphous_film_cbed, srtio3, zone_axis_cbed


# a counting detector's shot noise alone: no background, blur, descan, distortion or defective pixels
SHOT_NOISE_ONLY = {"background_const": [0.0, 0.0], "background_diffuse": [0.0, 0.0], "blur_px": [0.0, 0.0],
                   "origin_shift_px": 0.0, "ellipticity": 0.0, "hot_pixel_fraction": 0.0, "dead_pixel_fraction": 0.0}


@pytest.fixture(scope="module")
def shipped():
    model, geo, meta = predict.load_model(None, "cpu")
    return model, geo, predict.peak_settings(meta)


def _shot_noise_scan(pattern, probe, scan_shape, seed, dose=1e5, **augment):
    """A scan of ``pattern`` under a counting detector's shot noise (``SHOT_NOISE_ONLY``, ``augment`` on top)."""
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    aug, rng = Augmenter({**cfg, **SHOT_NOISE_ONLY, **augment}), np.random.default_rng(seed)
    pats = [aug.apply(pattern, probe, rng, dose=dose) for _ in range(int(np.prod(scan_shape)))]
    return np.stack(pats).reshape(*scan_shape, *pattern.shape)


def _vectors(cube, probe, shipped, dq, out):
    model, geo, ps = shipped
    predict.predict_cube(Cube(array=cube.astype(np.float32), path="test"), probe, model, geo, dq, out,
                         progress=False, precision="fp32", threshold=ps["peak_threshold"],
                         min_spacing_px=ps["min_spacing_px"])
    return pd.read_parquet(out / "bragg_vectors.parquet")


def _film_vectors_under_shot_noise(tmp_path, shipped, box_A, energy_eV, semiangle_mrad, scan_shape, seed,
                                   dose=1e5, film_seed=0):
    """Vectors beyond the beam per pattern that `predict` finds on 20 nm of amorphous carbon (drawn with
    ``film_seed``) on a 256 px counting detector at 1 / ``box_A`` Å⁻¹/px, ``dose`` e⁻ with shot noise alone."""
    geo = Geometry(box_A=box_A, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, energy_eV, semiangle_mrad, thickness_A=200.0, seed=film_seed)
    cube = _shot_noise_scan(film["cbed"], film["probe"], scan_shape, seed=seed, dose=dose)
    df = _vectors(cube, film["probe"], shipped, geo.dk_invA, tmp_path / "film")
    return int((np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA).sum()) / int(np.prod(scan_shape))


@pytest.mark.parametrize("semiangle_mrad", [1.0, 2.0])
def test_negatives_give_no_vectors(tmp_path, shipped, semiangle_mrad):
    _, geo, _ = shipped
    aug = Augmenter(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"])
    film = amorphous_film_cbed(geo, 300e3, semiangle_mrad, thickness_A=200.0)
    rng = np.random.default_rng(6)
    for kind in NEGATIVE_KINDS:
        clean = negative_cbed(kind, film["probe"], film["cbed"])
        cube = np.stack([aug.apply(clean, film["probe"], rng, dose=1e5) for _ in range(4)]).reshape(2, 2, *clean.shape)
        df = _vectors(cube, film["probe"], shipped, geo.dk_invA, tmp_path / kind)
        beyond_beam = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
        # measured 2026-11-30: 0 everywhere but the film at 2 mrad, 0.5 (0.75 before the evidence check
        # allowed for film speckle, evidence.SECTORS)
        assert len(beyond_beam) / 4 <= 0.5, f"{kind}: {len(beyond_beam) / 4} vectors per pattern"


@pytest.mark.parametrize("dose", [None, 1e5])
def test_a_films_speckle_at_80_kv_gives_no_vectors(tmp_path, shipped, dose):
    """The worst negative of bench_accuracy: 20 nm of amorphous carbon at 80 kV under 3.5 mrad disks, on a
    256 px detector at 0.02 Å⁻¹/px. Its speckle grains are real disk-sized blobs above the contrast and
    brightness floors (5 per noise-free pattern, 3.75 at 1e5 e⁻ before the lattice rule, evidence.
    MIN_LATTICE_VECTORS); no four of them lie on a lattice through the beam."""
    geo = Geometry(box_A=50.0, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, 80e3, 3.5, thickness_A=200.0)
    aug = Augmenter(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"])
    rng = np.random.default_rng(6)
    pats = [film["cbed"] if dose is None else aug.apply(film["cbed"], film["probe"], rng, dose=dose) for _ in range(4)]
    df = _vectors(np.stack(pats).reshape(2, 2, 256, 256), film["probe"], shipped, geo.dk_invA, tmp_path / "film")
    beyond_beam = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    assert len(beyond_beam) / 4 <= 0.5, f"{len(beyond_beam) / 4} vectors per pattern"


def test_a_films_grain_on_the_beams_edge_gives_no_vector(tmp_path, shipped):
    """20 nm of carbon at 300 kV under 4 mrad disks (10 px radius), noise-free: a speckle grain 1.7 radii from
    the beam overlaps the beam's disk, so it keeps the network's position and was exempt from the film's
    lattice rule (1 false vector per pattern). Now judged on the network's positions, with no partner on a
    row through the beam, it goes (benchmarks/RESULTS.md, "A speckle grain on the beam's edge")."""
    geo = Geometry(box_A=50.0, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, 300e3, 4.0, thickness_A=200.0)
    df = _vectors(np.broadcast_to(film["cbed"], (2, 2, 256, 256)), film["probe"], shipped, geo.dk_invA,
                  tmp_path / "film")
    beyond_beam = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    assert len(beyond_beam) == 0, f"{len(beyond_beam) / 4} vectors per pattern"


def _noise_free_film_vectors(tmp_path, shipped, box_A, seed):
    """Vectors beyond the beam that `predict` finds on one noise-free pattern of 20 nm of carbon at 80 kV under
    3.5 mrad disks, on a 128 px camera at 1 / ``box_A`` Å⁻¹/px, the film drawn with ``seed``."""
    geo = Geometry(box_A=box_A, gpts=192, detector_px=128, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, 80e3, 3.5, thickness_A=200.0, seed=seed)
    df = _vectors(film["cbed"][None, None], film["probe"], shipped, geo.dk_invA, tmp_path / "film")
    return int((np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA).sum())


def test_a_films_speckle_on_a_coarse_camera_finds_no_chance_lattice(tmp_path, shipped):
    """20 nm of carbon at 80 kV under 3.5 mrad disks on a 128 px camera at 0.04 Å⁻¹/px (1.7 px disks), noise-free,
    the film drawn with seed 3 (bench_accuracy's negatives draw several films). Its speckle lies within ~16 px of
    the beam, where a lattice of small cells fits four grains by chance: 12 grains stood on one, faint ones among
    them, and the 6 bright ones kept after the faint ones went were on none (6 false vectors per pattern). Small
    disks are now judged on their measured positions alone, on what is reported (benchmarks/RESULTS.md, "Film
    negatives over many films")."""
    assert _noise_free_film_vectors(tmp_path, shipped, box_A=25.0, seed=3) == 0


def test_a_noise_free_films_far_grain_is_judged_by_the_lattice_rule(tmp_path, shipped):
    """20 nm of carbon at 80 kV under 3.5 mrad disks on a 128 px camera at 0.02 Å⁻¹/px, noise-free, the film drawn
    with seed 2: a speckle grain 37 px from the beam at 8σ stood alone in every pattern. The pattern was taken for
    isolated electrons of 0.0017 × the beam's peak, under which the grain's faint ring held 5 "electrons", too few
    to be dense, so the lattice rule did not judge it. A pattern whose maxima spread over decades is noise-free, and
    dense (evidence.NOISE_FREE_MIN_SPREAD; benchmarks/RESULTS.md, "Film negatives over many films")."""
    assert _noise_free_film_vectors(tmp_path, shipped, box_A=50.0, seed=2) == 0


def test_the_direct_beam_is_reported_at_the_reference_it_defines(tmp_path, shipped):
    """20 nm of carbon at 200 kV under 2 mrad disks on a 512 px camera at 0.015 Å⁻¹/px, noise-free, the film drawn
    with seed 2 (film 2 of bench_accuracy's four there). Measured again as a disk, the beam's correlation maximum
    climbed to an edge of the film's speckle inside it, 2.4 px from the beam placed by its edge, and so came out
    as a vector 2.4 px off the origin in every pattern (the 0.083 Å model). The direct beam is the reference every
    vector is measured from: it is reported there, at (0, 0) (benchmarks/RESULTS.md, "The 0.083 Å model shipped;
    the direct beam reported at its reference")."""
    geo = Geometry(box_A=1 / 0.015, gpts=768, detector_px=512, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, 200e3, 2.0, thickness_A=200.0, seed=2)
    df = _vectors(film["cbed"][None, None], film["probe"], shipped, geo.dk_invA, tmp_path / "film")
    assert len(df) == 1 and df["qx"].iloc[0] == 0.0 and df["qy"].iloc[0] == 0.0, df[["qx", "qy", "snr"]]


def test_a_films_speckle_under_shot_noise_alone_finds_no_chance_lattice(tmp_path, shipped):
    """The same film under a counting detector's shot noise alone (1e5 e⁻, six 2×2 scans): its 7–13 proposed
    speckle grains put four on one lattice within the network's uncertainty (a model pixel) often enough to
    keep 0.75 false vectors per pattern on these draws (0.5 on bench_accuracy's); asking more of them the more
    a pattern has there (evidence.proposed_lattice_vectors) keeps 0.125 (0.04)."""
    per_pattern = _film_vectors_under_shot_noise(tmp_path, shipped, 50.0, 80e3, 3.5, (4, 6), seed=11)
    assert per_pattern <= 0.25, f"{per_pattern} vectors per pattern"


def test_a_films_speckle_counted_at_1e4_electrons_is_judged_by_the_lattice_rule(tmp_path, shipped):
    """20 nm of carbon at 200 kV under 2 mrad disks, counted at 1e4 e⁻ (shot noise alone, 256 px at 0.02 Å⁻¹/px,
    the film drawn with seed 2): 2–9 background electrons under a disk, too few for a dense background at 10, too
    many for the counting test to refuse the speckle's grains, which stood 3–6σ out (2.5 false vectors per pattern
    on bench_accuracy's draws, none at 1e3 or 1e5; 0.625 here before). A counted background is dense from 2 electrons
    under a disk where the beam holds 2e3 (evidence.DENSE_COUNTED_E_PER_DISK; benchmarks/RESULTS.md, "A film's
    speckle at 1e4 e⁻")."""
    per_pattern = _film_vectors_under_shot_noise(tmp_path, shipped, 50.0, 200e3, 2.0, (2, 4), seed=4, dose=1e4,
                                                 film_seed=2)
    assert per_pattern <= 0.25, f"{per_pattern} vectors per pattern"


def test_a_films_speckle_counted_at_1e4_electrons_beside_large_disks_is_judged_by_the_lattice_rule(tmp_path, shipped):
    """20 nm of carbon at 300 kV under 3.5 mrad disks of 17 px (256 px at 0.0107 Å⁻¹/px), through the detector
    augmentation at 1e4 e⁻ (film seed 2): its speckle grains beside the beam are judged on the circle about it,
    whose counted mean holds 30–70 electrons under a disk, and stood 4–6σ out (0.375 false vectors per pattern
    here before, 0.75 on a bench_accuracy film). Where the beam holds many electrons the circle's counted mean makes
    the background dense, and the film's lattice rule judges them (benchmarks/RESULTS.md, "A film's speckle beside
    large disks")."""
    geo = Geometry(box_A=1 / 0.0107, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    film = amorphous_film_cbed(geo, 300e3, 3.5, thickness_A=200.0, seed=2)
    aug = Augmenter(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"])
    rng = np.random.default_rng(6)
    cube = np.stack([aug.apply(film["cbed"], film["probe"], rng, dose=1e4) for _ in range(8)]).reshape(2, 4, 256, 256)
    df = _vectors(cube, film["probe"], shipped, geo.dk_invA, tmp_path / "film")
    per_pattern = int((np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA).sum()) / 8
    assert per_pattern <= 0.125, f"{per_pattern} vectors per pattern"


def test_vectors_do_not_depend_on_the_detector_sampling(tmp_path, shipped):
    _, geo, _ = shipped
    # a box of 16 unit cells: the periodic simulation box must hold whole cells, or the seam shifts the
    # disks off their Bragg positions (benchmarks/RESULTS.md, "Sub-pixel refinement")
    fine = Geometry(box_A=16 * 3.905, gpts=2 * geo.gpts, detector_px=2 * geo.detector_px,
                    thicknesses_A=(100.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), fine, thickness_A=100.0, energy_eV=200e3, semiangle_mrad=2.0)

    def binned(img):  # 2×2 sums (a constant offset of the grid cancels: vectors are relative to the beam)
        return img.reshape(geo.detector_px, 2, geo.detector_px, 2).sum(axis=(1, 3))

    found = {}
    for name, pattern, probe, dq in (("fine", ex["cbed"], ex["probe"], fine.dk_invA),
                                     ("coarse", binned(ex["cbed"]), binned(ex["probe"]), 2 * fine.dk_invA)):
        cube = np.broadcast_to(pattern, (1, 1, *pattern.shape))
        found[name] = _vectors(cube, probe, shipped, dq, tmp_path / name)
    ref, other = found["coarse"], found["fine"]
    strong = ref[ref["intensity"] >= ref["intensity"].quantile(0.5)]
    a = strong[["qx", "qy"]].to_numpy() / geo.dk_invA
    b = other[["qx", "qy"]].to_numpy() / geo.dk_invA
    i, j = match(a, b, 0.5)
    assert len(i) >= 0.9 * len(a), f"only {len(i)} of {len(a)} strong vectors found on the fine detector"
    err = np.hypot(*(a[i] - b[j]).T)
    # measured: median 0.04, max 0.08 model px (refine.EDGE_SIGMA_RADII 0.2; RESULTS.md)
    assert err.max() <= 0.1, \
        f"vectors differ by up to {err.max():.3f} model px (median {np.median(err):.3f})"


@pytest.fixture(scope="module")
def gan_200kv():
    """GaN [0001] at 200 kV, 2 mrad, 30 nm on a 256 px detector at 1/60.6 Å⁻¹: (geometry, simulated pattern)."""
    from fourdcrystal.simulation.examples import RECTANGULAR_CELL_ROWS, gan, rectangular_cell, rectangular_geometry

    cut, cells = rectangular_cell(gan(), RECTANGULAR_CELL_ROWS["hexagonal [0001]"], box_A=50.0)
    geo = rectangular_geometry(cut, cells, 384, 256, (300.0,))
    return geo, zone_axis_cbed(cut, (0, 0, 1), geo, thickness_A=300.0, energy_eV=200e3, semiangle_mrad=2.0)


def test_a_hexagonal_zone_axis_is_found_without_painting_a_lattice(tmp_path, shipped, gan_200kv):
    """GaN [0001] (wurtzite: a hexagonal pattern, where bench_accuracy's main set has only square [001] cells)
    at 200 kV, 2 mrad, 30 nm on a 256 px detector at 1/60.6 Å⁻¹ (unlike the model's 128 px at 1/32), as a
    2×2 scan at 1e5 e⁻ with shot noise alone: every vector `predict` reports lies on a kinematic reflection
    within half a pixel, and it finds the first two orders ({10-10}, {11-20}: |g| 0.36 and 0.63 Å⁻¹). The
    crystal is re-cut into its orthogonal cell and stretched 0.3 % so that the box holds whole cells
    (``examples.rectangular_cell``). Measured 2026-12-02 (two noise draws and noise-free): 35.5–37 vectors
    per pattern, none off, none of the 48 missed, median 0.03 px and at most 0.10 px from the truth."""
    geo, ex = gan_200kv
    cube = _shot_noise_scan(ex["cbed"], ex["probe"], (2, 2), seed=3)
    df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / "gan")
    found = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    truth = ex["truth"]
    t_px = np.column_stack([truth["qx_px"], truth["qy_px"]]) - geo.center_px
    g = np.hypot(*t_px.T) * geo.dk_invA
    inner = t_px[(g > 0.01) & (g < 0.65)]
    assert len(inner) == 12, f"{len(inner)} reflections of the first two orders in the field"
    off, missed = 0, 0
    for _, v in found.groupby(["rx", "ry"]):
        xy = v[["qx", "qy"]].to_numpy() / geo.dk_invA
        off += len(xy) - len(match(xy, t_px, 0.5)[0])
        missed += len(inner) - len(match(xy, inner, 1.0)[0])
    assert len(found) >= 4 * 12, f"{len(found) / 4} vectors per pattern"
    assert off == 0, f"{off} of {len(found)} vectors on no kinematic reflection"
    assert missed <= 2, f"{missed} of {4 * len(inner)} first- and second-order reflections missed"


def test_a_small_scans_faint_patterns_take_the_lattice_of_their_sum(tmp_path, shipped, gan_200kv, monkeypatch):
    """GaN [0001] at 200 kV / 2 mrad / 30 nm (the issue's held-out acquisition) as a 2 × 2 scan at 1e3 e⁻ under shot
    noise: the four patterns hold ~4e3 electrons together, over ``detectors.BATCH_LATTICE_MIN_E``, so they take the
    lattice of their sum (``MeasuredPattern._batch_lattice``): at least 100 vectors beside the beams, at least 98 % of
    them within 1 px of a kinematic reflection (measured 2026-12-07: 111 of 111; seeds 2, 3: 122 and 124, all on
    reflections), where with the threshold of before (2e4) the scan keeps at most 70 (59, all on reflections)."""
    geo, ex = gan_200kv
    cube = _shot_noise_scan(ex["cbed"], ex["probe"], (2, 2), seed=1, dose=1e3)
    t_px = np.column_stack([ex["truth"]["qx_px"], ex["truth"]["qy_px"]]) - geo.center_px

    def beside_and_on(name):
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
        df = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
        on = sum(len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, t_px, 1.0)[0]) for _, v in df.groupby(["rx", "ry"]))
        return len(df), on

    n, on = beside_and_on("sum")
    assert n >= 100 and on >= 0.98 * n, (n, on)
    monkeypatch.setattr(detectors, "BATCH_LATTICE_MIN_E", 2e4)
    assert beside_and_on("before")[0] <= 70


def _kikuchi_bands(geo, t_px: np.ndarray, strength: float) -> np.ndarray:
    """A thick crystal's diffuse halo (0.01 of the probe's maximum, e-folding over a sixth of the detector) with its
    Kikuchi bands (absent from the training data): for every reflection within twice the shortest (``t_px``, px
    from the beam), a band of width |g| through the zone axis across g, brighter inside and brightest on its
    edges, ∝ 1/|g|, at ``strength`` × the halo where the bands are brightest."""
    P = geo.detector_px
    g = t_px[np.hypot(*t_px.T) > 1]
    r = np.hypot(*g.T)
    g = g[r <= 2.05 * r.min()]
    ii, jj = np.indices((P, P), dtype=float)
    X = np.stack([ii - geo.center_px, jj - geo.center_px], -1)
    bands = np.zeros((P, P))
    for v in g:
        gl = np.hypot(*v)
        u = np.abs(X @ v / gl)  # px across the band's centre line
        bands += (0.5 / (1 + np.exp((u - gl / 2) / 0.7)) + np.exp(-0.5 * ((u - gl / 2) / 0.8) ** 2)) * r.min() / gl
    halo = 0.01 * np.exp(-np.hypot(X[..., 0], X[..., 1]) / (P / 6))
    return halo * (1 + strength * bands / bands.max())


@pytest.mark.parametrize("dose", [1e5, 1e3])
def test_kikuchi_bands_paint_no_vectors(tmp_path, shipped, gan_200kv, dose):
    """GaN [0001] at 200 kV / 2 mrad / 30 nm (a 2×2 scan, shot noise) on a diffuse halo whose Kikuchi bands are as
    bright as the halo itself: every vector `predict` reports lies within 1 px of a kinematic reflection, and the
    bands cost at most a quarter of the vectors found on the halo alone. Measured 2026-12-06: 25.5 → 24.75 vectors per
    pattern at 1e5 e⁻ and 14.5 → 13.25 at 1e3, none off (0.25 per pattern off on the halo alone at 1e3); bands at 3 ×
    the halo pulled a few {11-20} disks ~1 px inward at 1e3 (benchmarks/RESULTS.md, "Strain at 1e3 e⁻ against the
    precision its patterns allow"). Since 2026-12-08, when every low-dose pattern of small disks takes its batch's
    lattice, 20.75 → 16.75 at 1e3 (more under the bands than the 13.25 before, but the halo alone gains more: its
    sum's far disks stand further above its background; benchmarks/RESULTS.md, "A low-dose pattern's small disks on
    their batch's lattice")."""
    geo, ex = gan_200kv
    t_px = np.column_stack([ex["truth"]["qx_px"], ex["truth"]["qy_px"]]) - geo.center_px
    found = {}
    for strength in (0.0, 1.0):
        cube = _shot_noise_scan(ex["cbed"] + _kikuchi_bands(geo, t_px, strength), ex["probe"], (2, 2), seed=3,
                                dose=dose)
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / f"bands{strength}")
        found[strength] = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    off = sum(len(v) - len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, t_px, 1.0)[0])
              for _, v in found[1.0].groupby(["rx", "ry"]))
    assert off == 0, f"{off} of {len(found[1.0])} vectors on no kinematic reflection under the bands"
    assert len(found[1.0]) >= 3 / 4 * len(found[0.0]), f"{len(found[1.0])} vectors under the bands, {len(found[0.0])} without"


def test_a_low_dose_lattice_is_placed_on_its_whole_pattern(tmp_path, shipped, gan_200kv, monkeypatch):
    """GaN [0001] as above, a 2 × 4 scan at 1e3 e⁻ under shot noise alone (each first-order disk ~10 electrons):
    each pattern's lattice, its shape and orientation refitted to the whole pattern (``detectors.MeasuredPattern.
    _place_on_lattice``), puts the vectors nearer the kinematic truth than their own lattice does (measured RMS
    0.357 → 0.250 px; seeds 2 and 3: 0.280 → 0.269, 0.310 → 0.236). The scan's eight patterns hold ~8e3 electrons,
    enough for their sum's lattice (``detectors.BATCH_LATTICE_MIN_E``), which would take them first: the threshold is
    raised here so that the refit is measured where it acts — a pattern whose batch shows no lattice."""
    from fourdcrystal.inference.detectors import MeasuredPattern

    monkeypatch.setattr(detectors, "BATCH_LATTICE_MIN_E", 2e4)
    model, _, ps = shipped
    geo, ex = gan_200kv
    cube = Cube(array=_shot_noise_scan(ex["cbed"], ex["probe"], (2, 4), seed=1, dose=1e3).astype(np.float32),
                path="test")
    t_px = np.column_stack([ex["truth"]["qx_px"], ex["truth"]["qy_px"]]) - geo.center_px

    def rms_to_truth(name):
        predict.predict_cube(cube, ex["probe"], model, geo, geo.dk_invA, tmp_path / name, progress=False,
                             precision="fp32", threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
        df = pd.read_parquet(tmp_path / name / "bragg_vectors.parquet")
        err = []
        for _, v in df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA].groupby(["rx", "ry"]):
            xy = v[["qx", "qy"]].to_numpy() / geo.dk_invA
            i, j = match(xy, t_px, 1.5)
            err.extend(np.hypot(*(xy[i] - t_px[j]).T))
        return np.sqrt(np.mean(np.square(err))), len(err)

    rms_whole, n_whole = rms_to_truth("whole")
    monkeypatch.setattr(MeasuredPattern, "_few_electrons", lambda self, counted, n: np.zeros(n, bool))
    rms_vectors, n_vectors = rms_to_truth("vectors")
    assert n_whole == n_vectors and rms_whole < 0.8 * rms_vectors, (rms_whole, rms_vectors, n_whole, n_vectors)


def test_a_low_dose_lattice_of_touching_disks_is_fitted_to_its_electrons(tmp_path, shipped, monkeypatch):
    """SrTiO3 [001] on the model's own grid at 300 kV, 2.5 mrad, 60 Å (bench_strain's crystal: 4 px disks that touch
    their neighbours), a 2 × 16 scan of one pattern at 1e3 e⁻ with the detector augmentation (background, blur,
    descan, bad pixels). Every position holds the same lattice, so the spread of `strain`'s e_xx, e_yy, e_xy about
    their medians is the measurement's noise: with each pattern's lattice fitted to the likelihood of its electrons
    (``refine.lattice_likelihood``) it is below 0.9 of the spread without that step (measured mean |deviation| over
    the three components 0.646 % against 0.812 %; seeds 5 and 6: 0.690 / 0.807, 0.717 / 0.850; without any refit
    0.808, 1.045, 0.976). Each pattern keeps its own lattice here (since 2026-12-06 such few-electron patterns take
    their batch's, fitted the same way: ``MeasuredPattern._batch_lattice``, tested with the thick crystal below)."""
    from fourdcrystal.analysis import strain

    model, geo, ps = shipped
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=60.0, energy_eV=300e3, semiangle_mrad=2.5)
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(4)
    cube = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(32)])
    cube = cube.reshape(2, 16, *ex["cbed"].shape)

    def spread(name):
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
        t = strain.measure(df).table.dropna(subset=["exx_pct"])
        deviation = [np.mean(np.abs(t[c] - t[c].median())) for c in ("exx_pct", "eyy_pct", "exy_pct")]
        return float(np.mean(deviation)), len(t)

    before = detectors.MeasuredPattern._batch_lattice
    monkeypatch.setattr(detectors.MeasuredPattern, "_batch_lattice",
                        lambda self, *a: before(self, *a[:-1], np.zeros_like(a[-1])))
    with_likelihood, n_with = spread("likelihood")
    monkeypatch.setattr(detectors, "lattice_likelihood", lambda image, template, origin, basis, *a, **k: (origin, basis))
    without, n_without = spread("without")
    assert n_with >= 24 and n_with >= n_without - 1 and with_likelihood < 0.9 * without, \
        (with_likelihood, without, n_with, n_without)


def _thin_crystal_beside_vacuum(tmp_path, shipped, n_crystal: int, seed: int, name: str):
    """SrTiO3 [001] at 300 kV, 2.5 mrad, 20 Å (bench_strain's thin crystal) at 1e3 e⁻ with the detector augmentation,
    ``n_crystal`` patterns then 32 − ``n_crystal`` of vacuum (the probe alone, the same augmentation) in one batch
    (a 2 × 16 scan): (crystal positions of the first row that `strain` fits, their mean |deviation| of e_xx, e_yy,
    e_xy from their medians (%), vectors beside a vacuum pattern's beam)."""
    from fourdcrystal.analysis import strain

    model, geo, ps = shipped
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=20.0, energy_eV=300e3, semiangle_mrad=2.5)
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(seed)
    crystal = [aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(n_crystal)]
    vacuum = [aug.apply(ex["probe"], ex["probe"], rng, dose=1e3) for _ in range(32 - n_crystal)]
    cube = np.stack(crystal + vacuum).reshape(2, 16, *ex["cbed"].shape)
    df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
    position = df["rx"] * 16 + df["ry"]
    in_vacuum = int(((position >= n_crystal) & (np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA)).sum())
    try:
        t = strain.measure(df[(df["rx"] == 0) & (position < n_crystal)]).table.dropna(subset=["exx_pct"])
    except UserError:  # no position's vectors index a lattice
        return 0, np.inf, in_vacuum
    deviation = [np.mean(np.abs(t[c] - t[c].median())) for c in ("exx_pct", "eyy_pct", "exy_pct")]
    return len(t), float(np.mean(deviation)), in_vacuum


def test_a_thin_crystals_faint_patterns_take_their_batchs_lattice_and_vacuum_none(tmp_path, shipped, monkeypatch):
    """~100 electrons leave a 2 nm crystal's beam at 1e3 e⁻, the network proposes one or two disks per pattern and
    no position had a lattice (bench_strain's 2 nm rows: "no position fit"). A batch of 24 such patterns and 8 of
    vacuum (``_thin_crystal_beside_vacuum``): on the batch's lattice (``MeasuredPattern._batch_lattice``) at least 12
    of the first row's 16 crystal positions give `strain` a lattice, and no vacuum pattern holds a vector beside its
    beam (measured 2026-12-06: 15 of 16, mean |deviation| of e_xx, e_yy, e_xy from their medians 1.71 %; seeds 8 and
    9: 15 and 16, 1.55 and 1.37 %); without the step none of the crystal's positions is fitted."""
    fitted, spread, in_vacuum = _thin_crystal_beside_vacuum(tmp_path, shipped, 24, 7, "batch")
    assert fitted >= 12 and in_vacuum == 0, (fitted, spread, in_vacuum)
    monkeypatch.setattr(detectors.MeasuredPattern, "_batch_lattice",
                        lambda self, patterns, centres, out, *a: (out, np.zeros(len(patterns), bool)))
    assert _thin_crystal_beside_vacuum(tmp_path, shipped, 24, 7, "without")[0] == 0


def test_a_batch_half_of_vacuum_takes_the_lattice_of_its_crystals_half(tmp_path, shipped):
    """16 patterns of the thin crystal and 16 of vacuum in one batch (``_thin_crystal_beside_vacuum``, seed 9): the
    vacuum dilutes the whole batch's sum, on which the network found only the beam, so no position was fitted; the
    sum of the half on the crystal (``MeasuredPattern._sum_lattice``) shows its lattice: at least 12 of the 16 fitted
    (measured 2026-12-06: 16, mean |deviation| 1.10 %; seeds 7 and 8, whose whole sums showed it: 15 and 15), and no
    vector beside a vacuum pattern's beam."""
    fitted, spread, in_vacuum = _thin_crystal_beside_vacuum(tmp_path, shipped, 16, 9, "half")
    assert fitted >= 12 and in_vacuum == 0, (fitted, spread, in_vacuum)


@pytest.fixture(scope="module")
def tilted_silicon():
    """Si [110] 35 mrad (2°) off its zone axis toward 30° at 300 kV / 1 mrad / 60 nm on 256 px at 0.02 Å⁻¹/px
    (bench_accuracy's tilted rectangular set, its cell re-cut and stretched ≤ 1.2 % to fill the box): (the noise-free
    pattern's dict, its geometry, the reflections it shows, px from the beam)."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import RECTANGULAR_CELL_ROWS, rectangular_cell, rectangular_geometry
    from fourdcrystal.simulation.kinematic import kinematic_reflections
    from fourdcrystal.simulation.labels import folz_radius_invA, shown_reflections
    from fourdcrystal.simulation.supercells import align_zone_to_z, tilt_rotation

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    cut, cells = rectangular_cell(si, RECTANGULAR_CELL_ROWS["cubic [110]"], 50.0)
    geo = rectangular_geometry(cut, cells, 384, 256, (600.0,))
    ex = zone_axis_cbed(cut, (0, 0, 1), geo, thickness_A=600.0, energy_eV=300e3, semiangle_mrad=1.0, tilt=(35.0, 30.0))
    R = tilt_rotation(35.0, 30.0) @ align_zone_to_z(cut.lattice.matrix, (0, 0, 1))
    refl = kinematic_reflections(cut, R, geo, 300e3, geo.k_max_corner_invA, zone_uvw=(0, 0, 1))
    shown = shown_reflections(refl, geo, 300e3, 1.0, ex["cbed"], ex["probe"], 1e-3,
                              folz_radius_invA(cut, (0, 0, 1), 300e3))
    return ex, geo, refl[shown][["qx_px", "qy_px"]].to_numpy() - geo.center_px


def _tilted_silicon_at_1e3(tmp_path, shipped, tilted_silicon, seed: int, name: str) -> tuple[int, int]:
    """``tilted_silicon`` as a 2 × 2 scan at 1e3 e⁻ with the detector augmentation, no ellipticity (drawn with
    ``seed``): (vectors beside the beam, those within 1.5 px of a reflection the noise-free pattern shows)."""
    ex, geo, t_px = tilted_silicon
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(seed)
    cube = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(4)]).reshape(2, 2, 256, 256)
    df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
    df = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    on = sum(len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, t_px, 1.5)[0]) for _, v in df.groupby(["rx", "ry"]))
    return len(df), on


def test_a_tilted_crystals_dark_lattice_points_give_no_vectors_on_its_batchs_lattice(tmp_path, shipped, monkeypatch,
                                                                                     tilted_silicon):
    """Off the zone axis most points of a crystal's lattice are dark. A 2 × 2 scan of tilted Si at 1e3 e⁻
    (``_tilted_silicon_at_1e3``, a draw whose patterns take their batch's lattice, ``MeasuredPattern._batch_lattice``):
    a vector only where the summed patterns show a disk (``evidence.LATTICE_MIN_SNR``) and within
    ``detectors.BATCH_LATTICE_REACH`` of the vectors that fixed the lattice, so that at least 0.6 of the vectors beside
    the beams are reflections the noise-free pattern shows (measured 2026-12-07: 26 of 40). Without the reach 26 of 53
    were (the lattice, fixed on the sum's near disks, 1–4 % small: 2–4 px off at 110 px), with every lattice point
    whose disk holds an electron over its ring (the rule before both) 42 of 132."""
    n, on = _tilted_silicon_at_1e3(tmp_path, shipped, tilted_silicon, 1, "within_reach")
    assert n >= 8 and on >= 0.6 * n, (n, on)
    monkeypatch.setattr(detectors, "BATCH_LATTICE_REACH", np.inf)
    n_far, on_far = _tilted_silicon_at_1e3(tmp_path, shipped, tilted_silicon, 1, "whole_detector")
    assert on_far < 0.6 * n_far, (n_far, on_far)
    monkeypatch.setattr(detectors, "summed_disk_z", lambda points, *a: np.full(len(points), np.inf))
    n_every, on_every = _tilted_silicon_at_1e3(tmp_path, shipped, tilted_silicon, 1, "every_point")
    assert on_every < 0.6 * n_every, (n_every, on_every)


def _thin_crystal_on_camera(tmp_path, shipped, cells_per_box: int, seed: int, thickness_A: float = 20.0,
                            energy_kV: float = 200.0, semiangle_mrad: float = 2.0):
    """SrTiO3 [001] (20 Å at 200 kV / 2 mrad unless given) on 256 px at 1 / (``cells_per_box`` a) Å⁻¹ per px, 32
    patterns of one state at 1e3 e⁻ with the detector augmentation (drawn with ``seed``): a function of a folder name
    that runs `predict` into it and gives (positions `strain` fits, their mean |deviation| of e_xx, e_yy, e_xy from
    the medians, %)."""
    from fourdcrystal.analysis import strain

    s = srtio3()
    box_A = cells_per_box * s.lattice.a
    geo = Geometry(box_A=box_A, gpts=384, detector_px=256, thicknesses_A=(thickness_A,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(s, (0, 0, 1), geo, thickness_A=thickness_A, energy_eV=1e3 * energy_kV,
                        semiangle_mrad=semiangle_mrad)
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(seed)
    cube = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(32)]).reshape(2, 16, 256, 256)

    def fitted(name):
        df = _vectors(cube, ex["probe"], shipped, 1 / box_A, tmp_path / name)
        try:
            t = strain.measure(df).table.dropna(subset=["exx_pct"])
        except UserError:  # no position's vectors index a lattice
            return 0, np.inf
        return len(t), float(np.mean([np.mean(np.abs(t[c] - t[c].median())) for c in ("exx_pct", "eyy_pct", "exy_pct")]))
    return fitted


def test_a_thin_crystals_small_faint_disks_take_their_batchs_lattice(tmp_path, shipped, monkeypatch):
    """On 256 px at 1/50.8 Å⁻¹ (``_thin_crystal_on_camera`` with 13 cells: 4 px disks, apart: small disks, placed by
    their edges) the batch's lattice (``MeasuredPattern._batch_lattice``) gives `strain` a lattice at at least 16 of
    32 positions with a mean |deviation| of e_xx, e_yy, e_xy from their medians under 1.2 % (measured 2026-12-06: 26
    of 32, 0.95 %; seeds 2 and 3: 21 and 22, 0.92 and 0.85 %), where without it at most 8 are (6, 1.22 %; 5 and 4)."""
    fitted = _thin_crystal_on_camera(tmp_path, shipped, 13, 1)
    n, spread = fitted("batch")
    assert n >= 16 and spread < 1.2, (n, spread)
    monkeypatch.setattr(detectors.MeasuredPattern, "_batch_lattice",
                        lambda self, patterns, centres, out, *a: (out, np.zeros(len(patterns), bool)))
    assert fitted("without")[0] <= 8


def test_faint_patterns_of_four_or_five_vectors_take_their_batchs_lattice(tmp_path, shipped, monkeypatch):
    """On 256 px at 1/93.7 Å⁻¹ (``_thin_crystal_on_camera`` with 24 cells: 7.5 px disks, large and clear) the 2 nm
    crystal's patterns at 1e3 e⁻ keep four or five vectors of their own, too few to show a lattice beyond chance in
    `strain` (``analysis.lattice.fewest_beyond_chance``: six): they take their batch's lattice too
    (``detectors.BATCH_LATTICE_OWN_VECTORS``), and at least 26 of 32 positions are fitted with a mean |deviation| under
    1 % (measured 2026-12-06: 31, 0.68 %; seeds 2 and 3: 32 and 30, 0.63 and 0.68 %; 30, 0.88 % before patterns of few
    electrons with a lattice of their own took part as well), where with the batch's lattice for patterns of fewer
    than four vectors only (the rule before) at most 22 were (18, 1.05 %; 21 and 16)."""
    fitted = _thin_crystal_on_camera(tmp_path, shipped, 24, 1)
    n, spread = fitted("six")
    assert n >= 26 and spread < 1.0, (n, spread)
    monkeypatch.setattr(detectors, "BATCH_LATTICE_OWN_VECTORS", detectors.MIN_LATTICE_VECTORS)
    before = detectors.MeasuredPattern._batch_lattice  # and no pattern with a lattice of its own takes part
    monkeypatch.setattr(detectors.MeasuredPattern, "_batch_lattice",
                        lambda self, *a: before(self, *a[:-1], np.zeros_like(a[-1])))
    assert fitted("four")[0] <= 22


def test_a_thick_crystals_faint_patterns_with_lattices_of_their_own_take_their_batchs(tmp_path, shipped, monkeypatch):
    """SrTiO3 [001] 100 Å at 300 kV / 2.5 mrad on 256 px at 1/93.7 Å⁻¹ (``_thin_crystal_on_camera``: 12 px disks,
    touching) at 1e3 e⁻: each pattern's few electrons on a disk place it to a pixel or two, though its vectors show a
    lattice of their own; such a pattern (``_few_electrons``) takes its batch's lattice too, fitted to its electrons
    (``MeasuredPattern._batch_lattice``): all 32 positions fitted at a mean |deviation| of e_xx, e_yy, e_xy from their
    medians under 0.75 % (measured 2026-12-06: 32, 0.665 %; seeds 2 and 3: 32 and 32, 0.61 and 0.59 %), where
    with only the patterns of fewer vectors than show a lattice (the rule before) 27 of 32 were, at 0.94 % (31 and 32,
    0.68 and 0.76 %)."""
    fitted = _thin_crystal_on_camera(tmp_path, shipped, 24, 1, thickness_A=100.0, energy_kV=300.0, semiangle_mrad=2.5)
    n, spread = fitted("fewest")
    assert n == 32 and spread < 0.75, (n, spread)
    before = detectors.MeasuredPattern._batch_lattice
    monkeypatch.setattr(detectors.MeasuredPattern, "_batch_lattice",
                        lambda self, *a: before(self, *a[:-1], np.zeros_like(a[-1])))
    n, spread = fitted("own")
    assert n < 30 or spread > 0.85, (n, spread)


def _scale_error_pct(df: pd.DataFrame, truth: pd.DataFrame, dq: float) -> tuple[float, int]:
    """(median over the vectors beyond the beam within 3 px of a kinematic reflection g of (q · g / |g|² − 1) in %,
    how many): how much larger than the crystal's the vectors place its lattice."""
    q = df[["qx", "qy"]].to_numpy()
    q = q[np.hypot(q[:, 0], q[:, 1]) > 2 * dq]
    g = truth[["qx", "qy"]].to_numpy()
    g = g[np.hypot(g[:, 0], g[:, 1]) > 2 * dq]
    d = np.hypot(q[:, None, 0] - g[None, :, 0], q[:, None, 1] - g[None, :, 1])
    near = d.min(axis=1) <= 3 * dq
    gn = g[d.argmin(axis=1)][near]
    return float(np.median((q[near] * gn).sum(axis=1) / (gn ** 2).sum(axis=1) - 1) * 100), int(near.sum())


@pytest.fixture(scope="module")
def mgo_300kv():
    """MgO [001] 100 Å at 300 kV / 3.5 mrad on 256 px at ~0.02 Å⁻¹/px (bench_accuracy's corner: 9 px disks, clear of
    each other, placed by their edges): (``zone_axis_cbed``'s dict, its geometry, its truth as qx, qy in Å⁻¹)."""
    from pymatgen.core import Lattice, Structure

    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    geo = Geometry(box_A=12 * 4.212, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(mgo, (0, 0, 1), geo, thickness_A=100.0, energy_eV=300e3, semiangle_mrad=3.5)
    return ex, geo, ex["truth"].rename(columns={"qx_invA": "qx", "qy_invA": "qy"})


def test_a_batchs_lattice_has_the_size_its_disks_edges_show(tmp_path, shipped, monkeypatch, mgo_300kv):
    """MgO [001] 100 Å at 300 kV / 3.5 mrad on 256 px at ~0.02 Å⁻¹/px (bench_accuracy's corner: 9 px disks, clear of
    each other, placed by their edges), 32 patterns at 1e3 e⁻ with the detector augmentation: they take their batch's
    lattice, whose likelihood (the plain probe's correlation) peaks inward of disks brighter on their inner side;
    `predict` measures one factor for the scan's batches (``MeasuredPattern.measure_edge_scale``) that gives them the
    size the sum's edge-placed vectors show. The vectors' median scale error is then within ±0.5 % (measured
    2026-12-07: −0.02 % over 749 vectors; seeds 2, 3: +0.19, +0.09 %), where without the factor it is below −1.5 %
    (−2.86 %; −2.75, −2.55 %). The factor is measured once per scan (a scan of two batches in one process: one
    call), not per batch, whose ±0.4 % would step between batches (benchmarks/RESULTS.md, "The batch's lattice by the
    disks' edges"); checked by mutation: measured in each batch as well, the test fails."""
    ex, geo, truth = mgo_300kv
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(1)
    cube = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(32)]).reshape(2, 16, 256, 256)
    corrected, n = _scale_error_pct(_vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / "edges"), truth,
                                    geo.dk_invA)
    assert json.loads((tmp_path / "edges" / "summary.json").read_text())["batch_lattice_size_factor"] > 1.01
    # one factor for the scan, not one per batch (a step between batches that strain would read): measured once
    # on a scan of two batches of 16, both detected in this process (the first shows the lattice; one of 4 or 8
    # patterns at 1e3 e⁻ does not, and the next ones are tried: ``predict.SIZE_FACTOR_BATCHES``)
    measure, calls = detectors.MeasuredPattern.measure_edge_scale, []
    monkeypatch.setattr(detectors.MeasuredPattern, "measure_edge_scale",
                        lambda self, *a: calls.append(1) or measure(self, *a))
    model, geo_model, ps = shipped
    predict.predict_cube(Cube(array=cube.astype(np.float32), path="test"), ex["probe"], model, geo_model,
                         geo.dk_invA, tmp_path / "two", progress=False, precision="fp32", batch=16, workers=1,
                         threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
    assert len(calls) == 1, len(calls)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["batch_lattice_size_factor"] > 1.01
    monkeypatch.setattr(detectors.MeasuredPattern, "measure_edge_scale", lambda self, *a: None)
    plain, n_plain = _scale_error_pct(_vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / "plain"), truth,
                                      geo.dk_invA)
    assert n >= 500 and abs(corrected) < 0.5 and plain < -1.5, (corrected, n, plain, n_plain)


def test_a_scan_that_begins_on_vacuum_takes_its_size_factor_from_its_first_batch_on_the_crystal(tmp_path, shipped,
                                                                                                monkeypatch, mgo_300kv):
    """The scan above after a first batch of vacuum (32 positions of the probe alone at 1e3 e⁻, as where a scan begins
    off the specimen): that batch's patterns show no lattice, so the size factor is measured on the next
    (``predict.SIZE_FACTOR_BATCHES``), and the crystal's vectors' median scale error is within ±0.5 % as on the scan
    without the vacuum (measured 2026-12-07: −0.05 % over 837 vectors, factor 1.026; seeds 2, 3: −0.11, +0.23 %); from
    the first batch alone (the rule before) no factor and −2.51 % (−2.69, −2.82 %)."""
    ex, geo, truth = mgo_300kv
    aug, rng = Augmenter({**DEFAULTS, "ellipticity": 0.0}), np.random.default_rng(1)
    vacuum = [aug.apply(ex["probe"], ex["probe"], rng, dose=1e3) for _ in range(32)]
    crystal = [aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(32)]
    cube = np.stack(vacuum + crystal).reshape(4, 16, 256, 256)

    def scale_error(name):
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
        factor = json.loads((tmp_path / name / "summary.json").read_text()).get("batch_lattice_size_factor")
        return (*_scale_error_pct(df[df["rx"] >= 2], truth, geo.dk_invA), factor)

    error, n, factor = scale_error("next_batch")
    assert factor is not None and factor > 1.01 and abs(error) < 0.5 and n >= 500, (error, n, factor)
    monkeypatch.setattr(predict, "SIZE_FACTOR_BATCHES", 1)
    error_first, n_first, factor_first = scale_error("first_batch")
    assert factor_first is None and error_first < -1.5, (error_first, n_first, factor_first)


def test_a_thick_crystals_small_disks_take_the_size_their_edges_show(tmp_path, shipped, monkeypatch):
    """MgO [001] 300 Å at 200 kV / 2 mrad on 256 px at ~0.02 Å⁻¹/px (the issue's acquisition: 4 px disks), 32 patterns at
    1e3 e⁻ under shot noise: they take their batch's lattice, whose likelihood, a flat probe disk, is small here too —
    a thick crystal's small disks are not flat. The scan's size factor (``MeasuredPattern.measure_edge_scale``), once
    measured on large disks only, gives the vectors the size the sum's edge-placed vectors show: their median scale
    error is within ±0.5 % (measured 2026-12-07: −0.06 % over 790 vectors; seeds 2, 3: −0.00, +0.01 %), where without
    it it is below −2 % (−2.93 %; −2.99, −3.03 %; benchmarks/RESULTS.md, "A thick crystal's small disks on their
    batch's lattice, sized")."""
    from pymatgen.core import Lattice, Structure

    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    geo = Geometry(box_A=12 * 4.212, gpts=384, detector_px=256, thicknesses_A=(300.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(mgo, (0, 0, 1), geo, thickness_A=300.0, energy_eV=200e3, semiangle_mrad=2.0)
    truth = ex["truth"].rename(columns={"qx_invA": "qx", "qy_invA": "qy"})
    cube = _shot_noise_scan(ex["cbed"], ex["probe"], (2, 16), 1, dose=1e3)
    error, n = _scale_error_pct(_vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / "sized"), truth,
                                geo.dk_invA)
    assert abs(error) < 0.5 and n >= 500, (error, n)
    monkeypatch.setattr(detectors.MeasuredPattern, "measure_edge_scale", lambda self, *a: None)
    unsized, n = _scale_error_pct(_vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / "unsized"), truth,
                                  geo.dk_invA)
    assert unsized < -2.0, (unsized, n)


def test_a_small_scans_sum_climbs_to_its_disks_edges(tmp_path, shipped, monkeypatch):
    """MgO [001] 300 Å at 200 kV / 2 mrad on 256 px (the issue's acquisition: 4 px disks, 2 × 2 scans) at 1e3 e⁻ under
    shot noise: a small scan's faint patterns take the lattice of their sum, whose size the sum's vectors set
    (``MeasuredPattern.measure_edge_scale``). The sum of four patterns holds ~4e3 electrons, a low-dose pattern, whose
    disks climbed to their edges only from 30σ (``refine.LOW_DOSE_EDGE_CLIMB_MIN_SNR``): the rest stayed at the plain
    maximum, inward on a thick crystal's disks, and every pattern took the sum's lattice small. A sum climbs from
    ``refine.SUM_EDGE_CLIMB_MIN_SNR``: over six scans the vectors' median scale error −0.21 % against −0.41 % (measured
    2026-12-08; seeds 1–3 / 4–6 / 7–9: −0.39 / −0.03 / −0.33 against −0.55 / −0.27 / −0.63 %; benchmarks/RESULTS.md,
    "The summed patterns' disks climb to their edges")."""
    from pymatgen.core import Lattice, Structure

    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    geo = Geometry(box_A=12 * 4.212, gpts=384, detector_px=256, thicknesses_A=(300.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(mgo, (0, 0, 1), geo, thickness_A=300.0, energy_eV=200e3, semiangle_mrad=2.0)
    truth = ex["truth"].rename(columns={"qx_invA": "qx", "qy_invA": "qy"})
    scans = [_shot_noise_scan(ex["cbed"], ex["probe"], (2, 2), seed, dose=1e3) for seed in range(1, 7)]

    def scale_error(name):
        return _scale_error_pct(pd.concat([_vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / f"{name}{k}")
                                           for k, cube in enumerate(scans)]), truth, geo.dk_invA)

    climbed, n = scale_error("climbed")
    monkeypatch.setattr(detectors, "SUM_EDGE_CLIMB_MIN_SNR", detectors.LOW_DOSE_EDGE_CLIMB_MIN_SNR)
    plain, n_plain = scale_error("plain")
    assert climbed > -0.3 and climbed - plain > 0.12 and n >= 0.95 * n_plain, (climbed, plain, n, n_plain)

def test_a_thick_crystals_faint_small_disks_take_their_batchs_lattice(tmp_path, shipped, monkeypatch):
    """SrTiO3 [001] 600 Å at 300 kV / 1 mrad on 256 px (bench_accuracy's [001] corner: 2.5 px disks), four 2 × 2 scans
    at 1e3 e⁻ through the detector augmentation (its background: 2e3–2e4 electrons counted per pattern): each pattern
    shows 7–12 faint disks, which the network proposes ~0.5 px inward and the sub-pixel fit moves only part of the
    way. Below ``evidence.LOW_DOSE_E[1]`` small disks now take their batch's lattice too (``_few_electrons``), sized
    by the sum's edges: 287 vectors within 1 px of a reflection against 162 when only patterns under
    ``LOW_DOSE_E[0]`` took it (measured 2026-12-08; benchmarks/RESULTS.md, "A low-dose pattern's small disks on their
    batch's lattice")."""
    from fourdcrystal.geometry import Geometry

    geo = Geometry(box_A=13 * 3.905, gpts=384, detector_px=256, thicknesses_A=(600.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=600.0, energy_eV=300e3, semiangle_mrad=1.0)
    truth = ex["truth"][["qx_invA", "qy_invA"]].to_numpy() / geo.dk_invA
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    scans = []
    for seed in range(1, 5):
        aug, rng = Augmenter({**cfg, "ellipticity": 0.0}), np.random.default_rng(seed)
        scans.append(np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e3) for _ in range(4)]).reshape(2, 2, 256, 256))

    def within_1px(name):
        n = 0
        for k, cube in enumerate(scans):
            for _, v in _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / f"{name}{k}").groupby(["rx", "ry"]):
                found = v[["qx", "qy"]].to_numpy() / geo.dk_invA
                n += len(match(found[np.hypot(*found.T) > 2.0], truth, 1.0)[0])
        return n

    batch = within_1px("batch")
    monkeypatch.setattr(detectors.MeasuredPattern, "_few_electrons",
                        lambda self, counted, n: counted < detectors.LOW_DOSE_E[0])
    own = within_1px("own")
    assert batch >= 1.4 * own, (batch, own)

def test_a_pattern_of_another_lattice_is_told_from_noisy_vectors_of_the_batchs():
    """``detectors._another_lattice``: a pattern whose vectors show a lattice of their own that the batch's does not
    index (the same crystal turned 30°) is another grain's; the batch's own lattice with a pixel of noise on every
    vector is not; five random vectors show no lattice beyond chance at all."""
    rng = np.random.default_rng(0)
    G = np.array([[24.0, 0.0], [0.0, 24.0]])
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4) if (h, k) != (0, 0) and h * h + k * k <= 5])
    t = np.radians(30.0)
    turned = G @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    ones = np.ones(len(hk))
    assert detectors._another_lattice(hk @ turned, ones, G)
    assert not detectors._another_lattice(hk @ G + rng.normal(0, 1.0, (len(hk), 2)), ones, G)
    assert not detectors._another_lattice(rng.uniform(-60, 60, (5, 2)), np.ones(5), G)


def _beyond_beam_on_truth(ex, geo, shipped, out):
    """`predict` on a 1 × 2 scan of the noise-free pattern ``ex`` (``zone_axis_cbed``): (its vectors beyond the
    beam, how many of them lie within 0.5 px of a kinematic reflection)."""
    px = geo.detector_px
    df = _vectors(np.broadcast_to(ex["cbed"], (1, 2, px, px)), ex["probe"], shipped, geo.dk_invA, out)
    found = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    t_px = np.column_stack([ex["truth"]["qx_px"], ex["truth"]["qy_px"]]) - geo.center_px
    on = sum(len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, t_px, 0.5)[0]) for _, v in found.groupby("ry"))
    return found, on


def test_touching_disks_among_neighbours_the_network_missed_are_found(tmp_path, shipped):
    """GaN [0001] at 300 kV, 3.5 mrad, 60 nm on a 256 px detector at 1/60.6 Å⁻¹, noise-free: disks of 10.8 px,
    2.04 radii apart, that touch their neighbours. The network proposes few of them (its V_g map lights the gaps
    between them too, which the gap rule refuses), so the ring about each disk it proposes holds the disks of
    neighbours it did not, and the contrast test, whose standard error that ring's spread sets, refused five of
    its six {11-20} disks; the two disks left were too few for the film's lattice rule, and `predict` kept the
    direct beam alone. Each such disk brighter than its level by the floor now stands on its pattern's lattice
    as measured (``MeasuredPattern._crowded``): at least six vectors per pattern, every one within 0.5 px of a
    kinematic reflection (measured 2026-12-05: the six {11-20} disks, 0.11–0.14 px). (Simulated on a 0.145 Å
    multislice grid, as bench_accuracy's rectangular set is; on better-converged patterns of this crystal the
    network proposes almost none of these disks: benchmarks/RESULTS.md, "Touching disks among neighbours the
    network missed".)"""
    from fourdcrystal.simulation.examples import RECTANGULAR_CELL_ROWS, gan, rectangular_cell, rectangular_geometry

    cut, cells = rectangular_cell(gan(), RECTANGULAR_CELL_ROWS["hexagonal [0001]"], box_A=50.0)
    geo = rectangular_geometry(cut, cells, 384, 256, (600.0,))
    ex = zone_axis_cbed(cut, (0, 0, 1), geo, thickness_A=600.0, energy_eV=300e3, semiangle_mrad=3.5)
    found, on = _beyond_beam_on_truth(ex, geo, shipped, tmp_path / "gan")
    assert len(found) >= 2 * 6, f"{len(found) / 2} vectors per pattern beyond the beam"
    assert on == len(found), f"{len(found) - on} of {len(found)} vectors on no kinematic reflection"


def test_a_few_bright_disks_that_the_film_rule_emptied_stand_on_their_completed_lattice(tmp_path, shipped):
    """Si [001] at 300 kV, 4 mrad, 100 nm on a 256 px detector at 0.023 Å⁻¹/px, noise-free: disks of 8.8 px, 2.6
    radii apart, each {220} 24–37σ out. The network proposes three of the four {220} and a {400} 2 px off its disk;
    the three {220} were too few for the film's lattice rule on this dense background (four on one lattice), and
    `predict` kept the direct beam alone. Their lattice, completed out to twice the farthest
    (``MeasuredPattern._seed_lattices``), holds the fourth {220} and the four {400}: five ±g pairs as measured, and
    every reported vector within 0.5 px of a kinematic reflection (measured 2026-12-06: 20 per pattern, none off)."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import square_geometry

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    geo = square_geometry(si, 5.431, 8 * 5.431, 384, 256, (1000.0,), 2.0)
    ex = zone_axis_cbed(si, (0, 0, 1), geo, thickness_A=1000.0, energy_eV=300e3, semiangle_mrad=4.0)
    found, on = _beyond_beam_on_truth(ex, geo, shipped, tmp_path / "si")
    assert len(found) >= 2 * 8, f"{len(found) / 2} vectors per pattern beyond the beam"
    assert on == len(found), f"{len(found) - on} of {len(found)} vectors on no kinematic reflection"


def test_disks_smaller_than_a_pixel_are_found_and_hot_pixels_are_not(tmp_path, shipped):
    """SrTiO3 [001] at 60 kV under a 0.5 mrad probe on a 256 px detector at 1/62.5 Å⁻¹: disks of 0.64 px
    radius, each one bright pixel, as a hot pixel is (evidence.HOT_PIXEL_MIN_RADIUS_PX).
    * Noise-free: every vector on a kinematic reflection, at least 12 per pattern (before, the evidence
      check left each disk's brightest pixel out as a hot pixel and kept 0–7).
    * Shot noise alone at 1e5 e⁻ with the augmentation's hot pixels (6.5 per pattern), 16 patterns: at
      least 12 per pattern, at most 2 vectors off a reflection (measured 2026-12-02: 24.5 per pattern, 1
      off; 49 off when a pattern's lattice let all its vectors stand, not each one on it).
    * The vacuum probe through the config's whole detector augmentation (blur, background, hot pixels),
      16 patterns at 1e5 e⁻: at most 0.5 vectors per pattern beyond the beam (measured 0; 1.75 without the
      lattice rule for sub-pixel disks). Benchmarks/RESULTS.md, "Disks smaller than a pixel"."""
    geo = Geometry(box_A=16 * 3.905, gpts=384, detector_px=256, thicknesses_A=(50.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=50.0, energy_eV=60e3, semiangle_mrad=0.5)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    t_px = np.column_stack([ex["truth"]["qx_px"], ex["truth"]["qy_px"]]) - geo.center_px
    hot = {"hot_pixel_fraction": cfg["hot_pixel_fraction"]}
    for name, cube, most_off in (("noise-free", np.broadcast_to(ex["cbed"], (1, 4, 256, 256)), 0),
                                 ("1e5 with hot pixels", _shot_noise_scan(ex["cbed"], ex["probe"], (4, 4), 4, **hot), 2)):
        n = cube.shape[0] * cube.shape[1]
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
        found = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
        off = sum(len(v) - len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, t_px, 0.5)[0])
                  for _, v in found.groupby(["rx", "ry"]))
        assert off <= most_off, f"{name}: {off} of {len(found)} vectors on no kinematic reflection"
        assert len(found) >= n * 12, f"{name}: {len(found) / n} vectors per pattern"
    rng = np.random.default_rng(6)
    pats = [Augmenter(cfg).apply(ex["probe"], ex["probe"], rng, dose=1e5) for _ in range(16)]
    df = _vectors(np.stack(pats).reshape(4, 4, 256, 256), ex["probe"], shipped, geo.dk_invA, tmp_path / "vacuum")
    beyond_beam = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    assert len(beyond_beam) / 16 <= 0.5, f"vacuum with hot pixels: {len(beyond_beam) / 16} vectors per pattern"


@pytest.mark.parametrize("gain", [2.5, 0.0])
def test_a_quad_detectors_cross_through_the_beam_is_filled_in(tmp_path, shipped, gan_200kv, gain):
    """A Medipix quad detector's cross (two rows and two columns through the detector's centre, here through
    the beam) counting 2.5 × (its wider pixels) or nothing (a gap written as 0), in the scan and in the vacuum
    probe recorded on it, or with no probe at all: `predict` finds the cross (``bad_pixels``), and its vectors
    are those of the clean scan. Before, the 2.5 × cross left only the beam (1.0 vector per pattern) and the
    dead one shrank the synthesized probe to half its radius (3.2 vectors per pattern, 2 of them off). Compared
    where the disks stand clear of the brightness floor (``_clear_of_floor``): this 30 nm crystal has a continuum
    of faint reflections at the floor of the incident beam (0.75–1.3 × it), where the filled cross's few per cent
    decide, as any other few per cent would."""
    geo, ex = gan_200kv
    clean = _shot_noise_scan(ex["cbed"], ex["probe"], (2, 2), seed=3)
    ref = _vectors(clean, ex["probe"], shipped, geo.dk_invA, tmp_path / "clean")
    c = int(geo.center_px)

    def cross(a):
        a = np.array(a, dtype=np.float32)
        a[..., c - 1:c + 1, :] *= gain
        a[..., :, c - 1:c + 1] *= gain
        return a

    for name, probe in (("probe", cross(ex["probe"])), ("synthesized", None)):
        df = _vectors(cross(clean), probe, shipped, geo.dk_invA, tmp_path / name)
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["bad_pixels"]["n"] == 4 * 256 - 4, summary["bad_pixels"]
        for (rx, ry), v in ref.groupby(["rx", "ry"]):
            got = df[(df["rx"] == rx) & (df["ry"] == ry)]
            a, b = (d[["qx", "qy"]].to_numpy() / geo.dk_invA for d in (v, got))
            ca, cb = _clear_of_floor(v), _clear_of_floor(got)
            assert ca.sum() >= 10
            # the clean scan's vectors are found, and none is added, where the floor does not decide
            assert len(match(a[ca], b, 0.2)[0]) >= 0.9 * ca.sum(), (name, ca.sum(), len(b))
            assert len(match(b[cb], a, 0.2)[0]) >= 0.9 * cb.sum(), (name, cb.sum(), len(a))
            assert len(b) <= 1.3 * len(a), (name, len(a), len(b))


def _clear_of_floor(vectors, margin: float = 1.5):
    """Per vector: whether its disk holds at least ``margin`` × ``evidence.MIN_BRIGHTNESS`` of its pattern's disks'
    electrons (``intensity``: each disk's electrons over its local level; the beam's among them)."""
    from fourdcrystal.inference.evidence import MIN_BRIGHTNESS
    inten = vectors["intensity"].to_numpy(float)
    return inten >= margin * MIN_BRIGHTNESS * np.clip(inten, 0, None).sum()


def test_worker_processes_give_the_vectors_of_one_process(tmp_path, shipped, gan_200kv):
    """Batches detected in two forked worker processes of one thread each (``predict --workers``) give the
    vectors of one process of two threads to float rounding (the network's sums split over fewer threads:
    measured ≤ 1e-5 px and 1e-4 in intensity in fp32), and the very same vectors on every run of two workers,
    whichever worker takes which batch. GaN [0001] as above, a 2 × 3 scan through the config's detector
    augmentation at 1e4 e⁻, one pattern per batch."""
    model, _, ps = shipped
    geo, ex = gan_200kv
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    aug, rng = Augmenter(cfg), np.random.default_rng(6)
    cube = np.stack([aug.apply(ex["cbed"], ex["probe"], rng, dose=1e4) for _ in range(6)]).reshape(2, 3, 256, 256)
    found = {}
    for run, w in (("one", 1), ("two", 2), ("two again", 2)):
        s = predict.predict_cube(Cube(array=cube.astype(np.float32), path="test"), ex["probe"], model, geo,
                                 geo.dk_invA, tmp_path / run, progress=False, precision="fp32", batch=1, workers=w,
                                 threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
        assert s["workers"] == w
        found[run] = pd.read_parquet(tmp_path / run / "bragg_vectors.parquet")
    assert found["two"].equals(found["two again"])
    one, two = found["one"], found["two"]
    assert len(one) >= 6 * 5 and len(one) == len(two) and (one[["rx", "ry"]] == two[["rx", "ry"]]).all().all()
    assert np.abs(one[["qx_px", "qy_px"]].to_numpy() - two[["qx_px", "qy_px"]].to_numpy()).max() < 1e-3
    assert np.allclose(one["intensity"], two["intensity"], rtol=1e-3)


def test_a_detector_smaller_than_the_networks_field_paints_no_peaks_on_low_dose_vacuum(tmp_path, shipped):
    """A 128 px detector at 0.02 Å⁻¹/px sees 2.56 Å⁻¹ of the network's 4 Å⁻¹ field. Framed by zeros, a vacuum
    pattern of 1e3 e⁻ made the network propose ~120 V_g peaks per pattern on the detector's noise (a detector
    that fills the field: ~20) and `predict` keep 1.25 false vectors per pattern (bench_accuracy --detector
    128 0.02, 80 kV / 1 mrad); the grid beyond the detector now holds the pattern's mirror image
    (``model_input.resample``) and what the network proposes there is dropped."""
    import torch

    from fourdcrystal.inference import peaks
    from fourdcrystal.inference.evidence import LOW_DOSE_THRESHOLD_FACTOR
    from fourdcrystal.inference.model_input import ModelInput

    model, mgeo, ps = shipped
    geo = Geometry(box_A=50.0, gpts=192, detector_px=128, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    probe = amorphous_film_cbed(geo, 80e3, 1.0, thickness_A=200.0)["probe"]
    aug = Augmenter(yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"])
    rng = np.random.default_rng(6)
    pats = np.stack([aug.apply(probe, probe, rng, dose=1e3) for _ in range(8)]).astype(np.float32)
    inputs = ModelInput(probe, mgeo.dk_invA / geo.dk_invA, mgeo.detector_px, mgeo.center_px)
    x = torch.from_numpy(pats)
    c = inputs.centres(x)
    with torch.inference_mode():
        vg, _ = model(*inputs(x, c))
    pk = peaks.find_peaks(vg, None, center_px=mgeo.center_px, min_spacing_px=ps["min_spacing_px"],
                          threshold=LOW_DOSE_THRESHOLD_FACTOR * ps["peak_threshold"])
    half = geo.detector_px / 2 * geo.dk_invA / mgeo.dk_invA  # the detector's half width in model px
    on = (np.abs(pk["qx_px"] - mgeo.center_px) < half) & (np.abs(pk["qy_px"] - mgeo.center_px) < half)
    assert on.sum() / len(pats) <= 40, f"{on.sum() / len(pats)} V_g peaks per pattern on the detector's noise"
    df = _vectors(pats.reshape(2, 4, 128, 128), probe, shipped, geo.dk_invA, tmp_path / "vacuum")
    beyond_beam = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
    assert len(beyond_beam) / len(pats) <= 0.25, f"{len(beyond_beam) / len(pats)} vectors per pattern"


def test_a_films_speckle_on_a_ring_of_single_counts_is_judged_by_the_lattice_rule(tmp_path, shipped):
    """20 nm of carbon at 200 kV under 2 mrad disks on a 256 px counting detector at 0.01 Å⁻¹/px (8 px disks),
    1e5 e⁻ with shot noise alone: the background around a disk is single counts (its median zero) yet 14–125
    electrons under a disk, and the film's bright grains stood out by 5–15σ: 3 false vectors per pattern while the
    dense background's lattice rule looked at the median (benchmarks/RESULTS.md, "A film's speckle on a ring of
    single counts"). The counted ring's mean decides now: on these 16 patterns 2.06 -> 0.88 per pattern. What was
    left came as ±g pairs — a film's speckle is centrosymmetric, as a crystal's pattern is, so two pairs are a
    lattice of four through the beam — kept on the network's positions within its uncertainty (here 3 px); counted
    as pairs (``evidence.friedel_folded``) 0.38."""
    per_pattern = _film_vectors_under_shot_noise(tmp_path, shipped, 100.0, 200e3, 2.0, (4, 4), seed=9)
    assert per_pattern <= 0.5, f"{per_pattern} vectors per pattern"


def test_two_network_peaks_on_one_large_disk_become_one_vector():
    # A thick crystal's 18 px disk shown to the network at a coarser pitch drew two peaks ~10 px apart on it: they are
    # one disk, at their V_g-weighted mean; proposals a disk's radius or more apart, of other patterns, and the beam
    # stay as they are
    from fourdcrystal.inference.detectors import _one_per_disk
    x = np.array([128.0, 80.0, 82.0, 80.0, 128.0, 176.0, 128.5])
    y = np.array([128.0, 123.0, 133.0, 128.0, 80.0, 128.0, 128.0])
    out = {"pattern": np.array([0, 0, 0, 1, 0, 0, 0]), "qx_px": x, "qy_px": y, "qx": (x - 128) * 0.01,
           "qy": (y - 128) * 0.01, "intensity": np.array([9.0, 2.0, 1.0, 2.0, 3.0, 3.0, 1.0]), "qz": np.zeros(7)}
    beam = np.hypot(out["qx"], out["qy"]) < 0.015
    got = _one_per_disk(out, 18.0, beam)
    assert got["pattern"].tolist() == [0, 0, 1, 0, 0, 0]
    assert np.allclose([got["qx_px"][1], got["qy_px"][1]], [(2 * 80 + 82) / 3, (2 * 123 + 133) / 3])
    assert np.allclose(got["qx"][1], (got["qx_px"][1] - 128) * 0.01)
    assert got["qx_px"][[0, 5]].tolist() == [128.0, 128.5]  # the beam, and a proposal on it, untouched
    assert got["qx_px"][[2, 3, 4]].tolist() == [80.0, 128.0, 176.0]


def test_a_batch_across_a_crystals_edge_judges_its_disks_on_the_crystals_patterns(tmp_path, shipped):
    """Si [001] 10 nm at 200 kV / 2 mrad on 256 px, a 4 × 4 scan at 1e4 e⁻ under shot noise whose second half is vacuum
    (a scan across a crystal's edge or a hole): the batch's low-dose patterns are summed, vacuum too, and each
    crystal pattern takes the sum's lattice where its disks stand out on the mean of the patterns that show the
    lattice. On the mean of all of them the vacuum halved the crystal's disks against a vacuum beam brighter than its
    own, and the faint {620} fell under the brightness floor: 12 of the 20 reflections, 20 on the crystal alone
    (2026-12-08; benchmarks/RESULTS.md, "A batch across a crystal's edge"). The vacuum positions stay empty."""
    from pymatgen.core import Lattice, Structure

    si = Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])
    geo = Geometry(box_A=8 * 5.431, gpts=384, detector_px=256, thicknesses_A=(100.0,), slice_thickness_A=2.0)
    ex = zone_axis_cbed(si, (0, 0, 1), geo, thickness_A=100.0, energy_eV=200e3, semiangle_mrad=2.0)
    truth = ex["truth"][["qx_invA", "qy_invA"]].to_numpy() / geo.dk_invA
    crystal = _shot_noise_scan(ex["cbed"], ex["probe"], (4, 2), seed=1, dose=1e4)
    vacuum = _shot_noise_scan(ex["probe"], ex["probe"], (4, 2), seed=2, dose=1e4)

    def on_truth(cube, name):
        df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / name)
        df = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
        n = sum(len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, truth, 1.0)[0])
                for (_, ry), v in df.groupby(["rx", "ry"]) if ry < 2)
        return n, int((df["ry"] >= 2).sum())

    alone, _ = on_truth(crystal, "alone")
    mixed, on_vacuum = on_truth(np.concatenate([crystal, vacuum], axis=1), "mixed")
    assert alone >= 8 * 18 and mixed >= 0.95 * alone and on_vacuum == 0, (alone, mixed, on_vacuum)


def test_a_batch_whose_every_scan_row_crosses_the_edge_takes_the_lattice_of_its_proposing_patterns(tmp_path, shipped,
                                                                                                   monkeypatch):
    """MgO [001] 60 nm at 80 kV / 3.5 mrad on 256 px through the detector augmentation at 1e3 e⁻, a 2 × 4 scan whose
    every row crosses from the crystal to vacuum: the batch's sum, half vacuum, shows the network no lattice, and
    neither does either half in scan order (each holds both); the patterns the network proposed a vector on do
    (``MeasuredPattern._sum_lattice``'s ``proposing``), and their lattice puts the crystal's disks back: 79 vectors on
    a reflection in two draws against 29 without that try (measured 2026-12-08; benchmarks/RESULTS.md, "A pixel sample
    that missed the beam; a batch across a crystal's edge"). The vacuum stays empty."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import square_geometry

    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    geo = square_geometry(mgo, 4.212, 50.0, 384, 256, (600.0,))
    ex = zone_axis_cbed(mgo, (0, 0, 1), geo, thickness_A=600.0, energy_eV=80e3, semiangle_mrad=3.5)
    truth = ex["truth"][["qx_invA", "qy_invA"]].to_numpy() / geo.dk_invA
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    scans = []
    for seed in (0, 2):
        aug, rng = Augmenter({**cfg, "ellipticity": 0.0}), np.random.default_rng(seed)
        halves = [np.stack([aug.apply(p, ex["probe"], rng, dose=1e3) for _ in range(4)]).reshape(2, 2, 256, 256)
                  for p in (ex["cbed"], ex["probe"])]
        scans.append(np.concatenate(halves, axis=1))

    def on_truth(name):
        n = on_vacuum = 0
        for k, cube in enumerate(scans):
            df = _vectors(cube, ex["probe"], shipped, geo.dk_invA, tmp_path / f"{name}{k}")
            df = df[np.hypot(df["qx"], df["qy"]) > 2 * geo.dk_invA]
            n += sum(len(match(v[["qx", "qy"]].to_numpy() / geo.dk_invA, truth, 1.0)[0])
                     for (_, ry), v in df.groupby(["rx", "ry"]) if ry < 2)
            on_vacuum += int((df["ry"] >= 2).sum())
        return n, on_vacuum

    proposing, on_vacuum = on_truth("proposing")
    whole_or_halves = detectors.MeasuredPattern._sum_lattice
    monkeypatch.setattr(detectors.MeasuredPattern, "_sum_lattice",
                        lambda self, *a, proposing=None, **k: whole_or_halves(self, *a, **k))
    without, _ = on_truth("without")
    assert proposing >= 1.5 * without and on_vacuum == 0, (proposing, without, on_vacuum)


def test_bench_accuracy_edge_scores_the_crystals_half_and_counts_the_others_vectors_as_false():
    """bench_accuracy ``--edge vacuum``: a scan SCAN × 2·SCAN whose second half is the vacuum probe at the same dose; the
    vectors of the crystal's half (scan order kept) are scored, the other half's counted as false per pattern."""
    import importlib.util

    path = ROOT / "benchmarks" / "bench_accuracy.py"
    spec = importlib.util.spec_from_file_location("bench_accuracy", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.EDGE, bench.SCAN = "vacuum", 2
    ii, jj = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    probe = (np.hypot(ii - 32, jj - 32) <= 4).astype(np.float64)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["augment"]
    half = bench.edge_half({"probe": probe, "energy_eV": 200e3, "semiangle_mrad": 2.0, "dq": 0.02}, 1e3,
                           Augmenter({**cfg, **bench.POISSON_ONLY}), np.random.default_rng(0))
    assert half.shape == (2, 2, 64, 64) and np.allclose(half.sum(axis=(-2, -1)), probe.sum(), rtol=0.15)  # its scale
    found = [pd.DataFrame({"qx_px": np.zeros(k)}) for k in range(8)]  # position k of a 2 × 4 scan holds k vectors
    kept = bench.on_crystal(found, {"energy_kV": 200.0, "semiangle_mrad": 2.0, "dose": "1e+03"}, "network")
    assert [len(f) for f in kept] == [0, 1, 4, 5]
    assert bench.EDGE_ROWS[-1]["kind"] == "edge_vacuum" and bench.EDGE_ROWS[-1]["false_vectors_per_pattern"] == 4.5
