"""The in-plane reciprocal lattice of every scan position: found automatically, indexed, least-squares fit.

Conventions: a 2-D reciprocal basis ``G`` is a (2, 2) array whose rows are g1, g2 in Å⁻¹ in the
detector frame of ``predict`` (x = q_x = axis 0 of a pattern, y = q_y = axis 1), and a vector q is
indexed by (h, k) when q ≈ q0 + h·g1 + k·g2 (q0: the fitted origin, the direct beam).

Why our own code instead of py4DSTEM's ``StrainMap``: py4DSTEM asks the user to pick the two basis
vectors by index from the Bragg vector map and fits one lattice for the whole scan; a workflow target
and a polycrystal need the lattice found without a person, and one reference per grain. The pieces
are small and vectorised here: a pair search over the observed vectors (``find_basis``), grouping of
the positions' bases into lattices that are the same up to a unimodular change of basis
(``group_lattices``), and a weighted least-squares fit of origin + basis per position
(``fit_position``), re-indexed once with its own fit so that local rotation and strain of a few
per cent still index the high orders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A pair of candidate basis vectors must enclose more than asin(0.25) ≈ 14°; narrower pairs are
# near-collinear, ill-conditioned and almost always a row of one lattice direction.
MIN_SIN_ANGLE = 0.25
# Candidates for basis vectors: the strongest and the shortest observed non-beam vectors.
N_CANDIDATES = 8
# The beam is the vector nearest the origin when it is this much shorter than the next one.
BEAM_FRACTION = 0.3
# A lattice explains a position only if chance could not: with n non-beam vectors of which k index,
# the binomial probability of k or more landing within the tolerance of a lattice point by chance
# (each does with p0 = π (tol·|g_min|)² / cell area) must be below this. 1e-6: fewer than 0.1 chance
# fits in a 256 × 256 scan. (On SrTiO3 at 1e3 e⁻ and 20 Å the best lattices index 3–8 % of the
# vectors, i.e. chance; at 1e5 e⁻ they index ~50 %, p ~ 1e-24.)
MAX_CHANCE_P = 1e-6
# Indexing tolerance, a fraction of the shorter basis vector's length (`fourdcrystal strain --tolerance`).
INDEX_TOLERANCE = 0.15
# Outlier clipping: for 2-D Gaussian position errors of width σ the residual distance is Rayleigh
# distributed with median 1.18 σ, so 2.5 × the median (2.9 σ) keeps 98.6 % of true detections.
CLIP_MEDIAN = 2.5


@dataclass
class Fit:
    """Least-squares lattice of one position: origin q0 (Å⁻¹), basis G (rows g1, g2, Å⁻¹), the (h, k)
    of each input vector (-1e9 where not indexed), how many non-beam vectors were indexed (and fitted), the
    RMS residual (Å⁻¹) of the indexed vectors, and how many non-beam vectors lie within the indexing
    tolerance of the fitted lattice before the outlier clip (``n_within`` ≥ ``n_indexed``: what the chance
    test counts, since it models landing within the tolerance; the clip only keeps outliers out of the fit)."""

    q0: np.ndarray
    G: np.ndarray
    hk: np.ndarray
    indexed: np.ndarray
    n_indexed: int
    residual_invA: float
    n_within: int


def non_beam(q: np.ndarray) -> np.ndarray:
    """Boolean mask of the vectors that are not the direct beam (the one near q = 0, if any)."""
    r = np.hypot(q[:, 0], q[:, 1])
    mask = np.ones(len(q), dtype=bool)
    if len(q) >= 2:
        order = np.argsort(r)
        if r[order[0]] < BEAM_FRACTION * r[order[1]]:
            mask[order[0]] = False
    elif len(q) == 1:
        mask[0] = False
    return mask


def reduce_basis(G: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction: the two shortest independent vectors of the lattice spanned by G's rows,
    ordered |g1| <= |g2| and right-handed (g1 × g2 > 0), so equal lattices give comparable bases."""
    a, b = G[0].astype(float).copy(), G[1].astype(float).copy()
    for _ in range(100):
        if a @ a > b @ b:
            a, b = b, a
        m = np.round((a @ b) / (a @ a))
        if m == 0:
            break
        b = b - m * a
    if a[0] * b[1] - a[1] * b[0] < 0:
        b = -b
    return np.vstack([a, b])


