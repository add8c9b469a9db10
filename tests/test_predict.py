"""`fourdcrystal predict` end to end on a small simulated datacube.

Which "network": KinematicOracle below — it returns the TRUE V_g / q_z (Gaussian peaks rendered at
the known reflection positions on the model grid) in scan order, so everything else is real and under
test: reading, direct-beam finding, resampling to the model calibration, peak extraction, conversion
back to input pixels and Å⁻¹, atomic publication, the py4DSTEM BraggVectors file.  A second test runs
the real network class (untrained or the shipped pretrained weights) through the CLI for plumbing.
"""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from fourdcrystal import cli
from fourdcrystal.inference import predict
from fourdcrystal.inference import detectors, model_input, writers
from fourdcrystal.inference.datacube_io import Cube
from fourdcrystal.geometry import Geometry

GEO = Geometry(box_A=16.0, gpts=128, detector_px=64, thicknesses_A=(10.0,), slice_thickness_A=2.0)
DQ = 0.05  # input Å⁻¹ per pixel (the model grid is 1/16 = 0.0625: resampling is exercised)
Q = 72
R_DISK = 3.0


def _disk(shape, c, r=R_DISK):
    i, j = np.indices(shape)
    return 1.0 / (1.0 + np.exp((np.hypot(i - c[0], j - c[1]) - r) / 0.4))


def _lattice(theta, a=0.5, qmax=1.3):
    out = []
    for h in range(-4, 5):
        for k in range(-4, 5):
            if h == k == 0:
                continue
            q = a * np.array([h * np.cos(theta) - k * np.sin(theta), h * np.sin(theta) + k * np.cos(theta)])
            if np.hypot(*q) <= qmax:
                out.append(q)
    return np.array(out)


def make_scan(Rx=3, Ry=4, seed=0):
    """Two grains (lattice rotations), per-position descan of the beam; truth in Å⁻¹ and input px."""
    rng = np.random.default_rng(seed)
    cube = np.zeros((Rx, Ry, Q, Q), np.float32)
    truth = {}
    c0 = np.array([Q / 2 - 0.6, Q / 2 + 0.9])
    for rx in range(Rx):
        for ry in range(Ry):
            theta = 0.2 if ry < Ry // 2 else 0.9
            qs = _lattice(theta)
            c = c0 + rng.uniform(-1.5, 1.5, 2)
            dp = _disk((Q, Q), c)
            for q in qs:
                dp = dp + 0.3 * np.exp(-np.hypot(*q)) * _disk((Q, Q), c + q / DQ)
            cube[rx, ry] = dp * 1000.0  # counts scale differs from the probe's: predict normalises
            truth[(rx, ry)] = (qs, c + qs / DQ)
    probe = (_disk((Q, Q), np.array([Q / 2 + 0.3, Q / 2 - 0.2])) * 50.0).astype(np.float32)
    return cube, probe, truth


class KinematicOracle:
    """Stands in for the network: true V_g / q_z of each scan position in order (q_z = 0.02·q_x)."""

    def __init__(self, truth, Ry, geometry):
        self.items = [truth[k][0] for k in sorted(truth)]
        self.g = geometry
        self.calls = 0

    def __call__(self, probe, cbed):
        B, P, _ = cbed.shape
        i, j = np.indices((P, P))
        cp, dk = self.g.center_px, self.g.dk_invA
        vg, qz = np.zeros((B, P, P), np.float32), np.zeros((B, P, P), np.float32)
        for b in range(B):
            qs = self.items[self.calls + b]
            vg[b] += np.exp(-((i - cp) ** 2 + (j - cp) ** 2) / (2 * 0.8 ** 2))
            for q in qs:
                x, y = cp + q[0] / dk, cp + q[1] / dk
                vg[b] += 0.2 * np.exp(-((i - x) ** 2 + (j - y) ** 2) / (2 * 0.8 ** 2))
            qz[b] = 0.02 * (i - cp) * dk
        self.calls += B
        return torch.from_numpy(vg), torch.from_numpy(qz)


