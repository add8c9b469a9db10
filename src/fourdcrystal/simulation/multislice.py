"""Multislice physics: one orientation of one crystal -> training quartets (probe, CBED, V_g, q_z).

The expensive object is the sliced potential; :func:`simulate_orientation` builds it ONCE per
orientation (with exit planes at every requested thickness, so one multislice pass yields the whole
thickness series) and reuses the same computed array for every probe setting and for the labels.

Detector convention (see :class:`fourdcrystal.geometry.Geometry`): a pattern is a centred
``detector_px``² crop of the ``gpts``² FFT grid, pitch ``dk = 1/box_A`` Å⁻¹, direct beam at
``(center_px, center_px)``, axis 0 = kx (lab x), axis 1 = ky.  abTEM stores waves and potentials as
(..., x, y), so ``fftshift(fft2(array))`` already has that orientation; the physics tests check this
against the independent kinematic reflection positions.

Labels (computed from the same potential array; units are volts so they are comparable across
thicknesses and crystals):

* ``vg``: for each detector pixel (qx, qy), ``Σ_qz G(qz) |F(qx, qy, qz)| / n_t`` where ``F`` is the
  3-D Fourier transform of the Tukey-windowed potential slab from the entrance surface down to that
  thickness, normalised by the sum of the window weights (so a plane wave ``V_g exp(2πi g·r)`` gives
  ``|F(g)| = |V_g|`` in volts, independent of box size and thickness), ``G`` is a Gaussian of width
  ``qz_sigma_invA`` (the "excitation" of the reciprocal-lattice point by a nearly flat Ewald sphere)
  and ``n_t = Σ_qz G(qz) |Ŵ_t(qz)| / Ŵ_t(0)`` is the same sum for the z window alone.  Hence a
  reflection lying at ``q_z = q0`` reads ``≈ |V_g| exp(-q0² / 2σ²)`` volts at every thickness, and the
  direct-beam pixel reads the mean inner potential.
* ``qz``: the ``G·|F|²``-weighted mean q_z of each pixel (Å⁻¹); a plain ``G·|F|`` weight biases it
  towards 0 for thin slabs (see :func:`vg_qz_labels`).  With numpy's FFT sign convention a
  Fourier component ``exp(+2πi g·r)`` peaks at ``q = g``, so ``qz`` is the lab-frame z component of the
  reciprocal-lattice vector (the same quantity as ``kinematic.kinematic_reflections``' ``qz_invA``).

The z samples are the potential's own slices (slice-averaged potential at slice centres); the q_z
sum runs over a fine grid in ``|q_z| ≤ min(4σ, 1/(2Δz))`` evaluated by a direct DFT (a small matrix
product after the in-plane FFT is cropped to the detector), which avoids the coarse 1/t sampling
of a plain z-FFT of a thin slab.
"""
from __future__ import annotations

import logging
import time
import warnings
from dataclasses import asdict, dataclass

import numpy as np

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry, electron_wavelength_A

log = logging.getLogger("fourdcrystal.simulation.multislice")

# Width of the q_z integration window in units of qz_sigma_invA: exp(-4²/2) = 3e-4, negligible.
_QZ_RANGE_SIGMAS = 4.0
# q_z grid points per natural peak width 1/t (t = slab thickness): fine enough that the Gaussian-
# weighted sum hardly depends on where a reflection's q_z falls relative to the grid (8 changes V_g
# by <= 3 % and q_z by < 1e-4 Å⁻¹ for Si [110], and doubles the label time).
_QZ_POINTS_PER_PEAK = 4


@dataclass(frozen=True)
class ProbeSetting:
    """One illumination: beam energy (eV), convergence semi-angle (mrad), defocus (Å, abTEM sign)."""

    probe_id: int
    energy_eV: float
    semiangle_mrad: float
    defocus_A: float

    def to_dict(self) -> dict:
        return asdict(self)


# Overlap probes: the disk radius α/λ as a fraction of the pattern's shortest in-plane reflection
# spacing.  0.5 is touching disks; 0.35–0.8 spans nearly touching to heavily overlapping (SrTiO3 [001] at
# 300 kV / 4 mrad is 0.79), the corner a uniform semi-angle draw reaches in a few % of patterns only.
OVERLAP_RADIUS_FRACTION = (0.35, 0.8)


