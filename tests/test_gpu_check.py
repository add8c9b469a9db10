"""The GPU check runs on CPU with tiny sizes (so it cannot rot between GPU windows), and the device and
dtype handling that the CuPy and NumPy multislice paths share is pinned down on CPU."""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from fourdcrystal.geometry import Geometry
from fourdcrystal.simulation.multislice import _to_numpy, detector_intensity, vg_qz_labels

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_make_gpu_check_smoke_runs_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU even where a GPU is visible
    proc = subprocess.run(["make", "-s", "gpu-check", "GPU_CHECK_FLAGS=--smoke", f"GPU_CHECK_OUT={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["mode"] == "smoke" and not res["environment"]["cuda"]
    for section in ("multislice", "train_step", "train_run", "predict"):
        assert "error" not in res[section], res[section]
    assert res["multislice"]["cpu_quartets_per_s"] > 0 and res["multislice"]["quartets_per_orientation"] == 4
    assert res["train_step"]["backend"] == "gloo" and res["train_step"]["finite_loss"]
    assert res["train_run"]["model_written"] and res["train_run"]["steps"] >= 4
    assert all(res["predict"][k] > 0 for k in res["predict"] if k.endswith("patterns_per_s"))
    assert "| multislice NumPy (CPU) |" in proc.stdout  # the table printed last


def test_gpu_check_refuses_full_run_without_a_gpu():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["make", "-s", "gpu-check", "GPU_CHECK_OUT=/dev/null"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "no CUDA device is visible" in proc.stderr and "--smoke" in proc.stderr


class DeviceArray(np.ndarray):
    """Stands in for a CuPy array: data that must be fetched with ``.get()``."""

    fetched = 0

    def get(self):
        DeviceArray.fetched += 1
        return np.asarray(self).copy()


def test_device_arrays_come_back_through_get():
    a = np.arange(6, dtype=np.float32).reshape(2, 3).view(DeviceArray)
    DeviceArray.fetched = 0
    b = _to_numpy(a)
    assert DeviceArray.fetched == 1 and type(b) is np.ndarray and np.array_equal(b, a)
    assert type(_to_numpy([1.0, 2.0])) is np.ndarray


def test_shared_kernels_compute_in_single_precision():
    # Whatever the caller hands in (float64 potentials, complex128 waves), the shared NumPy/CuPy code
    # computes and returns float32: the precision the CuPy-vs-NumPy check measures (≤ 1e-3 rel.).
    geo = Geometry(box_A=10.0, gpts=32, detector_px=16, thicknesses_A=(4.0, 8.0), slice_thickness_A=2.0)
    rng = np.random.default_rng(0)
    waves = (rng.normal(size=(3, 32, 32)) + 1j * rng.normal(size=(3, 32, 32))).astype(np.complex128)
    inten = detector_intensity(waves, geo, np)
    assert inten.dtype == np.float32 and inten.shape == (3, 16, 16)
    ref = np.abs(np.fft.fft2(waves))[:, (np.arange(16) - 8) % 32][:, :, (np.arange(16) - 8) % 32] ** 2
    np.testing.assert_allclose(inten, ref, rtol=1e-4)
    pot = rng.uniform(0, 5, size=(geo.n_slices, 32, 32))  # float64, V·Å
    vg, qz = vg_qz_labels(pot, geo, {"qz_sigma_invA": 0.075, "tukey_alpha": 0.25}, np)
    assert vg.dtype == np.float32 and qz.dtype == np.float32 and vg.shape == (2, 16, 16)
    vg64, _ = vg_qz_labels(pot.astype(np.float32), geo, {"qz_sigma_invA": 0.075, "tukey_alpha": 0.25}, np)
    np.testing.assert_array_equal(vg, vg64)  # the input is cast once, on entry


def test_pretrained_gpu_recipe_builds_its_workflow(tmp_path):
    # The GPU recipe cannot run here; its Makefile target and config overlay must at least give a
    # valid workflow whose training runs with the GPU recipe's settings (a dry run).
    proc = subprocess.run(["make", "-s", "pretrained-gpu", "PRETRAIN_GPU_FLAGS=-n", f"PRETRAIN_GPU_DIR={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "This was a dry-run" in proc.stdout
    assert '"num_workers": 8' in proc.stdout and '"batch_size": 32' in proc.stdout
    gpu = yaml.safe_load((ROOT / "config" / "pretrained_gpu.yaml").read_text())
    assert gpu["simulation"]["device"] == "gpu"
    # converged dynamical intensities need a grid near 0.06 Å (benchmarks/RESULTS.md, "The multislice grid's sampling")
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())["geometry"]
    assert base["box_A"] / gpu["geometry"]["gpts"] <= 0.065
