"""``fourdcrystal strain``: strain, in-plane rotation and out-of-plane tilt maps from Bragg vectors.

Input: the ``bragg_vectors.parquet`` of ``fourdcrystal predict`` (network or ``--baseline
classical``), or its output folder. Output folder (published by one rename; a failed run leaves
nothing): strain.parquet, strain_maps.zarr, strain_maps.png, orientation.png, grains.png,
summary.json, index.html.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fourdcrystal.errors import UserError
from fourdcrystal.scan_region import parse_region


def read_vectors(path):
    import pandas as pd

    p = Path(path)
    if p.is_dir():
        p = p / "bragg_vectors.parquet"
    if not p.is_file():
        raise UserError(f"no Bragg vector table at {p}", "pass the bragg_vectors.parquet (or the --out folder) of "
                        "`fourdcrystal predict`")
    try:
        return pd.read_parquet(p)
    except Exception as err:  # pyarrow raises several types for a non-parquet file
        raise UserError(f"{p} is not a readable parquet table ({type(err).__name__})",
                        "pass the bragg_vectors.parquet written by `fourdcrystal predict`") from None


# Below this fraction of positions fit, the summary says why and how to fit more (``few_vectors_hint``).
FEW_FIT_FRACTION = 0.5


def few_vectors_hint(table, n_positions: int, n_fit: int, min_indexed: int) -> list[str]:
    """A note when fewer than FEW_FIT_FRACTION of the positions fit: the median vectors per position beside the
    beam and the remedy for a low-dose scan (bench_strain at 1e3 e⁻: 18–81 % of positions fit 1–2° off the zone axis;
    summing 2 × 2 positions halved the strain error, benchmarks/RESULTS.md, "Scan binning"). Empty otherwise."""
    import numpy as np

    if n_fit >= FEW_FIT_FRACTION * n_positions:
        return []
    # positions without any vector are absent from the table: they count as none
    per = np.zeros(n_positions)
    per[:len(table)] = np.maximum(table["n_vectors"].to_numpy(float) - 1, 0)
    return [f"only {n_fit} of {n_positions} positions fit: a position needs {min_indexed} vectors beside the beam on "
            f"one lattice and these hold {np.median(per):g} (median); for a low-dose scan sum neighbouring positions "
            "before detection (`fourdcrystal predict … --bin-scan 2`: 4× the electrons per pattern)"]


def run_strain(vectors_path, out_dir, settings, meta: dict | None = None) -> dict:
    """Measure and publish everything in ``out_dir``; returns the summary (also summary.json)."""
    import numpy as np

    from fourdcrystal.analysis import maps, page
    from fourdcrystal.analysis.strain import measure
    from fourdcrystal.atomic import atomic_path

    result = measure(read_vectors(vectors_path), settings)
    t = result.table
    n_fit = int((t["grain"] >= 0).sum())
    region = result.settings["reference"]
    reference = (f"median lattice of scan region rx {region[0][0]}:{region[0][1]}, ry {region[1][0]}:{region[1][1]} "
                 "(dashed box)" if region else
                 "median lattice of each grain (positions whose lattices agree up to a change of basis); strain and "
                 "rotation are relative to the grain's own median, so they are not compared across grains")
    n_pos = result.scan_shape[0] * result.scan_shape[1]
    advice = few_vectors_hint(t, n_pos, n_fit, settings.min_indexed)
    notes = [f"{n_pos - n_fit} positions could not be indexed to any lattice better than chance (NaN, grey)"
             if n_fit < n_pos else "every position was indexed",
             *advice,
             f"grains: lattices that explain at least {100 * settings.min_grain_fraction:g} % of the positions, as many "
             "of them in their own region (a grain is a region)"
             + ("" if result.grains else " — none found: these vectors show no lattice"),
             f"axes: {settings.axes_text()}",
             "e_xy is the tensor shear (engineering shear = 2 e_xy); rotation is positive from +x toward +y",
             "tilt: from the network's q_z of the indexed vectors (q_z ≈ −θ g·n̂); none for the classical baseline"]
    summary = {"input": str(vectors_path), "scan_shape": list(result.scan_shape), "n_positions": n_pos,
               "n_fit": n_fit, "fit_fraction": n_fit / n_pos, "reference": reference, "axes": settings.axes_text(),
               "grains": result.grains, "settings": result.settings, "notes": notes, "advice": advice,
               **(meta or {})}
    m = maps.to_maps(t, result.scan_shape)
    noise = {k: maps.noise_per_position(m[k], m["grain"]) for k in maps.NOISE_MAPS}
    noise = {k: (v if np.isfinite(v) else None) for k, v in noise.items()}  # None: too few neighbours fit
    if any(v is not None for v in noise.values()):
        notes.insert(1, "noise per position (from neighbouring positions' differences, robust): " + ", ".join(
            f"{maps.MAPS[k][1].split(' (')[0]} {v:.3g} {maps.MAPS[k][0]}" for k, v in noise.items() if v is not None))
    summary["noise_per_position"] = noise
    figs = [("strain_maps.png", "strain (Biot, %) relative to the reference"),
            ("orientation.png", "in-plane rotation and out-of-plane tilt (arrows: direction the zone axis leans to)"),
            ("grains.png", "grains (lattices found) and the fraction of each position's vectors indexed")]
    with atomic_path(out_dir) as tmp:
        tmp.mkdir(parents=True)
        t.to_parquet(tmp / "strain.parquet", index=False)
        maps.write_arrays(m, tmp / "strain_maps.zarr", {"reference": reference, "grains": result.grains})
        title = ("reference: median lattice of rx {}:{}, ry {}:{} (dashed)".format(*region[0], *region[1]) if region
                 else "reference: median lattice of each grain (grain boundaries in black)")
        maps.figure(m, ["exx_pct", "eyy_pct", "exy_pct", "rotation_deg"], tmp / figs[0][0], title, region)
        maps.tilt_figure(m, tmp / figs[1][0], "orientation")
        maps.figure(m, ["grain", "indexed_fraction"], tmp / figs[2][0], "lattices",
                    cmaps={"grain": "tab10", "indexed_fraction": "viridis"})
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
        (tmp / "index.html").write_text(page.render(summary, figs))
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fourdcrystal.analysis.strain import Settings
    from fourdcrystal.cli import number

    d = Settings()
    p.add_argument("vectors", help="bragg_vectors.parquet of `fourdcrystal predict`, or its --out folder")
    p.add_argument("--out", required=True, help="output folder (replaced atomically)")
    p.add_argument("--reference", metavar="RX0:RX1,RY0:RY1", default=None,
                   help="scan region whose median lattice is the zero of strain and rotation "
                        "(default: the median lattice of each grain)")
    p.add_argument("--weights", choices=["intensity", "none"], default=d.weights,
                   help="least-squares weights of the vectors in each position's lattice fit")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help="indexing tolerance as a fraction of the shorter basis vector (default %(default)s)")
    p.add_argument("--min-indexed", type=int, default=d.min_indexed,
                   help="non-beam vectors that must index for a position to be fit (default %(default)s)")
    p.add_argument("--x-axis-deg", type=number(-float("inf"), above=False, unit=" (degrees)"), default=d.x_axis_deg,
                   metavar="DEG",
                   help="report strain, rotation, tilt and lattice in axes whose x lies DEG degrees from +q_x toward "
                        "+q_y on the detector, e.g. the scan's fast axis or a device's channel as it falls there "
                        "(default 0: the detector's axes)")
    p.add_argument("--flip-y", action="store_true",
                   help="the axes' y 90° from x toward −q_y instead of +q_y: a camera mirrored relative to the scan "
                        "(py4DSTEM's QR flip)")


def run(args: argparse.Namespace) -> int:
    from fourdcrystal.analysis.strain import Settings
    from fourdcrystal.atomic import check_output_folder

    if not 0 < args.tolerance < 0.5:
        raise UserError(f"--tolerance {args.tolerance} is not in (0, 0.5)", "pass e.g. --tolerance 0.15")
    if args.min_indexed < 2:
        raise UserError(f"--min-indexed {args.min_indexed} is below 2", "pass --min-indexed 3 or more")
    check_output_folder(args.out, "strain.parquet", (args.vectors,))
    reference = None if args.reference is None else parse_region(args.reference, "--reference",
                                                                 "of an unstrained area, e.g. 0:8,0:8")
    settings = Settings(tolerance=args.tolerance, min_indexed=args.min_indexed, weights=args.weights,
                        reference=reference, x_axis_deg=args.x_axis_deg, flip_y=args.flip_y)
    s = run_strain(args.vectors, args.out, settings)
    print(f"strain: {s['n_fit']} of {s['n_positions']} positions fit, {len(s['grains'])} lattice(s) -> {args.out}")
    noise = s["noise_per_position"]
    if all(v is not None for v in noise.values()):
        print("noise per position: e_xx {:.3g} %, e_yy {:.3g} %, e_xy {:.3g} %, rotation {:.3g}°".format(
            *(noise[k] for k in ("exx_pct", "eyy_pct", "exy_pct", "rotation_deg"))))
    for note in s["advice"]:
        print(f"note: {note}")
    return 0
