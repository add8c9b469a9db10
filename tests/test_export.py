"""export-model stamps evaluate's tuned peak settings into the checkpoint, and predict picks them up."""
import json

import pytest

from fourdcrystal.cli import main
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.model import build_model, load_checkpoint, save_checkpoint
from fourdcrystal.inference.predict import peak_settings

GEO = Geometry(box_A=16.0, gpts=64, detector_px=32, thicknesses_A=(4.0,), slice_thickness_A=2.0)


def test_export_stamps_peak_settings(tmp_path):
    model = save_checkpoint(tmp_path / "model.pt", build_model({"base_channels": 4, "depth": 2}), GEO)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"network_peak_settings": {"peak_threshold": 0.37, "min_spacing_px": 4.0,
                                                             "grid": [0.1, 0.37]},
                                   "classical_settings": {"minPeakSpacing": 3}}))
    out = tmp_path / "pretrained.pt"
    assert main(["export-model", str(model), "--metrics", str(metrics), "--out", str(out)]) == 0
    _, geometry, meta = load_checkpoint(out)
    assert geometry == GEO
    assert meta["peak_settings"] == {"peak_threshold": 0.37, "min_spacing_px": 4.0}
    assert meta["classical_settings"] == {"minPeakSpacing": 3}
    assert peak_settings(meta)["peak_threshold"] == pytest.approx(0.37)
    assert peak_settings(meta, threshold=0.1)["peak_threshold"] == pytest.approx(0.1)  # a flag still wins


def test_export_refuses_metrics_without_settings(tmp_path, capsys):
    model = save_checkpoint(tmp_path / "model.pt", build_model({"base_channels": 4, "depth": 2}), GEO)
    (tmp_path / "metrics.json").write_text("{}")
    out = tmp_path / "pretrained.pt"
    assert main(["export-model", str(model), "--metrics", str(tmp_path / "metrics.json"), "--out", str(out)]) == 2
    assert "network_peak_settings" in capsys.readouterr().err
    assert not out.exists()
