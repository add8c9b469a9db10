"""Detector artifacts applied to simulated CBED patterns when they are read (training, evaluation).

Simulated quartets are stored noise-free; the artifacts of a real 4D-STEM camera are drawn per read,
so every epoch sees new noise and the evaluation can sweep the dose over stored data.  The transform
acts on the CBED pattern only: the network's probe input is the vacuum probe, which experiments
record once at high dose, and the labels (V_g, q_z) stay on the calibrated detector grid, so the
network learns to report Bragg vectors despite these artifacts.  The origin shift is then undone the
way ``predict`` undoes it on real data — direct beam found, pattern resampled onto the centre pixel
(fourdcrystal.learning.dataset.model_input) — so training exercises the beam finder on shifted patterns and the
network learns only what inference leaves to it.

Scale: patterns are stored with the vacuum probe's maximum pixel = 1 (CONTRACTS, "Physics"), and the
result keeps that scale.  The artifacts, in the order a detector applies them:

1. Geometry: an origin shift (descan/centre calibration error) drawn uniformly in
   ``[-origin_shift_px, origin_shift_px]`` per axis, and an elliptical distortion (projector-lens
   astigmatism): stretch ``1 + e/2`` along a random direction and ``1 - e/2`` across it, with
   ``e`` uniform in ``[0, ellipticity]``.  One bilinear resampling about the centre pixel (bilinear
   keeps intensities ≥ 0 and moves the centre of mass exactly by the shift).
2. Background (before counting, because background electrons are counted too): a constant level
   ``background_const`` and a diffuse radial term ``a * exp(-r / r0)`` (inelastic/thermal diffuse
   scattering around the direct beam) with ``a`` in ``background_diffuse`` and ``r0`` uniform in
   ``[P/16, P/4]`` px; both as fractions of the probe maximum.
3. Shot noise: the dose D (electrons per pattern, log-uniform in ``dose_e_per_pattern`` unless
   given) is the number of electrons in the incident probe, so one intensity unit holds
   ``s = D / probe.sum()`` electrons.  Counts ~ Poisson(s · I) and the result is counts / s: the
   mean is unchanged and the variance is I / s.  Normalising by the PROBE total (not the CBED
   total) is the physical choice: electrons scattered off the detector are lost, not redistributed.
4. Detector point-spread: Gaussian blur with sigma uniform in ``blur_px`` (scintillator spread of
   each counted electron, hence after counting).
5. Defective pixels: each pixel is dead (0) with probability ``dead_pixel_fraction`` and hot
   (0.5–2 × the pattern maximum) with probability ``hot_pixel_fraction``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fourdcrystal.errors import UserError

DEFAULTS = {
    "dose_e_per_pattern": [1.0e4, 1.0e6],
    "background_const": [0.0, 0.002],
    "background_diffuse": [0.0, 0.01],
    "blur_px": [0.0, 0.7],
    "origin_shift_px": 1.0,
    "ellipticity": 0.01,
    "hot_pixel_fraction": 1.0e-4,
    "dead_pixel_fraction": 1.0e-4,
}
_RANGES = ("dose_e_per_pattern", "background_const", "background_diffuse", "blur_px")


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the artifacts (units: electrons, fractions of the probe maximum, pixels)."""

    dose_e: float | None  # None: no shot noise
    background_const: float = 0.0
    background_diffuse: float = 0.0
    diffuse_width_px: float = 8.0
    blur_px: float = 0.0
    shift_px: tuple[float, float] = (0.0, 0.0)  # (axis 0 = kx, axis 1 = ky)
    ellipticity: float = 0.0
    ellipse_angle_rad: float = 0.0
    hot_pixel_fraction: float = 0.0
    dead_pixel_fraction: float = 0.0


