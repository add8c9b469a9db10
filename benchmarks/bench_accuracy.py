"""Accuracy over the acquisitions microscopists make: the network vs py4DSTEM vs the oracle, scored
against crystallographic truth, plus false vectors on patterns without a crystal.

Set (simulated with the workflow's own multislice, `fourdcrystal.simulation`): zone-axis patterns of
crystals given here by their structures (zone axes with square in-plane cells, each simulated in a box of
whole cells with whole grid points per cell: `detector_of`; ``--crystals rectangular``: rectangular and
hexagonal patterns instead, Si [110], GaN and MoS2 [0001], each cell stretched ≤ 1.2 % to fit the box;
``--crystals other``: Au and TiO2 [001], GaAs [110], Al2O3 [0001]; ``--crystals zones``: Si and Al [111],
SrTiO3 [110], ZnO [11-20]), at
the corners {80, 300 kV} × {1.0, 3.5 mrad} × {10, 60 nm}, on a 256² detector at 0.020–0.023 Å⁻¹/px (the
model's grid is 128² at 1/32 Å⁻¹: `predict` resamples), each as a 2×2 scan through the detector
augmentation (fresh shot noise, descan, background, blur) at 1e5 and 1e3 e⁻ per pattern, and noiseless.
Negatives at every dose: the vacuum probe alone, an amorphous carbon film (20 nm), detector noise without
a beam.
Truth = the reflections the pattern shows (`fourdcrystal.simulation.labels`: zero-order Laue zone
inside the FOLZ ring, whole disk on the detector, disk ≥ 1e-3 × as bright as the direct beam in the
noise-free pattern), in the detector's pixels.
Detectors, both through `fourdcrystal predict` (`inference.predict.predict_cube`, true vacuum probe):
the network (the shipped model unless --model, its own stamped peak settings: no tuning on this set),
py4DSTEM `find_Bragg_disks` tuned ONCE on the validation crystal (grid = config
evaluate.tune_classical.grid, pooled F1 at 1 px over every corner at 1e5 e⁻), never on the test
crystals. The oracle: the same peak extraction on the rendered truth label on this detector (it
proves the truth is recoverable: F1 at 1 px must be ≥ 0.95).
Vectors are compared relative to the direct beam each detector found (descan removed), in detector
pixels: matched one-to-one within 1 px and 2 px. ``precision_real`` also counts as correct a vector that
matches no truth but lies on a real zero-layer reflection in the field fainter than the truth's floor
(``evaluation.scoring``), and ``f1_real`` leaves such vectors out of the count (neither found nor
false: the issue's truth is every zero-layer reflection in the field, so a detector that reports one
below the floor has not hallucinated); ``precision`` and ``f1`` are strict (a vector on one is false).
The chance row is a floor, not a detector: py4DSTEM's number of vectors per pattern placed at random on the
disk that holds the truth (``chance_records``), what that many vectors earn without finding anything (0.00–0.04
at the overlapping corners where py4DSTEM scores 0.02–0.14: its finds there are real; benchmarks/RESULTS.md,
"A chance floor"). The countable row is a ceiling, not a detector: the truth reflections whose disks hold ≥ 3
Poisson σ of electrons at the dose (``countable_vectors``), scored like the others; its recall is what the counted
pattern shows. The last table counts the corner-doses where the network's F1 is at least py4DSTEM's, under both.

The truth of a noisy position is where that position's detector records it: its elliptical distortion
(config augment.ellipticity, up to 1 %: up to 0.45 px at 90 px from the beam) moves every disk, and
removing it is a calibration after detection (``evaluation.truth.as_recorded``).

    python benchmarks/bench_accuracy.py [--quick] [--model PATH] [--out accuracy.json]
        [--detector PX DQ] [--corner KV MRAD NM ...]   (other detectors and settings of the envelope)
        [--noise poisson]   (shot noise only: no background, blur, descan or defective pixels)
        [--py4dstem-settings run.json]   (py4DSTEM with another run's settings instead of tuning them)
        [--precision fp32|bf16|auto]   (the network's arithmetic; default fp32)
        [--crystals rectangular|other|zones]   (Si [110], GaN and MoS2 [0001]; or Au and TiO2 [001], GaAs [110],
            Al2O3 [0001]: heavy, oxide and large-cell crystals; or Si and Al [111], SrTiO3 [110], ZnO [11-20]: zone
            axes the other sets lack; instead of the [001] set)
        [--quad-cross GAIN] [--bad-pixels auto|none]   (a quad detector's cross through the beam: the two
            central rows and columns of every pattern and of the probe count GAIN × — 2.5 for its wide pixels,
            0 for a gap written as 0 — and `predict` finds and fills it, or not)
        [--probe vacuum|synthesized]   (synthesized: both detectors run without the vacuum probe, on the
            probe `predict` makes from the scan's own bright-field disk, as a user without one runs it;
            its radius against the true disk's is printed per corner)
        [--tilt MRAD AZIMUTH_DEG]   (every crystal tilted off its zone axis by MRAD toward the azimuth, as
            `simulation.supercells.tilt_rotation` tilts the training crystals; the truth is what the tilted
            pattern shows: its Laue circle lights the reflections on one side of the beam)
        [--oversample N]   (the multislice grid N × finer, the same boxes and pixels: converged dynamical
            intensities need ~0.06 Å, the detector's field alone 0.13 Å here; benchmarks/RESULTS.md, "The
            multislice grid's sampling")
        [--frozen-phonons N]   (thermal diffuse scattering: each pattern the mean of N frozen-phonon
            configurations, as real crystals scatter; the training data has none. The truth's brightness
            rule then counts the diffuse background under a disk too)
        [--psf-px SIGMA]   (a camera's point spread: every pattern, noiseless too, and the vacuum probe blurred by a
            Gaussian of SIGMA px after counting, as a scintillator or a hybrid-pixel sensor at high kV spreads each
            electron, before the sensor's own hot and dead pixels; the augmentation's own blur, 0–0.7 px, reaches the
            patterns only)
        [--read-noise E]   (an integrating detector: Gaussian read noise of E electrons per pixel on every noisy
            pattern and negative, its dark level subtracted, so that empty pixels read below zero)
        [--subtract-background]   (every noisy pattern and negative with the smooth background the augmentation drew
            subtracted after recording, as a user's preprocessing might: its empty pixels read below zero)
        [--edge vacuum|amorphous_film]   (a scan across a crystal's edge: every crystal's scan twice as wide, its
            second half vacuum or film at the same dose, so that one batch holds both; the crystal's half scored, the
            other's vectors false, in the negatives as edge_vacuum or edge_amorphous_film)
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from scipy import ndimage  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fourdcrystal.evaluation.scoring import aggregate, jsonable, score_patterns  # noqa: E402
from fourdcrystal.evaluation.truth import NEGATIVE_KINDS, as_recorded, negative_cbed  # noqa: E402
from fourdcrystal.errors import UserError  # noqa: E402
from fourdcrystal.evaluation.tuning import tune_classical  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.inference import peaks, predict  # noqa: E402
from fourdcrystal.inference.datacube_io import Cube  # noqa: E402
from fourdcrystal.learning.augment import (Augmenter, background_image, distortion_matrix,  # noqa: E402
                                           electrons_per_unit, transform)
from fourdcrystal.inference.descan import moved_back  # noqa: E402
from fourdcrystal.simulation.examples import (RECTANGULAR_CELL_ROWS, amorphous_film_cbed, gan,  # noqa: E402
                                              rectangular_cell, rectangular_geometry, square_geometry)
from fourdcrystal.simulation.kinematic import mean_inner_potential_V  # noqa: E402
from fourdcrystal.simulation.labels import counted, disk_radius_px, disk_sums, orientation_truth  # noqa: E402
from fourdcrystal.simulation.multislice import ProbeSetting, simulate_orientation  # noqa: E402
from fourdcrystal.simulation.supercells import align_zone_to_z, build_supercell, tilt_rotation  # noqa: E402

DQ_INVA = 0.02  # the detector's pixel size (Å⁻¹/px), nominal: unlike the model's 1/32
DETECTOR = Geometry(box_A=1 / DQ_INVA, gpts=384, detector_px=256, thicknesses_A=(100.0, 600.0), slice_thickness_A=2.0)
ENERGIES_EV = (80e3, 300e3)
SEMIANGLES_MRAD = (1.0, 3.5)
DOSES = (None, 1e5, 1e3)  # None: noiseless
SCAN = 2  # each pattern as a SCAN × SCAN scan (fresh noise per position)
# amorphous films drawn per illumination for the negatives: one film is one speckle, whose luck a single draw
# made the worst case (the 0.083 Å model's 0.5 or the shipped model's 0 on film 0 against 6.0 on another film of
# the same illumination; benchmarks/RESULTS.md, "Film negatives over many films")
NEGATIVE_FILMS = 4
COUNTABLE_MIN_SNR = 3.0  # the countable row: disks holding this many Poisson σ of electrons
SIM = {"parametrization": "lobato", "projection": "infinite", "label_min_brightness": 1e-3}
# --noise poisson: a counting detector's shot noise alone (every other artifact of config `augment` off)
POISSON_ONLY = {"background_const": [0.0, 0.0], "background_diffuse": [0.0, 0.0], "blur_px": [0.0, 0.0],
                "origin_shift_px": 0.0, "ellipticity": 0.0, "hot_pixel_fraction": 0.0, "dead_pixel_fraction": 0.0}


def silicon():
    """Diamond-cubic Si (a = 5.431 Å), the crystal of three of the sets."""
    from pymatgen.core import Lattice, Structure

    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(5.431), ["Si"], [[0, 0, 0]])


def crystals() -> dict:
    """name -> (pymatgen Structure, zone axis, square in-plane period in Å). Validation: Cu; test: the others.
    Zone axes with a square in-plane cell, so that the periodic simulation box holds whole cells
    (``detector_of``)."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import srtio3

    si = silicon()
    mgo = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.212), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    cu = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.615), ["Cu"], [[0, 0, 0]])
    return {"Cu [001] (val)": (cu, (0, 0, 1), 3.615), "SrTiO3 [001]": (srtio3(), (0, 0, 1), 3.905),
            "Si [001]": (si, (0, 0, 1), 5.431), "MgO [001]": (mgo, (0, 0, 1), 4.212)}


