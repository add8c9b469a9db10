"""The one owner of simulation geometry and detector calibration.

Every pattern of a dataset shares one detector grid: a square of ``detector_px`` pixels whose
reciprocal-space pitch is ``dk_invA = 1 / box_A`` (the multislice FFT grid of a ``box_A`` wide cell),
with the direct beam on the centre pixel ``(detector_px // 2, detector_px // 2)``.  The dataclass is
built from config, written into store attributes and model checkpoints, and read back by ``predict``
to resample users' data to the grid the network was trained on.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# Physical constants (CODATA 2018) for the relativistic electron wavelength.
_H_PLANCK = 6.62607015e-34  # J s
_M_E = 9.1093837015e-31  # kg
_Q_E = 1.602176634e-19  # C
_C = 299792458.0  # m/s


def electron_wavelength_A(energy_eV: float) -> float:
    """Relativistic electron wavelength in Å for a beam energy in eV (e.g. 0.0251 Å at 200 keV)."""
    e = energy_eV * _Q_E
    p = math.sqrt(2.0 * _M_E * e * (1.0 + e / (2.0 * _M_E * _C**2)))
    return _H_PLANCK / p * 1e10


@dataclass(frozen=True)
class Geometry:
    """Simulation box and detector calibration shared by all patterns of one dataset.

    Lengths in Å, reciprocal lengths in Å⁻¹, angles in mrad, energies in eV.
    """

    box_A: float  # lateral edge of the square simulation cell, Lx = Ly (Å)
    gpts: int  # real-space grid points per lateral edge
    detector_px: int  # detector pixels per edge (centred crop of the FFT grid)
    thicknesses_A: tuple[float, ...]  # exit-plane thicknesses (Å), ascending
    slice_thickness_A: float  # multislice slice thickness (Å)
    energies_eV: tuple[float, ...] = (300e3,)
    semiangle_mrad_range: tuple[float, float] = (2.0, 4.0)
    version: int = field(default=1)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thicknesses_A", tuple(float(t) for t in self.thicknesses_A))
        object.__setattr__(self, "energies_eV", tuple(float(e) for e in self.energies_eV))
        object.__setattr__(self, "semiangle_mrad_range", tuple(float(a) for a in self.semiangle_mrad_range))
        problems = self.problems()
        if problems:
            raise ValueError("geometry: " + "; ".join(problems))

    # --- derived calibration -------------------------------------------------------------
    @property
    def max_thickness_A(self) -> float:
        """Depth of the simulation box: the largest exit-plane thickness (Å)."""
        return max(self.thicknesses_A)

    @property
    def sampling_A(self) -> float:
        """Real-space pixel size of the multislice grid (Å)."""
        return self.box_A / self.gpts

    @property
    def dk_invA(self) -> float:
        """Detector pixel size in reciprocal space (Å⁻¹ per pixel)."""
        return 1.0 / self.box_A

    @property
    def center_px(self) -> int:
        """Index of the direct-beam pixel along each detector axis."""
        return self.detector_px // 2

    @property
    def k_max_detector_invA(self) -> float:
        """Largest |k| along an axis that the detector records (Å⁻¹)."""
        return (self.detector_px // 2 - 1) * self.dk_invA

    @property
    def k_max_corner_invA(self) -> float:
        """Largest |k| the detector records anywhere, in its corners (Å⁻¹)."""
        return math.sqrt(2.0) * self.center_px * self.dk_invA

    @property
    def k_max_antialias_invA(self) -> float:
        """Band limit of the multislice grid after 2/3 antialiasing (Å⁻¹)."""
        return (2.0 / 3.0) / (2.0 * self.sampling_A)

    @property
    def exit_plane_slices(self) -> tuple[int, ...]:
        """Number of slices from the entrance surface to each exit plane."""
        return tuple(int(round(t / self.slice_thickness_A)) for t in self.thicknesses_A)

    @property
    def n_slices(self) -> int:
        return max(self.exit_plane_slices)

    @property
    def largest_disk_invA(self) -> float:
        """Radius of the largest bright-field disk the dataset holds: the largest semi-angle at the highest
        energy (Å⁻¹)."""
        return self.mrad_to_invA(max(self.semiangle_mrad_range), max(self.energies_eV))

    def mrad_to_invA(self, angle_mrad: float, energy_eV: float) -> float:
        """Scattering angle (mrad) to spatial frequency (Å⁻¹) at a beam energy."""
        return angle_mrad * 1e-3 / electron_wavelength_A(energy_eV)

    # --- validation and (de)serialisation ---------------------------------------------------
    def problems(self) -> list[str]:
        out = []
        if self.box_A <= 0 or self.gpts < 16:
            out.append("box_A must be > 0 and gpts >= 16")
        if self.detector_px > self.gpts:
            out.append(f"detector_px {self.detector_px} exceeds gpts {self.gpts}: raise gpts")
        elif self.gpts > 0 and self.box_A > 0 and self.k_max_detector_invA > self.k_max_antialias_invA + 1e-9:
            out.append(
                f"detector reaches {self.k_max_detector_invA:.2f} 1/Å but the multislice grid is band-limited to "
                f"{self.k_max_antialias_invA:.2f} 1/Å: raise gpts or lower detector_px"
            )
        if not self.thicknesses_A or min(self.thicknesses_A) <= 0:
            out.append("thicknesses_A must be positive")
        elif list(self.thicknesses_A) != sorted(set(self.thicknesses_A)):
            out.append("thicknesses_A must be strictly ascending")
        elif self.slice_thickness_A > 0:
            for t in self.thicknesses_A:
                n = t / self.slice_thickness_A
                if abs(n - round(n)) > 1e-6:
                    out.append(f"thickness {t} Å is not a multiple of slice_thickness_A {self.slice_thickness_A}")
        if self.slice_thickness_A <= 0:
            out.append("slice_thickness_A must be > 0")
        if not self.energies_eV or min(self.energies_eV) <= 0:
            out.append("energies_eV must be positive")
        lo, hi = self.semiangle_mrad_range
        if not 0 < lo <= hi:
            out.append("semiangle_mrad_range must be 0 < min <= max")
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thicknesses_A"] = list(self.thicknesses_A)
        d["energies_eV"] = list(self.energies_eV)
        d["semiangle_mrad_range"] = list(self.semiangle_mrad_range)
        d["dk_invA"] = self.dk_invA  # informational; recomputed on load
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Geometry":
        keys = {"box_A", "gpts", "detector_px", "thicknesses_A", "slice_thickness_A", "energies_eV",
                "semiangle_mrad_range", "version"}
        return cls(**{k: v for k, v in d.items() if k in keys})

    @classmethod
    def from_config(cls, config: dict) -> "Geometry":
        g = config["geometry"]
        return cls(
            box_A=float(g["box_A"]),
            gpts=int(g["gpts"]),
            detector_px=int(g["detector_px"]),
            thicknesses_A=tuple(g["thicknesses_A"]),
            slice_thickness_A=float(g["slice_thickness_A"]),
            energies_eV=tuple(g["energies_eV"]),
            semiangle_mrad_range=tuple(g["semiangle_mrad_range"]),
        )
