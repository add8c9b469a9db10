"""Reciprocal pixel size (Å⁻¹ per detector pixel) from the units a file's metadata states.

Files say it in many ways: rosettasciio axes in 1/nm, 1/Å or mrad (with the beam energy),
py4DSTEM/emdfile calibrations as ``Q_pixel_size`` + ``Q_pixel_units`` ("A^-1", "mrad", "pixels"),
NanoMEGAS .blo files in camera-plane cm. Reciprocal lengths convert directly, angles through the
electron wavelength; pixels or no units mean "uncalibrated"; anything else (a camera-plane length
needs the camera length, which the files do not carry) is named in a one-line error.
"""
from __future__ import annotations

import re

from fourdcrystal.errors import UserError

# length unit -> Å
_LENGTH_A = {"a": 1.0, "å": 1.0, "angstrom": 1.0, "nm": 10.0, "pm": 0.01, "um": 1e4, "µm": 1e4, "μm": 1e4,
             "mm": 1e7, "m": 1e10}
_ANGLE_RAD = {"mrad": 1e-3, "rad": 1.0, "urad": 1e-6, "µrad": 1e-6, "μrad": 1e-6}
_UNCALIBRATED = {"", "px", "pixel", "pixels", "<undefined>", "undefined", "none", "au", "a.u."}
_NEEDS = "pass --q-pixel-size (1/Å per pixel)"


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