def draw_probe_settings(sim_cfg: dict, geometry: Geometry, rng: np.random.Generator, n: int | None = None,
                        shortest_g_invA: float | None = None) -> list[ProbeSetting]:
    """Draw ``n`` probe settings (default ``sim_cfg['probes_per_orientation']``).

    Energy uniformly from ``geometry.energies_eV``, semi-angle uniform in
    ``geometry.semiangle_mrad_range``, defocus uniform in ``sim_cfg['defocus_A']``.  With
    ``sim_cfg['overlap_fraction']`` > 0 and the orientation's ``shortest_g_invA`` (its shortest in-plane
    reflection spacing, Å⁻¹) known, that fraction of the probes is drawn instead so the disks touch or
    overlap: radius α/λ = f × shortest_g_invA with f uniform in ``OVERLAP_RADIUS_FRACTION``, at an energy
    drawn among those whose semi-angle for it lies in the range (the ordinary draw where none does).  The
    draws for probe i happen in a fixed order so a seeded ``rng`` gives a reproducible list; with no
    overlap fraction the list is the one earlier revisions drew.
    """
    n = int(sim_cfg.get("probes_per_orientation", 1) if n is None else n)
    overlap = float(sim_cfg.get("overlap_fraction", 0.0) or 0.0) if shortest_g_invA else 0.0
    lo_d, hi_d = (float(v) for v in sim_cfg.get("defocus_A", (0.0, 0.0)))
    out = []
    for i in range(n):
        setting = _overlap_setting(geometry, rng, shortest_g_invA) if overlap and rng.uniform() < overlap else None
        energy, semiangle = setting or _uniform_setting(geometry, rng)
        defocus = float(rng.uniform(lo_d, hi_d))
        out.append(ProbeSetting(i, energy, semiangle, defocus))
    return out


def _uniform_setting(geometry: Geometry, rng: np.random.Generator) -> tuple[float, float]:
    """(energy eV, semi-angle mrad): a listed energy and a semi-angle uniform in the range."""
    lo_a, hi_a = geometry.semiangle_mrad_range
    energy = float(geometry.energies_eV[int(rng.integers(len(geometry.energies_eV)))])
    return energy, float(rng.uniform(lo_a, hi_a))


def _overlap_setting(geometry: Geometry, rng: np.random.Generator, shortest_g_invA: float
                     ) -> tuple[float, float] | None:
    """(energy eV, semi-angle mrad) whose disks' radius is a drawn fraction of ``shortest_g_invA``;
    None where no listed energy reaches it within the semi-angle range."""
    lo_a, hi_a = geometry.semiangle_mrad_range
    radius_invA = float(rng.uniform(*OVERLAP_RADIUS_FRACTION)) * shortest_g_invA
    semiangles = {e: radius_invA * electron_wavelength_A(e) * 1e3 for e in geometry.energies_eV}
    fits = [e for e, a in semiangles.items() if lo_a <= a <= hi_a]
    if not fits:
        return None
    energy = float(fits[int(rng.integers(len(fits)))])
    return energy, float(semiangles[energy])


# --- device handling --------------------------------------------------------------------------
def array_module(device: str):
    """numpy on ``cpu``; cupy on ``gpu`` (imported only then, so CPU installs never need CuPy)."""
    if device == "cpu":
        return np
    if device == "gpu":
        try:
            import cupy  # noqa: PLC0415
        except ImportError:
            raise UserError("simulation.device is 'gpu' but CuPy is not installed",
                            "install cupy matching your CUDA (e.g. pip install cupy-cuda12x) or set "
                            "simulation.device: cpu") from None
        return cupy
    raise UserError(f"unknown simulation device {device!r}", "set simulation.device to cpu or gpu")


