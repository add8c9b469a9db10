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


def test_workflow_rejects_bad_config_with_one_line(tmp_path):
    """`snakemake` itself stops on a bad key with our one-line message, before any job runs."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    snakemake = Path(sys.executable).with_name("snakemake")
    bad = tmp_path / "bad.yaml"
    bad.write_text("geometry:\n  detector_px: 8\n")
    proc = subprocess.run([str(snakemake), "-n", "--configfile", "config/config.yaml", str(bad)], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("config key 'geometry.detector_px'")]
    assert len(lines) == 1 and "— fix:" in lines[0], proc.stdout + proc.stderr
