"""Training labels that hold what the counted pattern can show, at the dose the augmentation draws.

The stored label (``simulation.labels``) holds every reflection the noise-free pattern shows (disk at least
``simulation.label_min_brightness`` × the direct beam). Counted at a low dose, a faint disk holds a few
electrons or none, and a label that still asks for it teaches the network to paint reflections it cannot
see (a retrain at 1e2–1e6 e⁻ per pattern with the stored labels proposed less everywhere:
benchmarks/RESULTS.md, "The evidence check …"). So, per training sample, with the dose and the background
the augmentation drew, every shown reflection's disk is counted: the expected electrons of the crystal's
pattern over the disk (signal S) against the expected electrons of everything else the detector counts
there (support film, constant and diffuse background: B). A reflection with S < k·√(S + B)
(``train.label_min_snr`` = k, ``simulation.labels.counted``) is taken out of the label, which is rendered
again without it (``simulation.labels.render_labels``); the direct beam always stays. Negatives keep their
beam-only label, noise-free samples the stored one.

Why the whole disk: a detector (template matching, the evidence check's disk test) integrates the disk.
Overlapping neighbours add their light to a disk's sum, which errs towards keeping the stored label.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.augment import AugmentParams, background_image, electrons_per_unit
from fourdcrystal.simulation.labels import counted, disk_radius_px, disk_sums, render_labels

_COLUMNS = ["qx_px", "qy_px", "vg_abs", "qz_invA"]


class CountedLabels:
    """The shown reflections of one manifest split, by row, and the rule that counts them at a dose."""

    def __init__(self, split: pd.DataFrame, reflections: pd.DataFrame, geometry: Geometry, min_snr: float):
        self.geometry, self.min_snr = geometry, float(min_snr)
        shown = reflections[reflections["shown"].astype(bool)]
        groups = {key: g[_COLUMNS].to_numpy(np.float64) for key, g in shown.groupby(["store", "index"], sort=False)}
        empty = np.zeros((0, len(_COLUMNS)))
        self.rows = [groups.get((str(s), int(i)), empty) for s, i in zip(split["store"].astype(str), split["index"])]
        self.radius_px = [disk_radius_px(geometry, float(e), float(a))
                          for e, a in zip(split["energy_eV"], split["semiangle_mrad"])]

    def label(self, row: int, q: dict, cbed: np.ndarray, params: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
        """(vg, qz) of sample ``row``: its stored quartet ``q``, its noise-free scene ``cbed`` (the crystal's
        pattern, film included when drawn) counted with the drawn ``params``."""
        refl = self.rows[row]
        if params.dose_e is None or len(refl) == 0:
            return q["vg"], q["qz"]
        e = electrons_per_unit(q["probe"], params.dose_e)
        crystal = np.asarray(q["cbed"], np.float64)
        rest = background_image(crystal.shape, params, onto=np.asarray(cbed, np.float64) - crystal)
        xy, r = refl[:, :2], self.radius_px[row]
        keep = counted(e * disk_sums(crystal, xy, r), e * disk_sums(rest, xy, r), self.min_snr)
        if keep.all():
            return q["vg"], q["qz"]
        c = self.geometry.center_px
        return render_labels(pd.DataFrame(refl[keep], columns=_COLUMNS), self.geometry, float(q["vg"][c, c]))


def load_reflections(manifest_path: Path) -> pd.DataFrame:
    """The dataset's reflections table (beside the manifest), the columns the counting needs."""
    path = Path(manifest_path).parent / "reflections.parquet"
    if not path.is_file():
        raise UserError(f"train.label_min_snr is set but {path} does not exist",
                        "rebuild the dataset with `snakemake results/dataset/manifest.parquet`, or set train.label_min_snr: null")
    return pd.read_parquet(path, columns=["store", "index", "shown"] + _COLUMNS)
