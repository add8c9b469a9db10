"""Benchmark: strain and rotation measured by `fourdcrystal strain` from the network's vectors and
from py4DSTEM's (`predict --baseline classical`), against known homogeneous deformations.

Crystal: SrTiO3 [001] (a = 3.905 Å, never seen by the pretrained model), 300 kV, 2.5 mrad probe (disk
diameter 8.1 px < the 8.2 px spacing of the {100} disks), simulated with the workflow's own multislice
(fourdcrystal.simulation.examples.zone_axis_cbed) on the shipped model's detector grid (128², 1/32 Å⁻¹
per px), deformed in-plane by F = R(θ)(I + ε) for each state below, at two thicknesses.
Scan per (thickness, dose): one row of scan positions per state, ``draws`` positions per row (fresh
detector noise at each: learning.augment.Augmenter with the config's defaults — descan ±1 px,
background, blur, hot/dead pixels, Poisson at the dose — except ellipticity 0, because a
per-pattern elliptical distortion is itself a strain of up to 1 %); "noiseless" = the multislice
pattern as is. Both detectors run through the real CLI (`fourdcrystal predict` defaults: shipped model,
its stamped peak settings; `--baseline classical`: py4DSTEM find_Bragg_disks with the tuned settings),
then `fourdcrystal strain --reference` = the unstrained row (the same crystal, thickness and dose,
as a microscopist's reference area). The "kinematic" row fits the crystallographic truth positions
(no detector): the check that simulation, deformation and fit agree.
Error: |measured − true| per position and component (strain in %, rotation in °), averaged over
the positions of the deformed states; positions that could not be fit are counted separately.
Tilt (the network's q_z, `strain`'s out-of-plane tilt map): the undeformed crystal at 40 Å tilted by
0 or 10 mrad toward three azimuths, noiseless and 1e5 e⁻; error = |measured − true tilt vector| (mrad)
per position, mean over the tilted states (and the spurious tilt found on the untilted one).
Bound (Cramér–Rao), at each dose with noise: the least mean |error| per component that any unbiased detector of one
pattern can reach on the reference state's pattern, its every disk's content known (``strain_bound``).
Paired comparison: both detectors see the same patterns, so per position the difference of their |error|
is taken and averaged, with its standard error (positions both fit).
``--bin-scan N``: each state is recorded on N scan rows of N·draws positions and both detectors run with
``predict --bin-scan N``, so every binned position sums N² patterns of one state (a low-dose strain map as
microscopists make it); ``--thickness-A`` and ``--dose`` pick rows of the table (tilts are left out then).
``--gradient``: instead of the table, a strain gradient: a scan line of ``GRADIENT_POSITIONS`` positions whose e_xx
rises linearly over ``GRADIENT_RANGE`` (each position its own simulation; one batch of `predict`), at each dose
``GRADIENT_DRAWS`` noise draws, both detectors, `strain` with the median as reference: the slope of measured on true
e_xx (1 if unbiased; noise alone scatters about the line, a bias toward a common lattice flattens it).
``--crystal gan``: GaN [0001] instead (a hexagonal lattice, its box of whole cells: ``crystal_on``).
``--tilt MRAD AZIMUTH_DEG``: every state, the reference too, tilted off the zone axis by MRAD toward the
azimuth (``supercells.tilt_rotation``, applied after the deformation, as a specimen a little off its zone
axis is recorded; the projected deformation differs from F by ~tilt², 1e-3 of it at 2°; the tilt rows are
left out then). ``--detector PX DQ``, ``--energy-kV``, ``--semiangle-mrad``: the same series recorded on another
camera (PX pixels at ≈ DQ Å⁻¹/px, the box whole cells: ``crystal_on``; a camera whose box would be under
``MIN_BOX_A`` simulated finer and binned to its pixels: ``simulate``) or with another beam, which `predict`
resamples to the model's grid (the tilt rows are left out then). ``--min-box-A``: the least simulation box
(``MIN_BOX_A``); the noise-free rows' 0.01–0.1 % errors move with it (the seam of the deformed cells, the
pixels' integration), so a noise-free comparison between detectors is read over several boxes.
Usage: python benchmarks/bench_strain.py [--quick] [--draws N] [--model model.pt] [--precision P] [--json out.json]
       [--bin-scan N] [--thickness-A 60 ...] [--dose 1e3 ...] [--crystal gan] [--tilt MRAD AZIMUTH_DEG]
       [--detector PX DQ] [--energy-kV KV] [--semiangle-mrad MRAD] [--min-box-A BOX] [--gradient]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from fourdcrystal import cli  # noqa: E402
from fourdcrystal.analysis import strain as measured_strain  # noqa: E402
from fourdcrystal.errors import UserError  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.inference.predict import DEFAULT_MODEL  # noqa: E402
from fourdcrystal.learning.augment import DEFAULTS, Augmenter, distort, electrons_per_unit, mean_electrons  # noqa: E402
from fourdcrystal.inference.model_input import probe_radius_px  # noqa: E402
from fourdcrystal.learning.model import load_checkpoint  # noqa: E402
from fourdcrystal.simulation.examples import (RECTANGULAR_CELL_ROWS, gan, rectangular_cell,  # noqa: E402
                                              rectangular_geometry, square_geometry, srtio3, zone_axis_cbed)

# name, e_xx, e_yy, e_xy (fractions), rotation (degrees); the first is the reference
STATES = [("reference", 0, 0, 0, 0), ("e_xx +1%", 0.01, 0, 0, 0), ("e_yy -1%", 0, -0.01, 0, 0),
          ("e_xy 0.5%", 0, 0, 0.005, 0), ("rotation 1°", 0, 0, 0, 1.0), ("combined", 0.01, -0.01, 0.005, 1.0)]
COMPONENTS = ["exx_pct", "eyy_pct", "exy_pct", "rotation_deg"]
SEMIANGLE_MRAD, ENERGY_EV = 2.5, 300e3
DRAWS = 16  # scan positions per state: 80 deformed positions per (thickness, dose), enough to resolve
# differences of ~0.05 % between the detectors (6 per state left the comparison to the noise draw)
TILTS = [(0.0, 0.0), (10.0, 0.0), (10.0, 120.0), (10.0, 250.0)]  # (mrad, azimuth °)
# The least simulation box (Å) for a deformed crystal: the deformed cells do not fill the periodic box, and
# where the probe reaches the seam every disk moves. In SrTiO3's 23 Å box (128 px at 0.043 Å⁻¹/px, 200 kV,
# 2 mrad) both detectors measured 0.25–0.35 % and 0.3° noise-free; simulated in a 47 Å box and binned 2 × 2
# to the same camera, the network's error was 0.07–0.10 % (benchmarks/RESULTS.md, "Strain on other cameras").
# 32 Å: the shipped model's own box, where the noise-free errors are ≤ 0.07 %.
MIN_BOX_A = 32.0
# --gradient: positions of the row (one CPU batch of `predict`), the e_xx they span, noise draws per dose
GRADIENT_POSITIONS, GRADIENT_RANGE, GRADIENT_DRAWS = 32, (0.0, 0.02), 3


def deformation(exx, eyy, exy, rot_deg):
    t = np.radians(rot_deg)
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ (np.eye(2) + [[exx, exy], [exy, eyy]])


def truth_row(state) -> dict:
    _, exx, eyy, exy, rot = state
    return {"exx_pct": 100 * exx, "eyy_pct": 100 * eyy, "exy_pct": 100 * exy, "rotation_deg": rot}


def crystal_on(name: str, model_geo, detector: tuple[int, float] | None = None):
    """(Structure with the zone axis along c, Geometry) of ``--crystal``: SrTiO3 [001] on the model's own grid,
    or GaN [0001] (a hexagonal lattice) re-cut into its orthogonal cell, in the box of whole cells nearest
    the model's (``examples.rectangular_cell``: 12 × 7 cells, 38.3 Å, so 1/38.3 Å⁻¹ per px on 128 px, which
    `predict` resamples to the model's 1/32).

    ``detector`` (pixels per edge, ≈ Å⁻¹ per px): another camera instead of the model's grid, as
    bench_accuracy's ``--detector``: the box (1 / pixel size) a whole number of cells nearest 1 / ≈ Å⁻¹ per px,
    with a whole number of the multislice grid's points per cell, the grid 1.5 × the detector (abTEM's 2/3
    antialiasing aperture)."""
    if detector is None:
        px, box_A, gpts = model_geo.detector_px, model_geo.box_A, model_geo.gpts
    else:
        px, box_A, gpts = int(detector[0]), 1.0 / float(detector[1]), int(1.5 * detector[0])
    if name == "srtio3":
        if detector is None:
            return srtio3(), model_geo
        s = srtio3()
        return s, square_geometry(s, s.lattice.a, box_A, gpts, px, model_geo.thicknesses_A,
                                  model_geo.slice_thickness_A)
    cut, cells = rectangular_cell(gan(), RECTANGULAR_CELL_ROWS["hexagonal [0001]"], box_A)
    return cut, rectangular_geometry(cut, cells, gpts, px, model_geo.thicknesses_A, model_geo.slice_thickness_A)


def camera_binning(geo) -> int:
    """Detector pixels simulated per recorded pixel (each way): enough for a box of at least ``MIN_BOX_A``."""
    return int(np.ceil(MIN_BOX_A / geo.box_A - 1e-9))


def simulate(states, thickness_A, geo, structure, tilt=None, energy_eV=ENERGY_EV, semiangle_mrad=SEMIANGLE_MRAD):
    """One noise-free pattern per state on ``geo``'s detector; a camera whose box is under ``MIN_BOX_A`` is
    simulated on a box ``camera_binning`` times larger (finer pixels, the same field) and binned to its pixels."""
    b = camera_binning(geo)
    fine = geo if b == 1 else Geometry(box_A=b * geo.box_A, gpts=b * geo.gpts, detector_px=b * geo.detector_px,
                                       thicknesses_A=geo.thicknesses_A, slice_thickness_A=geo.slice_thickness_A)
    sims = [zone_axis_cbed(structure, (0, 0, 1), fine, thickness_A=thickness_A, energy_eV=energy_eV,
                           semiangle_mrad=semiangle_mrad, deformation=deformation(*s[1:]), tilt=tilt)
            for s in states]
    if b > 1:
        P = geo.detector_px
        for ex in sims:
            for k in ("cbed", "probe"):
                ex[k] = ex[k].reshape(P, b, P, b).sum(axis=(1, 3))
            ex["geometry"] = geo
    return sims


def write_scan(d: Path, sims, draws, dose, seed, bin_scan: int = 1):
    """One scan row of ``draws`` positions per state; with ``bin_scan`` n, n rows of n·draws positions per
    state (state s on rows s·n … s·n + n − 1), so that n × n binning gives one row of ``draws`` per state."""
    aug = Augmenter({**DEFAULTS, "ellipticity": 0.0})
    rng = np.random.default_rng(seed)
    n = int(bin_scan)
    cube = np.stack([np.stack([ex["cbed"] if dose is None else aug.apply(ex["cbed"], ex["probe"], rng, dose=dose)
                               for _ in range(draws * n * n)]) for ex in sims])
    cube = cube.reshape((len(sims) * n, draws * n) + cube.shape[2:])
    np.save(d / "cube.npy", cube.astype(np.float32))
    np.save(d / "probe.npy", sims[0]["probe"].astype(np.float32))


def kinematic_vectors(sims, draws) -> pd.DataFrame:
    rows = []
    for rx, ex in enumerate(sims):
        t = ex["truth"]
        q = np.vstack([[0.0, 0.0], t[["qx_invA", "qy_invA"]].to_numpy()])
        inten = np.r_[t["vg_abs"].max() * 10, t["vg_abs"].to_numpy()]
        for ry in range(draws):
            rows.append(pd.DataFrame({"rx": rx, "ry": ry, "qx": q[:, 0], "qy": q[:, 1], "intensity": inten}))
    return pd.concat(rows, ignore_index=True)


def position_errors(strain_dir: Path, states) -> pd.DataFrame:
    """|measured − true| per deformed-state position (rx, ry) and component; NaN where not fit."""
    if not strain_dir.exists():  # strain stopped (exit 2): not even the reference row could be fit
        return pd.DataFrame(columns=["rx", "ry", "fit", *COMPONENTS])
    t = pd.read_parquet(strain_dir / "strain.parquet")
    t = t[t["rx"] >= 1].reset_index(drop=True)  # the deformed states (row 0 is the reference)
    truth = pd.DataFrame([truth_row(states[int(r)]) for r in t["rx"]])
    out = pd.DataFrame({"rx": t["rx"], "ry": t["ry"], "fit": t["grain"] >= 0})
    for c in COMPONENTS:
        out[c] = np.abs(t[c].to_numpy() - truth[c].to_numpy())
    return out


def errors(strain_dir: Path, states) -> dict:
    e = position_errors(strain_dir, states)
    if e.empty:
        return {"fit_fraction": 0.0, **{c: float("nan") for c in COMPONENTS}}
    out = {"fit_fraction": float(e["fit"].mean())}
    for c in COMPONENTS:
        v = e[c].to_numpy(float)
        out[c] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out | noise_check(strain_dir)


def noise_check(strain_dir: Path) -> dict:
    """`strain`'s noise per position (its summary: neighbouring positions' differences) beside the spread it
    estimates: the standard deviation of each state's positions about their own mean, pooled over the rows
    (each row one homogeneous state)."""
    t = pd.read_parquet(strain_dir / "strain.parquet")
    estimate = json.loads((strain_dir / "summary.json").read_text())["noise_per_position"]
    out = {}
    for c in COMPONENTS:
        fit = t[np.isfinite(t[c])]
        dev = fit[c] - fit.groupby("rx")[c].transform("mean")
        dof = len(fit) - fit["rx"].nunique()
        out[f"noise_estimate_{c}"] = float("nan") if estimate[c] is None else estimate[c]
        out[f"noise_sd_{c}"] = float(np.sqrt((dev ** 2).sum() / dof)) if dof > 0 else float("nan")
        # the same spread robustly (1.4826 × the median absolute deviation from each state's median), as the estimate
        mad = (fit[c] - fit.groupby("rx")[c].transform("median")).abs()
        out[f"noise_robust_sd_{c}"] = 1.4826 * float(mad.median()) if len(mad) else float("nan")
    return out


def paired(net: pd.DataFrame, ref: pd.DataFrame) -> dict:
    """Network minus py4DSTEM, per component: mean of |error| differences over the positions both fit
    (the same patterns), with its standard error — a difference within ±2 SE is not one the run resolves."""
    m = net.merge(ref, on=["rx", "ry"], suffixes=("_net", "_ref"))
    out = {"n_both": 0}
    for c in COMPONENTS:
        d = (m[f"{c}_net"] - m[f"{c}_ref"]).to_numpy(float)
        d = d[np.isfinite(d)]
        out["n_both"] = max(out["n_both"], len(d))
        out[c] = float(d.mean()) if len(d) else float("nan")
        out[f"{c}_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return out


# --- the precision a pattern allows --------------------------------------------------------------------------
# Which strain precision a recorded pattern allows at its dose, whatever finds its disks: the Cramér–Rao bound of
# the lattice (origin and basis) measured on one pattern, from the Poisson Fisher information of its expected
# counts (the noise-free pattern as the detector augmentation records it before its shot noise: moved by the
# descan, on its background), every disk's content known, carried to e_xx, e_yy, e_xy and rotation: the least mean
# |error| any unbiased detector of one pattern can reach. Left out: the blur after counting (an invertible filter of
# the counts keeps their information) and bad pixels. With each disk's brightness and a linear ramp across it
# unknown too (``lattice_covariance(..., interiors_known=False)``) it is ~1.5 × higher, but both detectors here
# place the disks as flat probe disks, which that model does not bound: their rotation at 1e3 e⁻ measured below it
# (benchmarks/RESULTS.md, "Strain at 1e3 e⁻ against the precision its patterns allow").
BOUND_DISK_MARGIN_PX = 1.5  # a disk's pixels: within its radius and this of its centre (its blurred edge)


def truth_lattice_px(ex, geo) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(beam centre (2,), reflection centres (N, 2), their (h, k) (N, 2)), px of ``geo``'s detector, of the kinematic
    truth's zero layer, the beam first with (0, 0). The truth's own px are the simulated detector's, which
    ``simulate`` bins ``camera_binning`` times."""
    t = ex["truth"]
    t = t[t["l"] == 0]
    b = camera_binning(geo)
    q = t[["qx_invA", "qy_invA"]].to_numpy(float) / geo.dk_invA
    beam = ((t[["qx_px", "qy_px"]].to_numpy(float) - q * b).mean(axis=0) + 0.5) / b - 0.5
    return beam, np.vstack([beam, beam + q]), np.vstack([[0.0, 0.0], t[["h", "k"]].to_numpy(float)])


