"""Evaluation of Bragg vectors against the kinematic truth: network vs py4DSTEM vs an oracle.

Procedure (rule ``evaluate``):
1. Patterns of the test split (held-out crystals), at most ``evaluate.max_patterns`` (evenly spaced).
2. For every dose in ``evaluate.doses_e_per_pattern`` the stored noise-free CBED is augmented
   (fourdcrystal.learning.augment, that dose, an RNG seeded by (seed, dose index, pattern)); the network and
   the classical detector see exactly the same augmented pattern.
3. Truth is crystallography: the kinematic reflections the pattern shows (column ``shown`` of the
   shard's reflections, decided by fourdcrystal.simulation.labels: for zone-axis patterns the
   zero-order Laue zone inside the first-order Laue-zone ring, otherwise the reflections the Ewald
   sphere excites; whole disk on the detector; |V_g| ≥ ``simulation.label_min_vg_fraction`` × V_0).
   The same truth at every dose: what a detector misses at low dose counts against it. For the
   detectors it sits where each augmented pattern's detector recorded it (its elliptical distortion,
   ``truth.as_recorded``: calibrating that away comes after detection); the oracle reads the label,
   on the calibrated grid.
4. Predictions (direct beam removed: anything within ``match_tol_px`` of it) are matched one-to-one
   (Hungarian) to the truth within 1 px and within ``match_tol_px`` (2 px). The classical vectors are first
   re-referenced to the disk it finds at the beam (what a py4DSTEM user does with origin
   calibration); the network sees each pattern as ``fourdcrystal predict`` prepares it
   (model_input.ModelInput: its direct beam found and resampled onto the centre pixel, total intensity
   scaled to the probe's), so both detectors get the same origin correction.
5. Metrics: precision, recall, F1 at 1 px (no suffix) and 2 px (pooled counts); over the pairs matched
   within 2 px, position RMS and radial bias (px and Å⁻¹), Spearman of predicted intensity vs |V_g|
   (mean over patterns with ≥ 3 matches), q_z MAE and sign accuracy (pairs with |q_z true| ≥
   ``qz_sign_min_invA``) — per detector and dose, and broken down by thickness, tilt and prototype.
6. Negatives (``evaluate.negatives_per_kind`` draws per kind and dose, same augmentation): the vacuum
   probe alone, an amorphous carbon film (simulated with the workflow's multislice), and detector noise
   without a beam. Their truth is "no vectors but the beam": ``false_vectors_per_pattern`` per detector,
   kind and dose.
The oracle row runs the same peak extraction on the TRUE V_g / q_z maps (the rendered truth; no
noise, so the same vectors at every dose): it proves the label holds the truth (F1 at 1 px must be
≈ 1) and bounds any network with this post-processing; it is not a result.
Tuning, once per run on the val split at the middle dose, by the same rule for both detectors
(exhaustive grid, max pooled F1 at 1 px against the truth, ties to the first grid value): the
classical settings (classical.tune) and the network's relative V_g threshold (tuning.tune_threshold;
non-maximum suppression at ``network_min_spacing_px``; by F_β instead of F1 where
``tune_network.beta`` ≠ 1, which weighs precision above recall for β < 1). Grids, scores and chosen values go to
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
from fourdcrystal.evaluation.scoring import aggregate, breakdown, jsonable, rereference_classical, score_patterns
from fourdcrystal.evaluation.truth import NEGATIVE_KINDS, as_recorded, negative_cbed, select_patterns, shown_truth
from fourdcrystal.evaluation.tuning import tune_classical, tune_threshold
from fourdcrystal.geometry import Geometry
from fourdcrystal.inference import classical, peaks
from fourdcrystal.inference.detectors import DEFAULT_BATCH, MeasuredPattern
from fourdcrystal.inference.model_input import ModelInput
from fourdcrystal.learning.augment import Augmenter
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
        self.qmin, self.precision = float(e["qz_sign_min_invA"]), str(e["precision"])

    def load(self, split: str, n_max: int) -> list[tuple]:
        """(manifest row, quartet, kinematic truth) of up to ``n_max`` evenly spaced patterns of ``split``."""
        items = []
        for _, row in select_patterns(self.manifest, split, n_max).iterrows():
            q = read_pattern(self.root / row["store"], int(row["index"]))
            refl = self.reflections.get((row["store"], int(row["index"])), self.no_reflections)
            items.append((row, q, shown_truth(refl)))
        return items

    def augmented(self, items, dose_idx: int, dose: float, salt: int) -> tuple[np.ndarray, list]:
        """The items' CBEDs through the detector augmentation at ``dose`` (one seeded draw each), and the
        elliptical distortion each was recorded with (the truth follows it: ``scores``)."""
        draws = [self.augmenter.apply_recorded(q["cbed"], q["probe"], np.random.default_rng([self.seed, salt, dose_idx, i]),
                                               dose=dose) for i, (_, q, _) in enumerate(items)]
        return np.stack([d[0] for d in draws]), [d[1] for d in draws]

    def scores(self, items, peaks_per_pattern, distortions=None):
        """Per-pattern counts and pairs against the truth; with ``distortions`` (vectors from recorded
        patterns) where each pattern's detector put it (``truth.as_recorded``), without (the oracle, which
        reads the label) on the calibrated grid."""
        truths = [truth for _, _, truth in items]
        if distortions is not None:
            truths = [as_recorded(t, a, self.cp) for t, a in zip(truths, distortions)]
        return score_patterns(peaks_per_pattern, truths, self.cp)

    def pooled(self, pats, pairs) -> dict:
        return aggregate(pats, pairs.assign(detector="x", dose=0), self.dk, self.qmin)

    def classical_peaks(self, items, cbeds, settings):
        return [rereference_classical(classical.find_disks(cb, q["probe"], settings), self.cp, self.tol)
                for (_, q, _), cb in zip(items, cbeds)]

    def network_maps(self, items, cbeds):
        """V_g and q_z maps of each pattern as `predict` prepares it: its direct beam found and resampled
        onto the centre pixel (the detector's origin shift undone, as the classical vectors are
        re-referenced); patterns sharing a vacuum probe (one per probe setting) in one batch. Also
        returns, per probe, what `predict`'s look at the measured pattern needs (indices, raw patterns, the
        correlation's beams, the beams placed by their edges, its ``MeasuredPattern``, ``evidence.one_electron``
        of the patterns)."""
        P, cp = self.P, self.cp
        same_probe: dict[bytes, list[int]] = {}
        for k, (_, q, _) in enumerate(items):
            same_probe.setdefault(np.ascontiguousarray(q["probe"]).tobytes(), []).append(k)
        probes, prepared = torch.empty((len(items), P, P)), torch.empty((len(items), P, P))
        evidence = []
        for idx in same_probe.values():
            mi = ModelInput(items[idx[0]][1]["probe"], 1.0, P, cp)
            x = torch.from_numpy(np.ascontiguousarray(cbeds[idx], dtype=np.float32))
            centres = mi.centres(x)
            probes[idx], prepared[idx] = mi(x, centres)
            # checked and measured from the beam placed by its edge, as `predict` does (``ModelInput.beam_centres``)
            evidence.append((np.asarray(idx), x, centres, mi.beam_centres(x, centres),
                             MeasuredPattern(mi, self.dk, self.dk), mi.electron(x)))
        cbeds = prepared.numpy()
        vgs, qzs, nb = [], [], DEFAULT_BATCH["cpu"]
        # the arithmetic `predict --precision` would use (bf16: autocast, FFTs stay fp32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            for s in range(0, len(cbeds), nb):
                v, z = self.model(probes[s:s + nb], torch.from_numpy(cbeds[s:s + nb]))
                vgs.append(v.float().numpy())
                qzs.append(z.float().numpy())
        return np.concatenate(vgs), np.concatenate(qzs), evidence

    def network_peaks(self, items, cbeds, threshold: float):
        """The network's vectors per pattern, as `predict` reports them."""
        vg, qz, evidence = self.network_maps(items, cbeds)
        return self.peaks(vg, qz, len(items), threshold, evidence)

    def peaks(self, vg, qz, n: int, threshold: float, evidence=None):
        """Peaks per pattern; with ``evidence`` (from network_maps) only those the pattern supports, as
        `predict` keeps them (fourdcrystal.inference.evidence), at `predict`'s threshold per pattern."""
        proposal = threshold
        if evidence:  # per pattern, as `predict`'s MeasuredPattern proposes and flags them
            proposal, ramp = np.full(n, threshold, np.float32), np.full(n, threshold, np.float32)
            for idx, raw, _, _, measured, electron in evidence:
                proposal[idx] = measured.proposal_threshold(threshold)
                ramp[idx] = np.asarray(measured.thresholds(raw, threshold, electron))
        pk = peaks.find_peaks(vg, qz, center_px=self.cp, threshold=proposal, exclude_center_px=self.tol,
                              min_spacing_px=self.spacing)
        if evidence:
            pk["weak"] = peaks.below_threshold(pk, vg, self.cp, threshold)
            pk["unsure"] = peaks.below_threshold(pk, vg, self.cp, ramp)
            pk = pd.concat([self._measured(pk, *group) for group in evidence], ignore_index=True)
        pk = pd.DataFrame(pk)
        groups = dict(tuple(pk.groupby("pattern")))
        return [groups.get(i, pk.iloc[:0]) for i in range(n)]

    def _measured(self, pk: dict, idx, raw, centres, beams, measured, electron) -> pd.DataFrame:
        """The peaks of one probe group (``idx``) checked and placed on their measured patterns from their
        ``beams``, as `predict` does (its detector pixels are the model's here), back on the grid centred there."""
        sel = np.flatnonzero(np.isin(pk["pattern"], idx))
        local = np.searchsorted(idx, pk["pattern"][sel])  # idx ascends: built in item order
        c = centres.numpy().astype(np.float64)[local]
        x, y = c[:, 0] + pk["qx_px"][sel] - self.cp, c[:, 1] + pk["qy_px"][sel] - self.cp  # pattern px
        bm = beams.numpy().astype(np.float64)[local]
        out = measured(raw, beams, {"pattern": local, "qx": (x - bm[:, 0]) * self.dk, "qy": (y - bm[:, 1]) * self.dk,
                                    "qx_px": x, "qy_px": y, "row": sel,
                                    "weak": pk["weak"][sel], "unsure": pk["unsure"][sel]}, electron)
        rows = out["row"]
        # the intensity measured on each disk, as `predict` reports it (the network's V_g where unchecked)
        return pd.DataFrame({"pattern": pk["pattern"][rows], "qx_px": self.cp + out["qx"] / self.dk,
                             "qy_px": self.cp + out["qy"] / self.dk,
                             "intensity": out.get("intensity", pk["intensity"][rows]), "qz": pk["qz"][rows]})


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
    distortions: list  # each pattern's elliptical distortion (``Evaluation.augmented``)
    record: dict  # what every tuning record says about the data it was tuned on


