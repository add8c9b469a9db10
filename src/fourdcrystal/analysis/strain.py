"""Strain and in-plane rotation of every scan position relative to a reference lattice.

Axes: by default the detector frame of ``predict`` (x = q_x, y = q_y; see ``lattice``); ``Settings.x_axis_deg``
turns them (x at that angle from +q_x toward +q_y) and ``Settings.flip_y`` mirrors y (90° clockwise of x), so
that e_xx can lie along a direction of the specimen — the scan's fast axis as it falls on the detector, a
device's channel — whatever the camera's rotation and handedness relative to the scan (py4DSTEM's
``coordinate_rotation`` and QR flip). The vectors are expressed in those axes first (``axes``), so the lattice,
strain, rotation and tilt all are; a mirror reverses the sense of rotation.

Definitions: with reciprocal bases
G (measured) and G_ref (reference) as rows, the real-space deformation gradient that takes the
reference crystal into the measured one is F = G⁻¹ G_ref (real lattice rows transform as A = A_ref Fᵀ,
reciprocal rows as G = G_ref F⁻¹). F is split by the polar decomposition F = R U: the strain is the
Biot strain U − I (e_xx, e_yy and the tensor shear e_xy, not the engineering γ = 2 e_xy) and the
rotation the angle of R, positive from +x towards +y. The decomposition is exact, so a rigid
rotation of 1° shows no strain (py4DSTEM's infinitesimal formulas would report ≈ θ²/2 = 1.5e-4 of
spurious strain). For small strains both agree with py4DSTEM's ``get_strain_from_reference_g1g2``.

Reference: the median lattice of a user-given region of scan positions, or, without one, the median
lattice of each grain — the positions whose lattices are the same up to a change of basis, a region of the
scan (``_grains_only``). A
polycrystal therefore gets strain relative to each grain's own median lattice and rotation relative
to the grain's median orientation, which is what a microscopist compares within a grain; strain
between different grains (different crystals or zone axes) is not defined and is not reported.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fourdcrystal.analysis import lattice, orientation
from fourdcrystal.errors import UserError
from fourdcrystal.scan_region import check_region

REQUIRED_COLUMNS = ("rx", "ry", "qx", "qy")
# Lattice finding runs on at most this many positions (evenly spread); every position is then fit.
MAX_SEARCH_POSITIONS = 400
# Positions fitted at once (``lattice.fit_positions`` pads them to the most vectors of any): tens of MB for
# 200 vectors each, whatever the scan's size.
FIT_CHUNK = 4096


@dataclass
class Settings:
    """The knobs of ``measure`` (CLI flags of ``fourdcrystal strain``)."""

    tolerance: float = lattice.INDEX_TOLERANCE  # indexing tolerance, fraction of the shorter basis vector's length
    min_indexed: int = 3  # non-beam vectors that must index at a position for a fit
    weights: str = "intensity"  # "intensity" (weights ∝ intensity, ∝ 1/σ² of a counted peak) or "none"
    reference: tuple[slice, slice] | None = None  # scan region (rx, ry slices) of the reference lattice
    min_grain_fraction: float = 0.02  # smaller groups of lattices are not grains
    require_lattice: bool = True  # False: no lattice anywhere gives an all-NaN result, not an error
    x_axis_deg: float = 0.0  # the axes' x, degrees from +q_x toward +q_y (``axes``)
    flip_y: bool = False  # the axes' y 90° clockwise of x (a camera mirrored relative to the scan)

    def to_dict(self) -> dict:
        ref = None if self.reference is None else [[s.start, s.stop] for s in self.reference]
        return {"tolerance": self.tolerance, "min_indexed": self.min_indexed, "weights": self.weights,
                "reference": ref, "min_grain_fraction": self.min_grain_fraction, "x_axis_deg": self.x_axis_deg,
                "flip_y": self.flip_y}

    def axes_text(self) -> str:
        """The axes in words, for the page and the summary."""
        if self.x_axis_deg == 0 and not self.flip_y:
            return "x = +q_x, y = +q_y (the detector's axes)"
        y = "y 90° from x toward −q_y (mirrored)" if self.flip_y else "y 90° from x toward +q_y"
        return f"x at {self.x_axis_deg:g}° from +q_x toward +q_y, {y}"


def axes(settings: Settings) -> np.ndarray:
    """Rows: the unit x and y axes of ``settings`` in detector (q_x, q_y) components; a vector's components in
    those axes are ``q @ axes(settings).T``."""
    t = np.radians(settings.x_axis_deg)
    x = np.array([np.cos(t), np.sin(t)])
    y = np.array([-x[1], x[0]])
    return np.stack([x, -y if settings.flip_y else y])


@dataclass
class Result:
    table: pd.DataFrame  # one row per scan position (see ``COLUMNS``)
    scan_shape: tuple[int, int]
    grains: list[dict] = field(default_factory=list)  # per grain: reference basis, positions, indexed
    settings: dict = field(default_factory=dict)


COLUMNS = ["rx", "ry", "grain", "n_vectors", "n_indexed", "indexed_fraction", "residual_invA",
           "g1x_invA", "g1y_invA", "g2x_invA", "g2y_invA", "exx_pct", "eyy_pct", "exy_pct", "rotation_deg",
           "tilt_x_mrad", "tilt_y_mrad", "tilt_mrad", "tilt_azimuth_deg"]


def deformation(G: np.ndarray, G_ref: np.ndarray) -> np.ndarray:
    """Real-space deformation gradient F (2×2) taking the reference lattice into the measured one."""
    return np.linalg.solve(G, G_ref)


def strain_rotation(F: np.ndarray) -> tuple[float, float, float, float]:
    """(e_xx, e_yy, e_xy, rotation_rad) of F = R U: Biot strain U − I and the angle of R."""
    # 2-D polar decomposition in closed form: R is the rotation nearest to F
    ang = np.arctan2(F[1, 0] - F[0, 1], F[0, 0] + F[1, 1])
    c, s = np.cos(ang), np.sin(ang)
    U = np.array([[c, s], [-s, c]]) @ F
    U = 0.5 * (U + U.T)
    return float(U[0, 0] - 1), float(U[1, 1] - 1), float(U[0, 1]), float(ang)


def check_vectors(df: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"the vector table lacks column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})",
                        "pass the bragg_vectors.parquet written by `fourdcrystal predict` (rx, ry, qx, qy in Å⁻¹, ...)")
    if df.empty:
        raise UserError("the vector table holds no Bragg vectors", "run `fourdcrystal predict` on a scan with diffraction")


def _positions(df: pd.DataFrame, frame: np.ndarray):
    """Per position: (rx, ry, q (n, 2) in the axes ``frame`` (``axes``), weight, qz), in scan order. The weight
    (``--weights intensity``) is the network's V_g at each vector (the ``vg`` column), where none the table's
    intensity (py4DSTEM's correlation): the intensity `predict` measures on each disk ranks the disks like |F|
    better, but as the weight of the fit and of the q_z tilt it did worse on bench_strain (GaN 60 Å at 1e3 e_yy
    1.016 → 1.149 %, positions fit 86 %; the 10 mrad tilt at 1e5 0.96 → 1.27 mrad off; benchmarks/RESULTS.md,
    "Intensities measured on the disks")."""
    df = df.sort_values(["rx", "ry"], kind="stable")
    rx, ry = df["rx"].to_numpy(int), df["ry"].to_numpy(int)
    q = df[["qx", "qy"]].to_numpy(float) @ frame.T
    inten = df["intensity"].to_numpy(float) if "intensity" in df else np.ones(len(df))
    vg = df["vg"].to_numpy(float) if "vg" in df else np.full(len(df), np.nan)
    weight = np.where(np.isfinite(vg), vg, inten)
    qz = df["qz"].to_numpy(float) if "qz" in df else np.full(len(df), np.nan)
    key = rx.astype(np.int64) * (int(ry.max()) + 1) + ry
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    ends = np.r_[starts[1:], len(df)]
    return [(rx[s], ry[s], q[s:e], weight[s:e], qz[s:e]) for s, e in zip(starts, ends)]


def _find_references(positions, settings: Settings) -> list[tuple[np.ndarray, np.ndarray]]:
    """Reference bases: of the reference region, or one per grain; most populous first."""
    pool = [p for p in positions if _inside(settings.reference, p[0], p[1])]
    step = max(1, len(pool) // MAX_SEARCH_POSITIONS)
    bases = []
    for _, _, q, inten, _ in pool[::step]:
        G, n = lattice.find_basis(q, np.nan_to_num(inten), settings.tolerance)
        if (G is not None and n >= settings.min_indexed
                and lattice.significant(n, int(lattice.non_beam(q).sum()), G, settings.tolerance)):
            bases.append(G)
    min_members = max(1, int(np.ceil(settings.min_grain_fraction * len(pool[::step]))))
    groups = lattice.group_lattices(bases, settings.tolerance, min_members)
    if settings.reference is not None:  # one crystal: a group of its sublattice is it, where its first orders are faint
        # (not between grains: the demo's mosaic of test crystals lost 5 % of py4DSTEM's fit positions, 4 → 3 grains)
        groups = lattice.merge_sublattices(groups, settings.tolerance)
    if not groups and not (settings.require_lattice or settings.reference is not None):
        return []
    if not groups:
        where = "in the reference region" if settings.reference is not None else "at any scan position"
        per_position = float(np.median([lattice.non_beam(p[2]).sum() for p in pool])) if pool else 0.0
        # a low-dose scan's patterns show a few disks each, too few for a lattice (bench_strain's 2 nm SrTiO3 at 1e3
        # e⁻: a median of 0.5 beside the beam in its reference row); summed 2 × 2 they show more (11 % of its
        # positions fit; benchmarks/RESULTS.md, "Strain's reference where a crystal's first orders are faint")
        raise UserError(f"no lattice indexes {settings.min_indexed} or more vectors, better than chance, {where} "
                        f"(median {per_position:g} vectors per position beside the beam)",
                        "a low-dose scan: sum neighbouring positions (`predict --bin-scan 2`, or 3); else check the "
                        "vectors (mostly noise per pattern?) or lower --min-indexed")
    return groups[:1] if settings.reference is not None else groups


def _inside(region, rx: int, ry: int) -> bool:
    """Whether scan position (rx, ry) lies in ``region`` (rx slice, ry slice); everywhere when None."""
    return region is None or (region[0].start <= rx < region[0].stop and region[1].start <= ry < region[1].stop)


def _weights(inten: np.ndarray, mode: str) -> np.ndarray:
    if mode == "none":
        return np.ones(len(inten))
    return np.clip(np.nan_to_num(inten), 1e-12, None)


def _fit_all(positions, refs, settings: Settings) -> list:
    """Per position: (best Fit or None, its grain index or -1, weights); best = most vectors within the indexing
    tolerance, then the smaller residual; a fit whose count chance could give is none (``lattice.significant_many``).
    Every position is fitted to each reference at once (``lattice.fit_positions``)."""
    weights = [_weights(p[3], settings.weights) for p in positions]
    n_nb = np.array([int(lattice.non_beam(p[2]).sum()) for p in positions])
    best, grain = [None] * len(positions), np.full(len(positions), -1)
    for g, G_ref in enumerate(refs):
        fits = [f for s in range(0, len(positions), FIT_CHUNK) for f in lattice.fit_positions(
            *lattice.padded([p[2] for p in positions[s:s + FIT_CHUNK]], weights[s:s + FIT_CHUNK]), G_ref,
            settings.tolerance, settings.min_indexed)]
        i = np.array([k for k, f in enumerate(fits) if f is not None], dtype=int)
        if len(i):  # no better than chance: this lattice does not explain the position
            ok = lattice.significant_many([fits[k].n_within for k in i], n_nb[i], np.stack([fits[k].G for k in i]),
                                          settings.tolerance)
            for k in i[~ok]:
                fits[k] = None
        for k, fit in enumerate(fits):
            if fit is not None and (best[k] is None or (fit.n_within, -fit.residual_invA) >
                                    (best[k].n_within, -best[k].residual_invA)):
                best[k], grain[k] = fit, g
    return [(f, int(gr), w) for f, gr, w in zip(best, grain, weights)]


def _grains_only(positions, refs, fits, scan_shape, settings: Settings) -> tuple[list, list]:
    """Without a reference region: the lattices that are grains, and every position fit again to them.

    A grain is a region: a lattice must win ``min_grain_fraction`` of the positions, and as many of them must lie in
    its own region — a scan neighbour (of the 8 about each) won by the same lattice, or none won by another (where
    that fraction is one position, none need). A lattice won at positions scattered amid another's — another
    basis of a crystal whose disks overlap, fitted where a pattern shows a subset of its reflections — is no grain:
    on the demo's two-grain mosaic three such lattices won 3–5 positions each, none beside another, while a grain
    of a simulated polycrystal (4–150 grains on 64 × 64 positions) had ≥ 94 % of its positions beside its own, and
    a low-dose crystal's few fit positions amid unfit ones keep their grain (benchmarks/RESULTS.md, "Grains as
    regions"). The most populous lattice stays however it lies (two bases of one crystal won at alternate positions
    leave one). A dropped lattice's positions are fitted to the others (or to none), until every lattice left
    holds."""
    min_members = max(1, int(np.ceil(settings.min_grain_fraction * len(positions))))
    for _ in range(len(refs)):
        if not refs:
            break
        won = np.full(scan_shape, -1)
        for p, (_, g, _) in zip(positions, fits):
            won[p[0], p[1]] = g
        n = np.bincount(won[won >= 0], minlength=len(refs))
        # where one position is grain enough (scans under 1 / min_grain_fraction positions) none needs a neighbour
        keep = (n >= min_members) & ((_in_their_own_region(won, len(refs)) >= min_members) | (min_members == 1))
        keep[np.argmax(n)] |= n.max(initial=0) >= min_members
        if keep.all():
            break
        refs = [G for G, k in zip(refs, keep) if k]
        fits = _fit_all(positions, refs, settings)
    return refs, fits


def _in_their_own_region(won: np.ndarray, n_refs: int) -> np.ndarray:
    """Per lattice, how many of the positions it won (``won``: the scan's lattice index per position, -1 none) have
    one of their 8 scan neighbours won by it too, or none won by another lattice."""
    padded_won = np.pad(won, 1, constant_values=-1)
    rows, cols = won.shape
    own, other = np.zeros(won.shape, bool), np.zeros(won.shape, bool)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di or dj:
                near = padded_won[1 + di:1 + di + rows, 1 + dj:1 + dj + cols]
                own |= near == won
                other |= (near >= 0) & (near != won)
    return np.bincount(won[(won >= 0) & (own | ~other)], minlength=n_refs)


def measure(df: pd.DataFrame, settings: Settings | None = None) -> Result:
    """Find the lattice(s), fit every position, and return strain/rotation/tilt per position."""
    settings = settings or Settings()
    check_vectors(df)
    scan_shape = (int(df["rx"].max()) + 1, int(df["ry"].max()) + 1)
    if settings.reference is not None:
        check_region(settings.reference, scan_shape, "--reference")
    positions = _positions(df, axes(settings))
    refs = [G for G, _ in _find_references(positions, settings)]
    fits = _fit_all(positions, refs, settings)
    if settings.reference is None:
        refs, fits = _grains_only(positions, refs, fits, scan_shape, settings)
    # the final reference: the median of the fitted lattices (all in the basis choice of their grain's
    # search reference, since they were indexed with it) of the region, or of each grain
    in_ref = [_inside(settings.reference, p[0], p[1]) for p in positions]
    final = []
    for g in range(len(refs)):
        Gs = [f.G for (f, gr, _), r in zip(fits, in_ref) if gr == g and r]
        final.append(np.median(np.stack(Gs), axis=0) if Gs else refs[g])
    if settings.reference is not None and not any(gr >= 0 and r for (_, gr, _), r in zip(fits, in_ref)):
        raise UserError("no position of the reference region could be fit",
                        "choose a region of crystal with several Bragg disks per pattern")
    rows = [_row(p[0], p[1], p[2], p[4], w, fit, grain, final) for p, (fit, grain, w) in zip(positions, fits)]
    table = pd.DataFrame(rows, columns=COLUMNS).astype({c: "int64" for c in COLUMNS[:5]})
    grains = [_grain_info(g, final[g], table) for g in range(len(final))]
    return Result(table, scan_shape, grains, settings.to_dict())


def _row(rx, ry, q, qz, w, fit, grain, refs) -> list:
    n_nb = int(lattice.non_beam(q).sum())
    if fit is None:
        return [rx, ry, -1, len(q), 0, 0.0] + [np.nan] * (len(COLUMNS) - 6)
    exx, eyy, exy, rot = strain_rotation(deformation(fit.G, refs[grain]))
    tilt = orientation.tilt_from_qz(q[fit.indexed] - fit.q0, qz[fit.indexed], w[fit.indexed])
    return [rx, ry, grain, len(q), fit.n_indexed, fit.n_indexed / max(n_nb, 1), fit.residual_invA,
            *fit.G.ravel(), 100 * exx, 100 * eyy, 100 * exy, np.degrees(rot), *tilt]


def _grain_info(g: int, G_ref: np.ndarray, table: pd.DataFrame) -> dict:
    sel = table[table["grain"] == g]
    return {"grain": g, "g1_invA": G_ref[0].tolist(), "g2_invA": G_ref[1].tolist(),
            "g1_length_invA": float(np.hypot(*G_ref[0])), "g2_length_invA": float(np.hypot(*G_ref[1])),
            "angle_deg": float(np.degrees(np.arccos(np.clip(G_ref[0] @ G_ref[1] / np.hypot(*G_ref[0])
                                                            / np.hypot(*G_ref[1]), -1, 1)))),
            "n_positions": int(len(sel)),
            "indexed_fraction_median": float(sel["indexed_fraction"].median()) if len(sel) else 0.0}