def lattice_covariance(counts: np.ndarray, moving: np.ndarray, centres: np.ndarray, hk: np.ndarray,
                       radius_px: float, interiors_known: bool) -> np.ndarray:
    """(6, 6) Cramér–Rao covariance of (origin x, y; g1 x, y; g2 x, y), px, for a pattern of expected ``counts``
    (Poisson means per pixel) whose disks — ``moving``, the part of ``counts`` that moves with the lattice, each
    disk the pixels nearest its centre within its radius + ``BOUND_DISK_MARGIN_PX`` — sit at ``centres`` =
    origin + h g1 + k g2. ``interiors_known`` False: each disk's brightness and a linear ramp across it are
    unknown parameters too, removed by their Schur complement."""
    ii, jj = np.indices(counts.shape, dtype=float)
    gx, gy = np.gradient(moving)
    d = np.hypot(ii[..., None] - centres[:, 0], jj[..., None] - centres[:, 1])
    nearest, inside = d.argmin(axis=-1), d.min(axis=-1) <= radius_px + BOUND_DISK_MARGIN_PX
    w = 1.0 / np.maximum(counts, 1e-12)
    info = np.zeros((6, 6))
    for m, (h, k) in enumerate(hk):
        sel = inside & (nearest == m)
        if not sel.any():
            continue
        a, b, wt = gx[sel], gy[sel], w[sel]
        J = -np.stack([a, b, a * h, b * h, a * k, b * k], axis=1)  # d counts / d lattice, this disk's pixels
        info += J.T @ (J * wt[:, None])
        if not interiors_known:
            c = moving[sel]
            N = np.stack([c, c * (ii[sel] - centres[m, 0]) / radius_px, c * (jj[sel] - centres[m, 1]) / radius_px], 1)
            JN, NN = J.T @ (N * wt[:, None]), N.T @ (N * wt[:, None])
            info -= JN @ np.linalg.pinv(NN) @ JN.T
    return np.linalg.pinv(info)