def test_predict_oracle_recovers_kinematic_positions(tmp_path, monkeypatch):
    import py4DSTEM

    # the oracle answers the scan's own patterns in order, not the sum of a batch's faint ones (these noise-free
    # synthetic disks read as a few thousand electrons each: ``detectors.BATCH_LATTICE_MIN_E``)
    monkeypatch.setattr(detectors, "BATCH_LATTICE_MIN_E", np.inf)
    cube, probe, truth = make_scan()
    np.save(tmp_path / "scan.npy", cube)
    c = Cube(np.load(tmp_path / "scan.npy", mmap_mode="r"), str(tmp_path / "scan.npy"))
    out = tmp_path / "out"
    oracle = KinematicOracle(truth, cube.shape[1], GEO)
    s = predict.predict_cube(c, probe, oracle, GEO, DQ, out, batch=5, progress=False, workers=1)  # it counts calls
    assert oracle.calls == 12 and s["n_patterns"] == 12
    df = pd.read_parquet(out / "bragg_vectors.parquet")
    assert list(df.columns) == writers.VECTOR_COLUMNS
    errs, n_true = [], 0
    for (rx, ry), (qs, px) in truth.items():
        sub = df[(df.rx == rx) & (df.ry == ry)]
        nz = sub[np.hypot(sub.qx, sub.qy) > 0.1]
        inside = (px.min(1) >= 0) & (px.max(1) <= Q - 1) & (np.hypot(qs[:, 0], qs[:, 1]) <= 31 * GEO.dk_invA)
        n_true += inside.sum()
        assert len(nz) == inside.sum(), (rx, ry)
        for q, p in zip(qs[inside], px[inside]):
            d = np.hypot(nz.qx_px - p[0], nz.qy_px - p[1])
            k = int(np.argmin(d))
            errs.append(d.iloc[k])
            assert abs(nz.qx.iloc[k] - q[0]) < 0.02 and abs(nz.qy.iloc[k] - q[1]) < 0.02
            assert nz.qz.iloc[k] == pytest.approx(0.02 * q[0], abs=4e-3)
        # the direct beam (q = 0) is reported at the beam position found in the pattern
        d0 = sub[np.hypot(sub.qx, sub.qy) < 0.05]
        assert len(d0) == 1
    assert n_true > 100
    assert np.max(errs) < 0.3, f"max position error {np.max(errs):.3f} px"
    assert (out / "bragg_vector_map.png").stat().st_size > 1000
    bvm = np.load(out / "bragg_vector_map.npy")
    assert bvm.shape == (Q, Q) and bvm.sum() == len(df)
    # py4DSTEM reopens the BraggVectors with the same vectors and the calibration
    bv = py4DSTEM.read(str(out / "braggvectors.h5"))
    for (rx, ry) in [(0, 0), (2, 3)]:
        sub = df[(df.rx == rx) & (df.ry == ry)].sort_values(["qx_px", "qy_px"])
        v = bv.raw[rx, ry]
        o = np.lexsort((v.qy, v.qx))
        np.testing.assert_allclose(v.qx[o], sub.qx_px.to_numpy())
        np.testing.assert_allclose(v.qy[o], sub.qy_px.to_numpy())
        np.testing.assert_allclose(v.I[o], sub.intensity.to_numpy())
    assert bv.calibration.get_Q_pixel_size() == pytest.approx(DQ)