def find_basis(q: np.ndarray, intensity: np.ndarray, tol: float) -> tuple[np.ndarray | None, int]:
    """The basis (reduced) that indexes the most of one position's vectors, and how many it indexes.

    Every pair of candidate vectors (the ``N_CANDIDATES`` strongest and shortest non-beam vectors) is a
    trial basis; a vector is indexed when it lies within ``tol`` × |shorter basis vector| of an
    integer combination. Ties go to the smaller cell (the true lattice, not a sublattice).
    """
    keep = non_beam(q)
    q, intensity = q[keep], intensity[keep]
    if len(q) < 2:
        return None, 0
    r = np.hypot(q[:, 0], q[:, 1])
    cand = np.unique(np.concatenate([np.argsort(-intensity, kind="stable")[:N_CANDIDATES],
                                     np.argsort(r, kind="stable")[:N_CANDIDATES]]))
    i, j = np.triu_indices(len(cand), 1)
    A, B = q[cand[i]], q[cand[j]]
    cross = A[:, 0] * B[:, 1] - A[:, 1] * B[:, 0]
    ok = np.abs(cross) > MIN_SIN_ANGLE * r[cand[i]] * r[cand[j]]
    if not ok.any():
        return None, 0
    G = np.stack([A[ok], B[ok]], axis=1)  # (pairs, 2, 2)
    frac = np.einsum("nd,pde->pne", q, np.linalg.inv(G))  # (pairs, vectors, 2)
    resid = np.einsum("pne,ped->pnd", frac - np.round(frac), G)
    scale = np.minimum(np.hypot(*A[ok].T), np.hypot(*B[ok].T))
    n = (np.hypot(resid[..., 0], resid[..., 1]) < tol * scale[:, None]).sum(axis=1)
    area = np.abs(cross[ok])
    best = np.lexsort((area, -n))[0]
    return reduce_basis(G[best]), int(n[best])


def fit_position(q: np.ndarray, weights: np.ndarray, G_ref: np.ndarray, tol: float, min_indexed: int,
                 passes: int = 2, clip: float | None = CLIP_MEDIAN) -> Fit | None:
    """Index ``q`` with ``G_ref`` and fit origin + basis by weighted least squares; then re-index with the
    fit and fit again (``passes`` times in all); then, with ``clip``, drop indexed vectors whose
    residual exceeds ``clip`` × the median residual and fit once more (a false detection that happens
    to fall inside the indexing tolerance must not pull the lattice). None if fewer than
    ``min_indexed`` non-beam vectors index, or the indexed (h, k) do not span two dimensions.
    One position of ``fit_positions``."""
    return fit_positions(*padded([q], [weights]), G_ref, tol, min_indexed, passes, clip)[0]


