"""The workflow's final report: one self-contained HTML file (PNGs embedded as base64)."""
from __future__ import annotations

import base64
import html
import json
from datetime import datetime, timezone
from pathlib import Path

from fourdcrystal.atomic import write_text

METRIC_COLUMNS = [("n_true", "{:d}"), ("precision", "{:.3f}"), ("recall", "{:.3f}"), ("f1", "{:.3f}"),
                  ("f1_2px", "{:.3f}"), ("rms_px", "{:.2f}"),
                  ("rms_invA", "{:.4f}"), ("radial_bias_px", "{:+.2f}"), ("intensity_spearman", "{:.2f}"),
                  ("qz_mae_invA", "{:.3f}"), ("qz_sign_accuracy", "{:.2f}")]


def negatives_table(m: dict) -> str:
    """False vectors per pattern on patterns without a crystal, per detector, kind and dose."""
    rows = m.get("negatives") or []
    if not rows:
        return ""
    body = "".join(f"<tr><td>{html.escape(r['detector'])}</td><td>{html.escape(r['kind'])}</td><td>{r['dose']:.0e}</td>"
                   f"<td>{r['false_vectors_per_pattern']:.2f}</td><td>{r['max_false_vectors']}</td></tr>" for r in rows)
    return ("<p>Negatives (truth: no vectors but the beam):</p><table><tr><th>detector</th><th>kind</th><th>dose</th>"
            f"<th>false vectors / pattern</th><th>max</th></tr>{body}</table>")


def _img(path, caption: str) -> str:
    p = Path(path) if path else None
    if p is None or not p.is_file():
        return f"<figure><p class='missing'>missing: {html.escape(str(path))}</p><figcaption>{caption}</figcaption></figure>"
    data = base64.b64encode(p.read_bytes()).decode()
    return f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(caption)}'><figcaption>{caption}</figcaption></figure>"


def _fmt(v, f):
    if v is None:
        return "–"
    return f.format(int(v)) if f == "{:d}" else f.format(v)


def metrics_table(metrics: dict) -> str:
    rows = metrics.get("by_dose", [])
    head = "".join(f"<th>{c}</th>" for c in ["detector", "dose (e⁻)", "patterns"] + [c for c, _ in METRIC_COLUMNS])
    body = []
    for r in sorted(rows, key=lambda r: (r["detector"] != "network", r["detector"], r["dose"])):
        dose = f"{r['dose']:.0e}"
        cells = [html.escape(r["detector"] + (" (upper bound)" if r["detector"] == "oracle" else "")), dose,
                 str(r["n_patterns"])] + [_fmt(r.get(c), f) for c, f in METRIC_COLUMNS]
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def build_report(out_html, metrics_json, figures: dict[str, str], scan_summary=None) -> None:
    m = json.loads(Path(metrics_json).read_text()) if metrics_json and Path(metrics_json).is_file() else {}
    t = m.get("timing", {})
    tune = m.get("classical_tuning", {})
    st = m.get("settings", {})
    nps = m.get("network_peak_settings", {})
    ntune = m.get("network_tuning", {})
    scan = json.loads(Path(scan_summary).read_text()) if scan_summary and Path(scan_summary).is_file() else {}
    speed = (f"network {t.get('network_patterns_per_s') or 0:.1f} patterns/s vs py4DSTEM "
             f"{t.get('classical_patterns_per_s') or 0:.1f} patterns/s during evaluation") if t else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>4D&gt;Crystal report</title><style>",
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
        "img{max-width:100%}figure{margin:1em 0}figcaption{font-size:13px;color:#555}.missing{color:#a00}",
        "</style></head><body><h1>4D&gt;Crystal: Bragg vectors from 4D-STEM with deep learning</h1>",
        f"<p>Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}.</p>",
        "<h2>1. Training data</h2>", _img(figures.get("quartets"), "Quartets: probe, CBED, V_g, q_z of simulated samples."),
        "<h2>2. Training</h2>", _img(figures.get("loss"), "Training and validation loss."),
        "<h2>3. Evaluation on held-out crystals (test split)</h2>",
        f"<p>{m.get('n_patterns', 0)} test patterns; precision, recall, F1 matched within 1 px (f1_2px: "
        f"{st.get('match_tol_px')} px); {html.escape(m.get('truth_note', ''))}. "
        f"{html.escape(m.get('oracle_note', ''))}. Network peaks: threshold {nps.get('peak_threshold')} of the direct "
        f"beam's V_g ({html.escape(str(nps.get('source', '')))}; grid "
        f"{html.escape(json.dumps(ntune.get('grid', {})))}), non-maximum suppression {nps.get('min_spacing_px')} px. "
        f"Classical = py4DSTEM find_Bragg_disks (multicorr), tuned on "
        f"{tune.get('n_patterns', 0)} val patterns: {html.escape(json.dumps(tune.get('chosen', {})))}. {speed}.</p>",
        metrics_table(m), negatives_table(m),
        _img(figures.get("f1_vs_dose"), "F1 vs dose."),
        _img(figures.get("rms_bias"), "Position RMS and radial bias vs thickness."),
        _img(figures.get("overlays"), "Truth (circles), network (×), py4DSTEM (+) on example patterns."),
        "<h2>4. Simulated 4D-STEM scan</h2>",
        f"<p>Polycrystal mosaic of test-split patterns ({scan.get('n_patterns', '?')} positions, "
        f"{scan.get('n_vectors', '?')} vectors) run through <code>fourdcrystal predict</code>.</p>",
        _img(figures.get("scan_map"), "Bragg vector map of the simulated scan."),
        "</body></html>",
    ]
    write_text(out_html, "\n".join(parts))
