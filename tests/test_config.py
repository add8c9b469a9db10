import pytest

from fourdcrystal import config as cfgmod
from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry, electron_wavelength_A


def test_default_config_is_valid(default_config):
    cfgmod.validate(default_config)
    g = Geometry.from_config(default_config)
    assert g.dk_invA == pytest.approx(1 / default_config["geometry"]["box_A"])
    assert g.center_px == default_config["geometry"]["detector_px"] // 2


def test_bad_key_names_the_key(default_config):
    default_config["simulation"]["qz_sigma_invA"] = -1
    with pytest.raises(UserError, match="simulation.qz_sigma_invA"):
        cfgmod.validate(default_config)


def test_unknown_key_is_rejected(default_config):
    default_config["selection"]["n_crystal"] = 3
    with pytest.raises(UserError, match="n_crystal"):
        cfgmod.validate(default_config)


def test_detector_beyond_band_limit_is_rejected(default_config):
    default_config["geometry"]["gpts"] = 128  # detector 128 px needs a finer grid
    with pytest.raises(UserError, match="raise gpts"):
        cfgmod.validate(default_config)


def test_wavelength():
    assert electron_wavelength_A(200e3) == pytest.approx(0.02508, rel=1e-3)
    assert electron_wavelength_A(300e3) == pytest.approx(0.01969, rel=1e-3)


def test_geometry_roundtrip(default_config):
    g = Geometry.from_config(default_config)
    assert Geometry.from_dict(g.to_dict()) == g
