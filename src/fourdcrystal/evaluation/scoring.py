"""Scoring of Bragg vectors against a truth list: one-to-one matching, per-pattern counts and pairs,
pooled metrics (precision, recall, F1 at 1 and 2 px, position RMS and radial bias, intensity rank
correlation, q_z).

Truth has a brightness floor (``simulation.labels``: a reflection is truth when the noise-free pattern
shows it at ≥ 1e-3 of the direct beam), so that every truth reflection is recoverable (the oracle).
A pattern also holds real zero-layer reflections fainter than that floor; a vector on one of them is
not a hallucination. Where those are given (``faint``), ``precision_real`` counts the vectors that
match no truth but lie on such a reflection (one-to-one, same radius) as correct, and ``f1_real``
leaves them out of the count (neither found nor false: the truth does not require a reflection below
its floor, and a detector that reports one has not hallucinated). ``precision``, recall and ``f1``
stay strict (a vector on a faint reflection is false there)."""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment


def match(pred_xy: np.ndarray, true_xy: np.ndarray, tol_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching (Hungarian, minimum total distance) of predicted to true positions.

    Pairs farther apart than ``tol_px`` are never matched. Returns index arrays (pred_idx, true_idx).
    """
    pred_xy = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    true_xy = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    if len(pred_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.hypot(pred_xy[:, None, 0] - true_xy[None, :, 0], pred_xy[:, None, 1] - true_xy[None, :, 1])
    # a cost far above any allowed distance makes out-of-radius pairs the last resort; they are
    # then dropped, so they never displace a valid pair
    big = 1e6
    cost = np.where(d <= tol_px, d, big)
    r, c = linear_sum_assignment(cost)
    ok = d[r, c] <= tol_px
    return r[ok], c[ok]


def rereference_classical(df: pd.DataFrame, center_px: float, radius_px: float) -> pd.DataFrame:
    """Shift one pattern's classical vectors so its beam disk sits on the centre; drop that disk."""
    if df.empty:
        return df
    d = np.hypot(df["qx_px"] - center_px, df["qy_px"] - center_px)
    k = int(np.argmin(d.to_numpy()))
    out = df.copy()
    if d.iloc[k] <= radius_px:
        out["qx_px"] -= df["qx_px"].iloc[k] - center_px
        out["qy_px"] -= df["qy_px"].iloc[k] - center_px
    keep = np.hypot(out["qx_px"] - center_px, out["qy_px"] - center_px) > radius_px
    return out[keep]


# Matching radii (px of the model grid): 1 px is the accuracy that strain mapping needs; 2 px counts
# near misses too. Precision, recall and F1 without suffix are at 1 px.
MATCH_TOLERANCES_PX = (1.0, 2.0)


def score_pattern(pred: pd.DataFrame, truth: pd.DataFrame, center_px: float, faint: pd.DataFrame | None = None):
    """Matches of one pattern: (counts dict, DataFrame of the pairs matched within the widest radius).

    Counts: ``n_pred``, ``n_true`` and ``n_match_<r>px`` for each radius of MATCH_TOLERANCES_PX; with
    ``faint`` (real reflections below the truth's floor), ``n_faint_<r>px``: vectors matching no truth
    that match one of those.
    """
    pxy = pred[["qx_px", "qy_px"]].to_numpy()
    txy = truth[["qx_px", "qy_px"]].to_numpy()
    counts = {"n_pred": len(pred), "n_true": len(truth)}
    for tol in MATCH_TOLERANCES_PX:
        pi, ti = match(pxy, txy, tol)
        counts[f"n_match_{tol:g}px"] = len(pi)
        if faint is not None:
            rest = np.setdiff1d(np.arange(len(pxy)), pi)
            counts[f"n_faint_{tol:g}px"] = len(match(pxy[rest], faint[["qx_px", "qy_px"]].to_numpy(), tol)[0])
    p, t = pred.iloc[pi], truth.iloc[ti]
    r_pred = np.hypot(p["qx_px"].to_numpy() - center_px, p["qy_px"].to_numpy() - center_px)
    r_true = np.hypot(t["qx_px"].to_numpy() - center_px, t["qy_px"].to_numpy() - center_px)
    pairs = pd.DataFrame({
        "dx_px": p["qx_px"].to_numpy() - t["qx_px"].to_numpy(), "dy_px": p["qy_px"].to_numpy() - t["qy_px"].to_numpy(),
        "dr_px": r_pred - r_true, "intensity": p["intensity"].to_numpy(), "vg_abs": t["vg_abs"].to_numpy(),
        "qz_pred": p["qz"].to_numpy() if "qz" in p else np.nan, "qz_true": t["qz_invA"].to_numpy(),
    })
    return counts, pairs


def score_patterns(found: list, truths: list, center_px: float, faints: list | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """score_pattern over paired lists of predictions and truths (and faint reflections): (counts per
    pattern, matched pairs), both with the column ``pattern_id`` (the list index)."""
    pats, pairs = [], []
    for i, (pk, t) in enumerate(zip(found, truths)):
        c, pr = score_pattern(pk, t, center_px, None if faints is None else faints[i])
        pats.append({**c, "pattern_id": i})
        pairs.append(pr.assign(pattern_id=i))
    return pd.DataFrame(pats), pd.concat(pairs, ignore_index=True)


def _prf(n_match: int, n_pred: int, n_true: int) -> dict:
    prec = n_match / n_pred if n_pred > 0 else float("nan")
    rec = n_match / n_true if n_true > 0 else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if n_pred > 0 and n_true > 0 and (prec + rec) > 0 else 0.0
    return {"precision": prec, "recall": rec, "f1": f1}


def _pair_metrics(pairs: pd.DataFrame, dk_invA: float, qz_sign_min_invA: float) -> dict:
    from scipy.stats import spearmanr

    rms = float(np.sqrt(np.mean(pairs["dx_px"] ** 2 + pairs["dy_px"] ** 2)))
    bias = float(pairs["dr_px"].mean())
    out = {"rms_px": rms, "rms_invA": rms * dk_invA, "radial_bias_px": bias, "radial_bias_invA": bias * dk_invA}
    rhos = [spearmanr(g["intensity"], g["vg_abs"]).statistic for _, g in pairs.groupby(["pattern_id"])
            if len(g) >= 3 and g["intensity"].nunique() > 1 and g["vg_abs"].nunique() > 1]
    out["intensity_spearman"] = float(np.nanmean(rhos)) if rhos else float("nan")
    qz = pairs.dropna(subset=["qz_pred"])
    if len(qz):
        out["qz_mae_invA"] = float(np.mean(np.abs(qz["qz_pred"] - qz["qz_true"])))
        sig = qz[np.abs(qz["qz_true"]) >= qz_sign_min_invA]
        out["qz_sign_accuracy"] = float(np.mean(np.sign(sig["qz_pred"]) == np.sign(sig["qz_true"]))) if len(sig) else float("nan")
        out["n_qz_sign"] = int(len(sig))
    return out


def aggregate(patterns: pd.DataFrame, pairs: pd.DataFrame, dk_invA: float, qz_sign_min_invA: float) -> dict:
    """Pooled metrics: precision/recall/F1 at each matching radius (no suffix: 1 px), and over the
    pairs matched within the widest radius: position RMS, radial bias, intensity Spearman vs |V_g|, q_z."""
    n_pred, n_true = int(patterns["n_pred"].sum()), int(patterns["n_true"].sum())
    out = {"n_patterns": int(len(patterns)), "n_pred": n_pred, "n_true": n_true}
    for tol in MATCH_TOLERANCES_PX:
        n_match = int(patterns[f"n_match_{tol:g}px"].sum())
        prf = _prf(n_match, n_pred, n_true)
        out.update({f"n_match_{tol:g}px": n_match, **{f"{k}_{tol:g}px": v for k, v in prf.items()}})
        if f"n_faint_{tol:g}px" in patterns:
            n_faint = int(patterns[f"n_faint_{tol:g}px"].sum())
            judged = n_pred - n_faint + n_true  # the faint matches out of the count
            out.update({f"n_faint_{tol:g}px": n_faint,
                        f"precision_real_{tol:g}px": (n_match + n_faint) / n_pred if n_pred else float("nan"),
                        f"f1_real_{tol:g}px": 2 * n_match / judged if judged else 0.0})
    if f"precision_real_{MATCH_TOLERANCES_PX[0]:g}px" in out:
        out["precision_real"] = out[f"precision_real_{MATCH_TOLERANCES_PX[0]:g}px"]
        out["f1_real"] = out[f"f1_real_{MATCH_TOLERANCES_PX[0]:g}px"]
    first = f"{MATCH_TOLERANCES_PX[0]:g}px"
    out.update(precision=out[f"precision_{first}"], recall=out[f"recall_{first}"], f1=out[f"f1_{first}"])
    if len(pairs):
        out.update(_pair_metrics(pairs, dk_invA, qz_sign_min_invA))
    return out


def breakdown(patterns, pairs, keys, dk, qmin):
    rows = []
    for k, g in patterns.groupby(keys, dropna=False, observed=True):
        k = k if isinstance(k, tuple) else (k,)
        sel = pairs.merge(g[["pattern_id", "detector", "dose"]].drop_duplicates(), on=["pattern_id", "detector", "dose"])
        rows.append({**dict(zip(keys, k)), **aggregate(g, sel, dk, qmin)})
    return rows


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x