def rectangular_crystals() -> dict:
    """name -> (Structure, zone, cells) for ``--crystals rectangular``: Si [110] (a rectangular pattern whose
    kinematically forbidden {200} are lit dynamically), GaN and 2H-MoS2 [0001] (hexagonal patterns), each
    re-cut into its orthogonal cell along the zone axis and stretched by ≤ 1.2 % so that the box holds
    whole cells (``simulation.examples.rectangular_cell``); the validation crystal stays Cu [001]."""
    from pymatgen.core import Lattice, Structure

    si = silicon()
    mos2 = Structure.from_spacegroup("P6_3/mmc", Lattice.hexagonal(3.160, 12.294), ["Mo", "S"],
                                     [[1 / 3, 2 / 3, 0.25], [1 / 3, 2 / 3, 0.621]])
    out = {"Cu [001] (val)": crystals()["Cu [001] (val)"]}
    for name, s, kind in (("Si [110]", si, "cubic [110]"), ("GaN [0001]", gan(), "hexagonal [0001]"),
                          ("MoS2 [0001]", mos2, "hexagonal [0001]")):
        cut, cells = rectangular_cell(s, RECTANGULAR_CELL_ROWS[kind], DETECTOR.box_A)
        out[name] = (cut, (0, 0, 1), cells)
    return out


def other_crystals() -> dict:
    """name -> (Structure, zone, period or cells) for ``--crystals other``: crystals unlike the other sets' —
    Au [001] (heavy: strong dynamical scattering), TiO2 rutile [001] (a tetragonal oxide), GaAs [110] (a
    zinc-blende rectangular pattern whose {200} are allowed but weak) and Al2O3 [0001] (corundum: a large
    hexagonal cell, 13 Å along the beam, many faint reflections); the validation crystal stays Cu [001]."""
    from pymatgen.core import Lattice, Structure

    au = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.078), ["Au"], [[0, 0, 0]])
    tio2 = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.594, 2.959), ["Ti", "O"],
                                     [[0, 0, 0], [0.3053, 0.3053, 0]])
    gaas = Structure.from_spacegroup("F-43m", Lattice.cubic(5.653), ["Ga", "As"], [[0, 0, 0], [0.25, 0.25, 0.25]])
    al2o3 = Structure.from_spacegroup("R-3c", Lattice.hexagonal(4.759, 12.991), ["Al", "O"],
                                      [[0, 0, 0.3522], [0.3064, 0, 0.25]])
    out = {"Cu [001] (val)": crystals()["Cu [001] (val)"], "Au [001]": (au, (0, 0, 1), 4.078),
           "TiO2 [001]": (tio2, (0, 0, 1), 4.594)}
    for name, s, kind in (("GaAs [110]", gaas, "cubic [110]"), ("Al2O3 [0001]", al2o3, "hexagonal [0001]")):
        cut, cells = rectangular_cell(s, RECTANGULAR_CELL_ROWS[kind], DETECTOR.box_A)
        out[name] = (cut, (0, 0, 1), cells)
    return out


