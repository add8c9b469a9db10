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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fourdcrystal.atomic import write_table, write_text
from fourdcrystal.config import fill_defaults
from fourdcrystal.evaluation.figures import make_figures
from fourdcrystal.evaluation.scoring import aggregate, breakdown, jsonable, rereference_classical, score_pattern
from fourdcrystal.evaluation.truth import kinematic_truth, select_patterns, visible_truth
from fourdcrystal.evaluation.tuning import tune_classical, tune_threshold
from fourdcrystal.geometry import Geometry
from fourdcrystal.inference import classical, peaks
from fourdcrystal.inference.detectors import DEFAULT_BATCH
from fourdcrystal.inference.model_input import ModelInput
from fourdcrystal.learning.augment import Augmenter, transform
from fourdcrystal.simulation.store import load_manifest, read_pattern

log = logging.getLogger("fourdcrystal.evaluate")

TILT_BINS = [-np.inf, 1.0, 10.0, 20.0, np.inf]
TILT_LABELS = ["0-1", "1-10", "10-20", ">20"]


@dataclass
class Evaluation:
    """Everything the steps share: the settings of config ``evaluate``, the data and the model."""

    ecfg: dict
    geometry: Geometry
    manifest: pd.DataFrame
    reflections: dict  # (store, index) -> that pattern's kinematic reflections
    no_reflections: pd.DataFrame
    augmenter: Augmenter
    seed: int
    root: Path
    model: torch.nn.Module | None = None
    doses: list[float] = field(init=False)

    def __post_init__(self):
        e = self.ecfg
        self.doses = [float(d) for d in e["doses_e_per_pattern"]]
        self.mid = int(len(self.doses) // 2)
        self.P, self.cp, self.dk = self.geometry.detector_px, self.geometry.center_px, self.geometry.dk_invA
        self.tol, self.spacing = float(e["match_tol_px"]), float(e["network_min_spacing_px"])
        self.vis_e, self.vis_snr = float(e["visible_min_electrons"]), float(e["visible_min_snr"])
        self.qmin, self.precision = float(e["qz_sign_min_invA"]), str(e["precision"])

    def load(self, split: str, n_max: int) -> list[tuple]:
        """(manifest row, quartet, kinematic truth) of up to ``n_max`` evenly spaced patterns of ``split``."""
        items = []
        for _, row in select_patterns(self.manifest, split, n_max).iterrows():
            q = read_pattern(self.root / row["store"], int(row["index"]))
            refl = self.reflections.get((row["store"], int(row["index"])), self.no_reflections)
            items.append((row, q, kinematic_truth(refl, self.P, float(self.ecfg["min_vg_visible"]))))
        return items

    def augmented(self, items, dose_idx: int, dose: float, salt: int):
        """Augmented CBEDs at ``dose`` and each pattern's visible truth for that very draw."""
        cbs, vis = [], []
        for i, (_, q, truth) in enumerate(items):
            rng = np.random.default_rng([self.seed, salt, dose_idx, i])
            params = self.augmenter.draw(rng, q["cbed"].shape, dose)  # = Augmenter.apply, keeping the draw
            cbs.append(transform(q["cbed"], q["probe"], params, rng))
            vis.append(visible_truth(truth, q["cbed"], q["probe"], dose, params, min_electrons=self.vis_e,
                                     min_snr=self.vis_snr))
        return np.stack(cbs), vis

    def scores(self, items, vis, peaks_per_pattern):
        pats, pairs = [], []
        for i, ((_, _, truth), tv, pk) in enumerate(zip(items, vis, peaks_per_pattern)):
            c, pr = score_pattern(pk, tv, self.tol, self.cp, truth_all=truth)
            pats.append({**c, "pattern_id": i})
            pairs.append(pr.assign(pattern_id=i))
        return pd.DataFrame(pats), pd.concat(pairs, ignore_index=True)

    def pooled(self, pats, pairs) -> dict:
        return aggregate(pats, pairs.assign(detector="x", dose=0), self.dk, self.qmin)

    def classical_peaks(self, items, cbeds, settings):
        return [rereference_classical(classical.find_disks(cb, q["probe"], settings), self.cp, self.tol)
                for (_, q, _), cb in zip(items, cbeds)]

    def network_maps(self, items, cbeds):
        """V_g and q_z maps of each pattern as `predict` prepares it: its direct beam found and resampled
        onto the centre pixel (the detector's origin shift undone, as the classical vectors are
        re-referenced); patterns sharing a vacuum probe (one per probe setting) in one batch."""
        P, cp = self.P, self.cp
        same_probe: dict[bytes, list[int]] = {}
        for k, (_, q, _) in enumerate(items):
            same_probe.setdefault(np.ascontiguousarray(q["probe"]).tobytes(), []).append(k)
        probes, prepared = torch.empty((len(items), P, P)), torch.empty((len(items), P, P))
        for idx in same_probe.values():
            mi = ModelInput(items[idx[0]][1]["probe"], 1.0, P, cp)
            x = torch.from_numpy(np.ascontiguousarray(cbeds[idx], dtype=np.float32))
            probes[idx], prepared[idx] = mi(x, mi.centres(x))
        cbeds = prepared.numpy()
        vgs, qzs, nb = [], [], DEFAULT_BATCH["cpu"]
        # the arithmetic `predict --precision` would use (bf16: autocast, FFTs stay fp32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for s in range(0, len(cbeds), nb):
                v, z = self.model(probes[s:s + nb], torch.from_numpy(cbeds[s:s + nb]))
                vgs.append(v.float().numpy())
                qzs.append(z.float().numpy())
        return np.concatenate(vgs), np.concatenate(qzs)

    def peaks(self, vg, qz, n: int, threshold: float):
        pk = pd.DataFrame(peaks.find_peaks(vg, qz, center_px=self.cp, threshold=threshold,
                                           exclude_center_px=self.tol, min_spacing_px=self.spacing))
        groups = dict(tuple(pk.groupby("pattern")))
        return [groups.get(i, pk.iloc[:0]) for i in range(n)]


def open_evaluation(config: dict, manifest_path, reflections_path, model_path=None, root=".") -> Evaluation:
    config = fill_defaults(config)  # the schema's defaults, as for the workflow
    geo = Geometry.from_config(config)
    refl = pd.read_parquet(reflections_path)
    model = None
    if model_path is not None:
        from fourdcrystal.learning.model import load_checkpoint

        model, mgeo, _ = load_checkpoint(model_path)
        model = model.to(memory_format=torch.channels_last)  # as predict runs it (oneDNN's faster layout)
        if mgeo.detector_px != geo.detector_px or abs(mgeo.dk_invA - geo.dk_invA) > 1e-9:
            log.warning("model geometry %s differs from the dataset's; evaluating anyway", mgeo.to_dict())
    return Evaluation(config["evaluate"], geo, load_manifest(manifest_path),
                      {k: g for k, g in refl.groupby(["store", "index"])}, refl.iloc[:0],
                      Augmenter(config["augment"]), int(config["seed"]), Path(root), model)


# --- step 1: tune both detectors once, on val at the middle dose ---------------------------------
@dataclass
class ValSet:
    items: list
    cbeds: np.ndarray
    visible: list
    record: dict  # what every tuning record says about the data it was tuned on


def validation_set(ev: Evaluation, n_max: int) -> ValSet | None:
    val = ev.load("val", n_max)
    if not val:
        return None
    vc, vvis = ev.augmented(val, ev.mid, ev.doses[ev.mid], salt=1)
    record = {"split": "val", "n_patterns": len(val), "dose_e_per_pattern": ev.doses[ev.mid],
              "criterion": "pooled F1 vs the visible truth (ties: first in grid order)"}
    return ValSet(val, vc, vvis, record)


def tune_classical_step(ev: Evaluation, val: ValSet | None, out_dir: Path) -> tuple[dict, dict]:
    """(py4DSTEM settings to use, tuning record)."""
    tcfg = ev.ecfg["tune_classical"]
    base = classical.settings_from(ev.ecfg["classical"])
    tuning = {"enabled": bool(tcfg["enabled"])}
    if not tuning["enabled"]:
        return base, tuning
    if val is None:
        return base, {**tuning, "note": "no val patterns: config settings used"}
    nc = int(tcfg["max_patterns"])
    items, cbeds, vis = val.items[:nc], val.cbeds[:nc], val.visible[:nc]
    grid = {k: list(v) for k, v in tcfg["grid"].items()}
    settings, table = tune_classical(lambda st: ev.pooled(*ev.scores(items, vis, ev.classical_peaks(items, cbeds, st))),
                                     base, grid)
    write_table(out_dir / "classical_tuning.csv", table)
    tuning.update(val.record, n_patterns=len(items), grid=grid, chosen={k: settings[k] for k in grid})
    log.info("classical tuned on %d val patterns: %s", len(items), tuning["chosen"])
    return settings, tuning


def tune_network_step(ev: Evaluation, val: ValSet | None, out_dir: Path) -> tuple[float, float, dict]:
    """(network threshold, oracle threshold, tuning record); both fall back to ``peak_threshold``."""
    ncfg = ev.ecfg["tune_network"]
    thr = float(ev.ecfg["peak_threshold"])
    tuning = {"enabled": bool(ncfg["enabled"]) and ev.model is not None}
    if not tuning["enabled"]:
        return thr, thr, tuning
    if val is None:
        return thr, thr, {**tuning, "note": "no val patterns: config peak_threshold used"}
    nn_ = int(ncfg["max_patterns"])
    items, vis = val.items[:nn_], val.visible[:nn_]
    grid = [float(t) for t in ncfg["grid"]["peak_threshold"]]

    def tune_maps(vg_v, qz_v):
        return tune_threshold(lambda t: ev.pooled(*ev.scores(items, vis, ev.peaks(vg_v, qz_v, len(vg_v), t))), grid)

    thr, rows = tune_maps(*ev.network_maps(items, val.cbeds[:nn_]))
    # the oracle's threshold is tuned the same way on the true maps (its V_g scale differs)
    oracle_thr, orows = tune_maps(np.stack([q["vg"] for _, q, _ in items]), np.stack([q["qz"] for _, q, _ in items]))
    write_table(out_dir / "network_tuning.csv", pd.concat([pd.DataFrame(rows).assign(detector="network"),
                                                            pd.DataFrame(orows).assign(detector="oracle")]))
    tuning.update(val.record, n_patterns=len(items), grid={"peak_threshold": grid}, chosen={"peak_threshold": thr},
                  oracle_chosen={"peak_threshold": oracle_thr}, min_spacing_px=ev.spacing)
    log.info("network threshold tuned on %d val patterns: %.3g (oracle %.3g)", len(items), thr, oracle_thr)
    return thr, oracle_thr, tuning


# --- step 2: the test split, every detector at every dose ----------------------------------------
@dataclass
class TestScores:
    patterns: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    timing: dict = field(default_factory=lambda: {"network_s": 0.0, "classical_s": 0.0, "n_network": 0,
                                                  "n_classical": 0})
    examples: dict = field(default_factory=dict)
    visibility: list = field(default_factory=list)

    def add(self, detector, dose, pats, pairs):
        self.patterns.append(pats.assign(detector=detector, dose=dose))
        self.pairs.append(pairs.assign(detector=detector, dose=dose))

    def timed(self, detector: str, n: int, fn):
        t0 = time.perf_counter()
        out = fn()
        self.timing[f"{detector}_s"] += time.perf_counter() - t0
        self.timing[f"n_{detector}"] += n
        return out


def test_metadata(test) -> pd.DataFrame:
    meta = pd.DataFrame([{"pattern_id": i, "crystal_id": r.get("crystal_id"), "prototype": r.get("prototype"),
                          "thickness_A": r.get("thickness_A"),
                          "tilt_mrad": float(np.hypot(r.get("tilt_x_mrad", 0.0), r.get("tilt_y_mrad", 0.0)))}
                         for i, (r, _, _) in enumerate(test)])
    if not meta.empty:
        meta["tilt_bin"] = pd.cut(meta["tilt_mrad"], TILT_BINS, labels=TILT_LABELS).astype(str)
    return meta


def score_test(ev: Evaluation, test, settings: dict, thr: float, oracle_thr: float) -> TestScores:
    out = TestScores()
    if not test:
        return out
    n = len(test)
    oracle_pk = ev.peaks(np.stack([q["vg"] for _, q, _ in test]), np.stack([q["qz"] for _, q, _ in test]), n,
                         oracle_thr)
    for di, dose in enumerate(ev.doses):
        cb, vis = ev.augmented(test, di, dose, salt=2)
        out.visibility.append({"dose": dose, "n_visible": int(sum(len(v) for v in vis)),
                               "n_kinematic_in_detector": int(sum(len(t) for _, _, t in test)),
                               "n_above_vg_floor": int(sum(int(t["above_floor"].sum()) for _, _, t in test))})
        out.add("oracle", dose, *ev.scores(test, vis, oracle_pk))
        net_pk = None
        if ev.model is not None:
            net_pk = out.timed("network", n, lambda: ev.peaks(*ev.network_maps(test, cb), n, thr))
            out.add("network", dose, *ev.scores(test, vis, net_pk))
        cl_pk = out.timed("classical", n, lambda: ev.classical_peaks(test, cb, settings))
        out.add("classical", dose, *ev.scores(test, vis, cl_pk))
        if di == ev.mid:
            out.examples = {"cbed": cb[:3], "dose": dose, "network": None if net_pk is None else net_pk[:3],
                            "classical": cl_pk[:3], "truth": vis[:3], "truth_all": [t for _, _, t in test[:3]]}
    return out


# --- step 3: metrics ----------------------------------------------------------------------------
def metrics_record(ev: Evaluation, n_test: int, ts: TestScores, settings: dict, tuning: dict, thr: float,
                   oracle_thr: float, net_tuning: dict, model_path) -> dict:
    t = ts.timing
    return {
        "split": "test", "n_patterns": n_test, "doses_e_per_pattern": ev.doses, "dk_invA": ev.dk,
        "detector_px": ev.P,
        "settings": {"peak_threshold": thr, "network_min_spacing_px": ev.spacing, "match_tol_px": ev.tol,
                     "min_vg_visible": float(ev.ecfg["min_vg_visible"]), "visible_min_electrons": ev.vis_e,
                     "visible_min_snr": ev.vis_snr, "precision": ev.precision},
        "visibility": ts.visibility,
        "visibility_note": ("visible = |V_g| >= min_vg_visible x strongest AND disk electrons above the local "
                            "level >= visible_min_electrons AND SNR >= visible_min_snr at that dose; "
                            "*_all metrics use every kinematic reflection in the detector"),
        "qz_sign_min_invA": ev.qmin, "model": None if model_path is None else str(model_path),
        "oracle_note": "oracle = peak extraction on the TRUE V_g/q_z maps (upper bound, not a result)",
        "network_peak_settings": {"peak_threshold": thr, "min_spacing_px": ev.spacing,
                                  "source": "tuned on val" if "chosen" in net_tuning else "config"},
        "oracle_peak_settings": {"peak_threshold": oracle_thr, "min_spacing_px": ev.spacing},
        "network_tuning": net_tuning,
        "classical_settings": {k: settings[k] for k in classical.DEFAULTS}, "classical_tuning": tuning,
        "timing": {**t,
                   "network_patterns_per_s": t["n_network"] / t["network_s"] if t["network_s"] else None,
                   "classical_patterns_per_s": t["n_classical"] / t["classical_s"] if t["classical_s"] else None},
    }


def add_breakdowns(metrics: dict, pats: pd.DataFrame, pairs: pd.DataFrame, dk: float, qmin: float) -> None:
    metrics["by_dose"] = breakdown(pats, pairs, ["detector", "dose"], dk, qmin)
    for key in ("thickness_A", "tilt_bin", "prototype"):
        metrics[f"by_{key.replace('_A', '').replace('_bin', '')}"] = breakdown(pats, pairs, ["detector", "dose", key],
                                                                              dk, qmin)
    metrics["overall"] = breakdown(pats, pairs, ["detector"], dk, qmin)


def run_evaluation(config: dict, manifest_path, reflections_path, out_dir, model_path=None, root=".") -> dict:
    """Evaluate and write metrics.json + tables + figures into ``out_dir``. Returns the metrics."""
    out_dir = Path(out_dir)
    ev = open_evaluation(config, manifest_path, reflections_path, model_path, root)
    tc, tn = ev.ecfg["tune_classical"], ev.ecfg["tune_network"]
    wanted = tc["enabled"] or (tn["enabled"] and ev.model is not None)
    val = validation_set(ev, max(int(tc["max_patterns"]), int(tn["max_patterns"]))) if wanted else None
    settings, tuning = tune_classical_step(ev, val, out_dir)
    thr, oracle_thr, net_tuning = tune_network_step(ev, val, out_dir)
    test = ev.load("test", int(ev.ecfg["max_patterns"]))
    ts = score_test(ev, test, settings, thr, oracle_thr)
    pats = pd.concat(ts.patterns, ignore_index=True) if ts.patterns else pd.DataFrame()
    pairs = pd.concat(ts.pairs, ignore_index=True) if ts.pairs else pd.DataFrame()
    if not pats.empty:
        pats = pats.merge(test_metadata(test), on="pattern_id")
    metrics = metrics_record(ev, len(test), ts, settings, tuning, thr, oracle_thr, net_tuning, model_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not pats.empty:
        add_breakdowns(metrics, pats, pairs, ev.dk, ev.qmin)
        write_table(out_dir / "pattern_scores.parquet", pats)
        write_table(out_dir / "pairs.parquet", pairs)
    make_figures(metrics, ts.examples, out_dir, ev.cp)
    metrics = jsonable(metrics)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return metrics