def strain_bound(ex, geo, dose: float, draws: int, seed: int, interiors_known: bool = True) -> dict:
    """Mean |error| (e_xx, e_yy, e_xy %, rotation °) that a position's strain cannot beat on ``ex``'s pattern at
    ``dose``, over ``draws`` draws of the detector augmentation (as ``write_scan``: ellipticity 0): each draw's
    Cramér–Rao standard deviations, the reference row's median (``draws`` positions, variance π/2 σ² / draws)
    added, as E|N(0, σ²)| = σ √(2/π)."""
    aug = Augmenter({**DEFAULTS, "ellipticity": 0.0})
    rng = np.random.default_rng(seed)
    beam, centres0, hk = truth_lattice_px(ex, geo)
    G = np.linalg.lstsq(hk[1:], centres0[1:] - beam, rcond=None)[0]
    radius = probe_radius_px(ex["probe"])
    theta = np.r_[beam, G.ravel()]

    def comps(t):  # as `fourdcrystal strain` reports them: %, °
        exx, eyy, exy, rot = measured_strain.strain_rotation(measured_strain.deformation(t[2:].reshape(2, 2), G))
        return np.array([100 * exx, 100 * eyy, 100 * exy, np.degrees(rot)])

    step = 1e-6  # the strain's derivatives by the lattice parameters (px), numerically
    jac = np.array([(comps(theta + step * e) - comps(theta)) / step for e in np.eye(6)]).T
    var = []
    for _ in range(draws):
        prm = aug.draw(rng, ex["cbed"].shape, dose)
        counts = mean_electrons(ex["cbed"], ex["probe"], prm)
        moving = distort(  # the part of them that moves with the lattice: the disks, not the background
            np.asarray(ex["cbed"], np.float64), tuple(prm.shift_px), prm.ellipticity, prm.ellipse_angle_rad) \
            * electrons_per_unit(ex["probe"], prm.dose_e)
        cov = lattice_covariance(counts, moving, centres0 + np.asarray(prm.shift_px), hk, radius, interiors_known)
        var.append(np.diag(jac @ cov @ jac.T))
    var = np.array(var)
    sd = np.sqrt(var + np.pi / 2 * var.mean(axis=0) / draws)
    return {c: float(np.sqrt(2 / np.pi) * v) for c, v in zip(COMPONENTS, sd.mean(axis=0))} | {"fit_fraction": 1.0}