def zone_crystals() -> dict:
    """name -> (Structure, zone, cells) for ``--crystals zones``: zone axes the other sets lack — Si and Al [111]
    (a cubic crystal's hexagonal pattern: {220} rows, a 9.4 and 7.0 Å period along the beam), SrTiO3 [110] (a
    perovskite substrate's rectangular a × a√2 pattern) and ZnO [11-20] (a wurtzite nanowire's side view: c × a√3,
    its (0001) allowed only dynamically), each in its orthogonal cell stretched ≤ 1.2 % to fill the box
    (``simulation.examples.rectangular_cell``); the validation crystal stays Cu [001]."""
    from pymatgen.core import Lattice, Structure

    from fourdcrystal.simulation.examples import srtio3

    si = silicon()
    al = Structure.from_spacegroup("Fm-3m", Lattice.cubic(4.050), ["Al"], [[0, 0, 0]])
    zno = Structure.from_spacegroup("P6_3mc", Lattice.hexagonal(3.250, 5.207), ["Zn", "O"],
                                    [[1 / 3, 2 / 3, 0], [1 / 3, 2 / 3, 0.382]])
    out = {"Cu [001] (val)": crystals()["Cu [001] (val)"]}
    for name, s, kind in (("Si [111]", si, "cubic [111]"), ("Al [111]", al, "cubic [111]"),
                          ("SrTiO3 [110]", srtio3(), "cubic [110]"), ("ZnO [11-20]", zno, "hexagonal [11-20]")):
        cut, cells = rectangular_cell(s, RECTANGULAR_CELL_ROWS[kind], DETECTOR.box_A)
        out[name] = (cut, (0, 0, 1), cells)
    return out


def set_detector(detector_px: int, dq_invA: float, oversample: int = 1) -> None:
    """Another detector for this run: ``detector_px`` pixels at ≈ ``dq_invA`` Å⁻¹/px (``detector_of`` makes
    the box whole cells); real-space grid 1.5 × the detector (abTEM's 2/3 antialiasing aperture), times
    ``oversample``. The detector's field alone sets 1.5 × (0.13 Å on 256 px at 0.02 Å⁻¹/px, 0.24 Å at 0.0107),
    coarser than the multislice needs for converged intensities (~0.06 Å: its transmission function, not its
    potential, is under-sampled; benchmarks/RESULTS.md, "The multislice grid's sampling"). A power of two
    keeps every box: the grid's divisors below 30, the cell counts ``detector_of`` chooses from, stay those of
    2^k · 3 (another factor may add a divisor and move a box)."""
    global DETECTOR, DQ_INVA
    DQ_INVA = float(dq_invA)
    DETECTOR = Geometry(box_A=1 / DQ_INVA, gpts=int(oversample) * int(1.5 * detector_px),
                        detector_px=int(detector_px), thicknesses_A=DETECTOR.thicknesses_A,
                        slice_thickness_A=DETECTOR.slice_thickness_A)


def detector_of(structure, period_A, thicknesses=DETECTOR.thicknesses_A) -> Geometry:
    """DETECTOR with its box (= 1 / pixel size) a whole number of in-plane periods near 1 / DQ_INVA, and
    a whole number of the multislice grid's points per period (the cell count divides ``gpts``).
    ``period_A``: the square in-plane period (Å), or (n_x, n_y) cells of ``structure``'s rectangular cell
    (``rectangular_crystals``; the grid then grows to a multiple of both counts).

    A periodic box that cuts the crystal leaves a seam that moves every disk off its Bragg position by
    up to half a pixel (SrTiO3 [001] in a 32 Å box: median 0.3 px, benchmarks/RESULTS.md), so the
    kinematic truth would not be what the pattern shows. A period of a fractional number of grid points
    aliases the sampled potential onto non-lattice positions: Si [001] in 9 cells on 384 points (42.67
    per cell) lit 1/3-order spots and the forbidden {100} at 4e-3 of the beam at 60 nm, 1e-11 with 8 or
    12 cells (benchmarks/RESULTS.md); and an odd number per centred cell lights the reflections the centring
    forbids (``simulation.examples.lattice_grid_steps``)."""
    if not np.isscalar(period_A):  # (n_x, n_y) cells of a rectangular cell (``rectangular_crystals``)
        return rectangular_geometry(structure, period_A, DETECTOR.gpts, DETECTOR.detector_px, thicknesses,
                                    DETECTOR.slice_thickness_A)
    return square_geometry(structure, period_A, DETECTOR.box_A, DETECTOR.gpts, DETECTOR.detector_px, thicknesses,
                           DETECTOR.slice_thickness_A)


def simulate(structure, zone, period_A, energy_eV, thicknesses=DETECTOR.thicknesses_A):
    """Noise-free CBEDs (one per semi-angle × thickness), the vacuum probes, the truth of each and the
    detector's pixel size ``dq`` (Å⁻¹/px)."""
    geo = detector_of(structure, period_A, thicknesses)
    R = align_zone_to_z(structure.lattice.matrix, zone)
    if TILT is not None:  # off the zone axis (--tilt): the truth below follows the tilted crystal
        R = tilt_rotation(*TILT) @ R
    probes = [ProbeSetting(i, energy_eV, a, 0.0) for i, a in enumerate(SEMIANGLES_MRAD)]
    arrays, meta, _ = simulate_orientation(build_supercell(structure, R, geo), geo, SIM, probes, labels=False)
    frames, vg, _ = orientation_truth(structure, R, zone, meta, arrays, geo, SIM, mean_inner_potential_V(structure))
    return [{"cbed": arrays["cbed"][i].astype(np.float64), "probe": arrays["probe"][i], "truth": frames[i][frames[i]["shown"]],
             "faint": frames[i][frames[i]["in_field"] & ~frames[i]["shown"]],
             "label": vg[i], "dq": geo.dk_invA, "radius_px": disk_radius_px(geo, meta[i]["energy_eV"], meta[i]["semiangle_mrad"]),
             **meta[i]} for i in range(len(meta))]


def scan_of(pattern: np.ndarray, probe: np.ndarray, dose, aug: Augmenter, rng) -> tuple[np.ndarray, list]:
    """A SCAN × SCAN scan of one noise-free pattern (noiseless: the pattern itself at every position), and
    each position's detector distortion (``recorded_pattern``; the truth follows it: ``recorded``)."""
    draws = [(pattern, np.eye(2)) if dose is None else recorded_pattern(aug, pattern, probe, rng, dose, descan_px(k))
             for k in range(SCAN * SCAN)]
    cube = np.stack([d[0] for d in draws]).reshape(SCAN, SCAN, *pattern.shape).astype(np.float32)
    if dose is None:  # a noisy pattern has its spread from ``recorded_pattern``
        cube = with_psf(cube)
    return stored(with_pedestal(with_read_noise(cube, probe, dose), probe, dose), probe, dose), [d[1] for d in draws]


def descan_px(k: int) -> tuple[float, float]:
    """The pattern's move at scan position ``k`` (``--descan``): DESCAN_PX per scan row along the detector's first axis
    and per column along its second, zero at the scan's middle (whole px where DESCAN_PX × (SCAN − 1) / 2 is)."""
    rx, ry = divmod(k, SCAN)
    return DESCAN_PX * (rx - (SCAN - 1) / 2), DESCAN_PX * (ry - (SCAN - 1) / 2)


