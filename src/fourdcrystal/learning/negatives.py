"""Training scenes without a crystal, and crystals on an amorphous support film.

A network that has only ever seen crystals paints a lattice on anything (benchmarks/RESULTS.md,
"Truth, labels and the evidence check": 230 vectors per vacuum pattern). So training draws, per sample
and as a pure function of ``(seed, epoch, row)``:

* with probability ``train.negative_fraction`` a **negative** in place of the crystal's pattern — the
  vacuum probe, an amorphous film, or nothing (detector noise without beam; the kinds of
  ``fourdcrystal.evaluation.truth.NEGATIVE_KINDS``) — whose label is the direct beam alone (the
  crystal's V_0 peak, no reflection, q_z = 0);
* otherwise, with probability ``train.film_fraction``, the crystal's pattern plus the diffuse scattering
  of a support film under it.

The film is made here, cheaply, in the weak-phase approximation rather than by multislice (evaluation's
negatives use the multislice film of ``simulation.examples``, so training and test films differ): the
exit wave of a thin amorphous film is ψ₀(r)(1 + iσV(r)), so on the detector Ψ = Ψ₀ + iΨ₀ ⊛ Ṽ, with
Ψ₀ = √probe (the aperture, aberration-free) and Ṽ a Gaussian random field whose power spectrum is an
amorphous structure factor: a halo at k₀ (``FILM_HALO_INVA``: 0.3–0.6 Å⁻¹, the first ring of
amorphous carbon, SiN or oxide) on a form-factor decay. The scattered power is a fraction
(``FILM_SCATTERED``) of the beam's. Its speckle has the probe disk's size, as a real film's has.
"""
from __future__ import annotations

import math

import numpy as np

from fourdcrystal.evaluation.truth import NEGATIVE_KINDS
from fourdcrystal.seeds import stable_hash
from fourdcrystal.simulation.labels import PEAK_SIGMA_PX

FILM_HALO_INVA = (0.3, 0.6)       # first amorphous ring (Å⁻¹), uniform
FILM_HALO_WIDTH_INVA = (0.05, 0.15)  # its Gaussian width (Å⁻¹), uniform
FILM_SCATTERED = (0.02, 0.3)      # film-scattered power / beam power, log-uniform
FORM_FACTOR_DECAY_INVA = 1.0      # Gaussian decay of the scattering (Å⁻¹): atoms are not points


def scene_rng(seed: int, epoch: int, row: int) -> np.random.Generator:
    """The scene draws of one sample: a stream of its own, so the detector augmentation's draws (and
    every run without negatives) stay what they were."""
    return np.random.default_rng(stable_hash(f"scene:{int(seed)}:{int(epoch)}:{int(row)}"))


def film_scattered_wave(probe: np.ndarray, dk_invA: float, rng: np.random.Generator,
                        scattered_fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(Ψ₀, iΨ₀ ⊛ Ṽ): the unscattered and film-scattered waves on the detector grid (P, P), complex,
    with |Ψ₀|² = ``probe`` and Σ|scattered|² = ``scattered_fraction`` × Σ probe (drawn if None)."""
    P = probe.shape[0]
    psi0 = np.sqrt(np.clip(np.asarray(probe, np.float64), 0.0, None)).astype(np.complex128)
    k = np.hypot(*np.meshgrid((np.arange(P) - P // 2) * dk_invA, (np.arange(P) - P // 2) * dk_invA, indexing="ij"))
    k0, w = rng.uniform(*FILM_HALO_INVA), rng.uniform(*FILM_HALO_WIDTH_INVA)
    power = (np.exp(-0.5 * ((k - k0) / w) ** 2) + 0.3 * np.exp(-0.5 * (k / k0) ** 2)) \
        * np.exp(-0.5 * (k / FORM_FACTOR_DECAY_INVA) ** 2)
    v = (rng.standard_normal((P, P)) + 1j * rng.standard_normal((P, P))) * np.sqrt(power)
    # Ψ₀ ⊛ Ṽ on the detector grid: a product of the two inverse transforms (circular, as the
    # periodic simulation box is)
    conv = np.fft.fft2(np.fft.ifft2(np.fft.ifftshift(psi0)) * np.fft.ifft2(np.fft.ifftshift(v)))
    scattered = 1j * np.fft.fftshift(conv)
    if scattered_fraction is None:
        scattered_fraction = math.exp(rng.uniform(*(math.log(f) for f in FILM_SCATTERED)))
    total = float((np.abs(scattered) ** 2).sum())
    scattered *= math.sqrt(scattered_fraction * float((psi0.real ** 2).sum()) / max(total, 1e-30))
    return psi0, scattered


def negative_pattern(kind: str, probe: np.ndarray, dk_invA: float, rng: np.random.Generator) -> np.ndarray:
    """Noise-free pattern of a negative on the probe-max-1 scale (noise comes with the augmentation)."""
    if kind == "vacuum":
        return np.asarray(probe, np.float32)
    if kind == "amorphous_film":
        psi0, scattered = film_scattered_wave(probe, dk_invA, rng)
        return (np.abs(psi0 + scattered) ** 2).astype(np.float32)
    if kind == "noise_only":
        return np.zeros_like(probe, dtype=np.float32)
    raise ValueError(f"unknown negative kind {kind!r}")


def beam_only_label(vg: np.ndarray, center_px: int) -> np.ndarray:
    """The label of a pattern without reflections: the direct beam's V_0 Gaussian alone (V_0 read from
    the crystal's own label, so the loss's per-pattern scale is unchanged)."""
    P = vg.shape[0]
    i = np.arange(P) - center_px
    g = np.exp(-0.5 * (i[:, None] ** 2 + i[None, :] ** 2) / PEAK_SIGMA_PX ** 2)
    return (float(vg[center_px, center_px]) * g).astype(np.float32)


class Scenes:
    """Draws each training sample's scene (module docstring); ``dk_invA``: the data's detector pitch."""

    def __init__(self, negative_fraction: float, film_fraction: float, dk_invA: float, center_px: int):
        self.negative_fraction, self.film_fraction = float(negative_fraction), float(film_fraction)
        self.dk_invA, self.center_px = float(dk_invA), int(center_px)

    def __call__(self, q: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cbed, vg, qz) of one sample from its stored quartet ``q``."""
        return self.scene(q, rng)[:3]

    def scene(self, q: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
        """(cbed, vg, qz, negative): ``__call__`` and whether the sample is a negative."""
        u = rng.random()
        if u < self.negative_fraction:
            kind = NEGATIVE_KINDS[int(rng.integers(len(NEGATIVE_KINDS)))]
            cbed = negative_pattern(kind, q["probe"], self.dk_invA, rng)
            return cbed, beam_only_label(q["vg"], self.center_px), np.zeros_like(q["qz"]), True
        cbed = q["cbed"]
        if rng.random() < self.film_fraction:
            _, scattered = film_scattered_wave(q["probe"], self.dk_invA, rng)
            cbed = (cbed + np.abs(scattered) ** 2).astype(np.float32)
        return cbed, q["vg"], q["qz"], False
