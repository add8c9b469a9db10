"""Rule ``scan_demo``: a simulated polycrystal 4D-STEM scan through ``fourdcrystal predict``."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from fourdcrystal.atomic import atomic_path
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.inference.datacube_io import open_datacube, open_probe
from fourdcrystal.inference.predict import load_model, peak_settings, predict_cube
from fourdcrystal.learning.augment import Augmenter
from fourdcrystal.simulation.store import load_manifest, read_pattern

log = logging.getLogger("fourdcrystal.scan_demo")


def make_demo_scan(config: dict, manifest_path, out_dir, root=".", scan_px: int = 12, n_grains: int = 4,
                   dose: float = 1e5) -> tuple[Path, Path, dict]:
    """A polycrystal 4D-STEM scan assembled from test-split quartets (not a new multislice run).

    ``n_grains`` test patterns of distinct (crystal, orientation), recorded with one probe (``one_probe``),
    become grains of a Voronoi mosaic
    over a ``scan_px``² scan; every position gets its grain's CBED through the detector augmentation
    (dose ``dose``, fresh noise, origin shift = descan) so no two patterns are equal. Written as a
    memory-mapped .npy cube + probe; returns (cube path, probe path, info).
    """
    root = Path(root)
    test = load_manifest(manifest_path, "test")
    if test.empty:
        raise UserError("the test split is empty", "simulate more crystals (selection.n_crystals >= 3)")
    # each grain at its thickest exit plane (the demo's thinnest, 2 nm, is under what users record)
    pick = one_probe(test, n_grains).sort_values("thickness_A", kind="stable")
    pick = pick.groupby(["crystal_id", "orientation_id"]).tail(1).head(n_grains).reset_index(drop=True)
    quartets = [read_pattern(root / r["store"], int(r["index"])) for _, r in pick.iterrows()]
    rng = np.random.default_rng([int(config["seed"]), 7])
    seeds = rng.uniform(0, scan_px, (len(quartets), 2))
    i, j = np.indices((scan_px, scan_px))
    grain = np.argmin((i[..., None] - seeds[:, 0]) ** 2 + (j[..., None] - seeds[:, 1]) ** 2, axis=-1)
    aug = Augmenter(config["augment"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    P = quartets[0]["cbed"].shape[-1]
    cube_path, probe_path = out_dir / "scan.npy", out_dir / "probe.npy"
    with atomic_path(cube_path) as tmp:
        with open(tmp, "wb") as fh:  # np.save appends .npy to names without it; write through a handle
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (scan_px, scan_px, P, P)})
            for rx in range(scan_px):
                row = np.stack([aug.apply(quartets[g]["cbed"], quartets[g]["probe"], rng, dose=dose) for g in grain[rx]])
                fh.write(row.astype("<f4").tobytes())
    with atomic_path(probe_path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, quartets[0]["probe"].astype(np.float32))
    info = {"scan_px": scan_px, "dose_e_per_pattern": dose, "grains": pick[["crystal_id", "orientation_id",
                                                                             "thickness_A"]].to_dict("records"),
            "grain_map": grain.tolist()}
    return cube_path, probe_path, info


def one_probe(patterns, enough: int | None = None, semiangle_rtol: float = 0.02):
    """The patterns recorded with one probe: the first probe (in ``patterns``' order) shared by ``enough``
    (crystal, orientation) pairs, else the one shared by the most.

    A scan has one beam energy and one convergence angle, and predict is given one vacuum probe. The
    simulation draws each orientation's probes, so grains from different draws would give the detectors a
    template whose disk is up to 30 % too small or large in the demo's 3–5 mrad. Probes of equal energy
    whose semiangles agree within ``semiangle_rtol`` count as one (a 2 % larger disk is within the
    detectors' template tolerance)."""
    e, a = patterns["energy_eV"].to_numpy(float), patterns["semiangle_mrad"].to_numpy(float)
    pairs = patterns[["crystal_id", "orientation_id"]]
    best = None
    for ek, ak in dict.fromkeys(zip(e, a)):  # each probe once (a seed-scale test split holds ~1e5)
        same = (e == ek) & (np.abs(a - ak) <= semiangle_rtol * ak)
        n = len(pairs[same].drop_duplicates())
        if best is None or n > best[0]:
            best = (n, same)
        if enough is not None and n >= enough:
            break
    return patterns[best[1]]


def run_scan_demo(snakemake) -> None:
    cfg = dict(snakemake.config)
    out = Path(snakemake.output.vectors)
    cube_path, probe_path, info = make_demo_scan(cfg, snakemake.input.manifest, Path(snakemake.output.cube).parent,
                                                 scan_px=int(snakemake.params.scan_px))
    model, geometry, _ = load_model(snakemake.input.model, "cpu")
    dq = Geometry.from_config(cfg).dk_invA  # the scan is on the simulation grid
    cube = open_datacube(cube_path)
    probe, _ = open_probe(probe_path)
    # the peak settings evaluate tuned on val (what a user of the trained model should pass)
    ps = json.loads(Path(snakemake.input.metrics).read_text()).get("network_peak_settings") or {}
    ps = peak_settings(None, ps.get("peak_threshold", cfg["evaluate"]["peak_threshold"]),
                       ps.get("min_spacing_px", cfg["evaluate"].get("network_min_spacing_px")))
    s = predict_cube(cube, probe, model, geometry, dq, out, meta={"scan": info, "peak_settings": ps},
                     progress=False, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
    cube.close()
    with atomic_path(snakemake.output.map_png) as tmp:
        shutil.copyfile(out / "bragg_vector_map.png", tmp)
    log.info("scan demo: %d vectors from %d patterns (%.1f patterns/s)", s["n_vectors"], s["n_patterns"],
             s["patterns_per_s"])