def padded(qs: list[np.ndarray], weights: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions' vectors (each (n, 2)) and weights as (Q (P, V, 2), W (P, V), valid (P, V)), zeros where padded."""
    n = np.array([len(q) for q in qs])
    valid = np.arange(max(int(n.max(initial=0)), 1))[None, :] < n[:, None]
    Q, W = np.zeros((*valid.shape, 2)), np.zeros(valid.shape)
    Q[valid], W[valid] = np.concatenate(qs).reshape(-1, 2), np.concatenate(weights)
    return Q, W, valid


def _non_beam_padded(Q: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``non_beam`` of every position of a padded batch (False where padded)."""
    r = np.where(valid, np.hypot(Q[..., 0], Q[..., 1]), np.inf)
    order = np.argsort(r, axis=1, kind="stable")
    rows = np.arange(len(r))
    n = valid.sum(axis=1)
    r0 = r[rows, order[:, 0]]
    r1 = r[rows, order[:, 1]] if r.shape[1] > 1 else np.full(len(r), np.inf)
    beam_at = (n == 1) | ((n >= 2) & (r0 < BEAM_FRACTION * r1))
    out = valid.copy()
    out[rows[beam_at], order[beam_at, 0]] = False
    return out


def fit_positions(Q: np.ndarray, W: np.ndarray, valid: np.ndarray, G_ref: np.ndarray, tol: float,
                  min_indexed: int, passes: int = 2, clip: float | None = CLIP_MEDIAN) -> list[Fit | None]:
    """``fit_position`` of every position of a padded batch at once (``padded``: Q (P, V, 2), weights W (P, V),
    positive, valid (P, V)): the same passes, each position stopping where ``fit_position`` returns. The least squares
    by a QR factorisation per position (a loop of ``np.linalg.lstsq`` calls cost 0.5 ms per position; the fits
    agree to ~1e-15). The rank test as exact integer arithmetic: the indexed (h, k) span two dimensions where
    their scatter matrix's determinant is nonzero."""
    P = len(Q)
    G_ref = np.asarray(G_ref, dtype=float)
    scale = float(np.min(np.hypot(G_ref[:, 0], G_ref[:, 1])))
    off_beam = _non_beam_padded(Q, valid)
    q0, G = np.zeros((P, 2)), np.broadcast_to(G_ref, (P, 2, 2)).copy()
    live, has_fit = np.ones(P, bool), np.zeros(P, bool)
    last = {"q0": np.zeros((P, 2)), "G": G.copy(), "hk": np.zeros(Q.shape), "on": np.zeros(valid.shape, bool),
            "n": np.zeros(P, int), "res": np.zeros(P), "within": np.zeros(P, int)}
    for k in range(passes + (clip is not None)):
        frac = np.einsum("pvi,pij->pvj", Q - q0[:, None], np.linalg.inv(G))
        hk = np.round(frac)
        dist = np.hypot(*np.moveaxis(np.einsum("pvi,pij->pvj", frac - hk, G), -1, 0))
        keep = valid
        n_within = ((dist < tol * scale) & valid & off_beam).sum(axis=1)
        if k == passes:  # the clipping pass: the last fit's residuals decide
            # floor: 1e-4 of the basis length, so exact (round-off) residuals clip nothing
            keep = valid & (dist <= clip * np.maximum(median_where(dist, last["on"]), 1e-4 * scale)[:, None])
        on = (dist < tol * scale) & keep
        n_on = (on & off_beam).sum(axis=1)
        live &= (n_on >= min_indexed) & _spans_plane(hk, on)
        if not live.any():
            break
        X = np.concatenate([np.ones((*on.shape, 1)), hk], axis=2) * on[..., None]
        sw = np.sqrt(np.where(on, W, 0.0))[..., None]
        qr_q, qr_r = np.linalg.qr((X * sw)[live])
        beta = np.linalg.solve(qr_r, np.swapaxes(qr_q, 1, 2) @ (Q[live] * sw[live]))  # (L, 3, 2)
        res = (Q[live] - X[live] @ beta) * on[live][..., None]
        q0[live], G[live] = beta[:, 0], beta[:, 1:]
        for key, value in (("q0", beta[:, 0]), ("G", beta[:, 1:]), ("hk", hk[live]), ("on", on[live]),
                           ("n", n_on[live]), ("res", np.sqrt((res ** 2).sum(axis=(1, 2)) / on[live].sum(axis=1))),
                           ("within", n_within[live])):
            last[key][live] = value
        has_fit |= live
    n = valid.sum(axis=1)
    return [Fit(last["q0"][i].copy(), last["G"][i].copy(),
                np.where(last["on"][i, :n[i], None], last["hk"][i, :n[i]], -1e9), last["on"][i, :n[i]].copy(),
                int(last["n"][i]), float(last["res"][i]), int(last["within"][i])) if has_fit[i] else None
            for i in range(P)]


def median_where(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (P, V), ``np.median`` of its entries where ``mask``; 0 where none (one sort:
    ``np.nanmedian`` took 3× as long on `predict`'s hot path, ``inference.refine``)."""
    m = mask.sum(axis=1)
    ranked = np.sort(np.where(mask, x, np.inf), axis=1)
    rows, lo, hi = np.arange(len(x)), np.maximum(m - 1, 0) // 2, m // 2  # the same entry where m is odd
    return np.where(m > 0, 0.5 * (ranked[rows, lo] + ranked[rows, hi]), 0.0)


def _spans_plane(hk: np.ndarray, on: np.ndarray) -> np.ndarray:
    """Per position, whether the (h, k) of its ``on`` vectors are not all on one line (with the constant, the
    design [1, h, k] of rank 3): the scatter matrix of whole numbers, its determinant exact in float64."""
    m = on.sum(axis=1)
    # about the first indexed (h, k), not the mean: whole numbers throughout
    first = hk[np.arange(len(hk)), np.argmax(on, axis=1)]
    d = (hk - first[:, None]) * on[..., None]
    sxx, syy, sxy = (d[..., 0] ** 2).sum(1), (d[..., 1] ** 2).sum(1), (d[..., 0] * d[..., 1]).sum(1)
    return (m >= 3) & (sxx * syy - sxy ** 2 > 0.5)


def chance_p(n_indexed: int, n_vectors: int, G: np.ndarray, tol: float) -> float:
    """Probability that ``n_indexed`` or more of ``n_vectors`` random vectors index on lattice G."""
    return float(_chance_many([n_indexed], [n_vectors], np.asarray(G, dtype=float)[None], tol)[0])


def significant(n_indexed: int, n_vectors: int, G: np.ndarray, tol: float) -> bool:
    return chance_p(n_indexed, n_vectors, G, tol) < MAX_CHANCE_P


def significant_many(n_indexed, n_vectors, G: np.ndarray, tol: float) -> np.ndarray:
    """``significant`` of many fits at once (G (N, 2, 2))."""
    return _chance_many(n_indexed, n_vectors, G, tol) < MAX_CHANCE_P


def _chance_many(n_indexed, n_vectors, G: np.ndarray, tol: float) -> np.ndarray:
    """``chance_p`` per fit: a random vector lands within tol × |g_min| of a lattice point with probability
    p0 = π (tol·|g_min|)² / cell area."""
    G = np.asarray(G, dtype=float).reshape(-1, 2, 2)
    scale = np.min(np.hypot(G[..., 0], G[..., 1]), axis=1)
    return binomial_tail(n_indexed, n_vectors, np.minimum(1.0, np.pi * (tol * scale) ** 2 / np.abs(np.linalg.det(G))))


def fewest_beyond_chance(tol: float = INDEX_TOLERANCE) -> int:
    """The fewest vectors that, all indexed, show a lattice beyond chance (``significant``) on any lattice: on the
    hexagonal one, whose cell is the smallest for its shortest vector (p0 = 0.082 at tol 0.15, so six: 3e-7; five:
    4e-6). A position with fewer vectors beside the beam cannot be fit however they lie."""
    hexagonal = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    n = 1
    while not significant(n, n, hexagonal, tol):
        n += 1
    return n


def binomial_tail(k, n, p) -> np.ndarray:
    """P(X ≥ k) for X ~ Binomial(n, p), elementwise (k, n integer arrays; p in [0, 1], clipped), by summing the
    terms in logs. numpy only: importing scipy.stats took 1.3–1.9 s on this project's 2-core VM, more than
    `fourdcrystal strain` then spent fitting 2,300 positions, and would double `predict`'s start-up (which
    tests its lattices with this too, ``inference.refine``)."""
    k, n = np.atleast_1d(np.asarray(k)), np.atleast_1d(np.asarray(n))
    p = np.clip(np.atleast_1d(np.asarray(p, np.float64)), 1e-12, 1 - 1e-12)
    j = np.arange(int(n.max(initial=0)) + 1)
    logfact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, len(j))))])
    nn = n[:, None]
    logpmf = (logfact[nn] - logfact[j] - logfact[np.clip(nn - j, 0, None)]
              + j * np.log(p)[:, None] + (nn - j) * np.log1p(-p)[:, None])
    return np.where((j >= k[:, None]) & (j <= nn), np.exp(logpmf), 0.0).sum(axis=1)