def recorded_pattern(aug: Augmenter, pattern: np.ndarray, probe: np.ndarray, rng, dose,
                     descan: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """One position as the detector records it (``Augmenter.apply_recorded``'s draws) and its distortion, moved across
    the detector by ``descan`` whole px, its background with it (the pixels moved in read zero); with
    SUBTRACT_BACKGROUND the background the augmentation drew subtracted afterwards, as a user's preprocessing might."""
    drawn = aug.draw(rng, pattern.shape, dose)  # ``Augmenter.apply_drawn``'s draws, in its order
    if PSF_PX:  # the camera's spread on the counted electrons, before the sensor's own hot and dead pixels (``with_psf``)
        drawn = dataclasses.replace(drawn, blur_px=float(np.hypot(drawn.blur_px, PSF_PX)))
    img = transform(pattern, probe, drawn, rng)
    if SUBTRACT_BACKGROUND:
        img = (img - background_image(img.shape, drawn)).astype(np.float32)
    if descan != (0.0, 0.0):  # the specimen's diffuse halo moves with its beam; a detector's own pixels would not
        img = moved_back(img[None], -np.round(np.asarray(descan))[None])[0]
    return img, distortion_matrix(drawn.ellipticity, drawn.ellipse_angle_rad)


def with_psf(a: np.ndarray) -> np.ndarray:
    """``a`` (…, Qx, Qy) as a camera of point spread PSF_PX (Gaussian σ, px) records it (``--psf-px``): each counted
    electron spread over its neighbours (a scintillator, or a hybrid-pixel sensor's charge sharing at 300 kV), hence
    after the shot noise and before the read noise; the vacuum probe recorded on the same camera too (``vectors``).
    A noisy pattern is spread in ``recorded_pattern``, with the augmentation's own blur (two Gaussians in a row are
    one of σ = √(σ₁² + σ₂²)), before its hot and dead pixels: those are the sensor's, after the spread (spread with
    the electrons, a hot pixel of 0.5–2 × the pattern's maximum was a bright small disk at 20–70σ: 0.25–1.0 false
    vector per film pattern at 1e3 e⁻ with σ = 1 px; benchmarks/RESULTS.md, "Hot pixels spread by the camera")."""
    if not PSF_PX:
        return a
    return ndimage.gaussian_filter(np.asarray(a, dtype=np.float32), [0] * (a.ndim - 2) + [PSF_PX] * 2,
                                   mode="constant").astype(np.float32)


def with_read_noise(cube: np.ndarray, probe: np.ndarray, dose) -> np.ndarray:
    """``cube`` as an integrating detector with Gaussian read noise of READ_NOISE_E electrons per pixel records it,
    its dark level subtracted (the noise reads below zero where no electron arrived); as it is without read noise or
    dose. The noise has its own generator (``READ_NOISE_RNG``): every other draw is that of a run without it."""
    if not READ_NOISE_E or dose is None:
        return cube
    sigma = READ_NOISE_E * float(np.sum(probe, dtype=np.float64)) / float(dose)  # electrons -> the patterns' units
    return (cube + READ_NOISE_RNG.normal(0.0, sigma, cube.shape)).astype(np.float32)


def with_pedestal(cube: np.ndarray, probe: np.ndarray, dose) -> np.ndarray:
    """``cube`` with ``PEDESTAL_E`` electrons per pixel added (a dark level left in; ``LAST_PEDESTAL`` holds it in the
    patterns' units); as it is without a pedestal or dose."""
    LAST_PEDESTAL[0] = 0.0 if not PEDESTAL_E or dose is None else \
        PEDESTAL_E * float(np.sum(probe, dtype=np.float64)) / float(dose)
    return (cube + np.float32(LAST_PEDESTAL[0])).astype(np.float32) if LAST_PEDESTAL[0] else cube


def stored(cube: np.ndarray, probe: np.ndarray, dose) -> np.ndarray:
    """``cube`` as a detector's software stores it in unsigned integers (``--stored-gain``): STORED_GAIN counts per
    electron, rounded to whole counts, below zero clipped to 0 (read noise about a subtracted dark level reads 0 on its
    lower half); as it is without a gain or dose. In counts: the file's units, which `predict` is not told."""
    if not STORED_GAIN or dose is None:
        return cube
    counts = np.rint(cube * (STORED_GAIN * float(dose) / float(np.sum(probe, dtype=np.float64))))
    return np.clip(counts, 0, np.iinfo(np.uint16).max).astype(np.float32)


def recorded(frame: pd.DataFrame, distortions: list) -> list:
    """One pattern's truth (or faint reflections) per scan position, where that position's detector put it."""
    return [as_recorded(frame, a, DETECTOR.center_px) for a in distortions]


# the network's arithmetic (``--precision``): fp32 unless asked, so that figures compare across machines;
# ``auto`` is what `predict` runs by default (bf16 on a CPU with AMX tiles, ``detectors.auto_bf16``)
PRECISION = "fp32"
# --quad-cross / --bad-pixels: the detector's cross (None: none) and `predict`'s bad-pixel search
QUAD_GAIN, BAD_PIXELS = None, "auto"
# --probe: "vacuum" (the true vacuum probe is given to `predict`) or "synthesized" (none is given); the
# synthesized probe's radius (px) of the last `vectors` call, None where `predict` refused the scan
PROBE, SYNTH_RADIUS = "vacuum", []
# --tilt: (tilt_mrad, azimuth_deg) of every crystal off its zone axis (None: on the zone axis)
TILT = None
# --psf-px: the camera's point spread, Gaussian σ in px (0: the augmentation's own blur only)
PSF_PX = 0.0
# --read-noise: Gaussian read noise (electrons per pixel) of a dark-subtracted integrating detector (0: none)
READ_NOISE_E, READ_NOISE_RNG = 0.0, np.random.default_rng(20261206)
# --subtract-background: each noisy pattern with its drawn smooth background subtracted after recording
SUBTRACT_BACKGROUND = False
# --descan: the beam's move per scan row and column (px) on every noisy scan (0: the augmentation's jitter alone)
DESCAN_PX = 0.0
# --pedestal: a dark level the detector left in (electrons per pixel, in the patterns' units added to every noisy
# pattern after its read noise); --dark-level: what `predict` is told of it ("auto": nothing, it looks; "given": the
# level, as a user with a dark frame passes it; "none": 0, nothing subtracted); the last scan's level (units)
PEDESTAL_E, DARK_LEVEL, LAST_PEDESTAL = 0.0, "auto", [0.0]
# --stored-gain: counts per electron of every noisy pattern stored as unsigned integers (0: stored as recorded)
STORED_GAIN = 0.0
# --edge: every crystal's scan SCAN × 2·SCAN, its second half this negative kind ("vacuum" or "amorphous_film") under
# the same probe and dose, as a scan across a crystal's edge or a hole records it (None: the crystal alone); the
# second half's vectors, all false, per pattern (rows of the negatives, kind "edge_" + EDGE); its films per probe
EDGE, EDGE_ROWS, EDGE_FILMS = None, [], {}


def quad_cross(a: np.ndarray) -> np.ndarray:
    """``a`` (…, Qx, Qy) as a quad detector records it: its two central rows and columns × QUAD_GAIN."""
    if QUAD_GAIN is None:
        return a
    a, c = np.array(a, dtype=np.float32), int(DETECTOR.center_px)
    a[..., c - 1:c + 1, :] *= QUAD_GAIN
    a[..., :, c - 1:c + 1] *= QUAD_GAIN
    return a


def vectors(cube: np.ndarray, probe: np.ndarray, model, mgeo, ps: dict, classical: dict | None, tmp: Path,
            dq: float | None = None) -> list:
    """Per scan position: DataFrame qx_px, qy_px (detector px relative to the found beam + centre),
    intensity, qz — the direct beam (within 2 px) dropped. ``dq``: the detector's Å⁻¹/px (None: this run's
    ``DETECTOR``, as ``set_detector`` left it — the negatives' film and probe are simulated on it)."""
    dq = DETECTOR.dk_invA if dq is None else dq
    out = tmp / f"run-{time.perf_counter_ns()}"
    n = cube.shape[0] * cube.shape[1]
    try:
        summary = predict.predict_cube(
            Cube(array=quad_cross(cube), path="bench"), quad_cross(with_psf(probe)) if PROBE == "vacuum" else None, model,
            mgeo, dq, out, progress=False, threshold=ps["peak_threshold"], min_spacing_px=ps["min_spacing_px"],
            baseline="classical" if classical is not None else None, classical_settings=classical,
            precision=PRECISION, bad_pixels=BAD_PIXELS,
            dark_level={"auto": "auto", "given": LAST_PEDESTAL[0], "none": 0.0}[DARK_LEVEL])
    except UserError:  # only without a vacuum probe: no bright-field disk to make one from (no vectors)
        if PROBE == "vacuum":
            raise
        SYNTH_RADIUS[:] = [None]
        return [pd.DataFrame(columns=["qx_px", "qy_px", "intensity", "qz"])] * n
    SYNTH_RADIUS[:] = [summary["probe"].get("radius_px")]
    df = pd.read_parquet(out / "bragg_vectors.parquet")
    c = DETECTOR.center_px
    df = df.assign(qx_px=c + df["qx"] / dq, qy_px=c + df["qy"] / dq)
    df = df[np.hypot(df["qx"], df["qy"]) > 2 * dq]
    groups = dict(tuple(df.groupby(df["rx"] * cube.shape[1] + df["ry"])))
    return [groups.get(k, df.iloc[:0]) for k in range(n)]


def oracle_vectors(label: np.ndarray) -> pd.DataFrame:
    pk = peaks.find_peaks(label[None], None, center_px=DETECTOR.center_px, threshold=0.005,
                          exclude_center_px=2.0, min_spacing_px=3.0)
    return pd.DataFrame({"qx_px": pk["qx_px"], "qy_px": pk["qy_px"], "intensity": pk["intensity"], "qz": np.nan})


def countable_vectors(p: dict, dose: float | None, min_snr: float = COUNTABLE_MIN_SNR) -> pd.DataFrame:
    """The truth reflections of pattern ``p`` whose disk holds ``min_snr`` Poisson σ of electrons at ``dose``
    (``simulation.labels.counted``, background left out: an upper bound), as vectors on the calibrated grid:
    the recall a detector could reach on what the counted pattern shows (the labels of
    ``learning.counted_labels``)."""
    t = p["truth"]
    keep = np.ones(len(t), dtype=bool)
    if dose is not None and len(t):
        signal_e = electrons_per_unit(p["probe"], dose) * disk_sums(p["cbed"], t[["qx_px", "qy_px"]].to_numpy(),
                                                                     p["radius_px"])
        keep = counted(signal_e, np.zeros_like(signal_e), min_snr)
    return pd.DataFrame({"qx_px": t["qx_px"][keep], "qy_px": t["qy_px"][keep], "intensity": t["vg_abs"][keep],
                         "qz": np.nan})


def score(found: list, truths: list, faints: list | None = None) -> dict:
    return aggregate(*score_patterns(found, truths, DETECTOR.center_px, faints), DQ_INVA, 0.02)


def tune_py4dstem(val: list, cfg: dict, model, mgeo, ps: dict, tmp: Path) -> tuple[dict, pd.DataFrame]:
    """py4DSTEM settings tuned once on the validation crystal: every corner of the set at 1e5 e⁻, pooled F1
    at 1 px (one setting for the whole envelope, as a user runs one setting over a session)."""
    aug = Augmenter(cfg["augment"])
    cubes = [(*scan_of(p["cbed"], p["probe"], 1e5, aug, np.random.default_rng([1, k])), p) for k, p in enumerate(val)]
    grid = {k: list(v) for k, v in cfg["evaluate"]["tune_classical"]["grid"].items()}

    def pooled_f1(st):
        found = [v for cube, _, p in cubes for v in vectors(cube, p["probe"], model, mgeo, ps, st, tmp, p["dq"])]
        return score(found, [t for _, dist, p in cubes for t in recorded(p["truth"], dist)])

    # maxNumPeaks raised from the config's 100: these fields hold up to several hundred reflections
    return tune_classical(pooled_f1, {**cfg["evaluate"]["classical"], "maxNumPeaks": 1000}, grid)


def run_test(sims: dict, cfg: dict, model, mgeo, ps: dict, settings: dict, tmp: Path) -> list[dict]:
    """One record per (detector, crystal, corner, dose): the found vectors and the truth of each position."""
    aug, recs, ceiling = Augmenter(cfg["augment"]), [], []
    for (name, _), pats in sims.items():
        for p, (di, dose) in itertools.product(pats, enumerate(DOSES)):
            rng = np.random.default_rng([len(recs), di])
            cube, dist = scan_of(p["cbed"], p["probe"], dose, aug, rng)
            corner = {"crystal": name, "energy_kV": p["energy_eV"] / 1e3, "semiangle_mrad": p["semiangle_mrad"],
                      "thickness_nm": p["thickness_A"] / 10, "dose": "noiseless" if dose is None else f"{dose:.0e}"}
            if EDGE:  # (drawn after the crystal's positions: theirs are the draws of a run without --edge)
                cube = np.concatenate([cube, edge_half(p, dose, aug, rng)], axis=1)
            # the detectors read the recorded patterns; the oracle reads the label, on the calibrated grid
            seen = (recorded(p["truth"], dist), recorded(p["faint"], dist))
            label = ([p["truth"]] * SCAN * SCAN, [p["faint"]] * SCAN * SCAN)
            net = on_crystal(vectors(cube, p["probe"], model, mgeo, ps, None, tmp, p["dq"]), corner, "network")
            radius = {"probe_radius_px": SYNTH_RADIUS[0], "true_radius_px": p["radius_px"]} if PROBE != "vacuum" \
                else {}
            classical = on_crystal(vectors(cube, p["probe"], model, mgeo, ps, settings, tmp, p["dq"]), corner, "py4DSTEM")
            for det, found, (truths, faints) in (
                    ("network", net, seen),
                    ("py4DSTEM", classical, seen),
                    ("oracle", [oracle_vectors(p["label"])] * SCAN * SCAN, label)):
                recs.append({**corner, "detector": det, "found": found, "truths": truths, "faints": faints, **radius})
            # (kept apart: the noise draws above are seeded by len(recs))
            ceiling.append({**corner, "detector": "countable", "found": [countable_vectors(p, dose)] * SCAN * SCAN,
                            "truths": label[0], "faints": label[1]})
    return recs + ceiling


def edge_half(p: dict, dose, aug: Augmenter, rng) -> np.ndarray:
    """The other half of a scan across the edge of pattern ``p``'s crystal (``--edge``): SCAN × SCAN positions of vacuum
    (its probe) or of 20 nm of amorphous carbon on its detector, at its dose."""
    film = None
    if EDGE == "amorphous_film":
        key = (p["energy_eV"], p["semiangle_mrad"], p["dq"])
        if key not in EDGE_FILMS:
            geo = Geometry(box_A=1.0 / p["dq"], gpts=DETECTOR.gpts, detector_px=DETECTOR.detector_px,
                           thicknesses_A=DETECTOR.thicknesses_A, slice_thickness_A=DETECTOR.slice_thickness_A)
            EDGE_FILMS[key] = amorphous_film_cbed(geo, p["energy_eV"], p["semiangle_mrad"], thickness_A=200.0)["cbed"]
        film = EDGE_FILMS[key]
    return scan_of(negative_cbed(EDGE, p["probe"], film), p["probe"], dose, aug, rng)[0]


def on_crystal(found: list, corner: dict, detector: str) -> list:
    """``found`` (one frame per position of a SCAN × SCAN scan, or of SCAN × 2·SCAN with ``--edge``): the crystal's
    positions; the other half's vectors counted as false (``EDGE_ROWS``)."""
    if not EDGE:
        return found
    width = 2 * SCAN
    EDGE_ROWS.append({"kind": "edge_" + EDGE, "energy_kV": corner["energy_kV"], "semiangle_mrad": corner["semiangle_mrad"],
                      "dose": corner["dose"], "detector": detector, "film": 0 if EDGE == "amorphous_film" else None,
                      "false_vectors_per_pattern": float(np.mean([len(f) for k, f in enumerate(found)
                                                                  if k % width >= SCAN]))})
    return [f for k, f in enumerate(found) if k % width < SCAN]


def chance_records(recs: list[dict]) -> list[dict]:
    """A floor for reading F1: per py4DSTEM record, as many vectors per pattern as py4DSTEM reported, placed
    uniformly at random on the disk about the beam that holds the truth (out to the farthest truth reflection
    + 1 px), scored like a detector: how much of a detector's F1 its vector count alone would earn where
    overlapping disks crowd the field with reflections."""
    c, out = DETECTOR.center_px, []
    for i, r in enumerate(recs):
        if r["detector"] != "py4DSTEM":
            continue
        rng, found = np.random.default_rng([i, 7]), []
        for f, t in zip(r["found"], r["truths"]):
            reach = (np.hypot(t["qx_px"] - c, t["qy_px"] - c).max() if len(t) else 0.0) + 1.0
            rad, ang = reach * np.sqrt(rng.uniform(0.0, 1.0, len(f))), rng.uniform(0.0, 2 * np.pi, len(f))
            found.append(pd.DataFrame({"qx_px": c + rad * np.cos(ang), "qy_px": c + rad * np.sin(ang),
                                       "intensity": 1.0, "qz": np.nan}))
        out.append({**r, "detector": "chance", "found": found})
    return out


def negatives(sims: dict, cfg: dict, model, mgeo, ps: dict, settings: dict, tmp: Path) -> list[dict]:
    """False vectors per pattern without a crystal, per kind, illumination, dose and (for the amorphous film)
    film drawn (``NEGATIVE_FILMS``)."""
    aug, rows = Augmenter(cfg["augment"]), []
    probes = {(p["energy_eV"], p["semiangle_mrad"]): p["probe"] for pats in sims.values() for p in pats}
    for (energy, alpha), probe in sorted(probes.items()):
        films = [amorphous_film_cbed(DETECTOR, energy, alpha, thickness_A=200.0, seed=s) for s in range(NEGATIVE_FILMS)]
        for kind, (di, dose) in itertools.product(NEGATIVE_KINDS, enumerate(DOSES)):
            for s in range(NEGATIVE_FILMS if kind == "amorphous_film" else 1):
                pr = films[s]["probe"] if kind == "amorphous_film" else probe
                rng = np.random.default_rng([di, 9] if s == 0 else [di, 9, s])  # film 0: the draws of one film
                cube, _ = scan_of(negative_cbed(kind, pr, films[s]["cbed"]), pr, dose, aug, rng)
                for det, st in (("network", None), ("py4DSTEM", settings)):
                    counts = [len(v) for v in vectors(cube, pr, model, mgeo, ps, st, tmp)]
                    rows.append({"kind": kind, "energy_kV": energy / 1e3, "semiangle_mrad": alpha,
                                 "dose": "noiseless" if dose is None else f"{dose:.0e}", "detector": det,
                                 "film": s if kind == "amorphous_film" else None,
                                 "false_vectors_per_pattern": float(np.mean(counts))})
    return rows


def pooled(recs: list[dict], keys: list[str]) -> pd.DataFrame:
    df = pd.DataFrame([{k: r[k] for k in keys} | {"i": i} for i, r in enumerate(recs)])
    rows = []
    for key, g in df.groupby(keys, sort=False):
        found = [f for i in g["i"] for f in recs[i]["found"]]
        truths = [t for i in g["i"] for t in recs[i]["truths"]]
        faints = [t for i in g["i"] for t in recs[i]["faints"]]
        rows.append(dict(zip(keys, key if isinstance(key, tuple) else (key,))) | score(found, truths, faints))
    return pd.DataFrame(rows)


COLUMNS = ["f1", "f1_real", "f1_2px", "precision", "precision_real", "recall", "rms_px", "radial_bias_px", "intensity_spearman", "qz_sign_accuracy"]


def markdown(df: pd.DataFrame, keys: list[str], cols=COLUMNS) -> str:
    cols = [c for c in cols if c in df]
    lines = ["| " + " | ".join(keys + cols) + " |", "|" + "---|" * (len(keys) + len(cols))]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join([str(r[k]) for k in keys] + [
            "–" if pd.isna(r[c]) else f"{r[c]:.2f}" for c in cols]) + " |")
    return "\n".join(lines)


