"""index.html of a strain run: the maps, the lattice(s) found, the reference and the run's settings.

Self-contained and small on purpose (no template engine): one page that a browser opens from the
output folder, the figures beside it.
"""
from __future__ import annotations

import html
import json


def _vec(v) -> str:
    return f"({v[0]:+.4f}, {v[1]:+.4f})"


def render(summary: dict, figures: list[tuple[str, str]]) -> str:
    """HTML text; ``summary`` as written to summary.json, ``figures`` [(file name, caption)]."""
    rows = "".join(
        f"<tr><td>{g['grain']}</td><td>{_vec(g['g1_invA'])}</td><td>{_vec(g['g2_invA'])}</td>"
        f"<td>{g['g1_length_invA']:.4f} / {g['g2_length_invA']:.4f}</td><td>{g['angle_deg']:.2f}</td>"
        f"<td>{g['n_positions']}</td><td>{g['indexed_fraction_median']:.2f}</td></tr>"
        for g in summary["grains"])
    figs = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(c)}"><figcaption>{html.escape(c)}'
                   "</figcaption></figure>" for f, c in figures)
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in summary["notes"])
    notes += "".join(f'<li><a href="{html.escape(h)}">{html.escape(t)}</a></li>' for h, t in summary.get("links", []))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>4D>Crystal strain</title>
<style>body{{font-family:sans-serif;max-width:72em;margin:1em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td,th{{border:1px solid #aaa;padding:2px 6px}}</style></head><body>
<h1>Strain and orientation</h1>
<p>Vectors: <code>{html.escape(str(summary['input']))}</code> — {summary['n_positions']} scan positions
({summary['scan_shape'][0]} × {summary['scan_shape'][1]}), {summary['n_fit']} fit
({100 * summary['fit_fraction']:.1f} %).</p>
<h2>Reference</h2><p>{html.escape(summary['reference'])}</p>
<h2>Lattice found (reference basis per grain, Å⁻¹, in the axes: {html.escape(summary.get('axes', 'q_x, q_y'))})</h2>
<table><tr><th>grain</th><th>g1</th><th>g2</th><th>|g1| / |g2| (Å⁻¹)</th><th>angle (°)</th><th>positions</th>
<th>median indexed fraction</th></tr>{rows}</table>
<ul>{notes}</ul>
<h2>Maps</h2>{figs}
<h2>Settings</h2><pre>{html.escape(json.dumps(summary['settings'], indent=2))}</pre>
<p>Arrays: <code>strain.parquet</code> (one row per position), <code>strain_maps.zarr</code> (one array per map,
unit in its attributes); this summary: <code>summary.json</code>.</p></body></html>
"""