def change_of_basis(G: np.ndarray, G_ref: np.ndarray, tol: float) -> np.ndarray | None:
    """The integer unimodular N with G ≈ N @ G_ref (same lattice, other basis), or None when G is not
    the lattice of G_ref within ``tol`` (max deviation of N from integers)."""
    N = G @ np.linalg.inv(G_ref)
    Ni = np.round(N)
    if np.max(np.abs(N - Ni)) > tol or abs(round(np.linalg.det(Ni))) != 1:
        return None
    return Ni


def merge_sublattices(groups: list[tuple[np.ndarray, np.ndarray]], tol: float,
                      max_index: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """``group_lattices``' groups with each group whose lattice is a sublattice (index 2 … ``max_index``) of another
    group's merged into that one, most populous first: positions that show only a crystal's stronger second orders
    index a sublattice of its lattice, and are that crystal (GaN [0001] at 60 Å and 1e3 e⁻: 9 of 15 reference
    positions found the {11-20} sublattice, 6 the {10-10} lattice; benchmarks/RESULTS.md, "Strain's reference where
    a crystal's first orders are faint"). Only into a group of at least two positions and half as many as the
    merged one's: a position's chance lattice of noise vectors holds a real lattice as a sublattice as well (py4DSTEM's
    vectors of SrTiO3 at 2 nm and 1e3 e⁻: one position's 0.19 / 0.40 Å⁻¹ cell took the 4 positions of {110})."""
    groups = [(G, np.asarray(m)) for G, m in groups]
    merged = True
    while merged:
        merged = False
        for i, (Gi, mi) in enumerate(groups):
            for j, (Gj, mj) in enumerate(groups):
                N = Gi @ np.linalg.inv(Gj)  # Gi = N Gj: an integer N of |det| k makes Gi's a sublattice of Gj's
                k = abs(round(float(np.linalg.det(np.round(N)))))
                if (i != j and np.max(np.abs(N - np.round(N))) <= tol and 2 <= k <= max_index
                        and len(mj) >= max(2, len(mi) / 2)):
                    groups[j] = (Gj, np.concatenate([mj, mi]))
                    del groups[i]
                    merged = True
                    break
            if merged:
                break
    return sorted(groups, key=lambda g: -len(g[1]))


def group_lattices(bases: list[np.ndarray], tol: float, min_members: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group bases that describe the same lattice; most populous group first.

    Returns [(reference basis, member indices)], the reference being the element-wise median of the
    members' bases, each first expressed in the basis of the group's seed (the member equivalent to
    the most others). Groups with fewer than ``min_members`` members are dropped (noise).
    """
    n = len(bases)
    if n == 0:
        return []
    Gs = np.stack(bases)
    N = np.einsum("pij,qjk->pqik", Gs, np.linalg.inv(Gs))  # N[p, q] maps basis q onto p
    Ni = np.round(N)
    det = np.rint(Ni[..., 0, 0] * Ni[..., 1, 1] - Ni[..., 0, 1] * Ni[..., 1, 0])
    same = (np.max(np.abs(N - Ni), axis=(2, 3)) <= tol) & (np.abs(det) == 1)
    same &= same.T
    free = np.ones(n, dtype=bool)
    groups = []
    while free.any():
        counts = (same & free[None, :]).sum(axis=1) * free
        seed = int(np.argmax(counts))
        members = np.flatnonzero(same[seed] & free)
        free[members] = False
        if len(members) < min_members:
            continue
        aligned = np.stack([np.linalg.inv(Ni[m, seed]) @ Gs[m] for m in members])
        groups.append((np.median(aligned, axis=0), members))
    return groups