@pytest.mark.parametrize("Rshape", [(3, 3), (2, 4)])
@pytest.mark.parametrize("per_position", [1, 2])
def test_braggvectors_file_with_as_many_vectors_at_every_position(tmp_path, Rshape, per_position):
    """A scan whose every position holds the same number of vectors (a crystal-free scan: the direct beam
    alone) reopens in py4DSTEM position by position: an object array of equal-length lists assigned at once
    had crashed on 2 × 4 scans and silently written other positions' vectors on square ones."""
    import py4DSTEM

    from fourdcrystal.inference.braggvectors_file import write_braggvectors

    n_pos = Rshape[0] * Rshape[1]
    lin = np.tile(np.arange(n_pos), per_position)
    vectors = np.stack([lin // Rshape[1], lin % Rshape[1], lin + 0.25, -lin - 0.5, np.arange(len(lin)) + 1.0])
    write_braggvectors(tmp_path / "bv.h5", Rshape, (64, 64), vectors, np.zeros((2,) + Rshape), DQ)
    bv = py4DSTEM.read(str(tmp_path / "bv.h5"))
    for rx in range(Rshape[0]):
        for ry in range(Rshape[1]):
            k = rx * Rshape[1] + ry
            v = bv.raw[rx, ry]
            np.testing.assert_array_equal(v.qx, np.full(per_position, k + 0.25))
            np.testing.assert_array_equal(v.qy, np.full(per_position, -k - 0.5))


def test_lattice_placement_moves_vectors_and_says_so(tmp_path, monkeypatch):
    """Placing each pattern's vectors on its lattice (the default) neither adds nor drops a vector and
    keeps them on the truth; ``--measured-positions`` (lattice_positions=False) leaves them as measured;
    summary.json says which."""
    monkeypatch.setattr(detectors, "BATCH_LATTICE_MIN_E", np.inf)  # the oracle knows no batch's sum (above)
    cube, probe, truth = make_scan()
    c = Cube(cube, "scan")
    runs = {}
    for lp in (True, False):
        s = predict.predict_cube(c, probe, KinematicOracle(truth, cube.shape[1], GEO), GEO, DQ, tmp_path / str(lp),
                                 batch=5, progress=False, lattice_positions=lp, workers=1)  # it counts calls
        runs[lp] = (s, pd.read_parquet(tmp_path / str(lp) / "bragg_vectors.parquet"))
    (s_on, on), (s_off, off) = runs[True], runs[False]
    assert s_on["positions"] != s_off["positions"] == "measured"
    # and which rule of `predict.mean_beam` placed the scan's beam
    assert s_on["mean_beam_found_by"] == "the disk at the mean pattern's centre of symmetry"
    assert on.groupby(["rx", "ry"]).size().equals(off.groupby(["rx", "ry"]).size())
    moved = [np.hypot(a.qx_px.to_numpy()[:, None] - b.qx_px.to_numpy()[None],
                      a.qy_px.to_numpy()[:, None] - b.qy_px.to_numpy()[None]).min(axis=1)
             for (_, a), (_, b) in zip(on.groupby(["rx", "ry"]), off.groupby(["rx", "ry"]))]
    moved = np.concatenate(moved)
    assert 0 < moved.max() < 0.3, moved.max()


@pytest.fixture
def model_file(tmp_path):
    """A real (untrained, tiny) network checkpoint on GEO, written by the model module."""
    from fourdcrystal.learning.model import build_model, save_checkpoint

    torch.manual_seed(0)
    m = build_model({"base_channels": 4, "depth": 2})
    return save_checkpoint(tmp_path / "tiny.pt", m, GEO)


def _run(argv):
    return cli.main([str(a) for a in argv])


def test_cli_end_to_end_with_network(tmp_path, model_file, capsys):
    """The real network class through the CLI (untrained here: checks plumbing, not accuracy)."""
    cube, probe, _ = make_scan(2, 2)
    with h5py.File(tmp_path / "scan.h5", "w") as f:
        f["group/cube"] = cube
        f["group/cube"].attrs["q_pixel_size_invA"] = DQ
    np.save(tmp_path / "probe.npy", probe)
    rc = _run(["predict", tmp_path / "scan.h5", "--probe", tmp_path / "probe.npy", "--out", tmp_path / "o",
               "--model", model_file, "--batch", 3, "--quiet"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_parquet(tmp_path / "o" / "bragg_vectors.parquet")
    assert set(zip(df.rx, df.ry)) <= {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert (tmp_path / "o" / "braggvectors.h5").exists()
    # probe from a region of the scan itself
    rc = _run(["predict", tmp_path / "scan.h5", "--probe-from-region", "0:1,0:1", "--out", tmp_path / "o2",
               "--model", model_file, "--quiet"])
    assert rc == 0


def test_cli_baseline_classical_same_outputs(tmp_path, model_file, capsys):
    """--baseline classical runs py4DSTEM instead of the network and writes the same outputs."""
    cube, probe, truth = make_scan(1, 2)
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    rc = _run(["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--out", tmp_path / "c",
               "--q-pixel-size", DQ, "--model", model_file, "--baseline", "classical", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    out = tmp_path / "c"
    for name in ("bragg_vectors.parquet", "bragg_vector_map.npy", "bragg_vector_map.png", "braggvectors.h5"):
        assert (out / name).exists(), name
    df = pd.read_parquet(out / "bragg_vectors.parquet")
    assert df.qz.isna().all()  # no out-of-plane information from the classical detector
    for (rx, ry), (qs, px) in truth.items():
        sub = df[(df.rx == rx) & (df.ry == ry)]
        inside = (px.min(1) >= 4) & (px.max(1) <= Q - 5)
        # every synthetic disk inside the detector is found at its pixel position, in Å⁻¹ from the beam
        for q, p in zip(qs[inside], px[inside]):
            d = np.hypot(sub.qx_px - p[0], sub.qy_px - p[1])
            k = int(np.argmin(d))
            assert d.iloc[k] < 0.5, (rx, ry, p)
            assert abs(sub.qx.iloc[k] - q[0]) < 0.03 and abs(sub.qy.iloc[k] - q[1]) < 0.03


def _bad(tmp_path, argv, capsys, needle):
    out = tmp_path / "bad_out"
    rc = _run(list(argv) + ["--out", out, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("fourdcrystal: error:")]
    assert len(lines) == 1 and needle in lines[0] and "fix:" in lines[0], err
    assert not out.exists()
    assert not list(tmp_path.glob(".bad_out.tmp-*"))


def test_bad_1d_array_and_stack_without_scan_shape(tmp_path, model_file, capsys):
    np.save(tmp_path / "line.npy", np.zeros(256, np.float32))
    _bad(tmp_path, ["predict", tmp_path / "line.npy", "--model", model_file, "--q-pixel-size", DQ], capsys,
         "not a datacube")
    np.save(tmp_path / "stack.npy", np.zeros((5, 16, 16), np.float32))
    np.save(tmp_path / "probe.npy", np.ones((16, 16), np.float32))
    _bad(tmp_path, ["predict", tmp_path / "stack.npy", "--probe", tmp_path / "probe.npy", "--model", model_file,
                    "--q-pixel-size", DQ], capsys, "--scan-shape RXxRY")


def test_bad_probe_shape(tmp_path, model_file, capsys):
    cube, probe, _ = make_scan(1, 2)
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe[:-8])
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--model", model_file,
                    "--q-pixel-size", DQ], capsys, "differs from the pattern shape")


@pytest.mark.parametrize("flag, value", [("--workers", 0), ("--batch", 0)])
def test_bad_workers_or_batch(tmp_path, model_file, capsys, flag, value):
    cube, probe, _ = make_scan(1, 2)
    np.save(tmp_path / "scan.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--model", model_file, "--q-pixel-size", DQ, flag, value], capsys,
         f"{flag} {value} must be >= 1")


def test_bad_damaged_hdf5_and_complex_values(tmp_path, model_file, capsys):
    """An HDF5 file cut short (it said "unknown data format '.h5'") and a complex datacube (its imaginary part was
    dropped without a word) are each one line naming the fix."""
    cube, _, _ = make_scan(1, 2)
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        f["cube"] = cube
    (tmp_path / "cut.h5").write_bytes((tmp_path / "whole.h5").read_bytes()[:3000])
    _bad(tmp_path, ["predict", tmp_path / "cut.h5", "--model", model_file, "--q-pixel-size", DQ], capsys,
         "not a readable HDF5 file")
    np.save(tmp_path / "wave.npy", cube.astype(np.complex64))
    _bad(tmp_path, ["predict", tmp_path / "wave.npy", "--model", model_file, "--q-pixel-size", DQ], capsys,
         "complex values")


def test_bad_unknown_format(tmp_path, model_file, capsys):
    (tmp_path / "scan.xyz").write_text("not a datacube")
    np.save(tmp_path / "probe.npy", np.ones((16, 16), np.float32))
    _bad(tmp_path, ["predict", tmp_path / "scan.xyz", "--probe", tmp_path / "probe.npy", "--model", model_file,
                    "--q-pixel-size", DQ], capsys, "unknown data format")


def test_bad_missing_calibration(tmp_path, model_file, capsys):
    cube, probe, _ = make_scan(1, 2)
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--model", model_file],
         capsys, "no reciprocal-space calibration")


@pytest.mark.parametrize("kind", ["torch_dict", "text"])
def test_bad_foreign_model(tmp_path, capsys, kind):
    cube, probe, _ = make_scan(1, 2)
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    foreign = tmp_path / "foreign.pt"
    if kind == "torch_dict":
        torch.save({"state_dict": {"w": torch.zeros(3)}, "epoch": 3}, foreign)
    else:
        foreign.write_text("hello")
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--model", foreign,
                    "--q-pixel-size", DQ], capsys, "not a 4D>Crystal model")


def test_missing_default_model_message(tmp_path, monkeypatch):
    monkeypatch.setattr(predict, "DEFAULT_MODEL", tmp_path / "absent.pt")
    from fourdcrystal.errors import UserError
    with pytest.raises(UserError, match="pretrained default"):
        predict.resolve_model(None)


def test_py4dstem_emd_datacube_found_automatically(tmp_path):
    import py4DSTEM
    from fourdcrystal.inference.datacube_io import open_datacube

    dc = py4DSTEM.DataCube(np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32))
    dc.calibration.set_Q_pixel_size(0.031)
    dc.calibration.set_Q_pixel_units("A^-1")
    py4DSTEM.save(str(tmp_path / "dc.h5"), dc, mode="o")
    c = open_datacube(tmp_path / "dc.h5")
    assert c.shape == (2, 3, 16, 16) and c.q_pixel_size() == pytest.approx(0.031)
    np.testing.assert_array_equal(c.read(2, 5), dc.data.reshape(6, 16, 16)[2:5])