def run_strain(src, out, draws):
    """`fourdcrystal strain` with the unstrained row as reference; exit 2 (no lattice better than chance
    in the reference row) leaves no output folder, which ``errors`` reports as nothing fit."""
    assert cli.main(["strain", str(src), "--out", str(out), "--reference", f"0:1,0:{draws}"]) in (0, 2)


def tilt_rows(geo, tmp: Path, quick: bool, model_args=()) -> list[dict]:
    tilts = TILTS[:2] if quick else TILTS
    draws = 2 if quick else 6
    sims = [zone_axis_cbed(srtio3(), (0, 0, 1), geo, thickness_A=40.0, energy_eV=ENERGY_EV,
                           semiangle_mrad=SEMIANGLE_MRAD, tilt=t) for t in tilts]
    true = np.array([[m * np.cos(np.radians(a)), m * np.sin(np.radians(a))] for m, a in tilts])
    rows = []
    for k, dose in enumerate((None,) if quick else (None, 1e5)):
        d = tmp / f"tilt-{k}"
        d.mkdir()
        write_scan(d, sims, draws, dose, seed=100 + k)
        assert cli.main(["predict", str(d / "cube.npy"), "--probe", str(d / "probe.npy"), "--out", str(d / "net"),
                         "--q-pixel-size", str(geo.dk_invA), "--quiet", *model_args]) == 0
        assert cli.main(["strain", str(d / "net"), "--out", str(d / "strain"), "--reference", f"0:1,0:{draws}"]) == 0
        t = pd.read_parquet(d / "strain" / "strain.parquet")
        err = np.hypot(*(t[["tilt_x_mrad", "tilt_y_mrad"]].to_numpy() - true[t["rx"].to_numpy()]).T)
        tilted = t["rx"].to_numpy() >= 1
        az = (t["tilt_azimuth_deg"] - np.array([a for _, a in tilts])[t["rx"]] + 180) % 360 - 180
        rows.append({"dose": "noiseless" if dose is None else f"{dose:.0e}",
                     "tilt_error_mrad": float(np.nanmean(err[tilted])),
                     "azimuth_error_deg": float(np.nanmean(np.abs(az[tilted]))),
                     "tilt_measured_mrad": float(np.nanmean(t.loc[tilted, "tilt_mrad"])),
                     "spurious_tilt_mrad": float(np.nanmean(t.loc[~tilted, "tilt_mrad"]))})
        print(rows[-1], flush=True)
    return rows


