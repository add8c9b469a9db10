"""Classical baseline: py4DSTEM 0.14.16 template matching (``find_Bragg_disks``, subpixel multicorr).

The kernel is the vacuum probe made into an edge-filtering template by py4DSTEM's Probe.get_kernel
(mode 'sigmoid': the probe disk minus a sine-squared annulus of radii ``kernel_radii`` × the probe
radius, so the template integrates to zero and a flat background correlates to nothing).
py4DSTEM's defaults target 256-1024 px detectors (minPeakSpacing 60, edgeBoundary 20) and would
discard almost all reflections of our 128 px grids; the settings come from config
``evaluate.classical`` and are tuned once on the val split (evaluation.tuning).
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import numpy as np

from fourdcrystal.config import default

if TYPE_CHECKING:  # pandas is imported where a table is made: `predict` with the network never needs it
    import pandas as pd

# Single-threaded BLAS for a fair per-core timing against the network (set before numpy's BLAS
# starts its pool in a fresh process; harmless otherwise).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# py4DSTEM settings when a caller gives none: the schema's defaults of config evaluate.classical,
# looked up on first use (``DEFAULTS``, module __getattr__): `predict` with the network never needs them
def __getattr__(name: str):
    if name == "DEFAULTS":
        globals()["DEFAULTS"] = default("evaluate.classical")
        return globals()["DEFAULTS"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
_FIND_KEYS = ("corrPower", "sigma", "edgeBoundary", "minRelativeIntensity", "minAbsoluteIntensity",
              "minPeakSpacing", "subpixel", "upsample_factor", "maxNumPeaks")


def settings_from(cfg: dict | None) -> dict:
    defaults = sys.modules[__name__].DEFAULTS
    s = dict(defaults)
    s.update({k: v for k, v in (cfg or {}).items() if k in defaults})
    return s


def make_kernel(probe: np.ndarray, settings: dict | None = None) -> np.ndarray:
    """py4DSTEM correlation kernel (origin at pixel 0, real space) from a vacuum probe image."""
    from py4DSTEM.braggvectors import Probe

    from fourdcrystal.inference.model_input import probe_center, probe_radius_px

    s = settings_from(settings)
    p = np.asarray(probe, dtype=np.float64)
    if s["kernel_mode"] == "flat":
        return Probe(p).get_kernel(mode="flat", origin=probe_center(p))
    r = probe_radius_px(p)
    a, b = s["kernel_radii"]
    return Probe(p).get_kernel(mode="sigmoid", origin=probe_center(p), radii=(a * r, b * r))


def find_disks(patterns: np.ndarray, probe: np.ndarray, settings: dict | None = None,
               kernel: np.ndarray | None = None) -> pd.DataFrame:
    """Disks of each pattern (N, Qx, Qy): DataFrame pattern, qx_px, qy_px, intensity (correlation)."""
    import pandas as pd
    from py4DSTEM.braggvectors.diskdetection import find_Bragg_disks

    s = settings_from(settings)
    k = make_kernel(probe, s) if kernel is None else kernel
    kw = {key: s[key] for key in _FIND_KEYS}
    kw["edgeBoundary"] = int(kw["edgeBoundary"])
    kw["maxNumPeaks"] = int(kw["maxNumPeaks"])
    rows = []
    pats = np.asarray(patterns)
    if pats.ndim == 2:
        pats = pats[None]
    for n, dp in enumerate(pats):
        q = find_Bragg_disks(np.asarray(dp, dtype=np.float64), k, **kw).data
        rows.append(pd.DataFrame({"pattern": n, "qx_px": q["qx"], "qy_px": q["qy"], "intensity": q["intensity"]}))
    if not rows:
        return pd.DataFrame(columns=["pattern", "qx_px", "qy_px", "intensity"])
    return pd.concat(rows, ignore_index=True)
