"""Evaluation of Bragg vectors against the kinematic truth: network vs py4DSTEM vs an oracle.

Procedure (rule ``evaluate``):
1. Patterns of the test split (held-out crystals), at most ``evaluate.max_patterns`` (evenly spaced).
2. For every dose in ``evaluate.doses_e_per_pattern`` the stored noise-free CBED is augmented
   (fourdcrystal.learning.augment, that dose, an RNG seeded by (seed, dose index, pattern)); the network and
   the classical detector see exactly the same augmented pattern.
3. Truth positions are the kinematic (crystallographic) ones. Two truth sets per pattern:
   - "all": every kinematic reflection except (000) inside the detector (1 px margin);
   - "visible at dose D" (the primary one): of those, |V_g| ≥ ``min_vg_visible`` × the strongest
     AND the disk holds electrons that stand out (:func:`disk_counts`): with s = D / Σ probe
     electrons per intensity unit (the Augmenter's dose definition), E = noise-free CBED + the
     expected detector background of that very augmentation draw, the disk = pixels within the
     probe radius of the kinematic position and the local level b = 20th percentile of E in the
     annulus (r + 1, 2r + 1] (the valley between disks: diffuse background and overlapping
     neighbours, which a detector cannot attribute to this reflection),
       signal_e = s · Σ_disk (E − b),  total_e = s · Σ_disk E,  SNR = signal_e / √total_e
     (Poisson noise of everything counted in the disk); visible ⇔ signal_e ≥
     ``visible_min_electrons`` and SNR ≥ ``visible_min_snr``.
4. Predictions (direct beam removed: anything within ``match_tol_px`` of it) are matched one-to-one
   (Hungarian) within ``match_tol_px`` to each truth set. The classical vectors are first
   re-referenced to the disk it finds at the beam (what a py4DSTEM user does with origin
   calibration); the network sees each pattern as ``fourdcrystal predict`` prepares it
   (model_input.ModelInput: its direct beam found and resampled onto the centre pixel, total intensity
   scaled to the probe's), so both detectors get the same origin correction.
5. Metrics: precision, recall, F1 (pooled counts) against the visible truth — a prediction that
   matches no visible reflection but does match a real, not-visible one is neither true nor false
   (``n_ignored``, left out of the precision) — and ``precision_all``, ``recall_all``, ``f1_all``
   against all kinematic reflections in the detector; position RMS and radial bias (px and Å⁻¹),
   Spearman of predicted intensity vs |V_g| (mean over patterns with ≥ 3 matches), q_z MAE and sign
   accuracy (pairs with |q_z true| ≥ ``qz_sign_min_invA``) — per detector and dose, and broken down by
   thickness, tilt and prototype.
The oracle row runs the same peak extraction on the TRUE V_g / q_z maps (no noise, so the same
vectors at every dose, scored against each dose's visible truth): an upper bound for any network
with this post-processing, not a result.
Tuning, once per run on the val split at the middle dose, by the same rule for both detectors
(exhaustive grid, max pooled F1 against the visible truth, ties to the first grid value): the
classical settings (classical.tune) and the network's relative V_g threshold (bragg.tune_threshold;
non-maximum suppression at ``network_min_spacing_px``). Grids, scores and chosen values go to
metrics.json, classical_tuning.csv and network_tuning.csv; ``fourdcrystal predict`` users take the
tuned threshold from metrics.json (``network_peak_settings``).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.inference import peaks as bragg
from fourdcrystal.inference import classical
from fourdcrystal.atomic import atomic_path, write_table, write_text
from fourdcrystal.geometry import Geometry
from fourdcrystal.inference.detectors import DEFAULT_BATCH
from fourdcrystal.inference.model_input import ModelInput

log = logging.getLogger("fourdcrystal.evaluation.evaluate")

DETECTORS = ("network", "classical", "oracle")
TILT_BINS = [-np.inf, 1.0, 10.0, 20.0, np.inf]
TILT_LABELS = ["0-1", "1-10", "10-20", ">20"]


def select_patterns(manifest: pd.DataFrame, split: str, n_max: int) -> pd.DataFrame:
    df = manifest[manifest["split"] == split].reset_index(drop=True)
    if len(df) > n_max:
        df = df.iloc[np.unique(np.linspace(0, len(df) - 1, n_max).round().astype(int))].reset_index(drop=True)
    return df


def kinematic_truth(rows: pd.DataFrame, P: int, min_vg_visible: float, edge_px: float = 1.0) -> pd.DataFrame:
    """All kinematic reflections of one pattern inside the detector, without (000); column
    ``above_floor``: |V_g| ≥ ``min_vg_visible`` × the strongest of them."""
    nz = rows[~((rows["h"] == 0) & (rows["k"] == 0) & (rows["l"] == 0))]
    nz = nz[nz["qx_px"].between(edge_px, P - 1 - edge_px) & nz["qy_px"].between(edge_px, P - 1 - edge_px)]
    nz = nz.reset_index(drop=True)
    vmax = nz["vg_abs"].max() if len(nz) else 0.0
    return nz.assign(above_floor=nz["vg_abs"] >= min_vg_visible * vmax)


def _offsets(r_lo: float, r_hi: float) -> np.ndarray:
    """Integer pixel offsets (n, 2) with r_lo < distance ≤ r_hi (r_lo < 0: the full disk)."""
    k = int(np.ceil(r_hi))
    di, dj = np.mgrid[-k:k + 1, -k:k + 1]
    d = np.hypot(di, dj)
    m = (d > r_lo) & (d <= r_hi)
    return np.stack([di[m], dj[m]], axis=1)


def disk_counts(expected: np.ndarray, xy: np.ndarray, radius_px: float, e_per_unit: float) -> dict[str, np.ndarray]:
    """Expected electrons in the disk of each reflection (see the module docstring, step 3).

    ``expected``: the noise-free pattern on the detector scale (CBED + expected background);
    ``xy``: (n, 2) kinematic positions in px; ``e_per_unit``: electrons per intensity unit
    (dose / Σ probe). Returns signal_e, total_e, background_e (per disk) and snr.
    """
    P, Q = expected.shape
    xy = np.asarray(xy, dtype=float).reshape(-1, 2)
    c = np.rint(xy).astype(int)
    r = max(float(radius_px), 1.0)

    def gather(off):
        i = c[:, None, 0] + off[None, :, 0]
        j = c[:, None, 1] + off[None, :, 1]
        ok = (i >= 0) & (i < P) & (j >= 0) & (j < Q)
        return np.where(ok, expected[np.clip(i, 0, P - 1), np.clip(j, 0, Q - 1)], np.nan)

    disk = gather(_offsets(-1.0, r))
    ring = gather(_offsets(r + 1.0, 2.0 * r + 1.0))
    n_disk = np.sum(np.isfinite(disk), axis=1)
    with np.errstate(all="ignore"):
        level = np.nanpercentile(ring, 20, axis=1) if len(c) else np.zeros(0)
    level = np.nan_to_num(level, nan=0.0)
    total = e_per_unit * np.nansum(disk, axis=1)
    bg = e_per_unit * n_disk * level
    sig = total - bg
    snr = sig / np.sqrt(np.maximum(total, 1e-12))
    return {"signal_e": sig, "total_e": total, "background_e": bg, "snr": snr}


def expected_background(shape, params) -> np.ndarray | float:
    """The Augmenter's background of one draw (before counting; fractions of the probe maximum)."""
    if not (params.background_const or params.background_diffuse):
        return 0.0
    i0, i1 = np.indices(shape, dtype=np.float64)
    r = np.hypot(i0 - shape[0] // 2, i1 - shape[1] // 2)
    return params.background_const + params.background_diffuse * np.exp(-r / params.diffuse_width_px)


def visible_truth(truth: pd.DataFrame, cbed: np.ndarray, probe: np.ndarray, dose: float, params=None, *,
                  min_electrons: float, min_snr: float) -> pd.DataFrame:
    """The reflections of ``truth`` (from :func:`kinematic_truth`) visible at ``dose`` electrons
    per pattern, with their disk counts as extra columns."""
    from fourdcrystal.inference.model_input import probe_radius_px

    if truth.empty:
        return truth.assign(signal_e=[], total_e=[], background_e=[], snr=[])
    e_per_unit = float(dose) / float(np.sum(probe, dtype=np.float64))
    exp_img = np.asarray(cbed, dtype=np.float64)
    if params is not None:
        exp_img = exp_img + expected_background(exp_img.shape, params)
    dc = disk_counts(exp_img, truth[["qx_px", "qy_px"]].to_numpy(), probe_radius_px(probe), e_per_unit)
    t = truth.assign(**dc)
    ok = t["above_floor"] & (t["signal_e"] >= float(min_electrons)) & (t["snr"] >= float(min_snr))
    return t[ok.to_numpy()]


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


def score_pattern(pred: pd.DataFrame, truth: pd.DataFrame, tol_px: float, center_px: float,
                  truth_all: pd.DataFrame | None = None):
    """Matches of one pattern: (counts dict, DataFrame of matched pairs against ``truth``).

    With ``truth_all`` (every kinematic reflection in the detector, a superset of ``truth``) the
    predictions are matched to it too: ``n_match_all``, ``n_true_all``, and ``n_ignored`` =
    predictions matched to a real reflection of ``truth_all`` that is not in ``truth`` and not
    matched to ``truth`` (not visible at this dose: neither a hit nor a false positive).
    """
    pxy = pred[["qx_px", "qy_px"]].to_numpy()
    pi, ti = bragg.match(pxy, truth[["qx_px", "qy_px"]].to_numpy(), tol_px)
    extra = {}
    if truth_all is not None:
        ai, at = bragg.match(pxy, truth_all[["qx_px", "qy_px"]].to_numpy(), tol_px)
        vis_keys = set(zip(truth["h"], truth["k"], truth["l"]))
        hkl = truth_all[["h", "k", "l"]].to_numpy()[at]
        invisible = np.array([tuple(x) not in vis_keys for x in hkl], dtype=bool)
        ignored = np.setdiff1d(ai[invisible], pi)
        extra = {"n_true_all": len(truth_all), "n_match_all": len(ai), "n_ignored": len(ignored)}
    p, t = pred.iloc[pi], truth.iloc[ti]
    r_pred = np.hypot(p["qx_px"].to_numpy() - center_px, p["qy_px"].to_numpy() - center_px)
    r_true = np.hypot(t["qx_px"].to_numpy() - center_px, t["qy_px"].to_numpy() - center_px)
    pairs = pd.DataFrame({
        "dx_px": p["qx_px"].to_numpy() - t["qx_px"].to_numpy(), "dy_px": p["qy_px"].to_numpy() - t["qy_px"].to_numpy(),
        "dr_px": r_pred - r_true, "intensity": p["intensity"].to_numpy(), "vg_abs": t["vg_abs"].to_numpy(),
        "qz_pred": p["qz"].to_numpy() if "qz" in p else np.nan, "qz_true": t["qz_invA"].to_numpy(),
    })
    return {"n_pred": len(pred), "n_true": len(truth), "n_match": len(pi), **extra}, pairs


def _prf(n_match: int, n_pred: int, n_true: int) -> dict:
    prec = n_match / n_pred if n_pred > 0 else float("nan")
    rec = n_match / n_true if n_true > 0 else float("nan")
    f1 = 2 * prec * rec / (prec + rec) if n_pred > 0 and n_true > 0 and (prec + rec) > 0 else 0.0
    return {"precision": prec, "recall": rec, "f1": f1}


def aggregate(patterns: pd.DataFrame, pairs: pd.DataFrame, dk_invA: float, qz_sign_min_invA: float) -> dict:
    n_pred, n_true, n_match = (int(patterns[c].sum()) for c in ("n_pred", "n_true", "n_match"))
    n_ign = int(patterns["n_ignored"].sum()) if "n_ignored" in patterns else 0
    out = {"n_patterns": int(len(patterns)), "n_pred": n_pred, "n_true": n_true, "n_match": n_match,
           **_prf(n_match, n_pred - n_ign, n_true)}
    if "n_true_all" in patterns:
        n_all, m_all = int(patterns["n_true_all"].sum()), int(patterns["n_match_all"].sum())
        a = _prf(m_all, n_pred, n_all)
        out.update(n_ignored=n_ign, n_true_all=n_all, n_match_all=m_all, precision_all=a["precision"],
                   recall_all=a["recall"], f1_all=a["f1"])
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

    from fourdcrystal.learning.augment import Augmenter, transform
    from fourdcrystal.simulation.store import load_manifest, read_pattern

    ecfg = config["evaluate"]
    geo = Geometry.from_config(config)
    P, cp, dk = geo.detector_px, geo.center_px, geo.dk_invA
    tol = float(ecfg["match_tol_px"])
    thr = float(ecfg["peak_threshold"])
    spacing = float(ecfg.get("network_min_spacing_px", bragg.DEFAULT_MIN_SPACING_PX))
    vis_e = float(ecfg.get("visible_min_electrons", 10.0))
    vis_snr = float(ecfg.get("visible_min_snr", 3.0))
    qmin = float(ecfg.get("qz_sign_min_invA", 0.02))
    precision = str(ecfg.get("precision", "fp32"))
    doses = [float(d) for d in ecfg["doses_e_per_pattern"]]
    mid = int(len(doses) // 2)
    root = Path(root)
    out_dir = Path(out_dir)
    manifest = load_manifest(manifest_path)
    refl = pd.read_parquet(reflections_path)
    by_pat = {k: g for k, g in refl.groupby(["store", "index"])}
    aug = Augmenter(config["augment"])
    seed = int(config.get("seed", 0))
    model = None
    if model_path is not None:
        from fourdcrystal.learning.model import load_checkpoint
        model, mgeo, _ = load_checkpoint(model_path)
        model = model.to(memory_format=torch.channels_last)  # as predict runs it (oneDNN's faster layout)
        if mgeo.detector_px != P or abs(mgeo.dk_invA - dk) > 1e-9:
            log.warning("model geometry %s differs from the dataset's; evaluating anyway", mgeo.to_dict())

    def load(split, n_max):
        sel = select_patterns(manifest, split, n_max)
        items = []
        for i, row in sel.iterrows():
            q = read_pattern(root / row["store"], int(row["index"]))
            truth = kinematic_truth(by_pat.get((row["store"], int(row["index"])), refl.iloc[:0]), P,
                                    float(ecfg["min_vg_visible"]))
            items.append((row, q, truth))
        return items

    def augmented(items, dose_idx, dose, salt):
        """Augmented CBEDs at ``dose`` and each pattern's visible truth for that very draw."""
        cbs, vis = [], []
        for i, (_, q, truth) in enumerate(items):
            rng = np.random.default_rng([seed, salt, dose_idx, i])
            params = aug.draw(rng, q["cbed"].shape, dose)  # = Augmenter.apply, keeping the draw
            cbs.append(transform(q["cbed"], q["probe"], params, rng))
            vis.append(visible_truth(truth, q["cbed"], q["probe"], dose, params, min_electrons=vis_e, min_snr=vis_snr))
        return np.stack(cbs), vis

    def scores(items, vis, peaks_per_pattern):
        pats, pairs = [], []
        for i, ((_, _, truth), tv, pk) in enumerate(zip(items, vis, peaks_per_pattern)):
            c, pr = score_pattern(pk, tv, tol, cp, truth_all=truth)
            pats.append({**c, "pattern_id": i})
            pairs.append(pr.assign(pattern_id=i))
        return pd.DataFrame(pats), pd.concat(pairs, ignore_index=True)

    def classical_peaks(items, cbeds, settings):
        return [rereference_classical(classical.find_disks(cb, q["probe"], settings), cp, tol)
                for (_, q, _), cb in zip(items, cbeds)]

    def network_maps(items, cbeds):
        # each pattern as `predict` prepares it: its direct beam found and resampled onto the centre
        # pixel (the detector's origin shift undone, as the classical vectors are re-referenced);
        # patterns sharing a vacuum probe (one per probe setting of an orientation) in one batch
        same_probe: dict[bytes, list[int]] = {}
        for k, (_, q, _) in enumerate(items):
            same_probe.setdefault(np.ascontiguousarray(q["probe"]).tobytes(), []).append(k)
        probes = torch.empty((len(items), P, P))
        prepared = torch.empty((len(items), P, P))
        for idx in same_probe.values():
            mi = ModelInput(items[idx[0]][1]["probe"], 1.0, P, cp)
            x = torch.from_numpy(np.ascontiguousarray(cbeds[idx], dtype=np.float32))
            probes[idx], prepared[idx] = mi(x, mi.centres(x))
        cbeds = prepared.numpy()
        vgs, qzs, nb = [], [], DEFAULT_BATCH["cpu"]
        # the arithmetic `predict --precision` would use (bf16: autocast, FFTs stay fp32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for s in range(0, len(cbeds), nb):
                v, z = model(probes[s:s + nb], torch.from_numpy(cbeds[s:s + nb]))
                vgs.append(v.float().numpy())
                qzs.append(z.float().numpy())
        return np.concatenate(vgs), np.concatenate(qzs)

    def peaks(vg, qz, n, threshold):
        pk = pd.DataFrame(bragg.find_peaks(vg, qz, center_px=cp, threshold=threshold, exclude_center_px=tol,
                                           min_spacing_px=spacing))
        groups = dict(tuple(pk.groupby("pattern")))
        return [groups.get(i, pk.iloc[:0]) for i in range(n)]

    def pooled(pats, pairs):
        return aggregate(pats, pairs.assign(detector="x", dose=0), dk, qmin)

    # --- 1. tune both detectors once, on val at the middle dose --------------------------------
    base = classical.settings_from(ecfg.get("classical"))
    tcfg = ecfg.get("tune_classical", {"enabled": True})
    ncfg = ecfg.get("tune_network", {"enabled": True})
    tuning = {"enabled": bool(tcfg.get("enabled", True))}
    net_tuning = {"enabled": bool(ncfg.get("enabled", True)) and model is not None}
    settings = base
    n_val = max(int(tcfg.get("max_patterns", 30)), int(ncfg.get("max_patterns", 30)))
    val = load("val", n_val) if (tuning["enabled"] or net_tuning["enabled"]) else []
    if val:
        vc, vvis = augmented(val, mid, doses[mid], salt=1)
        common = {"split": "val", "n_patterns": len(val), "dose_e_per_pattern": doses[mid],
                  "criterion": "pooled F1 vs the visible truth (ties: first in grid order)"}
    if tuning["enabled"] and val:
        nc = int(tcfg.get("max_patterns", 30))
        grid = {k: list(v) for k, v in (tcfg.get("grid") or classical.TUNE_GRID).items()}
        settings, table = classical.tune(
            lambda st: pooled(*scores(val[:nc], vvis[:nc], classical_peaks(val[:nc], vc[:nc], st))), base, grid)
        write_table(out_dir / "classical_tuning.csv", table)
        tuning.update(common, n_patterns=min(nc, len(val)), grid=grid, chosen={k: settings[k] for k in grid})
        log.info("classical tuned on %d val patterns: %s", min(nc, len(val)), tuning["chosen"])
    elif tuning["enabled"]:
        tuning["note"] = "no val patterns: config settings used"
    oracle_thr = thr
    if net_tuning["enabled"] and val:
        nn_ = int(ncfg.get("max_patterns", 30))
        grid = [float(t) for t in ((ncfg.get("grid") or {}).get("peak_threshold") or bragg.THRESHOLD_GRID)]

        def tune_maps(vg_v, qz_v):
            return bragg.tune_threshold(
                lambda t: pooled(*scores(val[:nn_], vvis[:nn_], peaks(vg_v, qz_v, len(vg_v), t))), grid)

        thr, rows = tune_maps(*network_maps(val[:nn_], vc[:nn_]))
        # the oracle's threshold is tuned the same way on the true maps (its V_g scale differs)
        oracle_thr, orows = tune_maps(np.stack([q["vg"] for _, q, _ in val[:nn_]]),
                                      np.stack([q["qz"] for _, q, _ in val[:nn_]]))
        write_table(out_dir / "network_tuning.csv", pd.concat([pd.DataFrame(rows).assign(detector="network"),
                                                                pd.DataFrame(orows).assign(detector="oracle")]))
        net_tuning.update(common, n_patterns=min(nn_, len(val)), grid={"peak_threshold": grid},
                          chosen={"peak_threshold": thr}, oracle_chosen={"peak_threshold": oracle_thr},
                          min_spacing_px=spacing)
        log.info("network threshold tuned on %d val patterns: %.3g (oracle %.3g)", min(nn_, len(val)), thr, oracle_thr)
    elif net_tuning["enabled"]:
        net_tuning["note"] = "no val patterns: config peak_threshold used"

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

    examples, visibility = {}, []
    if test:
        n = len(test)
        oracle_pk = peaks(np.stack([q["vg"] for _, q, _ in test]), np.stack([q["qz"] for _, q, _ in test]), n,
                          oracle_thr)
        for di, dose in enumerate(doses):
            cb, vis = augmented(test, di, dose, salt=2)
            visibility.append({"dose": dose, "n_visible": int(sum(len(v) for v in vis)),
                               "n_kinematic_in_detector": int(sum(len(t) for _, _, t in test)),
                               "n_above_vg_floor": int(sum(int(t["above_floor"].sum()) for _, _, t in test))})
            add("oracle", dose, *scores(test, vis, oracle_pk))
            net_pk = None
            if model is not None:
                t0 = time.perf_counter()
                vg_p, qz_p = network_maps(test, cb)
                net_pk = peaks(vg_p, qz_p, n, thr)
                timing["network_s"] += time.perf_counter() - t0
                timing["n_network"] += n
                add("network", dose, *scores(test, vis, net_pk))
            t0 = time.perf_counter()
            cl_pk = classical_peaks(test, cb, settings)
            timing["classical_s"] += time.perf_counter() - t0
            timing["n_classical"] += n
            add("classical", dose, *scores(test, vis, cl_pk))
            if di == mid:
                examples = {"cbed": cb[:3], "dose": dose, "network": None if net_pk is None else net_pk[:3],
                            "classical": cl_pk[:3], "truth": vis[:3], "truth_all": [t for _, _, t in test[:3]]}

    pats = pd.concat(all_pats, ignore_index=True) if all_pats else pd.DataFrame()
    pairs = pd.concat(all_pairs, ignore_index=True) if all_pairs else pd.DataFrame()
    if not pats.empty:
        pats = pats.merge(meta, on="pattern_id")
    metrics = {
        "split": "test", "n_patterns": len(test), "doses_e_per_pattern": doses, "dk_invA": dk,
        "detector_px": P,
        "settings": {"peak_threshold": thr, "network_min_spacing_px": spacing, "match_tol_px": tol,
                     "min_vg_visible": float(ecfg["min_vg_visible"]), "visible_min_electrons": vis_e,
                     "visible_min_snr": vis_snr, "precision": precision},
        "visibility": visibility,
        "visibility_note": ("visible = |V_g| >= min_vg_visible x strongest AND disk electrons above the local "
                            "level >= visible_min_electrons AND SNR >= visible_min_snr at that dose; "
                            "*_all metrics use every kinematic reflection in the detector"),
        "qz_sign_min_invA": qmin, "model": None if model_path is None else str(model_path),
        "oracle_note": "oracle = peak extraction on the TRUE V_g/q_z maps (upper bound, not a result)",
        "network_peak_settings": {"peak_threshold": thr, "min_spacing_px": spacing,
                                  "source": "tuned on val" if "chosen" in net_tuning else "config"},
        "oracle_peak_settings": {"peak_threshold": oracle_thr, "min_spacing_px": spacing},
        "network_tuning": net_tuning,
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
        ax.plot(o["dose"], o["f1"], "--", color=colors["oracle"], label="oracle (true V_g)")
    for det in ("network", "classical"):
        r = rows[rows["detector"] == det] if not rows.empty else rows
        if len(r) and "recall_all" in r:
            ax.plot(r["dose"], r["recall_all"], ":", color=colors[det], label=f"{det}: recall, all kinematic")
    ax.set_xscale("log")
    ax.set_xlabel("dose (e⁻ / pattern)")
    ax.set_ylabel("F1 (visible truth) / recall (all)")
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
        ta = examples["truth_all"][k]
        a.scatter(ta["qy_px"], ta["qx_px"], s=60, facecolors="none", edgecolors="0.5", lw=0.6,
                  label="kinematic, not visible")
        t = examples["truth"][k]
        a.scatter(t["qy_px"], t["qx_px"], s=60, facecolors="none", edgecolors="lime", label="truth (visible)")
        if examples.get("network") is not None:
            nk = examples["network"][k]
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