def _to_numpy(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


# FFTW plans chosen from the transform's shape alone, on one thread.  abTEM's default planner
# (FFTW_MEASURE) times candidate algorithms and keeps the fastest, so under load two processes can pick
# different ones and round differently (seen: ~4e-7 on probe images, and killed-then-rerun shards that
# no longer equal a clean run); benchmarks/RESULTS.md has the speed cost.  A module constant so that
# the benchmark can time the measuring planner against it.
FFTW_PLANNING = "FFTW_ESTIMATE"


def _fft_settings() -> dict:
    return {"fftw.planning_effort": FFTW_PLANNING, "fftw.threads": 1}


def _abtem_settings(device: str) -> dict:
    # Eager evaluation (no dask graph per call: our arrays are small and reused), no progress bars
    # (the caller wraps orientations in its own tqdm), the requested device and repeatable FFTs.
    return {"device": device, "dask.lazy": False, "diagnostics.progress_bar": False, **_fft_settings()}


# --- building blocks --------------------------------------------------------------------------
def _check_atoms(atoms, geometry: Geometry):
    if len(atoms) == 0:
        raise UserError("supercell has no atoms", "check the supercells stage output for this orientation")
    cell = np.asarray(atoms.cell.array if hasattr(atoms.cell, "array") else atoms.cell, dtype=float)
    want = np.diag([geometry.box_A, geometry.box_A, geometry.max_thickness_A])
    if not np.allclose(cell, want, atol=1e-3):
        raise UserError(f"supercell cell {np.round(np.diag(cell), 3).tolist()} Å does not match the geometry box "
                        f"({geometry.box_A}, {geometry.box_A}, {geometry.max_thickness_A}) Å",
                        "rebuild the supercells with the same geometry config as the simulation")
    pos = atoms.get_positions()
    tol = 1e-6
    if (pos < -tol).any() or (pos[:, :2] > geometry.box_A + tol).any() or (pos[:, 2] > geometry.max_thickness_A + tol).any():
        raise UserError("supercell has atoms outside the simulation box",
                        "crop supercells to 0 <= x, y < box_A and 0 <= z < max thickness")


def build_potential(atoms, geometry: Geometry, sim_cfg: dict, device: str = "cpu", seed: int = 0):
    """Sliced potential of ``atoms`` on the geometry box, computed once (abTEM PotentialArray).

    Exit planes sit after ``geometry.exit_plane_slices`` slices, so one multislice pass through the
    returned array yields every thickness.  With ``frozen_phonons > 0`` the array has a leading axis of
    configurations (abTEM FrozenPhonons, Gaussian displacements of ``phonon_sigma_A``, ``seed``).
    """
    import abtem

    _check_atoms(atoms, geometry)
    atoms = atoms.copy()
    atoms.set_cell([geometry.box_A, geometry.box_A, geometry.max_thickness_A])
    atoms.set_pbc([True, True, False])
    n_fp = int(sim_cfg.get("frozen_phonons", 0))
    if n_fp > 0:
        sigma = float(sim_cfg.get("phonon_sigma_A", 0.08))
        # ensemble_mean=False: keep configurations so multislice intensities are averaged incoherently.
        source = abtem.FrozenPhonons(atoms, num_configs=n_fp, sigmas=sigma, seed=int(seed), ensemble_mean=False)
    else:
        source = atoms
    with abtem.config.set(_abtem_settings(device)):
        pot = abtem.Potential(
            source,
            gpts=geometry.gpts,
            slice_thickness=geometry.slice_thickness_A,
            parametrization=sim_cfg.get("parametrization", "lobato"),
            projection=sim_cfg.get("projection", "infinite"),
            exit_planes=tuple(n - 1 for n in geometry.exit_plane_slices),
            box=(geometry.box_A, geometry.box_A, geometry.max_thickness_A),
            device=device,
        )
        pa = pot.build(lazy=False).compute()
    if pa.array.shape[-3] != geometry.n_slices:
        raise RuntimeError(f"abTEM built {pa.array.shape[-3]} slices, expected {geometry.n_slices}")
    return pa


def _crop_index(geometry: Geometry, xp=np):
    """FFT-order indices of the detector pixels: pixel i holds k = (i - center_px) * dk."""
    p = geometry.detector_px
    return xp.asarray((np.arange(p) - p // 2) % geometry.gpts)


def _fft2(x):
    # abTEM's dispatcher: planned FFTW on the CPU (about 10x numpy's pocketfft here), cuFFT for CuPy;
    # the planner pinned here too, since labels are computed outside simulate_orientation's settings.
    import abtem
    from abtem.core.fft import fft2

    with abtem.config.set(_fft_settings()):
        return fft2(x, overwrite_x=False)


def detector_intensity(waves, geometry: Geometry, xp=np):
    """|ψ(k)|² of real-space waves (..., gpts, gpts) on the detector grid (..., P, P)."""
    idx = _crop_index(geometry, xp)
    f = _fft2(xp.asarray(waves, dtype=xp.complex64))
    f = f[..., idx, :][..., idx]  # centred crop without shifting the whole grid
    return f.real ** 2 + f.imag ** 2


def _tukey(n: int, alpha: float) -> np.ndarray:
    """Tukey (tapered cosine) window sampled at the centres (i + 0.5) / n of n cells.

    Unlike scipy's endpoint-sampled window it is never exactly zero, so the first and last slice of
    a thin slab still count and a 1- or 2-slice slab keeps a non-zero weight.
    """
    x = (np.arange(n) + 0.5) / n
    w = np.ones(n)
    if alpha > 0:
        edge = np.minimum(x, 1.0 - x)  # distance to the nearer end, in units of the window length
        taper = edge < alpha / 2
        w[taper] = 0.5 * (1.0 - np.cos(2.0 * np.pi * edge[taper] / alpha))
    return w


def vg_qz_labels(potential_VA, geometry: Geometry, sim_cfg: dict, xp=np):
    """V_g (V) and q_z (Å⁻¹) labels for every thickness from one slice stack.

    ``potential_VA``: (n_slices, gpts, gpts) projected potential per slice (V·Å, abTEM units), or
    with a leading frozen-phonon axis (averaged: the label is the thermally averaged potential).
    Returns two arrays (n_thicknesses, P, P), float32 on ``xp``'s device.
    """
    alpha = float(sim_cfg.get("tukey_alpha", 0.25))
    sigma = float(sim_cfg.get("qz_sigma_invA", 0.075))
    dz = geometry.slice_thickness_A
    # single precision throughout: labels need ~1e-4 relative accuracy and it halves FFT/matmul time
    v = xp.asarray(potential_VA, dtype=xp.float32)
    if v.ndim == 4:
        v = v.mean(axis=0)
    v = v / dz  # slice-averaged potential in volts
    g, p = geometry.gpts, geometry.detector_px
    w1 = _tukey(g, alpha)
    w_xy = xp.asarray(np.outer(w1, w1).astype(np.float32))
    # In-plane FFT of each windowed slice, cropped to the detector first: the z transform then runs
    # on P² columns instead of gpts² (FFTs are separable, so cropping before the z-DFT is exact).
    idx = _crop_index(geometry, xp)
    f_xy = _fft2((v * w_xy).astype(xp.complex64))[:, idx, :][:, :, idx]
    f_xy = f_xy.reshape(v.shape[0], p * p) / float(w_xy.sum())
    z_centres = (np.arange(v.shape[0]) + 0.5) * dz
    qz_lim = min(_QZ_RANGE_SIGMAS * sigma, 0.5 / dz)
    vg_out, qz_out = [], []
    for n_sl in geometry.exit_plane_slices:
        t = n_sl * dz
        n_q = 2 * int(np.ceil(qz_lim * t * _QZ_POINTS_PER_PEAK / 2)) + 1  # odd: includes q_z = 0
        qz = np.linspace(-qz_lim, qz_lim, n_q)
        gauss = np.exp(-0.5 * (qz / sigma) ** 2)
        w_z = _tukey(n_sl, alpha)
        # Direct DFT along z: E[q, z] = w_z exp(-2πi q z) / Σ w_z.
        e = w_z[None, :] * np.exp(-2j * np.pi * qz[:, None] * z_centres[None, :n_sl]) / w_z.sum()
        n_norm = float((gauss * np.abs(e.sum(axis=1))).sum())  # window alone: Ŵ(q)/Ŵ(0)
        amp = xp.abs(xp.asarray(e.astype(np.complex64)) @ f_xy[:n_sl])  # (n_q, P²)
        wamp = xp.asarray(gauss.astype(np.float32))[:, None] * amp
        tot = wamp.sum(axis=0)
        vg_out.append((tot / n_norm).reshape(p, p))
        # q_z: mean over the q_z window weighted by G·|F|² (excitation-weighted power).  G·|F| pulls
        # the estimate towards 0 (the Gaussian and the 1/t-wide peak multiply, and the low symmetric
        # background dilutes it: -35 % at 20 Å for Si [110] tilted 20 mrad); |F|² without G picks up
        # higher-order Laue zones aliased by the slice sampling (|q_z| near 1/(2Δz)).  G·|F|² is
        # within ~16 % of the kinematic q_z at 20 Å and ~3 % from 40 Å (tests/test_physics.py).
        pw = wamp * amp
        num = (xp.asarray(qz.astype(np.float32))[:, None] * pw).sum(axis=0)
        qz_out.append((num / xp.maximum(pw.sum(axis=0), 1e-30)).reshape(p, p))
    return xp.stack(vg_out), xp.stack(qz_out)


# --- the per-orientation driver ---------------------------------------------------------------
def simulate_orientation(atoms, geometry: Geometry, sim_cfg: dict, probes: list[ProbeSetting],
                         device: str = "cpu", seed: int = 0, labels: bool = True):
    """Quartets of one oriented supercell for every probe setting and thickness.

    ``labels=False`` skips the potential-transform V_g / q_z maps (returned as zeros): the workflow
    renders its training labels from the crystallographic truth instead (fourdcrystal.simulation.labels);
    the transform stays as the physics cross-check of the multislice (tests/test_physics.py, gpu_check).

    Returns ``(arrays, meta, timings)``: ``arrays`` = dict probe/cbed/vg/qz of float32 numpy arrays
    (len(probes) * n_thick, P, P), pattern (probe i, thickness j) at index ``i * n_thick + j``;
    ``meta`` = one dict per pattern (probe_id, energy_eV, semiangle_mrad, defocus_A, thickness_A);
    ``timings`` = seconds spent in ``potential``, ``multislice`` and ``labels``.
    ``seed`` only matters for frozen phonons.

    Scaling: ``probe`` is the vacuum probe |ψ(k)|² divided by its maximum; ``cbed`` is divided by
    the same number, so Σ cbed <= Σ probe (the multislice only loses intensity to the antialias
    aperture and the detector crop).
    """
    import abtem

    if not probes:
        raise UserError("no probe settings given", "set simulation.probes_per_orientation >= 1")
    xp = array_module(device)
    timings = {"potential": 0.0, "multislice": 0.0, "labels": 0.0}

    t0 = time.perf_counter()
    pa = build_potential(atoms, geometry, sim_cfg, device=device, seed=seed)
    timings["potential"] = time.perf_counter() - t0

    centre = (geometry.box_A / 2, geometry.box_A / 2)
    n_t = len(geometry.thicknesses_A)
    p = geometry.detector_px
    probe_out, cbed_out, meta = [], [], []
    t0 = time.perf_counter()
    with abtem.config.set(_abtem_settings(device)):
        for ps in probes:
            probe = abtem.Probe(energy=ps.energy_eV, semiangle_cutoff=ps.semiangle_mrad, defocus=ps.defocus_A,
                                gpts=geometry.gpts, extent=geometry.box_A, device=device)
            vac = detector_intensity(probe.build(scan=[centre], lazy=False).array, geometry, xp)
            vac = vac.reshape(p, p)
            scale = 1.0 / float(vac.max())
            with warnings.catch_warnings():
                # abTEM warns that ensemble_mean=False keeps the phonon configurations: intended, we
                # average the intensities ourselves below.
                warnings.filterwarnings("ignore", message="ensemble_mean=False")
                exit_waves = probe.multislice(pa, scan=[centre], lazy=False).array
            inten = detector_intensity(exit_waves, geometry, xp)
            # abTEM squeezes the single scan position; what remains is (frozen phonons?, thickness, P, P).
            inten = inten.reshape((-1, n_t, p, p)).mean(axis=0)  # incoherent phonon average
            for j, t in enumerate(geometry.thicknesses_A):
                probe_out.append(vac * scale)
                cbed_out.append(inten[j] * scale)
                meta.append({"probe_id": ps.probe_id, "energy_eV": ps.energy_eV,
                             "semiangle_mrad": ps.semiangle_mrad, "defocus_A": ps.defocus_A,
                             "thickness_A": float(t)})
    timings["multislice"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if labels:
        vg, qz = vg_qz_labels(pa.array, geometry, sim_cfg, xp)
    else:
        vg = qz = np.zeros((len(geometry.thicknesses_A), geometry.detector_px, geometry.detector_px), np.float32)
    timings["labels"] = time.perf_counter() - t0

    n_p = len(probes)
    arrays = {
        "probe": np.stack([_to_numpy(a) for a in probe_out]).astype(np.float32),
        "cbed": np.stack([_to_numpy(a) for a in cbed_out]).astype(np.float32),
        # Labels depend on thickness only: the same V_g/q_z for every probe at that thickness.
        "vg": np.tile(_to_numpy(vg).astype(np.float32), (n_p, 1, 1)),
        "qz": np.tile(_to_numpy(qz).astype(np.float32), (n_p, 1, 1)),
    }
    for name, a in arrays.items():
        if not np.isfinite(a).all():
            raise RuntimeError(f"non-finite values in simulated {name}")
    log.debug("orientation: %d atoms, %d patterns, timings %s", len(atoms), len(meta), timings)
    return arrays, meta, timings