def gradient_rows(geo, structure, thickness_A, doses, tmp: Path, model_args=(), beam=None) -> list[dict]:
    """``--gradient``: per dose and detector the slope of measured on true e_xx along a row whose e_xx rises over
    ``GRADIENT_RANGE`` (``strain`` with each grain's median as reference), its scatter about the line, positions fit."""
    exx = np.linspace(*GRADIENT_RANGE, GRADIENT_POSITIONS)
    sims = simulate([("", e, 0, 0, 0) for e in exx], thickness_A, geo, structure, **(beam or {}))
    rows = []
    for k, dose in enumerate(doses):
        for draw in range(1 if dose is None else GRADIENT_DRAWS):
            d = tmp / f"gradient-{k}-{draw}"
            d.mkdir()
            write_scan(d, sims, 1, dose, seed=500 + 10 * k + draw)  # one column: position rx holds exx[rx]
            for method, extra in (("network", list(model_args)), ("py4DSTEM", ["--baseline", "classical"])):
                assert cli.main(["predict", str(d / "cube.npy"), "--probe", str(d / "probe.npy"), "--out",
                                 str(d / method), "--q-pixel-size", str(geo.dk_invA), "--quiet", *extra]) == 0
                try:
                    t = measured_strain.measure(pd.read_parquet(d / method / "bragg_vectors.parquet")).table
                except UserError:  # no lattice better than chance anywhere: nothing fit
                    t = pd.DataFrame({"rx": np.zeros(0, int), "exx_pct": np.zeros(0)})
                ok = t["exx_pct"].notna().to_numpy()
                x, y = 100 * exx[t["rx"].to_numpy()][ok], t["exx_pct"].to_numpy()[ok]
                line = np.polyfit(x, y, 1) if ok.sum() >= 3 else np.full(2, np.nan)
                rows.append({"method": method, "dose": "noiseless" if dose is None else f"{dose:.0e}", "draw": draw,
                             "slope": float(line[0]), "fit_fraction": float(ok.mean()),
                             "scatter_pct": float(np.std(y - np.polyval(line, x))) if ok.sum() >= 3 else np.nan})
                print(rows[-1], flush=True)
    return rows