@pytest.mark.parametrize("dtype,order", [(np.float32, "C"), (np.uint16, "C"), (np.float64, "F")])
def test_npy_reads_any_run_of_scan_positions(tmp_path, dtype, order):
    """C-ordered .npy cubes are read by plain file reads (flat memory), others through the memory
    map: both give the same patterns, for runs that cross scan rows."""
    from fourdcrystal.inference.datacube_io import open_datacube

    a = (np.random.default_rng(1).random((3, 5, 16, 18)) * 100).astype(dtype)
    np.save(tmp_path / "c.npy", np.asfortranarray(a) if order == "F" else a)
    c = open_datacube(tmp_path / "c.npy")
    for s, e in [(0, 15), (2, 9), (4, 5), (14, 15)]:
        got = c.read(s, e)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, a.reshape(15, 16, 18)[s:e].astype(np.float32))


def test_auto_precision_is_bf16_only_on_cpus_with_native_bf16(monkeypatch):
    """bf16 measured faster than fp32 for the shipped model on CPUs with AMX or AVX512-BF16, slower on CUDA;
    where a CPU only emulates bf16 the default stays fp32."""
    assert not detectors.auto_bf16("cuda")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not detectors.auto_bf16("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert detectors.auto_bf16("cpu") and not detectors.auto_bf16("cuda")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert detectors.auto_bf16("cpu")


def test_peak_settings_resolution_order():
    from fourdcrystal.inference import peaks
    from fourdcrystal.errors import UserError

    stamped = {"peak_settings": {"peak_threshold": 0.3, "min_spacing_px": 4.0}}
    assert predict.peak_settings(None) == {"peak_threshold": peaks.DEFAULT_THRESHOLD,
                                           "min_spacing_px": peaks.DEFAULT_MIN_SPACING_PX}
    assert predict.peak_settings(stamped) == {"peak_threshold": 0.3, "min_spacing_px": 4.0}
    assert predict.peak_settings(stamped, 0.1, 0.0) == {"peak_threshold": 0.1, "min_spacing_px": 0.0}
    with pytest.raises(UserError, match="not in"):
        predict.peak_settings(None, 1.5)


def test_channels_last_and_bf16_predict_agree_with_fp32(tmp_path, model_file):
    """The CPU speed-ups (channels_last weights, optional bf16) keep the network's vectors."""
    from fourdcrystal.learning.model import load_checkpoint

    cube, probe, _ = make_scan(2, 2)
    c = Cube(cube, "mem")
    model, geo, _ = load_checkpoint(model_file)
    x = torch.from_numpy(cube.reshape(-1, Q, Q)[:, :64, :64].copy())
    with torch.inference_mode():
        ref = model(x, x)[0]
        s32 = predict.predict_cube(c, probe, model, geo, DQ, tmp_path / "a", progress=False, precision="fp32")
        cl = model(x, x)[0]  # predict_cube put the weights in channels_last
    assert torch.allclose(cl, ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf = model(x, x)[0].float()
    assert float((bf - ref).abs().max()) < 0.03 * float(ref.abs().max())
    s16 = predict.predict_cube(c, probe, model, geo, DQ, tmp_path / "b", progress=False, precision="bf16")
    assert s32["precision"] == "fp32" and s16["precision"] == "bf16" and s16["n_patterns"] == 4


@pytest.mark.parametrize("shift", [(0.0, 0.0), (0.7, -0.4), (-1.0, 1.0)])
def test_model_input_puts_the_beam_on_the_centre_pixel(shift):
    """predict's (and training's) input preparation: a pattern whose beam is off by a descan shift
    comes back with its direct beam on the centre pixel (to 0.1 px), on the probe's scale with the
    probe's total; training (fourdcrystal.learning.dataset.model_input) prepares patterns the same way."""
    from fourdcrystal.learning.dataset import model_input as training_input

    P, c = 64, 32
    probe = _disk((P, P), (c, c)).astype(np.float32)
    cbed = 0.6 * _disk((P, P), (c + shift[0], c + shift[1])) + 0.1 * _disk((P, P), (c + shift[0] + 12, c + shift[1] - 7))
    mi = model_input.ModelInput(probe * 40.0, 1.0, P, c)  # any count scale: the probe is scaled to max 1
    x = torch.from_numpy(cbed[None].astype(np.float32) * 3.0)
    pr, cb = mi(x, mi.centres(x))
    assert float(pr.max()) == pytest.approx(1.0)
    assert float(cb.sum()) == pytest.approx(float(pr.sum()), rel=1e-5)
    beam = cb[0].clone()
    beam[c + 6:] = 0  # keep the direct-beam disk only
    i, j = np.indices((P, P))
    w = np.clip(beam.numpy() - 0.1 * float(beam.max()), 0, None)
    com = np.array([(i * w).sum(), (j * w).sum()]) / w.sum()
    assert np.abs(com - c).max() < 0.1, com
    dp, dc = training_input(probe, cbed.astype(np.float32))
    torch.testing.assert_close(dc, cb[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dp, pr[0])



def test_detection_workers_one_thread_each(monkeypatch):
    """One process of one thread per thread torch may use (at most MAX_AUTO_WORKERS, at most one per batch; one
    thread each: GNU OpenMP hangs in a forked child of more); CUDA, a single batch and other systems than Linux
    stay in one process with torch's threads as they are."""
    monkeypatch.setattr(predict.sys, "platform", "linux")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 40)
    assert predict.detection_workers(None, 100, "cpu") == (predict.MAX_AUTO_WORKERS, 1)
    assert predict.detection_workers(None, 3, "cpu") == (3, 1)
    assert predict.detection_workers(4, 100, "cpu") == (4, 1)
    assert predict.detection_workers(1, 100, "cpu") == predict.detection_workers(None, 1, "cpu") == (1, 0)
    assert predict.detection_workers(None, 100, "cuda") == (1, 0)
    monkeypatch.setattr(predict.sys, "platform", "darwin")
    assert predict.detection_workers(None, 100, "cpu") == (1, 0)


def test_workers_forked_from_a_parent_of_many_threads_finish(tmp_path, model_file):
    """A parent that has used more torch threads than it forks workers (a node of many cores) still gets its
    vectors: each worker runs one thread (GNU OpenMP hangs in a forked child of more; a subprocess with a
    deadline, so a hang fails instead of stalling the suite)."""
    import subprocess
    import sys

    cube, probe, _ = make_scan(2, 3)
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    code = f"""
import numpy as np, torch
from fourdcrystal.inference import predict
from fourdcrystal.inference.datacube_io import open_datacube
from fourdcrystal.learning.model import load_checkpoint
torch.set_num_threads(4)
model, geo, _ = load_checkpoint({str(model_file)!r})
with torch.inference_mode():
    model(torch.rand(8, 64, 64), torch.rand(8, 64, 64))  # the parent's threads in use before the fork
s = predict.predict_cube(open_datacube({str(tmp_path / 'scan.npy')!r}), np.load({str(tmp_path / 'probe.npy')!r}),
                         model, geo, {DQ}, {str(tmp_path / 'out')!r}, progress=False, batch=2, workers=2)
print(s["workers"], s["threads_per_worker"], s["n_patterns"])
"""
    import os
    import signal

    # a session of its own: on a hang the forked workers are killed with their parent, not left behind
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError("predict with two workers under a parent of 4 threads did not finish in 300 s")
    assert proc.returncode == 0, err
    assert out.split() == ["2", "1", "6"]


def test_each_worker_runs_one_torch_and_one_blas_thread():
    """A forked worker runs torch and numpy's BLAS on one thread each: the parent's BLAS threads in every worker
    (2 cores, two workers) made `predict --baseline classical` 4× slower than one process (RESULTS.md)."""
    from threadpoolctl import threadpool_info

    with predict._worker_pool((None,) * 5, 2, 1) as pool:
        blas = [d["num_threads"] for d in pool.apply(threadpool_info) if d["user_api"] == "blas"]
        assert pool.apply(torch.get_num_threads) == 1
    assert blas and set(blas) == {1}
