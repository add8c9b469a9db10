"""Sub-pixel placement of a disk on the measured pattern (``inference.refine.SubpixelTemplate``).

A diffracted disk is the probe's disk with an uneven interior (dynamical scattering, the falling form
factor): brighter on one side. Its edge is where the crystal puts it. The edge-weighted template must
place such a disk by its edge; the plain probe template is pulled toward the bright side — the case
that made the template edge-weighted (benchmarks/RESULTS.md, "Edge-weighted sub-pixel template").
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from fourdcrystal.inference.probe_synth import point_spread_px
from fourdcrystal.inference.refine import SubpixelTemplate

N, RADIUS_PX = 64, 4.0


def _disk(cx: float, cy: float, slope_per_px: float = 0.0) -> np.ndarray:
    """A disk of RADIUS_PX with a soft (sub-pixel, area-weighted) edge centred on (cx, cy), its interior
    rising by ``slope_per_px`` of its mean per pixel toward −x."""
    sub = 8  # supersampling per pixel axis for the edge
    ax = (np.arange(N * sub) + 0.5) / sub - 0.5
    x, y = np.meshgrid(ax, ax, indexing="ij")
    inside = np.hypot(x - cx, y - cy) <= RADIUS_PX
    img = (inside * (1.0 - slope_per_px * (x - cx))).reshape(N, sub, N, sub).mean(axis=(1, 3))
    return img


def _placed(template: SubpixelTemplate, pattern: np.ndarray, start: tuple[float, float]) -> np.ndarray:
    b = torch.zeros(1, dtype=torch.long)
    x, y = template.refine(torch.as_tensor(pattern[None], dtype=torch.float32), b,
                           torch.tensor([start[0]], dtype=torch.float32), torch.tensor([start[1]], dtype=torch.float32))
    return np.array([float(x[0]), float(y[0])])


def test_an_uneven_disk_is_placed_by_its_edge():
    probe = _disk(32.0, 32.0)
    edge = SubpixelTemplate(probe, (32.0, 32.0), RADIUS_PX)
    plain = SubpixelTemplate(probe, (32.0, 32.0), RADIUS_PX, edge_sigma_radii=None)
    errors = {"edge": [], "plain": []}
    # x a little above the integer start (the plain correlation's maximum), so that the plain template's
    # pull toward −x stays inside the ±1/2 px sub-pixel grid and shows in full
    for cx, cy in ((20.3, 40.1), (30.0, 30.75), (41.2, 22.4), (26.1, 35.6)):
        pattern = 0.3 * _disk(cx, cy, slope_per_px=0.1)  # one side 2.3x brighter than the other
        start = (round(cx), round(cy))
        for name, t in (("edge", edge), ("plain", plain)):
            errors[name].append(np.hypot(*(_placed(t, pattern, start) - (cx, cy))))
    # measured: edge-weighted 0.04–0.08 px, plain 0.21–0.23 px (toward the bright side)
    assert max(errors["edge"]) <= 0.1, errors
    assert min(errors["plain"]) >= 0.2, errors  # the case is a real one: the plain template fails it


def test_a_beam_brighter_on_one_side_is_centred_by_its_edge():
    """The direct beam of a crystal off its zone axis is brighter on one side: `predict` references every vector
    to the beam ``ModelInput.beam_centres`` places by its edge, as the diffracted disks are placed, where it holds
    the electrons to measure an edge (``model_input.BEAM_EDGE_MIN_ELECTRONS``); a faint beam keeps the plain
    correlation's centre (``ModelInput.centres``, the network's view), whose whole disk carries less shot noise."""
    from fourdcrystal.inference.model_input import BEAM_EDGE_MIN_ELECTRONS, ModelInput

    inputs = ModelInput(_disk(32.0, 32.0).astype(np.float32), 1.0, N, N // 2)
    truth = [(31.3, 32.1), (32.0, 31.25), (33.2, 30.4), (30.1, 33.6)]
    uneven = np.stack([_disk(cx, cy, slope_per_px=0.1) for cx, cy in truth])  # one side 2.3x brighter
    rng = np.random.default_rng(0)
    for per_unit in (400.0, 2.0):  # ~20,000 and ~100 electrons in the beam, on 0.3 per pixel about it (counts)
        patterns = torch.as_tensor(rng.poisson(per_unit * uneven + 0.3), dtype=torch.float32)
        plain = inputs.centres(patterns)
        found, plain = inputs.beam_centres(patterns, plain).numpy(), plain.numpy()
        if per_unit * uneven.sum(axis=(1, 2)).min() >= 2 * BEAM_EDGE_MIN_ELECTRONS:
            # measured: by the edge 0.03–0.08 px, by the plain correlation's parabola 0.23–0.30 px (toward the bright side)
            assert np.hypot(*(found - truth).T).max() <= 0.1, found - truth
            assert np.hypot(*(plain - truth).T).min() >= 0.15, plain - truth  # the case is a real one
        else:
            assert per_unit * uneven.sum(axis=(1, 2)).max() < BEAM_EDGE_MIN_ELECTRONS
            np.testing.assert_array_equal(found, plain)


def test_a_cameras_point_spread_is_read_off_the_probe_and_undone_by_the_edge_template():
    """A camera that spreads each electron over its neighbours (a scintillator, a hybrid-pixel sensor at 300 kV)
    blurs the disks and the vacuum probe recorded on it alike: their edges go soft, and the edge-weighted template
    weighs the uneven interior again. Read off the probe's edge (``point_spread_px``), the spread is undone in the
    template (``blur_px``), and the disk is placed by its edge as without the blur; a sharp probe shows none."""
    sigma = 1.2
    probe = _disk(32.0, 32.0)
    assert point_spread_px(probe) == 0.0  # an aperture's edge on pixels: nothing to undo
    blurred_probe = ndimage.gaussian_filter(probe, sigma)
    assert abs(point_spread_px(blurred_probe) - sigma) <= 0.2
    edge = SubpixelTemplate(blurred_probe, (32.0, 32.0), RADIUS_PX)
    deblurred = SubpixelTemplate(blurred_probe, (32.0, 32.0), RADIUS_PX, blur_px=point_spread_px(blurred_probe))
    errors = {"edge": [], "deblurred": []}
    for cx, cy in ((20.3, 40.1), (30.0, 30.75), (41.2, 22.4), (26.1, 35.6)):
        pattern = ndimage.gaussian_filter(0.3 * _disk(cx, cy, slope_per_px=0.1), sigma)
        start = (round(cx), round(cy))
        for name, t in (("edge", edge), ("deblurred", deblurred)):
            errors[name].append(np.hypot(*(_placed(t, pattern, start) - (cx, cy))))
    assert max(errors["deblurred"]) <= 0.1, errors
    assert min(errors["edge"]) >= 0.15, errors  # the case is a real one: the blurred edges fail the plain edge template


def test_an_even_disk_is_placed_either_way():
    probe = _disk(32.0, 32.0)
    for sigma in (0.2, None):
        t = SubpixelTemplate(probe, (32.0, 32.0), RADIUS_PX, edge_sigma_radii=sigma)
        got = _placed(t, _disk(25.4, 37.8), (25, 38))
        assert np.hypot(*(got - (25.4, 37.8))) <= 0.05, (sigma, got)


def _inward_bright_disk(cx: float, cy: float, n: int, radius_px: float, inward_per_px: float) -> np.ndarray:
    """A disk of ``radius_px`` on an n² detector, brighter toward the detector's centre by ``inward_per_px``
    of its mean per pixel (a thick crystal's disk: dynamical contrast, the falling form factor)."""
    sub = 8
    ax = (np.arange(n * sub) + 0.5) / sub - 0.5
    x, y = np.meshgrid(ax, ax, indexing="ij")
    out = np.array([cx - n // 2, cy - n // 2]) / max(np.hypot(cx - n // 2, cy - n // 2), 1e-9)
    along = (x - cx) * out[0] + (y - cy) * out[1]  # px outward from the disk's centre
    disk = (np.hypot(x - cx, y - cy) <= radius_px) * np.clip(1.0 - inward_per_px * along, 0.0, None)
    return disk.reshape(n, sub, n, sub).mean(axis=(1, 3))


def test_a_bright_disk_brighter_inside_is_placed_by_its_edge_beyond_the_sub_pixel_reach():
    # 5 px disks at 0.015 Å⁻¹/px (small disks) whose inner side is 2.2× their outer side: the plain
    # correlation's integer maximum lies up to a pixel inward, beyond the sub-pixel fit's ±1/2 px, so the
    # edge-weighted fit alone left them 0.34 px inward (measured before refine.EDGE_CLIMB_PX); climbing the
    # edge-weighted correlation to its nearest maximum first places them within 0.11 px
    from fourdcrystal.inference.detectors import MeasuredPattern
    from fourdcrystal.inference.model_input import ModelInput
    n, r, dq = 128, 5.0, 0.015
    probe = _inward_bright_disk(64.0, 64.0, n, r, 0.0)
    hk = np.array([(h, k) for h in range(-2, 3) for k in range(-2, 3) if (h, k) != (0, 0)])
    xy = 64.0 + hk @ np.array([[21.3, 0.4], [0.2, -23.6]])
    pattern = probe + sum(0.2 * _inward_bright_disk(x, y, n, r, 0.12) for x, y in xy)
    inputs = ModelInput(probe, 1.0, n, 64)
    p = torch.from_numpy(pattern.astype(np.float32))[None]
    c = inputs.centres(p)
    cc = c.numpy().astype(np.float64)[0]
    guess = np.round(xy)  # the network's position, a model pixel's worth off
    out = {"pattern": np.zeros(len(xy), int), "qx_px": guess[:, 0], "qy_px": guess[:, 1],
           "qx": (guess[:, 0] - cc[0]) * dq, "qy": (guess[:, 1] - cc[1]) * dq}
    got = MeasuredPattern(inputs, dq, 1 / 32, check_evidence=False, lattice_positions=False)(p, c, out)
    err = np.stack([got["qx_px"], got["qy_px"]], axis=1) - xy
    radial = np.einsum("ij,ij->i", err, (xy - 64.0) / np.hypot(*(xy - 64.0).T)[:, None])
    assert np.abs(radial).max() <= 0.15, np.round(radial, 3)


def _starred_disk(n: int, cx: float, cy: float, radius_px: float, star: tuple[float, float]) -> np.ndarray:
    """A thick crystal's large disk: a dim interior (0.3) and a bright star (5×, σ 2 px) ``star`` px off its
    centre, which has edges of its own (Si [001], 300 kV, 4 mrad, 100 nm: benchmarks/RESULTS.md)."""
    sub = 4
    ax = (np.arange(n * sub) + 0.5) / sub - 0.5
    x, y = np.meshgrid(ax, ax, indexing="ij")
    glow = np.exp(-0.5 * ((x - cx - star[0]) ** 2 + (y - cy - star[1]) ** 2) / 2.0 ** 2)
    disk = (np.hypot(x - cx, y - cy) <= radius_px) * (0.3 + 5.0 * glow)
    return disk.reshape(n, sub, n, sub).mean(axis=(1, 3))


def test_large_clear_disks_with_a_bright_star_are_found_by_their_whole_disk():
    # 9 px disks clear of each other (spacing ≥ 2.25 radii) whose bright stars lie 3–3.6 px off their centres:
    # the edge-weighted correlation's best within the search (half a radius) put the star's edge on the
    # template's rim (measured: up to 4 px off); the plain probe on the pattern clipped at the disk's median
    # finds the disk itself, and the edge-weighted fit then places it
    from fourdcrystal.inference.detectors import MeasuredPattern
    from fourdcrystal.inference.model_input import ModelInput
    n, r, dq = 160, 9.0, 0.02
    probe = _starred_disk(n, 80.0, 80.0, r, (0.0, 0.0))
    probe = (probe > 0).astype(float)
    hk = np.array([(h, k) for h in range(-2, 3) for k in range(-2, 3) if 0 < h * h + k * k <= 5])
    xy = 80.0 + hk @ np.array([[24.3, 0.6], [0.4, -25.1]])
    rng = np.random.default_rng(3)
    stars = [3.0 * np.array([np.cos(a), np.sin(a)]) for a in rng.uniform(0, 2 * np.pi, len(xy))]
    pattern = 5.0 * probe + sum(_starred_disk(n, x, y, r, s) for (x, y), s in zip(xy, stars))
    inputs = ModelInput(probe, 1.0, n, 80)
    p = torch.from_numpy(pattern.astype(np.float32))[None]
    c = inputs.centres(p)
    cc = c.numpy().astype(np.float64)[0]
    guess = np.round(xy + 1.2)  # the network's position, a model pixel's worth off
    out = {"pattern": np.zeros(len(xy), int), "qx_px": guess[:, 0], "qy_px": guess[:, 1],
           "qx": (guess[:, 0] - cc[0]) * dq, "qy": (guess[:, 1] - cc[1]) * dq}
    got = MeasuredPattern(inputs, dq, 1 / 32, check_evidence=False, lattice_positions=False)(p, c, out)
    err = np.hypot(got["qx_px"] - xy[:, 0], got["qy_px"] - xy[:, 1])
    assert err.max() <= 0.5, np.round(err, 2)


# --- vectors placed on their pattern's lattice (``refine.lattice_placed``) ---------------------------------
def _lattice(g1, g2, orders: int = 3) -> np.ndarray:
    hk = np.array([(h, k) for h in range(-orders, orders + 1) for k in range(-orders, orders + 1) if (h, k) != (0, 0)])
    return hk @ np.array([g1, g2], np.float64)


def test_vectors_are_placed_on_their_patterns_lattice():
    """Two patterns of one batch, each a crystal's lattice (square; hexagonal) measured with 0.5 px errors:
    each is placed on its own least-squares lattice, closer to the truth than measured."""
    from fourdcrystal.inference.refine import lattice_placed

    rng = np.random.default_rng(3)
    truth = [_lattice((12.3, 1.0), (-0.8, 11.9)), _lattice((14.0, 0.0), (7.0, 12.12), orders=2)]
    b = np.concatenate([np.full(len(t), k) for k, t in enumerate(truth)])
    true = np.concatenate(truth)
    measured = true + rng.normal(0, 0.5, true.shape)
    order = rng.permutation(len(b))  # any order of vectors and patterns
    placed, on = lattice_placed(b[order], measured[order], tol_px=3.0)
    assert on.all()
    err_before = np.hypot(*(measured[order] - true[order]).T)
    err_after = np.hypot(*(placed - true[order]).T)
    # measured: RMS 0.71 -> 0.1 px
    assert np.sqrt(np.mean(err_after**2)) < 0.3 * np.sqrt(np.mean(err_before**2)), (err_before, err_after)


def test_what_is_not_on_one_lattice_stays_where_it_was_measured():
    """A vector off the lattice (a HOLZ disk), two on one lattice point (a satellite), a pattern of random
    speckle, a pattern of too few vectors and a systematic row: none is moved."""
    from fourdcrystal.inference.refine import LATTICE_PLACE_MIN_VECTORS, lattice_placed

    rng = np.random.default_rng(4)
    lat = _lattice((12.3, 1.0), (-0.8, 11.9), orders=2) + rng.normal(0, 0.3, (24, 2))
    holz = np.array([0.3, 0.6]) @ np.array([(12.3, 1.0), (-0.8, 11.9)])[None]  # off every lattice point
    satellite = lat[:1] + [1.0, 0.4]
    speckle = rng.uniform(-60, 60, (12, 2))
    few = lat[: LATTICE_PLACE_MIN_VECTORS - 1]
    row = np.arange(1, 8)[:, None] * [[9.0, 2.0]] + rng.normal(0, 0.3, (7, 2))  # a systematic row: no 2-D lattice
    q = np.concatenate([lat, holz, satellite, speckle, few, row])
    b = np.repeat([0, 0, 0, 1, 2, 3], [len(lat), 1, 1, len(speckle), len(few), len(row)])
    placed, on = lattice_placed(b, q, tol_px=3.0)
    n = len(lat)
    assert on[1:n].all() and not on[0], "the point two vectors claim is left to neither"
    assert not on[n:].any()
    np.testing.assert_array_equal(placed[~on], q[~on])


def test_random_vectors_are_not_placed_on_a_chance_lattice():
    """Vectors at random (a barely trained model, noise) index some lattice of their shortest few now and then;
    placing them on it would paint a crystal (refine.LATTICE_CHANCE_P). A crystal's few vectors are placed."""
    from fourdcrystal.inference.refine import lattice_placed

    rng = np.random.default_rng(7)
    chance = []
    for _ in range(200):
        q = rng.uniform(-60, 60, (int(rng.integers(10, 40)), 2))
        chance.append(lattice_placed(np.zeros(len(q), int), q, tol_px=3.0)[1].any())
    # measured: 0 of 200 patterns (10 of 200 at a chance of 1e-3)
    assert np.mean(chance) <= 0.01, np.mean(chance)
    crystal = []
    for _ in range(50):
        hk = np.array([(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)])[rng.permutation(8)[:6]]
        q = hk @ np.array([(14.0, 2.0), (-2.0, 14.0)]) + rng.normal(0, 0.5, (6, 2))
        crystal.append(lattice_placed(np.zeros(6, int), q, tol_px=3.0)[1].all())
    assert np.mean(crystal) >= 0.95, np.mean(crystal)


def test_patterns_of_one_vector_each_have_no_lattice():
    """A batch whose kept patterns hold one vector each (a detector cross through the beam left no more)
    spans no lattice: nothing is on one, where `predict` stopped with "argmax of an empty sequence"."""
    from fourdcrystal.inference.refine import on_lattice_of

    q_kept = np.array([[10.0, 0.0], [0.0, 12.0], [7.0, 7.0]])
    assert not on_lattice_of([0, 1, 2], q_kept, [0, 1], np.array([[20.0, 0.0], [0.0, 24.0]]), 0.5, 2).any()


# --- the diffuse background left out of the sub-pixel fit (``refine.without_diffuse_background``) -------------
def _lattice_pattern(n, centre, G, r, amplitude, background, rng, electrons):
    """Disks of radius ``r`` (soft edges) at the beam ``centre`` + hk G, each ``amplitude`` of the beam's (or
    ``amplitude(|g| px)``), a diffuse background ``background`` · exp(−ρ / 8 px) about the beam (inelastic
    scattering), counted at ``electrons`` (None: noise-free)."""
    sub = 4
    ax = (np.arange(n * sub) + 0.5) / sub - 0.5
    x, y = np.meshgrid(ax, ax, indexing="ij")
    img = np.zeros_like(x)
    for h in range(-8, 9):
        for k in range(-8, 9):
            g = h * np.asarray(G[0]) + k * np.asarray(G[1])
            px, py = np.asarray(centre) + g
            if -r < px < n + r and -r < py < n + r:
                a = amplitude(np.hypot(*g)) if callable(amplitude) else amplitude
                img += (np.hypot(x - px, y - py) <= r) * (1.0 if (h, k) == (0, 0) else a)
    img = img.reshape(n, sub, n, sub).mean(axis=(1, 3))
    img += background * np.exp(-np.hypot(*(np.indices((n, n)) - np.asarray(centre)[:, None, None])) / 8.0)
    return (img if electrons is None else rng.poisson(img * electrons / img.sum())).astype(np.float32)


def test_the_diffuse_background_is_taken_from_between_the_lattices_disks():
    # A lattice of 4 px disks 11 px apart on a diffuse background that falls by e every 8 px (noise-free, and at
    # 1e6 electrons): less its background, the pattern between the disks holds < a fifth of it (the 3 px rings
    # are coarse for so steep a fall; measured 12 %), and each disk keeps its own level (its median within 5 % of
    # the background-free disks'); with too few vectors for a lattice, or only sparse counts (1e3 electrons: the
    # ring medians are zero), nothing is subtracted.
    from fourdcrystal.inference.refine import without_diffuse_background
    n, r, c = 128, 4.0, (64.3, 63.6)
    truth = np.array([[11.3, 0.4], [-0.6, 10.8]])
    disks = _lattice_pattern(n, c, truth, r, 0.2, 0.0, None, None)
    hk = np.array([(h, k) for h in range(-3, 4) for k in range(-3, 4) if (h, k) != (0, 0)], float)
    g = hk @ truth
    ii, jj = np.indices((n, n))
    rho = np.hypot(ii - c[0], jj - c[1])
    near = np.min([np.hypot(ii - c[0] - x, jj - c[1] - y) for x, y in np.vstack([[0, 0], g])], axis=0)
    between = (near > 1.5 * r) & (rho < 40)
    inside = (near < 0.7 * r) & (rho > 8) & (rho < 40)
    for electrons in (None, 1e6):
        rng = np.random.default_rng(2)
        pattern = _lattice_pattern(n, c, truth, r, 0.2, 0.3, rng, electrons)
        scale = pattern.sum() / _lattice_pattern(n, c, truth, r, 0.2, 0.3, None, None).sum()
        got = without_diffuse_background(torch.from_numpy(pattern[None]), torch.tensor([c]), np.zeros(len(g), int), g, r,
                                         1.5, 5)[0].numpy() / scale
        background = 0.3 * np.exp(-rho / 8.0)
        assert abs(got[between].mean()) < 0.2 * background[between].mean(), (got[between].mean(), background[between].mean())
        assert abs(np.median(got[inside]) / np.median(disks[inside]) - 1) < 0.05
    p = torch.from_numpy(pattern[None])
    assert torch.equal(without_diffuse_background(p, torch.tensor([c]), np.zeros(3, int), g[:3], r, 1.5, 5), p)
    sparse = torch.from_numpy(_lattice_pattern(n, c, truth, r, 0.2, 0.3, np.random.default_rng(3), 1e3)[None])
    assert torch.equal(without_diffuse_background(sparse, torch.tensor([c]), np.zeros(len(g), int), g, r, 1.5, 5),
                       sparse)


def test_the_ring_background_is_each_rings_median_of_its_clear_pixels():
    # The sorted-keys median against a plain one: per pattern and 3 px ring about its beam, the lower middle of
    # the values of every other pixel (both axes) at least 1.3 radii from each lattice point; values of either
    # sign (a detector's pedestal subtracted), an odd detector, two patterns of other beams and lattices.
    from fourdcrystal.inference.refine import BACKGROUND_CLEAR_RADII, BACKGROUND_RING_PX, _ring_background
    rng = np.random.default_rng(5)
    img = torch.from_numpy(rng.normal(0.0, 3.0, (2, 57, 61)).astype(np.float32))
    # binary fractions, and no pixel within 1e-4 (px, rings) of a ring's or the clearance's edge (asserted): float32 and
    # float64 agree on every pixel's ring and clearance
    c = torch.tensor([[28.25, 30.75], [26.625, 31.125]])
    G = torch.tensor([[[9.125, 0.75], [-1.25, 8.375]], [[7.5, -3.0], [2.25, 10.125]]])
    r = 3.0
    got = _ring_background(img, c, G, r)
    for p in range(2):
        ii, jj = np.indices(img.shape[1:])
        ring = (np.hypot(ii - c[p, 0].item(), jj - c[p, 1].item()) / BACKGROUND_RING_PX).astype(int)
        rel = np.stack([ii - c[p, 0].item(), jj - c[p, 1].item()], -1)
        f = rel @ np.linalg.inv(G[p].numpy().astype(np.float64))
        off = (f - np.round(f)) @ G[p].numpy().astype(np.float64)
        d_point, d_beam = np.hypot(off[..., 0], off[..., 1]), np.hypot(rel[..., 0], rel[..., 1])
        assert np.abs(d_point - BACKGROUND_CLEAR_RADII * r).min() > 1e-4
        assert np.abs(d_beam / BACKGROUND_RING_PX - np.round(d_beam / BACKGROUND_RING_PX)).min() > 1e-4
        clear = d_point >= BACKGROUND_CLEAR_RADII * r
        sub = np.zeros_like(clear)
        sub[::2, ::2] = True
        for k in np.unique(ring):
            vals = np.sort(img[p].numpy()[(ring == k) & clear & sub])
            want = vals[(len(vals) - 1) // 2] if len(vals) else 0.0
            assert np.all(got[p].numpy()[ring == k] == want), (p, k)


def test_a_faint_disk_brighter_inside_climbs_to_its_edge_on_a_bright_pattern_only(monkeypatch):
    # converged thick-crystal disks under a diffuse background's shot noise stand out by 10–30σ on a pattern of
    # 3e5 electrons: from refine.EDGE_CLIMB_MIN_SNR (10σ) they climb to their edge; held to the low-dose
    # pattern's LOW_DOSE_EDGE_CLIMB_MIN_SNR (30σ) most stay inward (bench_accuracy --oversample 2, GaN:
    # benchmarks/RESULTS.md, "The edge climb by dose")
    from fourdcrystal.inference import detectors
    from fourdcrystal.inference.detectors import MeasuredPattern
    from fourdcrystal.inference.model_input import ModelInput
    from fourdcrystal.inference.refine import EDGE_CLIMB_MIN_SNR, LOW_DOSE_EDGE_CLIMB_MIN_SNR
    n, r, dq = 128, 5.0, 0.015
    probe = _inward_bright_disk(64.0, 64.0, n, r, 0.0)
    hk = np.array([(h, k) for h in range(-2, 3) for k in range(-2, 3) if (h, k) != (0, 0)])
    xy = 64.0 + hk @ np.array([[21.3, 0.4], [0.2, -23.6]])
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    clean = probe + sum(0.01 * _inward_bright_disk(x, y, n, r, 0.12) for x, y in xy) + \
        0.02 * np.exp(-np.hypot(ii - 64, jj - 64) / 30.0)
    rng = np.random.default_rng(3)
    p = torch.as_tensor(rng.poisson(clean * 3e5 / clean.sum(), size=(4, n, n)), dtype=torch.float32)
    inputs = ModelInput(probe.astype(np.float32), 1.0, n, 64)
    c = inputs.centres(p)
    cc = c.numpy().astype(np.float64)
    b = np.repeat(np.arange(4), len(xy) + 1)
    guess = np.concatenate([np.vstack([cc[k], np.round(xy)]) for k in range(4)])  # beam + a model pixel's worth off
    out = {"pattern": b, "qx_px": guess[:, 0], "qy_px": guess[:, 1],
           "qx": (guess[:, 0] - cc[b, 0]) * dq, "qy": (guess[:, 1] - cc[b, 1]) * dq}
    outward = (xy - 64.0) / np.hypot(*(xy - 64.0).T)[:, None]

    def mean_radial(min_snr: float) -> float:
        monkeypatch.setattr(detectors, "EDGE_CLIMB_MIN_SNR", min_snr)
        got = MeasuredPattern(inputs, dq, 1 / 32, check_evidence=True, lattice_positions=False)(p, c, dict(out))
        radial = []
        for k in range(4):
            mine = np.stack([got["qx_px"], got["qy_px"]], axis=1)[got["pattern"] == k]
            nearest = mine[np.hypot(*(mine[:, None] - xy[None]).T).argmin(axis=1)]
            assert np.hypot(*(nearest - xy).T).max() < 1.5  # every disk found
            assert 10 <= np.nanmedian(got["snr"][got["pattern"] == k]) < LOW_DOSE_EDGE_CLIMB_MIN_SNR
            radial.append(np.einsum("ij,ij->i", nearest - xy, outward))
        return float(np.mean(radial))

    # measured: −0.07 px from 10σ, −0.15 px from 30σ
    assert mean_radial(EDGE_CLIMB_MIN_SNR) >= -0.11
    assert mean_radial(LOW_DOSE_EDGE_CLIMB_MIN_SNR) <= -0.12  # the case is a real one


# --- a low-dose lattice refitted to its whole pattern (``refine.lattice_on_pattern``) --------------------------
def test_a_low_dose_lattice_is_refitted_to_its_whole_pattern():
    # Flat 4 px disks (each 0.2 of the beam) on a lattice; the fit starts from one 1 % too large and 0.5° turned
    # (0.11 px per basis vector off). Noise-free it lands on the truth (measured 0.0004 px); at 1e3 electrons, the
    # disks' few electrons each, within 0.1 px (measured: mean 0.036, worst 0.064 over 20 draws).
    from fourdcrystal.inference.refine import lattice_on_pattern, probe_template_fft
    n, r, c = 128, 4.0, (64.3, 63.6)
    truth = np.array([[11.3, 0.4], [-0.6, 10.8]])
    probe = _lattice_pattern(n, (64.0, 64.0), 100 * truth, r, 0.0, 0.0, None, None)  # the beam's disk alone
    template = probe_template_fft(probe, (64.0, 64.0))
    turn = np.radians(0.5)
    start = 1.01 * truth @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    origin, G = lattice_on_pattern(_lattice_pattern(n, c, truth, r, 0.2, 0.0, None, None), template, c, start, r)
    assert np.abs(G - truth).max() < 0.005 and np.abs(origin - c).max() < 0.01, (G, origin)
    worst = max(np.abs(lattice_on_pattern(_lattice_pattern(n, c, truth, r, 0.2, 0.0, np.random.default_rng(seed), 1e3),
                                          template, c, start, r)[1] - truth).max() for seed in range(20))
    assert worst < 0.1, worst


# --- a low-dose lattice by the likelihood of its electrons (``refine.lattice_likelihood``) ---------------------
def _faint_lattice_draws(seeds, electrons):
    """Flat 4 px disks whose brightness falls with |g| (0.3 of the beam at the first orders to ~0.01 at the
    detector's edge) on a flat background of ~40 % of the electrons, counted at ``electrons``: (truth basis,
    beam centre, the beam's disk alone as probe, the draws)."""
    n, r, c = 128, 4.0, (64.3, 63.6)
    truth = np.array([[11.3, 0.4], [-0.6, 10.8]])
    img = _lattice_pattern(n, c, truth, r, lambda g: 0.3 * np.exp(-g / 15.0), 0.0, None, None).astype(np.float64)
    img += 0.4 * img.sum() / 0.6 / img.size
    probe = _lattice_pattern(n, (64.0, 64.0), 100 * truth, r, 0.0, 0.0, None, None)
    draws = [np.random.default_rng(s).poisson(img * electrons / img.sum()).astype(np.float64) if electrons else img
             for s in seeds]
    return truth, c, probe, draws


def test_a_low_dose_lattice_by_its_likelihood_beats_each_disks_own_maximum():
    # Started from a lattice 1 % too large and 0.5° turned: noise-free it lands on the truth (measured 0.002 px
    # per basis vector); at 1e3 electrons (the beam ~150, each first-order disk ~20, the far ones 1–3) its basis
    # errs less than the fit to each disk's own correlation maximum (``lattice_on_pattern``): measured mean 0.048
    # against 0.071 px over 24 draws; each lattice point's brightness is read on the mean of the draws, as
    # `predict` reads it on the batch's. A hot pixel on a first-order disk's edge moves it by no more than 0.01 px
    # once removed (``without_spikes``; measured 0.000; kept, it moved it 0.064 px).
    from fourdcrystal.inference.refine import (disk_and_ring_levels, lattice_likelihood, lattice_on_pattern,
                                               probe_template_fft, without_spikes)
    r = 4.0
    truth, c, probe, (clean,) = _faint_lattice_draws([0], None)
    template = probe_template_fft(probe, (64.0, 64.0))
    turn = np.radians(0.5)
    start = 1.01 * truth @ np.array([[np.cos(turn), np.sin(turn)], [-np.sin(turn), np.cos(turn)]])
    levels = disk_and_ring_levels(clean, r)
    o, G = lattice_likelihood(clean, template, c, start, r, levels, (0.0, 0.0), 1e-3 * clean.max())
    assert np.abs(G - truth).max() < 0.01 and np.abs(o - np.asarray(c)).max() < 0.02, (G, o)

    _, _, _, draws = _faint_lattice_draws(range(24), 1e3)
    levels = disk_and_ring_levels(np.mean(draws, axis=0), r)
    err_ml, err_disks = [], []
    for img in draws:
        o0, G0 = lattice_on_pattern(img, template, c, start, r)
        err_disks.append(np.abs(G0 - truth).mean())
        err_ml.append(np.abs(lattice_likelihood(img, template, o0, G0, r, levels, (0.0, 0.0), 1.0)[1] - truth).mean())
    assert np.mean(err_ml) < 0.75 * np.mean(err_disks), (np.mean(err_ml), np.mean(err_disks))

    img = draws[0].copy()
    base = lattice_likelihood(img, template, c, truth, r, levels, (0.0, 0.0), 1.0)[1]
    edge = np.round(np.asarray(c) + truth[0] + (r, 0)).astype(int)
    img[tuple(edge)] = 2 * img.max()
    spiked = lattice_likelihood(img, template, c, truth, r, levels, (0.0, 0.0), 1.0)[1]
    cleaned = lattice_likelihood(without_spikes(img, 1.0), template, c, truth, r, levels, (0.0, 0.0), 1.0)[1]
    assert np.abs(cleaned - base).max() <= 0.01 < np.abs(spiked - base).max(), (cleaned - base, spiked - base)


def test_a_lattice_is_evidenced_by_its_disks_electrons_not_by_chance():
    """``refine.lattice_evidence`` at the true lattice, each point weighed by the noise-free pattern's brightness
    (as ``MeasuredPattern._batch_lattice`` weighs by its batch's mean): the faint lattice at 1e3 electrons stands far
    above 5σ (measured 28.6–38.5 over 8 draws); the same beam and background without disks beside it stays under it
    (−3.0 to 2.4), and so does an empty detector with one stray electron on a lattice point (0.15; without a floor on
    each disk's chance count, 1.5e5 σ above a ring of none)."""
    from fourdcrystal.inference.refine import disk_and_ring_levels, lattice_evidence

    truth, c, _, draws = _faint_lattice_draws(range(8), 1e3)
    clean = _faint_lattice_draws([0], None)[3][0]
    r = 4.0
    levels = disk_and_ring_levels(clean * 1e3 / clean.sum(), r)
    crystal = [lattice_evidence(d, c, truth, r, levels, (0.0, 0.0), 1.0) for d in draws]
    beam = _lattice_pattern(128, c, 100 * truth, r, 0.0, 0.0, None, None).astype(np.float64)
    flat = beam * 0.6 / beam.sum() + 0.4 / beam.size  # the pattern's beam and background, no disks beside it
    rng = np.random.default_rng(0)
    chance = [lattice_evidence(rng.poisson(flat * 1e3).astype(np.float64), c, truth, r, levels, (0.0, 0.0), 1.0)
              for _ in range(8)]
    stray = np.zeros_like(beam)
    p = np.array(c) + np.array([2, 1]) @ truth
    stray[int(round(p[0])), int(round(p[1]))] = 1.0
    alone = lattice_evidence(stray, c, truth, r, levels, (0.0, 0.0), 1.0)
    assert min(crystal) >= 5.0 and max(chance) < 5.0 and alone < 5.0, (crystal, chance, alone)


def test_many_starts_ascended_together_reach_what_each_reaches_alone():
    """``refine._newton`` ascends every start of ``lattice_likelihood(starts=...)`` at once, their point sets
    padded to one length: each start must end where it ends ascended alone (the padding pulls nothing, and a start
    that has converged stops while the others go on), and the starts must reach more than one maximum here (else the
    comparison would not see a start mixed up with another's points)."""
    from fourdcrystal.inference.refine import (_newton, _starts, _upsampled, disk_and_ring_levels, probe_template_fft,
                                               weighed_lattice_points, without_spikes)
    r = 4.0
    truth, c, probe, (img,) = _faint_lattice_draws([3], 3e2)
    levels = disk_and_ring_levels(_faint_lattice_draws([0], None)[3][0], r)
    img = without_spikes(img, 1.0)
    fine = _upsampled(np.fft.irfft2(np.fft.rfft2(img) * probe_template_fft(probe, (64.0, 64.0)), s=img.shape), 2)
    Xs, ws, thetas = [], [], []
    for o, G in _starts(np.asarray(c), truth, 16):
        hk, w = weighed_lattice_points(o, G, img.shape, r, levels, (0.0, 0.0), 1.0)
        Xs.append(np.column_stack([np.ones(len(hk)), hk])), ws.append(w), thetas.append(np.vstack([o, G]))
    assert len({len(X) for X in Xs}) > 1  # ragged point sets: the padding is exercised
    together = _newton(fine[None], np.zeros(len(Xs), int), 2, Xs, ws, np.stack(thetas))
    alone = np.stack([_newton(fine[None], np.zeros(1, int), 2, [X], [w], t[None])[0] for X, w, t in zip(Xs, ws, thetas)])
    assert np.abs(together - alone).max() < 1e-9, np.abs(together - alone).max()
    assert len(np.unique(np.round(alone[:, 1:], 3), axis=0)) > 1, alone[:, 1:]


def test_a_batchs_likelihoods_at_once_are_each_patterns_alone():
    """``refine.lattice_likelihoods`` ascends the starts of several patterns together, on one stack of their
    correlations upsampled from the half-spectrum (``_upsampled_from_half``): each pattern's lattice must be the one
    ``lattice_likelihood`` finds for it alone, from 16 starts and from one, and each pattern's
    ``lattice_evidences`` its ``lattice_evidence``. The patterns differ in dose, start and shift, so a start read on
    another pattern's map, points or electron would show; the half-spectrum upsampling must equal the complex one on
    even and odd grids."""
    from fourdcrystal.inference.refine import (_upsampled, _upsampled_from_half, disk_and_ring_levels,
                                               lattice_evidence, lattice_evidences, lattice_likelihood,
                                               lattice_likelihoods, probe_template_fft, without_spikes)
    r = 4.0
    truth, c, probe, _ = _faint_lattice_draws([0], None)
    levels = disk_and_ring_levels(_faint_lattice_draws([0], None)[3][0], r)
    template = probe_template_fft(probe, (64.0, 64.0))
    images = np.stack([without_spikes(_faint_lattice_draws([s], dose)[3][0], 1.0)
                       for s, dose in ((1, 3e2), (2, 1e3), (3, 3e3))])
    origins = np.asarray(c) + np.array([[0.0, 0.0], [0.4, -0.3], [-0.2, 0.5]])
    bases = np.stack([truth, 1.01 * truth, 0.99 * truth])
    shifts = np.array([[0.0, 0.0], [0.4, -0.3], [-0.2, 0.5]])
    electrons = np.array([1.0, 1.0, 2.0])
    for starts in (16, 1):
        o, G = lattice_likelihoods(images, template, origins, bases, r, levels, shifts, electrons, starts=starts)
        for k in range(len(images)):
            ok, Gk = lattice_likelihood(images[k], template, origins[k], bases[k], r, levels, shifts[k], electrons[k],
                                        starts=starts)
            assert np.abs(o[k] - ok).max() < 1e-9 and np.abs(G[k] - Gk).max() < 1e-9, (starts, k, o[k] - ok, G[k] - Gk)
    z = lattice_evidences(images, o, G, r, levels, shifts, electrons)
    alone = [lattice_evidence(images[k], o[k], G[k], r, levels, shifts[k], electrons[k]) for k in range(len(images))]
    assert np.abs(z - alone).max() < 1e-9, (z, alone)
    rng = np.random.default_rng(0)
    for shape in ((64, 96), (65, 64), (64, 63)):
        half = np.fft.rfft2(rng.random((2,) + shape))
        complex_way = _upsampled(np.fft.irfft2(half, s=shape), 2)
        assert np.abs(_upsampled_from_half(half, shape, 2) - complex_way).max() < 1e-12 * np.abs(complex_way).max()


def test_the_newton_steps_nine_samples_are_nine_bilinear_reads():
    """``refine._stencils`` reads each point's 3 × 3 samples one pixel apart on the 4 × 4 pixels about it; it must
    give what nine ``_bilinear_of`` reads give, inside and at the maps' edges (clipped there; the Newton steps'
    padding rows sit at px (0, 0))."""
    from fourdcrystal.inference.refine import _bilinear_of, _stencils
    rng = np.random.default_rng(1)
    maps = rng.random((3, 50, 60))
    at = np.concatenate([rng.uniform(-2, 62, (300, 2)), rng.uniform(1, 47, (300, 2)), np.zeros((3, 2))])
    which = rng.integers(0, 3, len(at))
    d = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], float)
    nine = _bilinear_of(maps, np.repeat(which, 9), (at[:, None, 0] + d[:, 0]).ravel(),
                        (at[:, None, 1] + d[:, 1]).ravel()).reshape(len(at), 3, 3)
    assert np.abs(_stencils(maps, which, at) - nine).max() < 1e-12


def test_a_summed_disk_stands_out_by_its_electrons_over_their_root_and_a_dark_one_by_its_noise():
    # The mean of n counted patterns (one electron = 0.5 in the patterns' units) on a flat background of 0.2 electron
    # per pixel: a disk of 3 electrons per pattern at one point, none at another. Summed over n patterns the disk holds
    # 3 n electrons over its ring's, against the root of all its electrons; the dark point's z is its noise (|z| < 3).
    from fourdcrystal.inference.refine import disk_and_ring_levels, summed_disk_z
    rng = np.random.default_rng(0)
    n, r, electron, shape = 16, 2.0, 0.5, (64, 64)
    i, j = np.indices(shape)
    disk = np.hypot(i - 20, j - 30) <= r
    rate = 0.2 + 3.0 * disk / disk.sum()  # electrons per pixel per pattern
    mean = rng.poisson(np.broadcast_to(rate, (n,) + shape)).mean(axis=0) * electron
    z = summed_disk_z(np.array([[20.0, 30.0], [44.0, 30.0]]), disk_and_ring_levels(mean, r), r, electron, n)
    area = np.pi * r ** 2
    expected = 3.0 * n / np.sqrt((3.0 + 0.2 * area) * n)
    assert abs(z[0] - expected) < 0.35 * expected and abs(z[1]) < 3.0, (z, expected)
    # a disk that holds nothing (an empty detector) is no disk
    assert summed_disk_z(np.array([[20.0, 30.0]]), disk_and_ring_levels(np.zeros(shape), r), r, electron, n)[0] == 0


def test_a_summed_disks_brightness_is_its_excess_over_the_beams():
    """``refine.summed_disk_brightness``: on a batch's mean pattern a disk's excess over its ring, as a fraction of the
    beam's (the brightness floor's measure, ``evidence.bright_enough``), whatever flat background both stand on."""
    from fourdcrystal.inference.refine import disk_and_ring_levels, summed_disk_brightness

    yy, xx = np.mgrid[:64, :64]
    mean = np.full((64, 64), 2.0)  # a flat background under all
    mean[np.hypot(yy - 32, xx - 32) <= 3] += 10.0  # the beam
    mean[np.hypot(yy - 32, xx - 46) <= 3] += 0.5  # a disk at 1/20 of it
    bright = summed_disk_brightness(np.array([[32.0, 46.0], [32.0, 18.0]]), (32.0, 32.0), disk_and_ring_levels(mean, 3.0))
    assert np.allclose(bright, [0.05, 0.0], atol=1e-9)
