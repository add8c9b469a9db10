"""Reciprocal pixel size (Å⁻¹ per detector pixel) from the units a file's metadata states.

Files say it in many ways: rosettasciio axes in 1/nm, 1/Å or mrad (with the beam energy),
py4DSTEM/emdfile calibrations as ``Q_pixel_size`` + ``Q_pixel_units`` ("A^-1", "mrad", "pixels"),
NanoMEGAS .blo files in camera-plane cm. Reciprocal lengths convert directly, angles through the
electron wavelength; pixels or no units mean "uncalibrated"; anything else (a camera-plane length
needs the camera length, which the files do not carry) is named in a one-line error.
Without any of these, the probe's convergence semi-angle and the beam energy give it: the bright-field disk's
radius is α / λ (``invA_per_px_from_disk``).
"""
from __future__ import annotations

import re

from fourdcrystal.errors import UserError

# length unit -> Å
_LENGTH_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4,
             "mm": 1e7, "m": 1e10}
_ANGLE_RAD = {"mrad": 1e-3, "rad": 1.0, "urad": 1e-6, "µrad": 1e-6, "μrad": 1e-6}
_UNCALIBRATED = {"", "px", "pixel", "pixels", "<undefined>", "undefined", "none", "au", "a.u."}
_Q_NEEDED = "pass --q-pixel-size (1/Å per pixel)"
_NEEDS = f"{_Q_NEEDED}, or the probe's --semiangle-mrad with --energy"


def _reciprocal_length(u: str) -> float | None:
    """Å per unit of the length L in '1/L', 'L^-1', 'L-1' or 'inv L'; None if not of that form."""
    m = re.fullmatch(r"(?:1/|inv)(.+)|(.+?)(?:\^-1|\^\(-1\)|-1|⁻¹)", u)
    if not m:
        return None
    return _LENGTH_A.get(m.group(1) or m.group(2))


def invA_per_px(scale: float | None, units, energy_eV: float | None, where: str) -> float | None:
    """Å⁻¹ per pixel for a detector axis of ``scale`` ``units``; None when uncalibrated.

    Raises UserError for units that cannot be converted, or for an angle without the beam energy.
    """
    if scale is None:
        return None
    u = (units.decode() if isinstance(units, bytes) else str(units or "")).strip().replace(" ", "").lower()
    if u in _UNCALIBRATED:
        return None
    per_A = _reciprocal_length(u)
    if per_A is not None:
        return float(scale) / per_A
    if u in _ANGLE_RAD:
        if not energy_eV:
            raise UserError(f"{where} is calibrated in {units} per pixel, which needs the beam energy to convert "
                            "to 1/Å",
                            f"pass --energy (eV), or {_NEEDS}")
        from fourdcrystal.geometry import electron_wavelength_A

        return float(scale) * _ANGLE_RAD[u] / electron_wavelength_A(float(energy_eV))
    raise UserError(f"{where} is calibrated in '{units}' per pixel, which cannot be converted to 1/Å "
                    "(a camera-plane length needs the camera length)", _NEEDS)


# A stated calibration and the one the bright-field disk gives (``invA_per_px_from_disk``) are said to disagree
# beyond this factor either way: the disk's measured radius is good to about ±15 % (below), while a calibration in
# 1/nm read as 1/Å, or a camera length misread, is off by 2–10 ×
DISK_CALIBRATION_TOLERANCE = 1.5
# ... and the disk must be large enough to measure. The scan's synthesized disk over the true radius (bench_accuracy
# --probe synthesized, the [001] and far-corner sets, min–max over crystals and doses; benchmarks/RESULTS.md, "The
# convergence semi-angle calibrates"): 0.86–1.07 for disks of 3.9–9.5 px (0.75 once, a 60 nm crystal at 1e3 e⁻),
# 0.76–0.97 for 2.4 px, 0.77–1.33 for 1.1–1.2 px, 1.4–2.9 for 0.5 px
DISK_CALIBRATION_MIN_RADIUS_PX = 2.5


def invA_per_px_from_disk(semiangle_mrad: float, energy_eV: float, disk_radius_px: float) -> float:
    """Å⁻¹ per pixel from the probe's convergence semi-angle ``semiangle_mrad`` at ``energy_eV``: the bright-field
    disk of ``disk_radius_px`` (its half-maximum radius, as ``probe_synth.measure_disk`` gives it) spans α / λ."""
    from fourdcrystal.geometry import electron_wavelength_A

    if not semiangle_mrad > 0:
        raise UserError(f"a convergence semi-angle of {semiangle_mrad} mrad gives no calibration",
                        "pass --semiangle-mrad > 0, or --q-pixel-size (1/Å per pixel)")
    if not disk_radius_px >= DISK_CALIBRATION_MIN_RADIUS_PX:
        raise UserError(f"the bright-field disk measures {disk_radius_px:.2f} px, too small to calibrate from (its "
                        f"radius is uncertain by tens of per cent under {DISK_CALIBRATION_MIN_RADIUS_PX:g} px)",
                        _Q_NEEDED)
    return semiangle_mrad * 1e-3 / electron_wavelength_A(float(energy_eV)) / float(disk_radius_px)