def main():
    global MIN_BOX_A
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="2 states, one thickness, 2 doses, 2 draws (tests)")
    ap.add_argument("--json", default=None, help="write the rows here as JSON")
    ap.add_argument("--draws", type=int, default=DRAWS, help=f"scan positions per state (default {DRAWS})")
    ap.add_argument("--model", default=None, help="model file (default: the shipped pretrained model)")
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                    help="the network's arithmetic (default: `predict`'s own, auto)")
    ap.add_argument("--bin-scan", type=int, default=1, help="predict --bin-scan N on scans of N² patterns per position")
    ap.add_argument("--thickness-A", type=float, nargs="+", default=None, help="only these thicknesses (20, 60)")
    ap.add_argument("--dose", nargs="+", default=None, help="only these doses (noiseless, 1e5, 1e3)")
    ap.add_argument("--crystal", choices=("srtio3", "gan"), default="srtio3",
                    help="SrTiO3 [001] (default) or GaN [0001], a hexagonal lattice (tilts: SrTiO3 only)")
    ap.add_argument("--tilt", type=float, nargs=2, default=None, metavar=("MRAD", "AZIMUTH_DEG"),
                    help="every state off the zone axis by MRAD toward AZIMUTH_DEG (default: on the axis)")
    ap.add_argument("--detector", type=float, nargs=2, default=None, metavar=("PX", "DQ"),
                    help="another camera: PX pixels per edge at ≈ DQ Å⁻¹/px (default: the model's own grid)")
    ap.add_argument("--energy-kV", type=float, default=ENERGY_EV / 1e3, help=f"beam energy (default {ENERGY_EV / 1e3:g})")
    ap.add_argument("--semiangle-mrad", type=float, default=SEMIANGLE_MRAD,
                    help=f"probe convergence semi-angle (default {SEMIANGLE_MRAD:g})")
    ap.add_argument("--min-box-A", type=float, default=MIN_BOX_A,
                    help=f"least simulation box, Å (default {MIN_BOX_A:g}): a larger one is simulated finer and binned")
    ap.add_argument("--gradient", action="store_true",
                    help="instead of the table: the slope of measured on true e_xx along a row of rising strain")
    args = ap.parse_args()
    MIN_BOX_A = args.min_box_A  # read by camera_binning, for the simulation and its truth alike
    model_args = (["--model", args.model] if args.model else []) + ["--precision", args.precision]
    states = [STATES[0], STATES[-1]] if args.quick else STATES
    thicknesses = (40.0,) if args.quick else tuple(args.thickness_A or (20.0, 60.0))
    doses = (None, 1e3) if args.quick else (None, 1e5, 1e3)
    # --dose picks rows; each dose keeps its noise draw's seed (its index in the full list)
    wanted = set(doses) if not args.dose else {None if d == "noiseless" else float(d) for d in args.dose}
    bin_args = ["--bin-scan", str(args.bin_scan)] if args.bin_scan > 1 else []
    draws = 2 if args.quick else args.draws
    _, model_geo, _ = load_checkpoint(args.model or DEFAULT_MODEL)
    structure, geo = crystal_on(args.crystal, model_geo, args.detector)
    beam = dict(energy_eV=1e3 * args.energy_kV, semiangle_mrad=args.semiangle_mrad)
    if args.gradient:
        return gradient_main(args, geo, structure, model_args, beam)
    rows, pairs, t0 = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for thick in thicknesses:
            sims = simulate(states, thick, geo, structure, args.tilt, **beam)
            kin = tmp / f"kin-{thick:.0f}.parquet"
            kinematic_vectors(sims, draws).to_parquet(kin)
            run_strain(kin, tmp / f"kin-{thick:.0f}", draws)
            rows.append({"method": "kinematic", "thickness_A": thick, "dose": "noiseless",
                         **errors(tmp / f"kin-{thick:.0f}", states)})
            for k, dose in enumerate(doses):
                if dose not in wanted:
                    continue
                d = tmp / f"t{thick:.0f}-{k}"
                d.mkdir()
                write_scan(d, sims, draws, dose, seed=k, bin_scan=args.bin_scan)
                per_position = {}
                for method, extra in (("network", model_args), ("py4DSTEM", ["--baseline", "classical"])):
                    assert cli.main(["predict", str(d / "cube.npy"), "--probe", str(d / "probe.npy"), "--out",
                                     str(d / method), "--q-pixel-size", str(geo.dk_invA), "--quiet", *extra,
                                     *bin_args]) == 0
                    run_strain(d / method, d / f"{method}-strain", draws)
                    per_position[method] = position_errors(d / f"{method}-strain", states)
                    rows.append({"method": method, "thickness_A": thick,
                                 "dose": "noiseless" if dose is None else f"{dose:.0e}",
                                 **errors(d / f"{method}-strain", states)})
                    print(rows[-1], flush=True)
                pairs.append({"thickness_A": thick, "dose": rows[-1]["dose"],
                              **paired(per_position["network"], per_position["py4DSTEM"])})
                if dose is not None and args.bin_scan == 1:
                    rows.append({"method": "bound (Cramér–Rao)", "thickness_A": thick, "dose": f"{dose:.0e}",
                                 **strain_bound(sims[0], geo, dose, draws, 1000 + k)})
                    print(rows[-1], flush=True)
        other_beam = args.detector or beam != dict(energy_eV=ENERGY_EV, semiangle_mrad=SEMIANGLE_MRAD)
        tilt = [] if (args.bin_scan > 1 or args.dose or args.thickness_A or args.crystal != "srtio3" or args.tilt
                      or other_beam) else \
            tilt_rows(geo, tmp, args.quick, model_args)
    df = pd.DataFrame(rows)
    binned = f" (each the sum of {args.bin_scan}x{args.bin_scan} recorded patterns)" if args.bin_scan > 1 else ""
    tilted = f", every state tilted {args.tilt[0]:g} mrad toward {args.tilt[1]:g}°" if args.tilt else ""
    camera = f", {geo.detector_px} px at {geo.dk_invA:.4f} Å⁻¹/px" if args.detector else ""
    print(f"\n{args.crystal}: {len(states) - 1} deformed states x {draws} positions{binned}{tilted}, "
          f"{args.energy_kV:g} kV, {args.semiangle_mrad:g} mrad{camera}, "
          f"{time.perf_counter() - t0:.0f} s\n")
    print("| method | thickness (Å) | dose (e⁻/pattern) | positions fit | e_xx | e_yy | e_xy | rotation (°) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in df.itertuples():
        e = " | ".join("—" if not np.isfinite(v) else f"{v:.3f}" for v in (r.exx_pct, r.eyy_pct, r.exy_pct, r.rotation_deg))
        print(f"| {r.method} | {r.thickness_A:.0f} | {r.dose} | {100 * r.fit_fraction:.0f} % | {e} |")
    print("\nNoise per position: `strain`'s estimate from neighbouring positions (robust) / the standard deviation "
          "of each state's positions about their mean / the same robustly (1.4826 × median absolute deviation):\n")
    print("| method | thickness (Å) | dose (e⁻/pattern) | e_xx | e_yy | e_xy | rotation (°) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if r["method"] != "kinematic" and f"noise_sd_{COMPONENTS[0]}" in r:
            e = " | ".join(f"{r[f'noise_estimate_{c}']:.3f} / {r[f'noise_sd_{c}']:.3f} / {r[f'noise_robust_sd_{c}']:.3f}"
                           for c in COMPONENTS)
            print(f"| {r['method']} | {r['thickness_A']:.0f} | {r['dose']} | {e} |")
    print("\nNetwork minus py4DSTEM, mean |error| difference over the positions both fit ± 2 standard errors "
          "(negative: the network is closer to the truth):\n")
    print("| thickness (Å) | dose (e⁻/pattern) | positions | e_xx | e_yy | e_xy | rotation (°) |")
    print("|---|---|---|---|---|---|---|")
    for r in pairs:
        e = " | ".join("—" if not np.isfinite(r[c]) else f"{r[c]:+.3f} ± {2 * r[c + '_se']:.3f}" for c in COMPONENTS)
        print(f"| {r['thickness_A']:.0f} | {r['dose']} | {r['n_both']} | {e} |")
    if tilt:
        print("\n| dose (e⁻/pattern) | 10 mrad tilts: measured (mrad) | vector error (mrad) | azimuth error (°) | "
              "tilt found when untilted (mrad) |")
        print("|---|---|---|---|---|")
        for r in tilt:
            print(f"| {r['dose']} | {r['tilt_measured_mrad']:.2f} | {r['tilt_error_mrad']:.2f} | {r['azimuth_error_deg']:.1f} | "
                  f"{r['spurious_tilt_mrad']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"strain": rows, "paired": pairs, "tilt": tilt}, indent=2))
    return df


def gradient_main(args, geo, structure, model_args, beam) -> pd.DataFrame:
    """``--gradient``: the rows of ``gradient_rows`` at the first of ``--thickness-A`` (default 60 Å), printed as a table
    of mean slopes per dose and detector."""
    thickness = (args.thickness_A or [60.0])[0]
    doses = (None, 1e5, 1e4, 1e3) if not args.dose else [None if d == "noiseless" else float(d) for d in args.dose]
    with tempfile.TemporaryDirectory() as tmp:
        rows = gradient_rows(geo, structure, thickness, doses, Path(tmp), model_args, beam)
    df = pd.DataFrame(rows)
    print(f"\n{args.crystal} {thickness:g} Å: e_xx rising {100 * GRADIENT_RANGE[0]:g} → {100 * GRADIENT_RANGE[1]:g} % over "
          f"{GRADIENT_POSITIONS} positions, {args.energy_kV:g} kV, {args.semiangle_mrad:g} mrad\n")
    print("| method | dose (e⁻/pattern) | slope, each draw | mean slope | scatter about the line (%) | positions fit |")
    print("|---|---|---|---|---|---|")
    for (method, dose), g in df.groupby(["method", "dose"], sort=False):
        print(f"| {method} | {dose} | {' / '.join(f'{v:.2f}' for v in g['slope'])} | {g['slope'].mean():.2f} | "
              f"{g['scatter_pct'].mean():.2f} | {100 * g['fit_fraction'].mean():.0f} % |")
    if args.json:
        Path(args.json).write_text(json.dumps({"gradient": rows}, indent=2))
    return df


if __name__ == "__main__":
    main()
