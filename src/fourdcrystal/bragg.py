"""Bragg vectors from predicted V_g / q_z maps, and one-to-one matching against a truth list.

Peak extraction works on whole batches at once (torch, CPU or CUDA): a pixel is a peak when it is
the maximum of its 3×3 neighbourhood and its V_g exceeds ``threshold`` × the direct beam's V_g of
that pattern (the V_g maximum in a 3×3 window around the detector centre: the g = 0 Fourier
coefficient of the potential is the largest one for any real crystal, so it is a scale that does not
depend on how many reflections are excited).  The sub-pixel position comes from a separable 1-D
Gaussian three-point fit (a parabola through the log values along each axis), and q_z is sampled bilinearly at
the refined position.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

PEAK_COLUMNS = ("pattern", "qx_px", "qy_px", "intensity", "qz")


def _as_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def direct_beam_vg(vg: torch.Tensor, center_px: int) -> torch.Tensor:
    """V_g of the direct beam per pattern: max over the 3×3 window at the detector centre."""
    c = int(center_px)
    return vg[:, c - 1:c + 2, c - 1:c + 2].amax(dim=(1, 2))


def find_peaks(vg, qz=None, *, center_px: int, threshold: float = 0.02, edge_px: int = 1,
               exclude_center_px: float | None = None) -> dict[str, np.ndarray]:
    """Local maxima of a batch of V_g maps (B, P, P) with sub-pixel refinement.

    Returns numpy arrays of equal length: ``pattern`` (batch index), ``qx_px``, ``qy_px`` (detector
    pixel coordinates of the grid ``vg`` lives on, axis 0 / axis 1), ``intensity`` (V_g at the peak
    pixel), ``qz`` (Å⁻¹, bilinear at the refined position; NaN when ``qz`` is None).
    ``exclude_center_px``: drop peaks closer than this to the centre (the direct beam).
    """
    v = _as_tensor(vg).float()
    if v.ndim == 2:
        v = v[None]
    B, P, Q = v.shape
    ref = direct_beam_vg(v, center_px).clamp_min(1e-30)
    # 3×3 maximum filter; ties on plateaus all pass, which the strict threshold makes harmless
    mx = torch.nn.functional.max_pool2d(v[:, None], 3, stride=1, padding=1)[:, 0]
    is_peak = (v >= mx) & (v > threshold * ref[:, None, None])
    e = max(1, int(edge_px))  # the refinement needs both neighbours
    is_peak[:, :e] = False
    is_peak[:, P - e:] = False
    is_peak[:, :, :e] = False
    is_peak[:, :, Q - e:] = False
    b, i, j = torch.nonzero(is_peak, as_tuple=True)
    f0 = v[b, i, j]
    fxm, fxp = v[b, i - 1, j], v[b, i + 1, j]
    fym, fyp = v[b, i, j - 1], v[b, i, j + 1]

    def _vertex(fm, fp):
        # parabola through the logs (exact for a Gaussian peak, the shape of a V_g peak of a
        # windowed slab) where all three samples are positive; the plain parabola otherwise
        pos = (fm > 0) & (fp > 0) & (f0 > 0)
        lm, l0, lp = (torch.log(t.clamp_min(1e-30)) for t in (fm, f0, fp))
        am, a0, ap = torch.where(pos, lm, fm), torch.where(pos, l0, f0), torch.where(pos, lp, fp)
        den = am - 2 * a0 + ap
        d = torch.where(den < 0, 0.5 * (am - ap) / den.clamp(max=-1e-30), torch.zeros_like(f0))
        return d.clamp(-0.5, 0.5)

    x = i.float() + _vertex(fxm, fxp)
    y = j.float() + _vertex(fym, fyp)
    keep = torch.ones_like(f0, dtype=torch.bool)
    if exclude_center_px is not None:
        keep = torch.hypot(x - center_px, y - center_px) > exclude_center_px
    if qz is not None:
        z = _as_tensor(qz).float().to(v.device)
        if z.ndim == 2:
            z = z[None]
        x0 = x.floor().long().clamp(0, P - 2)
        y0 = y.floor().long().clamp(0, Q - 2)
        tx, ty = x - x0.float(), y - y0.float()
        qz_at = ((1 - tx) * (1 - ty) * z[b, x0, y0] + tx * (1 - ty) * z[b, x0 + 1, y0]
                 + (1 - tx) * ty * z[b, x0, y0 + 1] + tx * ty * z[b, x0 + 1, y0 + 1])
    else:
        qz_at = torch.full_like(f0, float("nan"))
    out = {"pattern": b[keep], "qx_px": x[keep], "qy_px": y[keep], "intensity": f0[keep], "qz": qz_at[keep]}
    return {k: t.detach().cpu().numpy().astype(np.int64 if k == "pattern" else np.float64) for k, t in out.items()}


def match(pred_xy: np.ndarray, true_xy: np.ndarray, tol_px: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching (Hungarian, minimum total distance) of predicted to true positions.

    Pairs farther apart than ``tol_px`` are never matched. Returns index arrays (pred_idx, true_idx).
    """
    pred_xy = np.asarray(pred_xy, dtype=float).reshape(-1, 2)
    true_xy = np.asarray(true_xy, dtype=float).reshape(-1, 2)
    if len(pred_xy) == 0 or len(true_xy) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    d = np.hypot(pred_xy[:, None, 0] - true_xy[None, :, 0], pred_xy[:, None, 1] - true_xy[None, :, 1])
    # a cost far above any allowed distance makes out-of-radius pairs the last resort; they are
    # then dropped, so they never displace a valid pair
    big = 1e6
    cost = np.where(d <= tol_px, d, big)
    r, c = linear_sum_assignment(cost)
    ok = d[r, c] <= tol_px
    return r[ok], c[ok]


def to_invA(px: np.ndarray, center_px: float, dq_invA: float) -> np.ndarray:
    """Pixel coordinate -> Å⁻¹ from the direct beam."""
    return (np.asarray(px) - center_px) * dq_invA
