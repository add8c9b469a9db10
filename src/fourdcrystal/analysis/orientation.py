"""Out-of-plane tilt of the crystal at one scan position from the network's q_z of its indexed vectors.

Physics: tilting the crystal by a small angle θ so that its zone axis leans towards the in-plane unit
vector n̂ moves a reflection at in-plane g out of the zero layer by q_z ≈ −θ (g · n̂) (the convention
of ``simulation.supercells.tilt_rotation`` and of the kinematic truth; tests/test_physics.py pins
q_z = −tan θ · q_x for a lean towards +x). A least-squares plane through the origin,
q_z ≈ a q_x + b q_y, over the indexed vectors therefore gives the tilt vector (tilt_x, tilt_y) =
(−a, −b) rad: its length is the tilt magnitude and its direction the azimuth the zone axis leans to
(measured from +x towards +y: the axes of the vectors given, `strain.axes`). The plane goes through the
origin because the direct beam has q_z = 0 by definition.
"""
from __future__ import annotations

import numpy as np


def tilt_from_qz(q_invA: np.ndarray, qz_invA: np.ndarray, weights: np.ndarray | None = None
                 ) -> tuple[float, float, float, float]:
    """(tilt_x_mrad, tilt_y_mrad, tilt_mrad, tilt_azimuth_deg) of one position; NaN without q_z (the
    classical baseline) or when the vectors with q_z do not span the plane."""
    ok = np.isfinite(qz_invA) & (np.hypot(q_invA[:, 0], q_invA[:, 1]) > 0)
    nan = (np.nan,) * 4
    if ok.sum() < 2 or np.linalg.matrix_rank(q_invA[ok]) < 2:
        return nan
    sw = np.sqrt(np.ones(ok.sum()) if weights is None else weights[ok])
    (a, b), *_ = np.linalg.lstsq(q_invA[ok] * sw[:, None], qz_invA[ok] * sw, rcond=None)
    tx, ty = -np.arctan(a), -np.arctan(b)
    return 1e3 * tx, 1e3 * ty, 1e3 * float(np.hypot(tx, ty)), float(np.degrees(np.arctan2(ty, tx)))
