"""Detector artifact augmentation: dose statistics, geometry, determinism, configuration errors."""
import numpy as np
import pytest

from fourdcrystal.learning.augment import DEFAULTS, AugmentParams, Augmenter, transform
from fourdcrystal.errors import UserError

P = 64


def _disk(radius=10.0, centre=(P // 2, P // 2), value=1.0):
    i0, i1 = np.indices((P, P))
    return np.where(np.hypot(i0 - centre[0], i1 - centre[1]) <= radius, value, 0.0).astype(np.float32)


def _gauss(centre, sigma=3.0):
    i0, i1 = np.indices((P, P))
    return np.exp(-((i0 - centre[0]) ** 2 + (i1 - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _com(img):
    i0, i1 = np.indices(img.shape)
    t = img.sum()
    return np.array([(img * i0).sum() / t, (img * i1).sum() / t])


def test_poisson_mean_and_variance():
    probe = _disk()
    cbed = 0.5 * probe  # half the electrons reach the detector's disk
    dose = 2.0e4
    params = AugmentParams(dose_e=dose)
    rng = np.random.default_rng(1)
    draws = np.stack([transform(cbed, probe, params, rng) for _ in range(400)])
    inside = probe > 0
    e_per_unit = dose / probe.sum()  # the documented scale: dose = electrons in the incident probe
    mean = draws.mean(0)[inside]
    var = draws.var(0)[inside]
    np.testing.assert_allclose(mean.mean(), 0.5, rtol=0.01)  # mean preserved
    np.testing.assert_allclose(var.mean(), 0.5 / e_per_unit, rtol=0.05)  # variance I / s
    # total electrons counted follows the dose: half the probe's electrons
    np.testing.assert_allclose(draws.sum((1, 2)).mean() * e_per_unit, dose / 2, rtol=0.01)
    assert (draws[:, ~inside] == 0).all()


def test_higher_dose_less_noise():
    probe = _disk()
    aug = Augmenter({**DEFAULTS, "background_const": [0, 0], "background_diffuse": [0, 0], "blur_px": [0, 0],
                     "origin_shift_px": 0, "ellipticity": 0, "hot_pixel_fraction": 0, "dead_pixel_fraction": 0})
    err = {d: np.abs(aug.apply(probe, probe, np.random.default_rng(0), dose=d) - probe).mean() for d in (1e3, 1e6)}
    assert err[1e6] < err[1e3] / 10  # noise ~ 1/sqrt(dose): a factor ~31 expected


@pytest.mark.parametrize("shift", [(0.4, -0.7), (-1.0, 0.25)])
def test_origin_shift_moves_centre_of_mass(shift):
    img = _gauss((30.3, 33.6))
    out = transform(img, img, AugmentParams(dose_e=None, shift_px=shift), np.random.default_rng(0))
    np.testing.assert_allclose(_com(out) - _com(img), shift, atol=1e-3)
    np.testing.assert_allclose(out.sum(), img.sum(), rtol=1e-4)


def test_ellipticity_stretches_along_its_axis():
    img = _gauss((P // 2, P // 2), sigma=5.0)
    out = transform(img, img, AugmentParams(dose_e=None, ellipticity=0.2, ellipse_angle_rad=0.0),
                    np.random.default_rng(0))
    i0, i1 = np.indices(img.shape)
    c = P // 2

    def second(a, ax):
        return ((a * ((i0, i1)[ax] - c) ** 2).sum() / a.sum()) ** 0.5

    assert second(out, 0) / second(img, 0) == pytest.approx(1.1, rel=0.02)
    assert second(out, 1) / second(img, 1) == pytest.approx(0.9, rel=0.02)


def test_background_blur_and_defective_pixels():
    probe = _disk()
    rng = np.random.default_rng(3)
    out = transform(np.zeros((P, P), np.float32), probe,
                    AugmentParams(dose_e=None, background_const=0.01, background_diffuse=0.05, diffuse_width_px=4.0),
                    rng)
    assert out[0, 0] == pytest.approx(0.01, rel=1e-3)  # far corner: the constant level
    assert out[P // 2, P // 2] == pytest.approx(0.06, rel=1e-3)  # centre: constant + diffuse amplitude
    blurred = transform(_disk(radius=0.0), probe, AugmentParams(dose_e=None, blur_px=1.5), rng)
    assert blurred.max() < 0.1 and blurred.sum() == pytest.approx(1.0, rel=1e-3)
    bad = transform(probe, probe, AugmentParams(dose_e=None, hot_pixel_fraction=0.01, dead_pixel_fraction=0.2), rng)
    inside = probe > 0
    assert 0.1 < (bad[inside] == 0).mean() < 0.3
    assert (bad > 1.0).sum() >= 1  # hot pixels exceed the probe maximum of 1


def test_deterministic_for_seed_and_dose_drawn_from_range():
    probe = _disk()
    cbed = 0.3 * probe + 0.1 * _gauss((20, 40))
    aug = Augmenter(DEFAULTS)
    a = aug.apply(cbed, probe, np.random.default_rng(42))
    b = aug.apply(cbed, probe, np.random.default_rng(42))
    c = aug.apply(cbed, probe, np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and a.shape == cbed.shape
    rng = np.random.default_rng(7)
    doses = [aug.draw(rng, (P, P)).dose_e for _ in range(2000)]
    lo, hi = DEFAULTS["dose_e_per_pattern"]
    assert min(doses) >= lo and max(doses) <= hi
    logs = np.log10(doses)  # log-uniform: log10 dose uniform on [4, 6] -> mean 5, std 2/sqrt(12)
    assert logs.mean() == pytest.approx(5.0, abs=0.06) and logs.std() == pytest.approx(0.577, abs=0.05)
    assert aug.draw(np.random.default_rng(0), (P, P), dose=123.0).dose_e == 123.0
    before = cbed.copy()
    aug.apply(cbed, probe, np.random.default_rng(0))
    np.testing.assert_array_equal(cbed, before)  # input untouched


def test_bad_config_and_dose():
    with pytest.raises(UserError, match="augment.blur_px"):
        Augmenter({"blur_px": [1.0, 0.5]})
    with pytest.raises(UserError, match="dose_e_per_pattern"):
        Augmenter({"dose_e_per_pattern": [0, 10]})
    with pytest.raises(UserError, match="dose"):
        Augmenter().apply(_disk(), _disk(), np.random.default_rng(0), dose=-5)


def test_turned_samples_keep_their_labels_on_their_disks():
    """``dataset.turned``: the 8 symmetries of the detector about the beam's pixel P // 2 move a pattern's
    disk and its label together, keep the probe on the centre pixel, and give 8 distinct placements."""
    import torch

    from fourdcrystal.learning.dataset import turned

    P, c, g = 32, 16, (5, -3)
    yy, xx = np.mgrid[:P, :P]
    disk = lambda i, j: ((yy - i) ** 2 + (xx - j) ** 2 <= 4.0).astype(np.float32)  # noqa: E731
    probe, cbed = torch.from_numpy(disk(c, c)), torch.from_numpy(disk(c, c) + 0.3 * disk(c + g[0], c + g[1]))
    vg, qz = torch.zeros(P, P), torch.zeros(P, P)
    vg[c, c], vg[c + g[0], c + g[1]], qz[c + g[0], c + g[1]] = 1.0, 0.3, 0.7
    placed = set()
    for op in range(8):
        pr, cb, v, q = turned([probe, cbed, vg, qz], op)
        com = lambda img: tuple(float((img * ax).sum() / img.sum()) for ax in (torch.from_numpy(yy), torch.from_numpy(xx)))  # noqa: E731
        assert com(pr) == (c, c) and v[c, c] == 1.0
        spot = tuple(int(k) for k in torch.nonzero(v == 0.3)[0])
        assert com(cb - pr) == pytest.approx(spot) and q[spot] == 0.7
        assert sorted(abs(k - c) for k in spot) == sorted(abs(k) for k in g)
        placed.add(spot)
    assert len(placed) == 8
    for op in (1, 2, 3):  # mirrors and the half turn undo themselves
        assert all(torch.equal(a, b) for a, b in zip(turned(turned([cbed, vg], op), op), [cbed, vg]))
