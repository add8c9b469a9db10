"""A results page to open first: one self-contained ``index.html`` of image sections and a settings table.

Reusable by any command that writes maps (``predict`` here; strain maps the same way): give it
``Section``s of ``Panel``s — 2-D arrays drawn with a colour map, with optional points overlaid (e.g.
Bragg vectors on a pattern) — and a dict of settings. Images are PNGs encoded here with zlib and a
9-colour ramp of matplotlib's maps, points are SVG circles: no plotting library is imported, so
writing the page costs milliseconds of a short `predict` call (matplotlib alone takes ≈ 0.5 s to
import on the 2-core reference machine).
"""
from __future__ import annotations

import base64
import html
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourdcrystal.atomic import write_text

# 9 evenly spaced colours of matplotlib's maps (sRGB 0-255), interpolated linearly
RAMPS = {
    "inferno": [(0, 0, 4), (33, 12, 74), (87, 16, 110), (138, 34, 106), (188, 55, 84), (228, 90, 49),
                (249, 142, 9), (249, 203, 53), (252, 255, 164)],
    "RdBu_r": [(5, 48, 97), (42, 113, 178), (107, 172, 209), (194, 221, 236), (247, 246, 246),
               (251, 204, 180), (228, 128, 102), (186, 40, 50), (103, 0, 31)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}


def colorize(img: np.ndarray, cmap: str = "inferno", vmin: float | None = None, vmax: float | None = None,
             log: bool = False) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 via ``cmap``; limits default to the 0.5 / 99.8 percentiles
    (one hot pixel does not wash out a pattern); NaN is drawn grey."""
    a = np.asarray(img, dtype=np.float64)
    if log:
        a = np.log1p(np.clip(a, 0, None))
    fin = a[np.isfinite(a)]
    lo = float(np.percentile(fin, 0.5)) if vmin is None and fin.size else float(vmin or 0.0)
    hi = float(np.percentile(fin, 99.8)) if vmax is None and fin.size else float(vmax if vmax is not None else 1.0)
    t = np.clip((a - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    ramp = np.asarray(RAMPS[cmap], dtype=np.float64)
    x = np.linspace(0, 1, len(ramp))
    rgb = np.stack([np.interp(np.nan_to_num(t), x, ramp[:, c]) for c in range(3)], axis=-1)
    rgb[~np.isfinite(a)] = 128
    return np.rint(rgb).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG (8-bit RGB, no interlace) of an (H, W, 3) uint8 array."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[i].tobytes() for i in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def write_png(path, img: np.ndarray, min_px: int = 256, **color) -> None:
    """``img`` colour-mapped (``colorize`` keywords), enlarged by whole pixels to ≥ ``min_px``."""
    rgb = colorize(img, **color)
    k = max(1, -(-min_px // max(1, min(rgb.shape[:2]))))
    Path(path).write_bytes(png_bytes(np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)))


@dataclass
class Panel:
    """One image of a section: ``image`` (H, W) drawn with ``cmap`` (row = first axis, downwards),
    ``points`` (n, 2) array positions (first axis, second axis) in pixels drawn as circles."""

    caption: str
    image: np.ndarray
    points: np.ndarray | None = None
    cmap: str = "inferno"
    log: bool = False
    vmin: float | None = None
    vmax: float | None = None


@dataclass
class Section:
    title: str
    panels: list[Panel] = field(default_factory=list)
    text: str = ""


def _svg(p: Panel, width_px: int = 300) -> str:
    h, w = p.image.shape
    data = base64.b64encode(png_bytes(colorize(p.image, p.cmap, p.vmin, p.vmax, p.log))).decode()
    r = max(w, h) / 90.0
    dots = "".join(f"<circle cx='{y + 0.5:.2f}' cy='{x + 0.5:.2f}' r='{r:.2f}'/>"
                   for x, y in (p.points if p.points is not None else []))
    return (f"<figure><svg viewBox='0 0 {w} {h}' width='{width_px}' height='{width_px * h / w:.0f}'>"
            f"<image width='{w}' height='{h}' preserveAspectRatio='none' href='data:image/png;base64,{data}'/>"
            f"<g fill='none' stroke='#3ff' stroke-width='{r / 2.5:.2f}'>{dots}</g></svg>"
            f"<figcaption>{html.escape(p.caption)}</figcaption></figure>")


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(x) for x in v)
    return str(v)


def write_page(path, title: str, sections: list[Section], settings: dict) -> None:
    """Write the page (atomically) to ``path``: sections of panels, then the settings table."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{html.escape(title)}</title><style>",
             "body{font-family:sans-serif;max-width:1300px;margin:1.5em auto;color:#222}"
             "figure{display:inline-block;margin:.4em;vertical-align:top}svg image{image-rendering:pixelated}"
             "figcaption{font-size:12px;color:#444;max-width:300px}table{border-collapse:collapse;font-size:13px}"
             "td{border:1px solid #ccc;padding:3px 8px;vertical-align:top}td:first-child{font-weight:bold}",
             f"</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>" + (f"<p>{html.escape(s.text)}</p>" if s.text else ""))
        parts.extend(_svg(p) for p in s.panels)
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_value(v))}</td></tr>"
                   for k, v in settings.items())
    parts.append(f"<h2>Settings of this run</h2><table>{rows}</table></body></html>")
    write_text(path, "\n".join(parts))