def validation_set(ev: Evaluation, n_max: int) -> ValSet | None:
    val = ev.load("val", n_max)
    if not val:
        return None
    vc, vd = ev.augmented(val, ev.mid, ev.doses[ev.mid], salt=1)
    record = {"split": "val", "n_patterns": len(val), "dose_e_per_pattern": ev.doses[ev.mid],
              "criterion": "pooled F1 at 1 px vs the truth (ties: first in grid order)"}
    return ValSet(val, vc, vd, record)


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
    items, cbeds, dist = val.items[:nc], val.cbeds[:nc], val.distortions[:nc]
    grid = {k: list(v) for k, v in tcfg["grid"].items()}
    settings, table = tune_classical(lambda st: ev.pooled(*ev.scores(items, ev.classical_peaks(items, cbeds, st), dist)),
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
    items = val.items[:nn_]
    grid = [float(t) for t in ncfg["grid"]["peak_threshold"]]
    beta = float(ncfg.get("beta", 1.0))  # F_beta: beta < 1 weighs precision above recall
    tie_tol = float(ncfg.get("tie_tolerance", 0.0))  # F_beta this close to the best is a tie: highest threshold

    def tune_maps(vg_v, qz_v, evidence=None, distortions=None, tie=0.0):
        return tune_threshold(lambda t: ev.pooled(*ev.scores(items, ev.peaks(vg_v, qz_v, len(vg_v), t, evidence),
                                                             distortions)), grid, beta, tie)

    thr, rows = tune_maps(*ev.network_maps(items, val.cbeds[:nn_]), distortions=val.distortions[:nn_], tie=tie_tol)
    # the oracle's threshold is tuned the same way on the true maps (its V_g scale differs); it finds no false
    # vectors, so its ties need no rule against them
    oracle_thr, orows = tune_maps(np.stack([q["vg"] for _, q, _ in items]), np.stack([q["qz"] for _, q, _ in items]))
    write_table(out_dir / "network_tuning.csv", pd.concat([pd.DataFrame(rows).assign(detector="network"),
                                                            pd.DataFrame(orows).assign(detector="oracle")]))
    tuning.update(val.record, n_patterns=len(items), grid={"peak_threshold": grid}, chosen={"peak_threshold": thr},
                  criterion=f"pooled F_beta at 1 px, beta {beta:g} (within {tie_tol:g} of the best: the highest threshold)",
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
    negatives: list = field(default_factory=list)

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
        cb, dist = ev.augmented(test, di, dose, salt=2)
        out.add("oracle", dose, *ev.scores(test, oracle_pk))
        net_pk = None
        if ev.model is not None:
            net_pk = out.timed("network", n, lambda: ev.network_peaks(test, cb, thr))
            out.add("network", dose, *ev.scores(test, net_pk, dist))
        cl_pk = out.timed("classical", n, lambda: ev.classical_peaks(test, cb, settings))
        out.add("classical", dose, *ev.scores(test, cl_pk, dist))
        if di == ev.mid:
            out.examples = {"cbed": cb[:3], "dose": dose, "network": None if net_pk is None else net_pk[:3],
                            "classical": cl_pk[:3], "truth": [as_recorded(t, d, ev.cp) for (_, _, t), d in zip(test[:3], dist[:3])]}
    return out


def score_negatives(ev: Evaluation, test, settings: dict, thr: float, out: TestScores) -> None:
    """False vectors per pattern on patterns without a crystal (truth: no vectors but the beam), per
    kind and dose; the probe and amorphous film of the first test pattern's illumination."""
    from fourdcrystal.simulation.examples import amorphous_film_cbed

    n = int(ev.ecfg["negatives_per_kind"])
    if not test or n < 1:
        return
    row, q, _ = test[0]
    film = amorphous_film_cbed(ev.geometry, float(row["energy_eV"]), float(row["semiangle_mrad"]),
                               float(ev.ecfg["amorphous_film_thickness_A"]), seed=ev.seed)
    empty = pd.DataFrame({"qx_px": [], "qy_px": [], "h": [], "k": [], "l": [], "vg_abs": [], "qz_invA": []})
    for kind in NEGATIVE_KINDS:
        probe = film["probe"] if kind == "amorphous_film" else q["probe"]
        items = [(row, {"probe": probe, "cbed": negative_cbed(kind, probe, film["cbed"])}, empty)] * n
        for di, dose in enumerate(ev.doses):
            cb, _ = ev.augmented(items, di, dose, salt=3 + NEGATIVE_KINDS.index(kind))
            found = {"classical": ev.classical_peaks(items, cb, settings)}
            if ev.model is not None:
                found["network"] = ev.network_peaks(items, cb, thr)
            for det, pk in found.items():
                counts = [len(p) for p in pk]
                out.negatives.append({"kind": kind, "dose": dose, "detector": det, "n_patterns": n,
                                      "false_vectors_per_pattern": float(np.mean(counts)),
                                      "max_false_vectors": int(np.max(counts))})


# --- step 3: metrics ----------------------------------------------------------------------------
def metrics_record(ev: Evaluation, n_test: int, ts: TestScores, settings: dict, tuning: dict, thr: float,
                   oracle_thr: float, net_tuning: dict, model_path) -> dict:
    t = ts.timing
    return {
        "split": "test", "n_patterns": n_test, "doses_e_per_pattern": ev.doses, "dk_invA": ev.dk,
        "detector_px": ev.P,
        "settings": {"peak_threshold": thr, "network_min_spacing_px": ev.spacing, "match_tol_px": ev.tol,
                     "precision": ev.precision},
        "truth_note": ("truth = the kinematic reflections the pattern shows (fourdcrystal.simulation.labels): "
                       "zone-axis patterns the zero-order Laue zone inside the FOLZ ring, others the excited "
                       "ones; whole disk on the detector; |V_g| >= simulation.label_min_vg_fraction x V_0"),
        "negatives": ts.negatives,
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
    score_negatives(ev, test, settings, thr, ts)
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
