"""Evaluation of Bragg vectors against the kinematic truth: network vs py4DSTEM vs an oracle.

Procedure (rule ``evaluate``):
1. Patterns of the test split (held-out crystals), at most ``evaluate.max_patterns`` (evenly spaced).
2. For every dose in ``evaluate.doses_e_per_pattern`` the stored noise-free CBED is augmented
   (fourdcrystal.augment, that dose, an RNG seeded by (seed, dose index, pattern)); the network and
   the classical detector see exactly the same augmented pattern.
3. Truth = kinematic reflections that are visible: not (000), |V_g| ≥ ``min_vg_visible`` × the
   strongest non-zero reflection of that pattern, inside the detector.
4. Predictions (direct beam removed: anything within ``match_tol_px`` of it) are matched one-to-one
   (Hungarian) within ``match_tol_px``. The classical vectors are first re-referenced to the disk it
   finds at the beam (what a py4DSTEM user does with origin calibration); the network reports V_g on
   the calibrated grid directly.
5. Metrics: precision, recall, F1 (pooled counts), position RMS and radial bias (px and Å⁻¹),
   Spearman of predicted intensity vs |V_g| (mean over patterns with ≥ 3 matches), q_z MAE and sign
   accuracy (pairs with |q_z true| ≥ ``qz_sign_min_invA``) — per detector and dose, and broken down by
   thickness, tilt and prototype.
The oracle row runs the same peak extraction on the TRUE V_g / q_z maps: an upper bound for any
network with this post-processing, not a result.
The classical settings are tuned once on the val split (classical.tune, at the middle dose); the
grid, every score and the chosen values are recorded in metrics.json and classical_tuning.csv.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import bragg, classical
from .atomic import atomic_path, write_table, write_text
from .geometry import Geometry

log = logging.getLogger("fourdcrystal.evaluate")

DETECTORS = ("network", "classical", "oracle")
TILT_BINS = [-np.inf, 1.0, 10.0, 20.0, np.inf]
TILT_LABELS = ["0-1", "1-10", "10-20", ">20"]


def select_patterns(manifest: pd.DataFrame, split: str, n_max: int) -> pd.DataFrame:
    df = manifest[manifest["split"] == split].reset_index(drop=True)
    if len(df) > n_max:
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, n_max).round().astype(int))].reset_index(drop=True)
    return df


def visible_truth(rows: pd.DataFrame, P: int, min_vg_visible: float, edge_px: float = 1.0) -> pd.DataFrame:
    nz = rows[~((rows["h"] == 0) & (rows["k"] == 0) & (rows["l"] == 0))]
    if nz.empty:
        return nz
    vmax = nz["vg_abs"].max()
    ok = (nz["vg_abs"] >= min_vg_visible * vmax) & nz["qx_px"].between(edge_px, P - 1 - edge_px) \
        & nz["qy_px"].between(edge_px, P - 1 - edge_px)
    return nz[ok]


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


def score_pattern(pred: pd.DataFrame, truth: pd.DataFrame, tol_px: float, center_px: float):
    """Matches of one pattern: (counts dict, DataFrame of matched pairs)."""
    pi, ti = bragg.match(pred[["qx_px", "qy_px"]].to_numpy(), truth[["qx_px", "qy_px"]].to_numpy(), tol_px)
    p, t = pred.iloc[pi], truth.iloc[ti]
    r_pred = np.hypot(p["qx_px"].to_numpy() - center_px, p["qy_px"].to_numpy() - center_px)
    r_true = np.hypot(t["qx_px"].to_numpy() - center_px, t["qy_px"].to_numpy() - center_px)
    pairs = pd.DataFrame({
        "dx_px": p["qx_px"].to_numpy() - t["qx_px"].to_numpy(), "dy_px": p["qy_px"].to_numpy() - t["qy_px"].to_numpy(),
        "dr_px": r_pred - r_true, "intensity": p["intensity"].to_numpy(), "vg_abs": t["vg_abs"].to_numpy(),
        "qz_pred": p["qz"].to_numpy() if "qz" in p else np.nan, "qz_true": t["qz_invA"].to_numpy(),
    })
    return {"n_pred": len(pred), "n_true": len(truth), "n_match": len(pi)}, pairs


def aggregate(patterns: pd.DataFrame, pairs: pd.DataFrame, dk_invA: float, qz_sign_min_invA: float) -> dict:
    n_pred, n_true, n_match = (int(patterns[c].sum()) for c in ("n_pred", "n_true", "n_match"))
    prec = n_match / n_pred if n_pred else float("nan")
    rec = n_match / n_true if n_true else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if n_pred and n_true and (prec + rec) > 0 else 0.0
    out = {"n_patterns": int(len(patterns)), "n_pred": n_pred, "n_true": n_true, "n_match": n_match,
           "precision": prec, "recall": rec, "f1": f1}
    if len(pairs):
        rms = float(np.sqrt(np.mean(pairs["dx_px"] ** 2 + pairs["dy_px"] ** 2)))
        bias = float(pairs["dr_px"].mean())
        out.update(rms_px=rms, rms_invA=rms * dk_invA, radial_bias_px=bias, radial_bias_invA=bias * dk_invA)
        rhos = []
        for _, g in pairs.groupby(["pattern_id"]):
            if len(g) >= 3 and g["intensity"].nunique() > 1 and g["vg_abs"].nunique() > 1:
                from scipy.stats import spearmanr
                rhos.append(spearmanr(g["intensity"], g["vg_abs"]).statistic)
        out["intensity_spearman"] = float(np.nanmean(rhos)) if rhos else float("nan")
        qz = pairs.dropna(subset=["qz_pred"])
        if len(qz):
            out["qz_mae_invA"] = float(np.mean(np.abs(qz["qz_pred"] - qz["qz_true"])))
            sig = qz[np.abs(qz["qz_true"]) >= qz_sign_min_invA]
            out["qz_sign_accuracy"] = float(np.mean(np.sign(sig["qz_pred"]) == np.sign(sig["qz_true"]))) if len(sig) else float("nan")
            out["n_qz_sign"] = int(len(sig))
    return out


def _breakdown(patterns, pairs, keys, dk, qmin):
    rows = []
    for k, g in patterns.groupby(keys, dropna=False, observed=True):
        k = k if isinstance(k, tuple) else (k,)
        sel = pairs.merge(g[["pattern_id", "detector", "dose"]].drop_duplicates(), on=["pattern_id", "detector", "dose"])
        rows.append({**dict(zip(keys, k)), **aggregate(g, sel, dk, qmin)})
    return rows


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def run_evaluation(config: dict, manifest_path, reflections_path, out_dir, model_path=None, root=".",
                   progress: bool = False) -> dict:
    """Evaluate and write metrics.json + tables + figures into ``out_dir``. Returns the metrics."""
    import torch

    from .augment import Augmenter
    from .store import load_manifest, read_pattern

    ecfg = config["evaluate"]
    geo = Geometry.from_config(config)
    P, cp, dk = geo.detector_px, geo.center_px, geo.dk_invA
    tol = float(ecfg["match_tol_px"])
    thr = float(ecfg["peak_threshold"])
    qmin = float(ecfg.get("qz_sign_min_invA", 0.02))
    doses = [float(d) for d in ecfg["doses_e_per_pattern"]]
    root = Path(root)
    out_dir = Path(out_dir)
    manifest = load_manifest(manifest_path)
    refl = pd.read_parquet(reflections_path)
    by_pat = {k: g for k, g in refl.groupby(["store", "index"])}
    aug = Augmenter(config["augment"])
    seed = int(config.get("seed", 0))
    model = None
    if model_path is not None:
        from .model import load_checkpoint
        model, mgeo, _ = load_checkpoint(model_path)
        if mgeo.detector_px != P or abs(mgeo.dk_invA - dk) > 1e-9:
            log.warning("model geometry %s differs from the dataset's; evaluating anyway", mgeo.to_dict())

    def load(split, n_max):
        sel = select_patterns(manifest, split, n_max)
        items = []
        for i, row in sel.iterrows():
            q = read_pattern(root / row["store"], int(row["index"]))
            truth = visible_truth(by_pat.get((row["store"], int(row["index"])), refl.iloc[:0]), P,
                                  float(ecfg["min_vg_visible"]))
            items.append((row, q, truth))
        return items

    def augmented(items, dose_idx, dose, salt):
        return np.stack([aug.apply(q["cbed"], q["probe"], np.random.default_rng([seed, salt, dose_idx, i]), dose=dose)
                         for i, (_, q, _) in enumerate(items)])

    def classical_scores(items, cbeds, settings):
        pats, pairs = [], []
        for i, ((row, q, truth), cb) in enumerate(zip(items, cbeds)):
            df = classical.find_disks(cb, q["probe"], settings)
            df = rereference_classical(df, cp, tol)
            c, pr = score_pattern(df, truth, tol, cp)
            pats.append({**c, "pattern_id": i})
            pairs.append(pr.assign(pattern_id=i))
        return pd.DataFrame(pats), pd.concat(pairs, ignore_index=True)

    # --- 1. tune the classical detector once, on val --------------------------------------------
    base = classical.settings_from(ecfg.get("classical"))
    tcfg = ecfg.get("tune_classical", {"enabled": True})
    tuning = {"enabled": bool(tcfg.get("enabled", True))}
    settings = base
    if tuning["enabled"]:
        val = load("val", int(tcfg.get("max_patterns", 30)))
        if val:
            mid = int(len(doses) // 2)
            vc = augmented(val, mid, doses[mid], salt=1)

            def score(s):
                pats, pairs = classical_scores(val, vc, s)
                return aggregate(pats, pairs.assign(detector="c", dose=0), dk, qmin)

            grid = {k: list(v) for k, v in (tcfg.get("grid") or classical.TUNE_GRID).items()}
            settings, table = classical.tune(score, base, grid)
            write_table(out_dir / "classical_tuning.csv", table)
            tuning.update(split="val", n_patterns=len(val), dose_e_per_pattern=doses[mid], grid=grid,
                          criterion="pooled F1", chosen={k: settings[k] for k in grid})
            log.info("classical tuned on %d val patterns: %s", len(val), tuning["chosen"])
        else:
            tuning["note"] = "no val patterns: config settings used"

    # --- 2. test split ------------------------------------------------------------------------
    test = load("test", int(ecfg["max_patterns"]))
    meta = pd.DataFrame([{"pattern_id": i, "crystal_id": r.get("crystal_id"), "prototype": r.get("prototype"),
                          "thickness_A": r.get("thickness_A"),
                          "tilt_mrad": float(np.hypot(r.get("tilt_x_mrad", 0.0), r.get("tilt_y_mrad", 0.0)))}
                         for i, (r, _, _) in enumerate(test)])
    if not meta.empty:
        meta["tilt_bin"] = pd.cut(meta["tilt_mrad"], TILT_BINS, labels=TILT_LABELS).astype(str)
    all_pats, all_pairs, timing = [], [], {"network_s": 0.0, "classical_s": 0.0, "n_network": 0, "n_classical": 0}

    def add(detector, dose, pats, pairs):
        all_pats.append(pats.assign(detector=detector, dose=dose))
        all_pairs.append(pairs.assign(detector=detector, dose=dose))

    def net_scores(vg, qz):
        pk = bragg.find_peaks(vg, qz, center_px=cp, threshold=thr, exclude_center_px=tol)
        pk = pd.DataFrame(pk)
        pats, pairs = [], []
        for i, (_, _, truth) in enumerate(test):
            c, pr = score_pattern(pk[pk["pattern"] == i], truth, tol, cp)
            pats.append({**c, "pattern_id": i})
            pairs.append(pr.assign(pattern_id=i))
        return pd.DataFrame(pats), pd.concat(pairs, ignore_index=True)

    examples = {}
    if test:
        vg_t = np.stack([q["vg"] for _, q, _ in test])
        qz_t = np.stack([q["qz"] for _, q, _ in test])
        add("oracle", 0.0, *net_scores(vg_t, qz_t))
        probes = torch.from_numpy(np.stack([q["probe"] for _, q, _ in test]))
        for di, dose in enumerate(doses):
            cb = augmented(test, di, dose, salt=2)
            if model is not None:
                t0 = time.perf_counter()
                vgs, qzs = [], []
                with torch.no_grad():
                    for s in range(0, len(cb), 16):
                        v, z = model(probes[s:s + 16], torch.from_numpy(cb[s:s + 16]))
                        vgs.append(v.numpy())
                        qzs.append(z.numpy())
                timing["network_s"] += time.perf_counter() - t0
                timing["n_network"] += len(cb)
                vg_p, qz_p = np.concatenate(vgs), np.concatenate(qzs)
                add("network", dose, *net_scores(vg_p, qz_p))
            t0 = time.perf_counter()
            add("classical", dose, *classical_scores(test, cb, settings))
            timing["classical_s"] += time.perf_counter() - t0
            timing["n_classical"] += len(cb)
            if di == len(doses) // 2:
                examples = {"cbed": cb[:3], "dose": dose,
                            "network": pd.DataFrame(bragg.find_peaks(vg_p[:3], None, center_px=cp, threshold=thr,
                                                                     exclude_center_px=tol)) if model is not None else None,
                            "classical": [rereference_classical(classical.find_disks(c, q["probe"], settings), cp, tol)
                                          for c, (_, q, _) in zip(cb[:3], test[:3])],
                            "truth": [t for _, _, t in test[:3]]}

    pats = pd.concat(all_pats, ignore_index=True) if all_pats else pd.DataFrame()
    pairs = pd.concat(all_pairs, ignore_index=True) if all_pairs else pd.DataFrame()
    if not pats.empty:
        pats = pats.merge(meta, on="pattern_id")
    metrics = {
        "split": "test", "n_patterns": len(test), "doses_e_per_pattern": doses, "dk_invA": dk,
        "detector_px": P, "settings": {k: ecfg[k] for k in ("peak_threshold", "match_tol_px", "min_vg_visible")},
        "qz_sign_min_invA": qmin, "model": None if model_path is None else str(model_path),
        "oracle_note": "oracle = peak extraction on the TRUE V_g/q_z maps (upper bound, not a result)",
        "classical_settings": {k: settings[k] for k in classical.DEFAULTS}, "classical_tuning": tuning,
        "timing": {**timing,
                   "network_patterns_per_s": timing["n_network"] / timing["network_s"] if timing["network_s"] else None,
                   "classical_patterns_per_s": timing["n_classical"] / timing["classical_s"] if timing["classical_s"] else None},
    }
    if not pats.empty:
        metrics["by_dose"] = _breakdown(pats, pairs, ["detector", "dose"], dk, qmin)
        for key in ("thickness_A", "tilt_bin", "prototype"):
            metrics[f"by_{key.replace('_A', '').replace('_bin', '')}"] = _breakdown(pats, pairs, ["detector", "dose", key], dk, qmin)
        metrics["overall"] = _breakdown(pats, pairs, ["detector"], dk, qmin)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not pats.empty:
        write_table(out_dir / "pattern_scores.parquet", pats)
        write_table(out_dir / "pairs.parquet", pairs)
    make_figures(metrics, examples, out_dir, cp)
    metrics = _jsonable(metrics)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def make_figures(metrics: dict, examples: dict, out_dir: Path, center_px: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = pd.DataFrame(metrics.get("by_dose", []))
    colors = {"network": "C0", "classical": "C1", "oracle": "0.4"}
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for det in ("network", "classical"):
        r = rows[rows["detector"] == det] if not rows.empty else rows
        if len(r):
            ax.plot(r["dose"], r["f1"], "o-", color=colors[det], label=det)
    o = rows[rows["detector"] == "oracle"] if not rows.empty else rows
    if len(o):
        ax.axhline(float(o["f1"].iloc[0]), ls="--", color=colors["oracle"], label="oracle (true V_g)")
    ax.set_xscale("log")
    ax.set_xlabel("dose (e⁻ / pattern)")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("Bragg vector F1 vs dose (test split)")
    _save(fig, out_dir / "f1_vs_dose.png")

    th = pd.DataFrame(metrics.get("by_thickness", []))
    fig, axs = plt.subplots(1, 2, figsize=(9, 3.4))
    for det in ("network", "classical", "oracle"):
        r = th[th["detector"] == det] if not th.empty else th
        if len(r) and "rms_px" in r:
            g = r.groupby("thickness_A")[["rms_px", "radial_bias_px"]].mean()
            axs[0].plot(g.index, g["rms_px"], "o-", color=colors[det], label=det)
            axs[1].plot(g.index, g["radial_bias_px"], "o-", color=colors[det], label=det)
    axs[0].set_ylabel("position RMS (px)")
    axs[1].set_ylabel("radial bias (px)")
    axs[1].axhline(0, color="k", lw=0.5)
    for a in axs:
        a.set_xlabel("thickness (Å)")
        a.legend(fontsize=8)
    fig.suptitle("Position error vs thickness (mean over doses)")
    _save(fig, out_dir / "rms_bias_vs_thickness.png")

    n = len(examples.get("cbed", []))
    fig, axs = plt.subplots(1, max(n, 1), figsize=(4 * max(n, 1), 4), squeeze=False)
    for k in range(n):
        a = axs[0, k]
        a.imshow(np.log1p(np.clip(examples["cbed"][k], 0, None) / 1e-3), cmap="gray")
        t = examples["truth"][k]
        a.scatter(t["qy_px"], t["qx_px"], s=60, facecolors="none", edgecolors="lime", label="truth (visible)")
        if examples.get("network") is not None:
            nk = examples["network"]
            nk = nk[nk["pattern"] == k]
            a.scatter(nk["qy_px"], nk["qx_px"], marker="x", s=25, color="C0", label="network")
        c = examples["classical"][k]
        a.scatter(c["qy_px"], c["qx_px"], marker="+", s=35, color="C1", label="classical")
        a.set_axis_off()
        a.set_title(f"dose {examples['dose']:.0e}")
        if k == 0:
            a.legend(fontsize=7, loc="lower left")
    _save(fig, out_dir / "overlays.png")


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_rule(snakemake) -> None:
    out = Path(snakemake.output.metrics).parent
    run_evaluation(dict(snakemake.config), snakemake.input.manifest, snakemake.input.reflections, out,
                   model_path=snakemake.input.get("model"))