def head_to_head(corners: pd.DataFrame) -> str:
    """Corner-doses where the network's F1 at 1 px is ≥ py4DSTEM's (rounded to 0.01, as reported), strict
    and with faint real reflections out of the count, and the ones it loses."""
    keys = ["energy_kV", "semiangle_mrad", "thickness_nm", "dose"]
    net, cls, rnd = (corners[corners["detector"] == d].set_index(keys) for d in ("network", "py4DSTEM", "chance"))
    lines = ["| F1 at 1 px | network ≥ py4DSTEM | lost (network vs py4DSTEM; py4DSTEM's count at random) |",
             "|---|---|---|"]
    for col in ("f1", "f1_real"):
        lost = [f"{' / '.join(map(str, k))}: {net.at[k, col]:.2f} vs {cls.at[k, col]:.2f} ({rnd.at[k, col]:.2f})"
                for k in net.index if round(net.at[k, col], 2) < round(cls.at[k, col], 2)]
        lines.append(f"| {col} | {len(net) - len(lost)} of {len(net)} | {'; '.join(lost) or 'none'} |")
    return "\n".join(lines)


def synthesized_radii(recs: list[dict]) -> str:
    """The synthesized probe's radius over the true disk's, per corner (min–max over crystals and doses), and
    the scans where `predict` made none."""
    keys = ["energy_kV", "semiangle_mrad", "thickness_nm"]
    df = pd.DataFrame([{k: r[k] for k in keys + ["dose"]} | {"ratio": np.nan if r["probe_radius_px"] is None else
                       r["probe_radius_px"] / r["true_radius_px"], "true": r["true_radius_px"]}
                       for r in recs if r["detector"] == "network"])
    doses = ["noiseless" if d is None else f"{d:.0e}" for d in DOSES]
    lines = ["| kV | mrad | nm | true radius (px) | synthesized / true: " + " | ".join(doses) + " |",
             "|---|---|---|---|" + "---|" * len(doses)]
    for key, g in df.groupby(keys, sort=False):
        cells = []
        for dose in doses:
            r = g[g["dose"] == dose]["ratio"]
            cells.append("–" if r.empty else (f"{r.min():.2f}–{r.max():.2f}" if r.notna().all() else
                                              f"{r.min():.2f}–{r.max():.2f}, {r.isna().sum()} refused"))
        lines.append(f"| {' | '.join(f'{v:g}' for v in key)} | {g['true'].iloc[0]:.2f} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> int:
    global SCAN
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one test crystal, 300 kV, 10 nm (minutes)")
    ap.add_argument("--model", default=None, help="model file (default: the shipped pretrained model)")
    ap.add_argument("--out", default=None, help="also write all figures as JSON here")
    ap.add_argument("--detector", nargs=2, type=float, metavar=("PX", "DQ"), default=None,
                    help="another detector: PX pixels per edge at ≈ DQ Å⁻¹/px (default 256 at 0.02)")
    ap.add_argument("--corner", nargs=3, type=float, metavar=("KV", "MRAD", "NM"), action="append", default=None,
                    help="simulate only these (kV, mrad, nm) settings instead of the envelope corners; repeatable")
    ap.add_argument("--py4dstem-settings", default=None, metavar="JSON",
                    help="py4DSTEM settings to use instead of tuning them (e.g. another run's --out "
                         "py4dstem_settings, to compare two runs with the same baseline)")
    ap.add_argument("--noise", choices=("detector", "poisson"), default="detector",
                    help="detector: the config's augment artifacts (default); poisson: shot noise only")
    ap.add_argument("--crystals", choices=("square", "rectangular", "other", "zones"), default="square",
                    help="square: SrTiO3, Si, MgO [001] (default); rectangular: Si [110], GaN and MoS2 [0001] "
                         "(rectangular and hexagonal patterns); other: Au [001], TiO2 [001], GaAs [110], "
                         "Al2O3 [0001] (heavy, oxide and large-cell crystals); zones: Si and Al [111], SrTiO3 [110], "
                         "ZnO [11-20] (zone axes the others lack); validation crystal Cu [001] in all")
    ap.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                    help="the network's arithmetic (default fp32; auto: as `predict` runs by default here)")
    ap.add_argument("--quad-cross", type=float, default=None, metavar="GAIN",
                    help="the two central detector rows and columns count GAIN × (a quad detector's cross)")
    ap.add_argument("--bad-pixels", choices=("auto", "none"), default="auto",
                    help="predict's bad-pixel search (auto, as `predict` runs by default) or none")
    ap.add_argument("--probe", choices=("vacuum", "synthesized"), default="vacuum",
                    help="vacuum: the true vacuum probe is given (default); synthesized: none is given, `predict` "
                         "makes one from the scan (both detectors)")
    ap.add_argument("--frozen-phonons", type=int, default=0, metavar="N",
                    help="each pattern the mean of N frozen-phonon configurations (default 0: a static lattice)")
    ap.add_argument("--tilt", nargs=2, type=float, metavar=("MRAD", "AZIMUTH_DEG"), default=None,
                    help="every crystal tilted off its zone axis by MRAD toward AZIMUTH_DEG (default: on the zone axis)")
    ap.add_argument("--psf-px", type=float, default=0.0, metavar="SIGMA",
                    help="every pattern (noiseless too) and the vacuum probe as a camera of Gaussian point spread "
                         "SIGMA px records them, after counting (a scintillator; default 0: the augmentation's blur)")
    ap.add_argument("--read-noise", type=float, default=0.0, metavar="E",
                    help="Gaussian read noise of E electrons per pixel on every noisy pattern, dark-subtracted (an "
                         "integrating detector such as an EMPAD or a CMOS camera; default 0: counts)")
    ap.add_argument("--subtract-background", action="store_true",
                    help="subtract from every noisy pattern the smooth background the augmentation drew, after the "
                         "detector recorded it (a user's preprocessing; `predict` adds it back: evidence.with_floor_restored)")
    ap.add_argument("--descan", type=float, default=0.0, metavar="PX",
                    help="the beam moves PX per scan row and per column on every noisy scan (an uncorrected descan; "
                         "default 0); with --scan N of 6 or more `predict` fits it")
    ap.add_argument("--pedestal", type=float, default=0.0, metavar="E",
                    help="a dark level of E electrons per pixel left in every noisy pattern (a camera's pedestal; "
                         "default 0)")
    ap.add_argument("--dark-level", choices=("auto", "given", "none"), default="auto",
                    help="what `predict` is told of the pedestal: auto = nothing (it finds a counting detector's), "
                         "given = its level (predict --dark-level), none = 0 (nothing subtracted)")
    ap.add_argument("--stored-gain", type=float, default=0.0, metavar="G",
                    help="every noisy pattern stored as unsigned integers: G counts per electron, rounded, below zero "
                         "clipped to 0 (with --read-noise: an integrating camera's dark-subtracted frames as its "
                         "software writes them; default 0: as recorded)")
    ap.add_argument("--doses", nargs="+", default=None, metavar="DOSE",
                    help="electrons per pattern, 'noiseless' for none (default: noiseless 1e5 1e3; users record "
                         "1e2–1e6)")
    ap.add_argument("--scan", type=int, default=SCAN, metavar="N",
                    help=f"each test pattern as an N × N scan, fresh noise per position (default {SCAN}; from 6, "
                         "a low-dose scan's batches of 32 fit the batch's lattice: detectors._batch_lattice)")
    ap.add_argument("--edge", choices=("vacuum", "amorphous_film"), default=None,
                    help="every crystal's scan N × 2N, its second half vacuum or amorphous film under the same probe "
                         "and dose (a scan across a crystal's edge: one batch holds both); the crystal's half is "
                         "scored, the other's vectors count as false (negatives' kind edge_KIND)")
    ap.add_argument("--oversample", type=int, default=1, metavar="N",
                    help="the multislice grid N × finer than the detector's field needs, same boxes and pixels "
                         "(default 1: 0.13 Å on the default detector; 2 gives 0.065 Å, near converged intensities)")
    a = ap.parse_args()
    global PRECISION, QUAD_GAIN, BAD_PIXELS, PROBE, TILT, SIM, DOSES, READ_NOISE_E, SUBTRACT_BACKGROUND, PEDESTAL_E
    global DARK_LEVEL, DESCAN_PX, STORED_GAIN, PSF_PX, EDGE
    PSF_PX, EDGE = a.psf_px, a.edge
    PEDESTAL_E, DARK_LEVEL, DESCAN_PX, STORED_GAIN = a.pedestal, a.dark_level, a.descan, a.stored_gain
    SCAN = a.scan
    READ_NOISE_E, SUBTRACT_BACKGROUND = a.read_noise, a.subtract_background
    if a.doses:
        DOSES = tuple(None if d == "noiseless" else float(d) for d in a.doses)
    PRECISION, QUAD_GAIN, BAD_PIXELS, PROBE, TILT = a.precision, a.quad_cross, a.bad_pixels, a.probe, a.tilt
    if a.frozen_phonons:
        SIM = {**SIM, "frozen_phonons": a.frozen_phonons}
    if a.detector or a.oversample != 1:
        px, dq = a.detector if a.detector else (DETECTOR.detector_px, DQ_INVA)
        set_detector(int(px), dq, a.oversample)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if a.noise == "poisson":
        cfg["augment"] = {**cfg["augment"], **POISSON_ONLY}
    model, mgeo, meta = predict.load_model(a.model, "cpu")
    ps = predict.peak_settings(meta)
    xs = {"square": crystals, "rectangular": rectangular_crystals, "other": other_crystals,
          "zones": zone_crystals}[a.crystals]()
    names = list(xs)[:2] if a.quick else list(xs)
    energies, thick = ((300e3,), (100.0,)) if a.quick else (ENERGIES_EV, DETECTOR.thicknesses_A)
    global SEMIANGLES_MRAD
    if a.corner:  # one probe per run of simulate: the corners given (every thickness of a probe at once)
        energies = sorted({1e3 * kv for kv, _, _ in a.corner})
        SEMIANGLES_MRAD = tuple(sorted({m for _, m, _ in a.corner}))
        thick = tuple(sorted({10.0 * nm for _, _, nm in a.corner}))
    t0 = time.perf_counter()
    sims = {(n, e): simulate(*xs[n], energy_eV=e, thicknesses=thick) for n in names for e in energies}
    t_sim = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        val = [p for (n, _), pats in sims.items() if n == names[0] for p in pats]
        if a.py4dstem_settings:
            settings = json.loads(Path(a.py4dstem_settings).read_text())
            settings = settings.get("py4dstem_settings", settings)  # a whole --out file or the settings alone
        else:
            settings, _ = tune_py4dstem(val, cfg, model, mgeo, ps, tmp)
        test = {k: v for k, v in sims.items() if k[0] != names[0]}
        recs = run_test(test, cfg, model, mgeo, ps, settings, tmp)
        recs += chance_records(recs)
        negs = negatives(test, cfg, model, mgeo, ps, settings, tmp) + EDGE_ROWS
    by_dose = pooled(recs, ["dose", "detector"])
    corners = pooled(recs, ["energy_kV", "semiangle_mrad", "thickness_nm", "dose", "detector"])
    by_crystal = pooled([r for r in recs if r["detector"] in ("network", "py4DSTEM")], ["crystal", "dose", "detector"])
    neg = pd.DataFrame(negs).groupby(["kind", "dose", "detector"], sort=False)["false_vectors_per_pattern"].agg(
        worst="max", mean="mean")
    print(f"## bench_accuracy ({'quick' if a.quick else 'full'}, noise: {a.noise}"
          f"{f', point spread σ {a.psf_px:g} px' if a.psf_px else ''}"
          f"{f' + read noise {a.read_noise:g} e⁻' if a.read_noise else ''}"
          f"{', background subtracted' if a.subtract_background else ''}"
          f"{f', pedestal {a.pedestal:g} e⁻ (dark level {a.dark_level})' if a.pedestal else ''}"
          f"{f', descan {a.descan:g} px per scan step' if a.descan else ''}"
          f"{f', stored as whole counts of {a.stored_gain:g} per e⁻, clipped at 0' if a.stored_gain else ''}"
          f", crystals: {', '.join(names[1:])}"
          f"{'' if a.quad_cross is None else f', quad cross × {a.quad_cross:g}'}, bad pixels: {a.bad_pixels}, "
          f"probe: {a.probe}{'' if a.tilt is None else f', tilt {a.tilt[0]:g} mrad toward {a.tilt[1]:g}°'}"
          f"{f', {a.frozen_phonons} frozen phonons' if a.frozen_phonons else ''}"
          f"{f', scans across an edge to {a.edge}' if a.edge else ''}): "
          f"{len(test)} crystal × energy sets, "
          f"{len(recs) // 5} pattern sets × {SCAN * SCAN} positions; simulation {t_sim:.0f} s, "
          f"model {a.model or 'shipped'} (peak settings {ps}, {a.precision}); py4DSTEM "
          f"{'given' if a.py4dstem_settings else 'tuned on ' + names[0]}: "
          f"{ {k: settings[k] for k in cfg['evaluate']['tune_classical']['grid']} }\n")
    print(markdown(by_dose, ["dose", "detector"]) + "\n")
    print(markdown(corners, ["energy_kV", "semiangle_mrad", "thickness_nm", "dose", "detector"],
                   ["f1", "f1_real", "f1_2px", "precision", "precision_real", "recall", "rms_px"]) + "\n")
    print(head_to_head(corners) + "\n")
    print(markdown(by_crystal, ["crystal", "dose", "detector"], ["f1", "precision", "precision_real", "recall", "rms_px"])
          + "\n")
    if a.probe == "synthesized":
        print(synthesized_radii(recs) + "\n")
    print(f"False vectors per pattern on negatives (worst and mean over illuminations and the {NEGATIVE_FILMS} films):\n")
    print(markdown(neg.reset_index(), ["kind", "dose", "detector"], ["worst", "mean"]))
    if a.out:
        Path(a.out).write_text(json.dumps(jsonable({"by_dose": by_dose.to_dict("records"),
                                                    "corners": corners.to_dict("records"),
                                                    "crystals": by_crystal.to_dict("records"), "negatives": negs,
                                                    "py4dstem_settings": settings}), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