class Augmenter:
    """Draw and apply detector artifacts; configured by the ``augment`` config section."""

    def __init__(self, cfg: dict | None = None):
        cfg = {**DEFAULTS, **(cfg or {})}
        for key in _RANGES:
            lo, hi = (float(v) for v in cfg[key])
            if not 0 <= lo <= hi:
                raise UserError(f"config key 'augment.{key}' is [{lo}, {hi}]", "give [min, max] with 0 <= min <= max")
        if float(cfg["dose_e_per_pattern"][0]) <= 0:
            raise UserError("config key 'augment.dose_e_per_pattern' must be > 0 electrons",
                            "give a positive [min, max] dose range")
        self.cfg = cfg

    def draw(self, rng: np.random.Generator, shape: tuple[int, int], dose: float | None = None) -> AugmentParams:
        """Draw one set of artifact parameters; ``dose`` None draws it log-uniformly from the range."""
        c = self.cfg
        if dose is None:
            lo, hi = (math.log(float(v)) for v in c["dose_e_per_pattern"])
            dose = math.exp(rng.uniform(lo, hi))
        elif dose <= 0:
            raise UserError(f"dose {dose} e/pattern is not positive", "pass a dose > 0 electrons per pattern")
        p = min(shape)
        s = float(c["origin_shift_px"])
        return AugmentParams(
            dose_e=float(dose),
            background_const=float(rng.uniform(*c["background_const"])),
            background_diffuse=float(rng.uniform(*c["background_diffuse"])),
            diffuse_width_px=float(rng.uniform(p / 16, p / 4)),
            blur_px=float(rng.uniform(*c["blur_px"])),
            shift_px=(float(rng.uniform(-s, s)), float(rng.uniform(-s, s))),
            ellipticity=float(rng.uniform(0.0, float(c["ellipticity"]))),
            ellipse_angle_rad=float(rng.uniform(0.0, math.pi)),
            hot_pixel_fraction=float(c["hot_pixel_fraction"]),
            dead_pixel_fraction=float(c["dead_pixel_fraction"]),
        )

    def apply(self, cbed: np.ndarray, probe: np.ndarray, rng: np.random.Generator, dose: float | None = None) -> np.ndarray:
        """Return an augmented float32 copy of ``cbed`` (P, P); ``probe`` sets the dose scale."""
        return self.apply_recorded(cbed, probe, rng, dose)[0]

    def apply_recorded(self, cbed: np.ndarray, probe: np.ndarray, rng: np.random.Generator,
                       dose: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``apply`` (the same draws), and the distortion A (``distortion_matrix``) it recorded the pattern
        with: evaluation scores vectors against the truth where this detector put it (``A g``)."""
        img, params = self.apply_drawn(cbed, probe, rng, dose)
        return img, distortion_matrix(params.ellipticity, params.ellipse_angle_rad)

    def apply_drawn(self, cbed: np.ndarray, probe: np.ndarray, rng: np.random.Generator,
                    dose: float | None = None) -> tuple[np.ndarray, AugmentParams]:
        """``apply`` (the same draws), and the parameters it drew: training's dose-aware labels need the
        dose and the background the pattern was counted with."""
        params = self.draw(rng, cbed.shape, dose)
        return transform(cbed, probe, params, rng), params


def distortion_matrix(ellipticity: float, angle_rad: float) -> np.ndarray:
    """The elliptical distortion A (2×2): a feature at ``c + v`` (px from the centre pixel, axes (kx, ky))
    is recorded at ``c + A v + shift``; so a Bragg vector measured from the recorded beam is ``A g``."""
    ca, sa = math.cos(angle_rad), math.sin(angle_rad)
    rot = np.array([[ca, -sa], [sa, ca]])
    return rot @ np.diag([1 + ellipticity / 2, 1 - ellipticity / 2]) @ rot.T


def distort(img: np.ndarray, shift, ellipticity: float, angle: float) -> np.ndarray:
    """Resample so the content moves by ``shift`` px and stretches elliptically about the centre (step 1 of the
    module docstring; bench_strain's precision bound moves the disks with it)."""
    if shift == (0.0, 0.0) and ellipticity == 0.0:
        return img
    c = np.array([img.shape[0] // 2, img.shape[1] // 2], float)
    fwd = distortion_matrix(ellipticity, angle)  # output = c + A(in - c) + shift
    inv = np.linalg.inv(fwd)
    offset = c - inv @ (c + np.asarray(shift, float))
    return ndimage.affine_transform(img, inv, offset=offset, order=1, mode="constant", cval=0.0)


def background_image(shape: tuple[int, int], params: AugmentParams, onto: np.ndarray | float = 0.0) -> np.ndarray:
    """``onto`` plus the drawn background (constant + radial diffuse about the centre pixel, fractions of
    the probe maximum) on a detector of ``shape``, float64."""
    i0, i1 = np.indices(shape, dtype=np.float64)
    r = np.hypot(i0 - shape[0] // 2, i1 - shape[1] // 2)
    return onto + params.background_const + params.background_diffuse * np.exp(-r / params.diffuse_width_px)


def electrons_per_unit(probe: np.ndarray, dose_e: float) -> float:
    """Electrons per intensity unit at ``dose_e`` electrons in the incident ``probe``."""
    probe_total = float(np.sum(probe, dtype=np.float64))
    if probe_total <= 0:
        raise ValueError("augment: the probe has no intensity; cannot set a dose scale")
    return float(dose_e) / probe_total


def _before_counting(cbed: np.ndarray, params: AugmentParams) -> np.ndarray:
    """Steps 1–2 (module docstring): ``cbed`` moved and distorted, on its background; a float64 copy."""
    img = distort(np.array(cbed, dtype=np.float64), tuple(params.shift_px), params.ellipticity, params.ellipse_angle_rad)
    if params.background_const or params.background_diffuse:
        img = background_image(img.shape, params, onto=img)
    return img


def mean_electrons(cbed: np.ndarray, probe: np.ndarray, params: AugmentParams) -> np.ndarray:
    """The electrons per pixel ``transform`` counts on average before its shot noise (steps 1–2 at the drawn dose):
    the Poisson means of the recorded pattern (bench_strain's precision bound)."""
    return np.clip(_before_counting(cbed, params), 0.0, None) * electrons_per_unit(probe, params.dose_e)


def transform(cbed: np.ndarray, probe: np.ndarray, params: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Apply one drawn set of artifacts (see the module docstring for order and units)."""
    img = _before_counting(cbed, params)  # a copy: the caller's pattern is never modified
    if params.dose_e is not None:
        e_per_unit = electrons_per_unit(probe, params.dose_e)
        img = rng.poisson(np.clip(img, 0.0, None) * e_per_unit) / e_per_unit
    if params.blur_px > 0:
        img = ndimage.gaussian_filter(img, params.blur_px, mode="constant")
    n = img.size
    if params.dead_pixel_fraction > 0:
        dead = rng.random(n) < params.dead_pixel_fraction
        img.reshape(-1)[dead] = 0.0
    if params.hot_pixel_fraction > 0:
        hot = np.flatnonzero(rng.random(n) < params.hot_pixel_fraction)
        if hot.size:
            img.reshape(-1)[hot] = max(float(img.max()), 1e-12) * rng.uniform(0.5, 2.0, hot.size)
    return img.astype(np.float32)
