"""The Snakemake side of every stage: each function takes the ``snakemake`` object of one job and
calls the library with plain values (scripts/<rule>.py run it through ``smk.run_stage``)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("fourdcrystal.stages")


def structures(smk) -> None:
    from fourdcrystal.atomic import write_table
    from fourdcrystal.crystals.sources import load_structures

    df = load_structures(smk.config, mp_cache_dir=smk.params.mp_cache)
    write_table(smk.output[0], df)
    log.info("wrote %d structures to %s", len(df), smk.output[0])


def prototypes(smk) -> None:
    import pandas as pd

    from fourdcrystal.atomic import write_table
    from fourdcrystal.crystals.prototypes import assign_prototypes

    workers = max(1, min(int(smk.threads), os.cpu_count() or 1))
    df = assign_prototypes(pd.read_parquet(smk.input.structures), smk.config["prototypes"], workers=workers)
    write_table(smk.output[0], df)


def select(smk) -> None:
    import pandas as pd

    from fourdcrystal.crystals.selection import select as select_crystals, write_selection

    structures = pd.read_parquet(smk.input.structures)
    prototypes = pd.read_csv(smk.input.prototypes)
    table = select_crystals(structures, prototypes, int(smk.config["selection"]["n_crystals"]), int(smk.config["seed"]))
    write_selection(structures, table, smk.output.table, smk.output.cifs)
    log.info("selected %d crystals from %d prototypes (%d structures): %s", len(table),
             prototypes["prototype"].nunique(), len(prototypes), ", ".join(table["crystal_id"]))


def supercells(smk) -> None:
    from fourdcrystal.simulation.supercells import build_crystal, read_structure

    crystal = smk.wildcards.crystal
    config = {"seed": smk.params.seed, "orientations": dict(smk.params.orientations),
              "geometry": dict(smk.params.geometry)}
    structure = read_structure(Path(smk.input.cifs) / f"{crystal}.cif")
    build_crystal(structure, crystal, config, smk.output.orientations, smk.output.supercells)


def simulate(smk) -> None:
    from fourdcrystal.simulation.shard import simulate_shard

    simulate_shard(dict(smk.config), smk.wildcards.crystal, smk.input.cifs, smk.input.orientations,
                   smk.input.supercells, int(smk.wildcards.shard), smk.output.shard,
                   selected_csv=smk.input.get("selected"))


def dataset(smk) -> None:
    from fourdcrystal.simulation.dataset import build_dataset

    build_dataset(dict(smk.config), list(smk.input.shards), smk.output.manifest, smk.output.reflections,
                  smk.output.info)


def dataset_figures(smk) -> None:
    from fourdcrystal.simulation.figures import make_figures

    make_figures(smk.input.manifest, smk.input.info, smk.output.quartets, smk.output.summary,
                 seed=int(smk.config["seed"]))


def evaluate(smk) -> None:
    from fourdcrystal.evaluation.evaluate import run_evaluation

    run_evaluation(dict(smk.config), smk.input.manifest, smk.input.reflections, Path(smk.output.metrics).parent,
                   model_path=smk.input.get("model"))


def report(smk) -> None:
    from fourdcrystal.workflow.report import build_report

    i = smk.input
    build_report(smk.output.html, i.metrics,
                 {"quartets": i.quartets, "loss": i.loss, "f1_vs_dose": i.f1, "rms_bias": i.rms,
                  "overlays": i.overlays, "scan_map": i.scan_map},
                 scan_summary=Path(i.scan_vectors) / "summary.json")


def scan_demo(smk) -> None:
    from fourdcrystal.workflow.scan_demo import run_scan_demo

    run_scan_demo(smk)


def strain_demo(smk) -> None:
    """Strain and orientation maps of the demo scan (a polycrystal mosaic: one median reference per
    grain), from the network's vectors (output folder) and, for comparison on the same scan, from
    py4DSTEM's (``classical/``) and from the shipped pretrained model's (``pretrained/``, when the input
    ``shipped`` names it): the demo's own model is trained for minutes, the shipped one is what a user's
    `fourdcrystal predict` runs."""
    import json
    import tempfile

    from fourdcrystal.analysis.command import run_strain
    from fourdcrystal.analysis.strain import Settings
    from fourdcrystal.inference.datacube_io import open_datacube, open_probe
    from fourdcrystal.inference.predict import load_model, peak_settings, predict_cube

    vectors, out = Path(smk.input.vectors), Path(smk.output.strain)
    pred = json.loads((vectors / "summary.json").read_text())
    scan = pred.get("scan", {})
    meta = {"demo": "simulated polycrystal mosaic of the test split (rule scan_demo); each grain is one "
                    "test crystal in one orientation, unstrained", "true_grains": len(scan.get("grains", []))}
    # a demo model trained for minutes may give vectors no lattice explains: say so on the page, not fail
    settings = Settings(require_lattice=False)
    shipped = getattr(smk.input, "shipped", None)
    links = []
    if getattr(smk.input, "cube", None):
        links.append(("classical/index.html", "the same from py4DSTEM's vectors"))
        if shipped:
            links.append(("pretrained/index.html", "the same from the shipped pretrained model's vectors"))
    s = run_strain(vectors / "bragg_vectors.parquet", out, settings,
                   meta={**meta, "detector": "network (this run's model)", "links": links})
    if not links:  # no scan given (tests of the network half): nothing to compare
        return
    model, geometry, _ = load_model(smk.input.model, "cpu")
    # py4DSTEM's settings as evaluate tuned them on the val crystals (what the report compares)
    tuned = json.loads(Path(smk.input.metrics).read_text()).get("classical_settings")
    cube, (probe, pcube) = open_datacube(smk.input.cube), open_probe(Path(smk.input.cube).parent / "probe.npy")
    pcube.close()
    dq = float(pred["q_pixel_size_invA"])
    fits = {"this run's model": s}
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        predict_cube(cube, probe, model, geometry, dq, Path(tmp) / "vectors",
                     baseline="classical", classical_settings=tuned, progress=False)
        fits["py4DSTEM"] = run_strain(Path(tmp) / "vectors" / "bragg_vectors.parquet", out / "classical", settings,
                                      meta={**meta, "detector": "py4DSTEM (predict --baseline classical)"})
        if shipped:  # with the peak settings stamped in the shipped model, as `fourdcrystal predict` runs it
            model, geometry, model_meta = load_model(shipped, "cpu")
            ps = peak_settings(model_meta)
            predict_cube(cube, probe, model, geometry, dq, Path(tmp) / "shipped", progress=False,
                         threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"])
            fits["shipped model"] = run_strain(Path(tmp) / "shipped" / "bragg_vectors.parquet", out / "pretrained",
                                               settings, meta={**meta, "detector": "network (shipped pretrained model)"})
    cube.close()
    log.info("strain demo (%d grains simulated): %s", meta["true_grains"],
             "; ".join(f"{k}: {f['n_fit']} of {f['n_positions']} positions fit, {len(f['grains'])} grain(s)"
                       for k, f in fits.items()))
