"""`fourdcrystal predict` on files as detectors write them, and on bad input.

Each quirk is run through the CLI on the small two-grain scan of test_predict (real reading, beam
finding, resampling, the shipped pretrained network): it must give the same vectors as the plain
4-D float32 .npy. Each bad input must stop with one line naming the fix, exit 2, and leave no output.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from fourdcrystal.inference.predict import DEFAULT_MODEL
from test_predict import DQ, _bad, _run, make_scan


@pytest.fixture
def model_file():
    return DEFAULT_MODEL


@pytest.fixture(scope="module")
def scan():
    cube, probe, _ = make_scan(2, 3)
    return cube, probe


def _vectors(tmp_path, name, data, model, *extra):
    out = tmp_path / name
    rc = _run(["predict", data, "--out", out, "--model", model, "--quiet", *extra])
    assert rc == 0
    df = pd.read_parquet(out / "bragg_vectors.parquet")
    return df.sort_values(["rx", "ry", "qx_px", "qy_px"]).reset_index(drop=True), out


@pytest.fixture
def reference(tmp_path, scan, model_file):
    cube, probe = scan
    np.save(tmp_path / "ref.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    df, _ = _vectors(tmp_path, "ref", tmp_path / "ref.npy", model_file, "--probe", tmp_path / "probe.npy",
                     "--q-pixel-size", DQ)
    assert len(df) > 0
    return df


def _same(df, ref):
    pd.testing.assert_frame_equal(df, ref, check_exact=False, rtol=1e-5, atol=1e-6)


def test_merlin_singleton_axis_hdf5_among_side_arrays(tmp_path, scan, reference, model_file, capsys):
    """(Rx, Ry, 1, Qx, Qy) in an HDF5 file that also holds small arrays: the datacube is found, said."""
    cube, probe = scan
    with h5py.File(tmp_path / "merlin.h5", "w") as f:
        f["Experiments/__unnamed__/data"] = cube[:, :, None]
        f["Experiments/__unnamed__/axes"] = np.arange(27, dtype=np.float64)[None]  # a 1×27 side array
        f["Experiments/__unnamed__/mask"] = np.ones((4, 4), bool)
    capsys.readouterr()
    df, out = _vectors(tmp_path, "merlin", tmp_path / "merlin.h5", model_file, "--probe", tmp_path / "probe.npy",
                       "--q-pixel-size", DQ)
    _same(df, reference)
    said = capsys.readouterr().out
    assert "Experiments/__unnamed__/data (the only array shaped like a datacube)" in said
    assert "Experiments/__unnamed__/data" in (out / "index.html").read_text()


def test_pattern_stack_with_scan_shape_big_endian_integers(tmp_path, scan, reference, model_file):
    cube, _ = scan
    stack = np.rint(cube).astype(">u2").reshape(-1, *cube.shape[2:])  # counts as a camera writes them
    np.save(tmp_path / "stack.npy", stack)
    df, _ = _vectors(tmp_path, "stack", tmp_path / "stack.npy", model_file, "--probe", tmp_path / "probe.npy",
                     "--q-pixel-size", DQ, "--scan-shape", "2x3")
    ref_int, _ = _vectors(tmp_path, "ref_int", _npy(tmp_path / "int.npy", np.rint(cube).astype(np.float32)),
                          model_file, "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    _same(df, ref_int)


@pytest.mark.parametrize("layout", ["image", "stack of one"])
def test_a_single_pattern_is_a_scan_of_one_position(tmp_path, scan, model_file, layout):
    """One diffraction pattern (a 2-D image, as a detector's single frame or a camera's image is written, or a
    stack holding one) gives the vectors of the same pattern as a 1 × 1 datacube; before, it was refused."""
    cube, probe = scan
    np.save(tmp_path / "probe.npy", probe)
    one = cube[1, 2]
    ref, _ = _vectors(tmp_path, "ref1", _npy(tmp_path / "one4d.npy", one[None, None]), model_file,
                      "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    data = one if layout == "image" else one[None]
    df, out = _vectors(tmp_path, "one", _npy(tmp_path / "one.npy", data), model_file, "--probe",
                       tmp_path / "probe.npy", "--q-pixel-size", DQ)
    assert len(ref) > 1
    _same(df, ref)
    assert json.loads((out / "summary.json").read_text())["scan_shape"] == [1, 1]


def test_empad_raw_frames_with_their_metadata_rows(tmp_path, scan, model_file, capsys):
    """An EMPAD scan's .raw (130 × 128 float32 frames, the last two rows metadata) named as EMPAD names it
    (scan_x3_y2.raw: 2 rows of 3 positions) gives the vectors of its 128 × 128 patterns as a .npy datacube; the
    metadata rows (large values here) are not read. A .raw that is not whole frames is one line, exit 2."""
    cube, probe = scan
    Q = cube.shape[-1]
    padded = np.zeros(cube.shape[:2] + (128, 128), np.float32)
    padded[:, :, 28:28 + Q, 28:28 + Q] = cube
    frames = np.full((cube.shape[0] * cube.shape[1], 130, 128), 1e6, np.float32)
    frames[:, :128] = padded.reshape(-1, 128, 128)
    frames.astype("<f4").tofile(tmp_path / "scan_x3_y2.raw")
    probe128 = np.zeros((128, 128), np.float32)
    probe128[28:28 + Q, 28:28 + Q] = probe
    np.save(tmp_path / "probe128.npy", probe128)
    args = ("--probe", tmp_path / "probe128.npy", "--q-pixel-size", DQ)
    ref, _ = _vectors(tmp_path, "ref128", _npy(tmp_path / "padded.npy", padded), model_file, *args)
    df, _ = _vectors(tmp_path, "empad", tmp_path / "scan_x3_y2.raw", model_file, *args)
    assert len(ref) > 6
    _same(df, ref)
    (tmp_path / "cut.raw").write_bytes((tmp_path / "scan_x3_y2.raw").read_bytes()[:-4])
    _bad(tmp_path, ["predict", tmp_path / "cut.raw", "--model", model_file, "--q-pixel-size", DQ], capsys,
         "not EMPAD frames")


def test_a_pattern_saved_as_a_picture(tmp_path, scan, model_file, capsys):
    """A pattern saved as an 8-bit grey PNG (read whole: rosettasciio's lazy image reader fails on it) gives the
    vectors of the same 8-bit counts as a .npy; a PNG in a colour map's colours is one line, exit 2 (it was a
    raw traceback); a colour image whose channels are equal is read as grey."""
    from PIL import Image

    from fourdcrystal.inference.datacube_io import _grey

    cube, probe = scan
    np.save(tmp_path / "probe.npy", probe)
    grey = np.clip(cube[0, 1] / cube[0, 1].max() * 255, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "pattern.png")
    args = ("--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    ref, _ = _vectors(tmp_path, "grey_npy", _npy(tmp_path / "grey.npy", grey), model_file, *args)
    df, _ = _vectors(tmp_path, "png", tmp_path / "pattern.png", model_file, *args)
    assert len(ref) > 1
    _same(df, ref)
    Image.fromarray(np.stack([grey, 255 - grey, grey // 2], axis=-1)).save(tmp_path / "colours.png")
    _bad(tmp_path, ["predict", tmp_path / "colours.png", *args, "--model", model_file], capsys, "colour image")
    rgb = np.zeros(grey.shape, [("R", "u1"), ("G", "u1"), ("B", "u1")])
    for c in "RGB":
        rgb[c] = grey
    np.testing.assert_array_equal(_grey(rgb, "x.png"), grey)


def _velox(path, frames, dq):
    """A minimal Thermo Fisher Velox .emd as rosettasciio reads it: one image stack stored (height, width, frames),
    each frame's metadata a JSON document (pixel size ``dq`` in 1/Å)."""
    md = {"Core": {"MetadataDefinitionVersion": "7.9", "guid": "0"}, "Scan": {}, "Acquisition": {},
          "CustomProperties": {},
          "BinaryResult": {"AcquisitionUnit": "CameraImage", "Detector": "Camera", "DetectorIndex": "0",
                           "ImageSize": {"width": str(frames.shape[2]), "height": str(frames.shape[1])},
                           "PixelSize": {"width": str(dq), "height": str(dq)}, "PixelUnitX": "1/Å",
                           "PixelUnitY": "1/Å", "Offset": {"x": "0", "y": "0"}, "Encoding": "Float",
                           "BitsPerPixel": "32"},
          "Detectors": {"Detector-0": {"DetectorName": "Camera", "DetectorType": "ImagingDetector",
                                       "ExposureTime": "0.01"}}}
    text = np.frombuffer(json.dumps(md).encode(), np.uint8)
    with h5py.File(path, "w") as f:
        f["Version"] = np.array([json.dumps({"version": "8", "format": "Velox"}).encode()], dtype=object)
        g = f.create_group("Data/Image/0")
        g["Data"] = np.moveaxis(frames, 0, -1).astype(np.float32)
        g["Metadata"] = np.zeros((len(text) + 8, len(frames)), np.uint8)
        g["Metadata"][:len(text)] = text[:, None]
        g["FrameLookupTable"] = np.arange(len(frames), dtype=np.uint32)


def test_velox_frames_stored_height_width_frames(tmp_path, scan, reference, model_file):
    """A Velox .emd stores a stack of camera frames as (height, width, frames); read as an HDF5 file its rows
    were taken for patterns (and a stack of fewer than 16 frames was "no datacube"). It goes to rosettasciio,
    which reads the frames and their calibration: the vectors of the same patterns as a .npy."""
    cube, _ = scan
    _velox(tmp_path / "frames.emd", cube.reshape(-1, *cube.shape[2:]), DQ)
    df, _ = _vectors(tmp_path, "velox", tmp_path / "frames.emd", model_file, "--probe", tmp_path / "probe.npy",
                     "--scan-shape", "2x3")
    _same(df, reference)


def _npy(path, a):
    np.save(path, a)
    return path


@pytest.mark.parametrize("dtype", [">f4", "<i4", ">i2"])
def test_integer_and_big_endian_hdf5(tmp_path, scan, model_file, dtype):
    cube, _ = scan
    a = np.rint(cube).astype(dtype)
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f["cube"] = a
    df, _ = _vectors(tmp_path, "h", tmp_path / "c.h5", model_file, "--q-pixel-size", DQ)  # synthesized probe
    ref, _ = _vectors(tmp_path, "r", _npy(tmp_path / "r.npy", a.astype(np.float32)), model_file, "--q-pixel-size", DQ)
    _same(df, ref)


def _hspy(path, cube, scale, units, tem: dict | None):
    """``cube`` as a HyperSpy file whose detector axes have ``scale`` ``units`` and metadata ``tem``
    (Acquisition_instrument.TEM: beam_energy in keV, convergence_angle in mrad)."""
    from rsciio.hspy import file_writer

    axes = [{"name": n, "size": s, "scale": 1.0, "offset": 0.0, "units": "nm", "navigate": True}
            for n, s in zip("xy", cube.shape[:2])]
    axes += [{"name": n, "size": s, "scale": scale, "offset": 0.0, "units": units, "navigate": False}
             for n, s in zip(("kx", "ky"), cube.shape[2:])]
    md = {"General": {"title": "scan"}, "Signal": {"signal_type": "electron_diffraction"}}
    if tem:
        md["Acquisition_instrument"] = {"TEM": tem}
    file_writer(str(path), {"data": cube, "axes": axes, "metadata": md, "original_metadata": {},
                            "attributes": {"_lazy": False}, "tmp_parameters": {},
                            "package_info": {"name": "fourdcrystal", "version": "0"},
                            "learning_results": {}, "models": {}})


@pytest.mark.parametrize("units,scale,energy_keV", [("1 / nm", DQ * 10, None), ("1/Å", DQ, None),
                                                    ("mrad", None, 300.0)])
def test_rosettasciio_calibration_units(tmp_path, scan, reference, model_file, units, scale, energy_keV):
    """A HyperSpy file whose detector axes are in 1/nm, 1/Å or mrad (+ beam energy) needs no --q-pixel-size."""
    from fourdcrystal.geometry import electron_wavelength_A

    cube, _ = scan
    if units == "mrad":
        scale = DQ * electron_wavelength_A(energy_keV * 1e3) * 1e3
    _hspy(tmp_path / "scan.hspy", cube, scale, units, {"beam_energy": energy_keV} if energy_keV else None)
    df, out = _vectors(tmp_path, "hs", tmp_path / "scan.hspy", model_file, "--probe", tmp_path / "probe.npy")
    _same(df, reference)
    assert "file metadata" in (out / "index.html").read_text()


def test_blo_camera_plane_units_named_and_synthesized_probe(tmp_path, scan, model_file, capsys):
    """A NanoMEGAS .blo (calibration in camera-plane cm): the unit is named in the error; with
    --q-pixel-size it runs without any probe, and the output says the probe was synthesized."""
    from rsciio.blockfile import file_writer

    cube, _ = scan
    axes = [{"name": n, "size": s, "scale": 1.0, "offset": 0.0, "units": "nm", "navigate": True}
            for n, s in zip("yx", cube.shape[:2])]
    axes += [{"name": n, "size": s, "scale": 0.01, "offset": 0.0, "units": "cm", "navigate": False}
             for n, s in zip(("ky", "kx"), cube.shape[2:])]
    u8 = np.clip(cube / cube.max() * 255, 0, 255).astype(np.uint8)
    file_writer(str(tmp_path / "scan.blo"), {"data": u8, "axes": axes, "metadata": {"General": {"title": "s"}},
                                             "original_metadata": {}, "attributes": {"_lazy": False}})
    _bad(tmp_path, ["predict", tmp_path / "scan.blo", "--model", model_file], capsys, "'cm'")
    df, out = _vectors(tmp_path, "blo", tmp_path / "scan.blo", model_file, "--q-pixel-size", DQ)
    assert len(df) > 0
    assert "synthesized" in (out / "index.html").read_text()
    assert "synthesized" in capsys.readouterr().out


def test_zarr_group_datacube_chosen(tmp_path, scan, reference, model_file):
    import zarr

    cube, _ = scan
    g = zarr.open_group(str(tmp_path / "scan.zarr"), mode="w")
    g.create_array("raw/frames", data=cube)
    g.create_array("raw/timestamps", data=np.arange(6.0))
    g["raw/frames"].attrs["q_pixel_size_invA"] = DQ
    df, _ = _vectors(tmp_path, "z", tmp_path / "scan.zarr", model_file, "--probe", tmp_path / "probe.npy")
    _same(df, reference)


def _dectris_master(folder, cube, energy_eV=300e3, distance_m=0.0, pixel_m=75e-6, frames_per_file=4):
    """A DECTRIS NeXus master as an ARINA writes one: frames in bitshuffle/LZ4-compressed data files beside it,
    linked from entry/data; beam energy and camera length in entry/instrument/detector."""
    import hdf5plugin

    stack = np.rint(cube).astype(np.uint32).reshape(-1, *cube.shape[2:])
    with h5py.File(folder / "scan_master.h5", "w") as m:
        det = m.create_group("entry/instrument/detector")
        det["x_pixel_size"], det["detector_distance"] = pixel_m, distance_m
        det["detectorSpecific/photon_energy"] = energy_eV
        det["detectorSpecific/pixel_mask"] = np.zeros(cube.shape[2:], np.uint32)
        det["detectorSpecific/flatfield"] = np.ones(cube.shape[2:], np.float32)
        for k, first in enumerate(range(0, len(stack), frames_per_file)):
            name = f"scan_data_{k + 1:06d}.h5"
            with h5py.File(folder / name, "w") as d:
                d.create_dataset("entry/data/data", data=stack[first:first + frames_per_file],
                                 chunks=(1,) + stack.shape[1:], **hdf5plugin.Bitshuffle(cname="lz4"))
            m[f"entry/data/data_{k + 1:06d}"] = h5py.ExternalLink(name, "/entry/data/data")
    return folder / "scan_master.h5", stack


def test_dectris_master_with_compressed_data_files(tmp_path, scan, model_file, capsys):
    """A DECTRIS (ARINA) master file: the frames of its two LZ4-compressed data files are read as one stack
    (said), the camera length gives the calibration with the beam energy, and the vectors equal those of
    the same counts in a plain .npy. A missing data file is a one-line error."""
    from fourdcrystal.geometry import electron_wavelength_A

    cube, _ = scan
    pixel_m = 75e-6
    distance_m = pixel_m / (DQ * electron_wavelength_A(300e3))  # one pixel is DQ Å⁻¹ at 300 kV
    master, stack = _dectris_master(tmp_path, cube, distance_m=distance_m, pixel_m=pixel_m)
    capsys.readouterr()
    df, out = _vectors(tmp_path, "d", master, model_file, "--scan-shape", "2x3")
    said = capsys.readouterr().out
    assert "DECTRIS master: 2 data files, 6 frames" in said and "mrad per px at 300000 eV" in said
    ref, _ = _vectors(tmp_path, "r", _npy(tmp_path / "r.npy", stack.astype(np.float32).reshape(cube.shape)),
                      model_file, "--q-pixel-size", DQ)
    assert len(ref) > 0
    _same(df, ref)
    (tmp_path / "scan_data_000002.h5").unlink()
    _bad(tmp_path, ["predict", master, "--scan-shape", "2x3", "--model", model_file], capsys,
         "scan_data_000002.h5")


@pytest.mark.parametrize("factor", [2.0, 4.0])
def test_disks_larger_than_the_network_knows_are_shown_at_its_size(tmp_path, scan, reference, model_file, factor,
                                                                   capsys):
    """The same scan calibrated ``factor`` × coarser: its disks (3 px, 0.15 Å⁻¹ → 0.3 / 0.6 Å⁻¹, 9.6 / 19 model
    px) are beyond any the network was trained with (6.5 px), where it put 5–15 % of its vectors on a
    reflection. Shown at ``MAX_DISK_MODEL_PX`` they are found where the calibrated scan's are (detector px), in
    the true Å⁻¹, without q_z, and the output says so."""
    from fourdcrystal.inference.model_input import MAX_DISK_MODEL_PX

    capsys.readouterr()
    df, out = _vectors(tmp_path, "big", tmp_path / "ref.npy", model_file, "--probe", tmp_path / "probe.npy",
                       "--q-pixel-size", DQ * factor)
    assert len(df) == len(reference)
    d = np.hypot(df.qx_px.to_numpy()[:, None] - reference.qx_px.to_numpy()[None],
                 df.qy_px.to_numpy()[:, None] - reference.qy_px.to_numpy()[None])
    assert d.min(axis=1).max() < 0.1
    np.testing.assert_allclose(df.qx, reference.qx * factor, atol=0.1 * DQ * factor)
    assert df.qz.isna().all() and reference.qz.notna().all()
    assert "were shown to it at" in capsys.readouterr().out
    view = json.loads((out / "summary.json").read_text())["network_view"]
    assert view["shown_at_model_px"] == MAX_DISK_MODEL_PX and view["disk_radius_model_px"] > 9


# --- bad input: one line naming the fix, exit 2, nothing written ----------------------------------------
def test_bad_ambiguous_arrays_listed(tmp_path, scan, model_file, capsys):
    cube, _ = scan
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a/cube"] = cube
        f["b/dark"] = cube[:1]
    _bad(tmp_path, ["predict", tmp_path / "two.h5", "--q-pixel-size", DQ, "--model", model_file], capsys,
         "a/cube (2, 3, 72, 72), b/dark (1, 3, 72, 72)")


def test_bad_dataset_too_small_patterns(tmp_path, scan, model_file, capsys):
    """--dataset pointing at a (Rx, Ry, 1, 27) side array: one line, no torch traceback."""
    cube, _ = scan
    with h5py.File(tmp_path / "m.h5", "w") as f:
        f["data"] = cube
        f["side"] = np.zeros((2, 3, 1, 27))
    _bad(tmp_path, ["predict", tmp_path / "m.h5", "--dataset", "side", "--q-pixel-size", DQ, "--model", model_file],
         capsys, "too small")
    _bad(tmp_path, ["predict", tmp_path / "m.h5", "--dataset", "nothere", "--q-pixel-size", DQ, "--model",
                    model_file], capsys, "no array 'nothere'")


def test_bad_model_scale_too_coarse(tmp_path, scan, model_file, capsys):
    """A --q-pixel-size so small that the model's pixel covers most of the pattern."""
    cube, _ = scan
    np.save(tmp_path / "s.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "s.npy", "--q-pixel-size", 1e-4, "--model", model_file], capsys,
         "too small for the model")


@pytest.mark.parametrize("shape_arg,needle", [("2x2", "does not hold the 6 patterns"), ("2by3", "not of the form"),
                                              (None, "RX·RY = 6")])
def test_bad_scan_shape(tmp_path, scan, model_file, capsys, shape_arg, needle):
    cube, _ = scan
    np.save(tmp_path / "stack.npy", cube.reshape(-1, *cube.shape[2:]))
    shape = ["--scan-shape", shape_arg] if shape_arg else []
    _bad(tmp_path, ["predict", tmp_path / "stack.npy", *shape, "--q-pixel-size", DQ, "--model", model_file], capsys,
         needle)


def test_the_semiangle_calibrates_a_detector_without_calibration(tmp_path, scan, reference, model_file, capsys):
    """No calibration anywhere, but the probe's convergence semi-angle and the beam energy: the bright-field disk's
    radius (3 px here) spans α / λ, which gives Å⁻¹ per px within 2 % and the vectors of the calibrated run, in
    the input's pixels within 0.01 px. A stated calibration 10 × off (1/nm given as 1/Å) is named in a note;
    --semiangle-mrad without the energy, or over a disk too small to measure, is one line, exit 2."""
    from fourdcrystal.geometry import electron_wavelength_A
    from test_predict import R_DISK

    cube, _ = scan
    alpha_mrad = R_DISK * DQ * electron_wavelength_A(300e3) * 1e3
    np.save(tmp_path / "plain.npy", cube)
    df, out = _vectors(tmp_path, "alpha", tmp_path / "plain.npy", model_file, "--probe", tmp_path / "probe.npy",
                       "--semiangle-mrad", alpha_mrad, "--energy", 300e3)
    q = json.loads((out / "summary.json").read_text())["q_pixel_size_invA"]
    assert q == pytest.approx(DQ, rel=0.02)
    assert len(df) == len(reference)
    assert np.abs(df[["qx_px", "qy_px"]].to_numpy() - reference[["qx_px", "qy_px"]].to_numpy()).max() < 0.01
    capsys.readouterr()
    _vectors(tmp_path, "off", tmp_path / "plain.npy", model_file, "--probe", tmp_path / "probe.npy",
             "--q-pixel-size", DQ * 10, "--semiangle-mrad", alpha_mrad, "--energy", 300e3)
    assert "× the calibration used" in capsys.readouterr().out
    _bad(tmp_path, ["predict", tmp_path / "plain.npy", "--semiangle-mrad", alpha_mrad, "--model", model_file],
         capsys, "pass --energy")
    i, j = np.indices(cube.shape[2:])
    tiny = 100.0 / (1 + np.exp((np.hypot(i - 36.3, j - 35.6) - 1.0) / 0.3))  # a beam of 1 px: too small to measure
    np.save(tmp_path / "tiny.npy", np.broadcast_to(tiny, (2, 2) + tiny.shape).astype(np.float32))
    _bad(tmp_path, ["predict", tmp_path / "tiny.npy", "--semiangle-mrad", 0.5, "--energy", 300e3, "--model",
                    model_file], capsys, "too small to calibrate from")


def test_a_files_convergence_angle_calibrates_or_checks(tmp_path, scan, reference, model_file, capsys):
    """A HyperSpy file stating the beam energy and the convergence angle (Acquisition_instrument.TEM) but no detector
    calibration is calibrated from its bright-field disk, as with --semiangle-mrad; one whose detector axes say
    1/Å where they mean 1/nm (10 × off) is run as stated, with a note naming the disagreement."""
    from fourdcrystal.geometry import electron_wavelength_A
    from test_predict import R_DISK

    cube, _ = scan
    tem = {"beam_energy": 300.0, "convergence_angle": R_DISK * DQ * electron_wavelength_A(300e3) * 1e3}
    _hspy(tmp_path / "uncal.hspy", cube, 1.0, "px", tem)
    df, out = _vectors(tmp_path, "uncal", tmp_path / "uncal.hspy", model_file, "--probe", tmp_path / "probe.npy")
    assert json.loads((out / "summary.json").read_text())["q_pixel_size_invA"] == pytest.approx(DQ, rel=0.02)
    assert np.abs(df[["qx_px", "qy_px"]].to_numpy() - reference[["qx_px", "qy_px"]].to_numpy()).max() < 0.01
    capsys.readouterr()
    _hspy(tmp_path / "wrong.hspy", cube, DQ * 10, "1/Å", tem)
    _vectors(tmp_path, "wrong", tmp_path / "wrong.hspy", model_file, "--probe", tmp_path / "probe.npy")
    assert "× the calibration used" in capsys.readouterr().out


def test_bad_mrad_without_energy(tmp_path, scan, model_file, capsys):
    cube, _ = scan
    with h5py.File(tmp_path / "c.h5", "w") as f:  # a py4DSTEM-style calibration in mrad, no energy
        f["root/cube"] = cube
        f["root/metadatabundle/calibration/Q_pixel_size"] = 0.2
        f["root/metadatabundle/calibration/Q_pixel_units"] = "mrad"
    _bad(tmp_path, ["predict", tmp_path / "c.h5", "--model", model_file], capsys, "pass --energy")


def test_flat_scan_cannot_make_a_probe(tmp_path, model_file, capsys):
    np.save(tmp_path / "dark.npy", np.zeros((2, 2, 32, 32), np.float32))
    _bad(tmp_path, ["predict", tmp_path / "dark.npy", "--q-pixel-size", DQ, "--model", model_file], capsys,
         "no direct beam")


def test_a_scan_of_a_diffuse_glow_without_beam_cannot_make_a_probe(tmp_path, model_file, capsys):
    """A detector read without beam (counted electrons of a diffuse background, a · exp(-r / 12 px) over a
    constant, as the augmentation draws it) holds no aperture's disk: without a vacuum probe, `predict` stops
    with one line, exit 2, nothing written. Taken for a 10-50 px disk, the glow's centre was reported as the
    direct beam, off the origin: 0.19-1.75 false vectors per pattern in 28 of 72 such scans
    (benchmarks/RESULTS.md, "A scan without a beam, refused")."""
    Q, rng = 96, np.random.default_rng(11)
    i, j = np.indices((Q, Q))
    glow = 0.02 + 3.0 * np.exp(-np.hypot(i - 47.5, j - 48.2) / 12.0)  # electrons per pixel
    np.save(tmp_path / "beamless.npy", rng.poisson(np.broadcast_to(glow, (2, 2, Q, Q))).astype(np.float32))
    _bad(tmp_path, ["predict", tmp_path / "beamless.npy", "--q-pixel-size", DQ, "--model", model_file], capsys,
         "diffuse glow")


def test_a_one_pixel_beam_on_a_bright_halo_is_no_glow():
    """A beam of one pixel on a diffuse halo (MgO [001] at 60 kV, 0.5 mrad, 100 nm in bench_accuracy) has an
    edge as wide as the halo's fall, but a radius of a pixel: it is a beam, and makes a probe."""
    from fourdcrystal.inference import probe_synth
    from fourdcrystal.inference.datacube_io import Cube

    Q = 128
    i, j = np.indices((Q, Q))
    p = 0.4 * np.exp(-np.hypot(i - 64, j - 63) / 25.0)
    p[64, 63] = 1.0
    disk = probe_synth.measure_disk(p)
    assert disk["edge_px"] > probe_synth.SOFT_EDGE_PX  # the halo widens the edge ...
    _, info = probe_synth.probe_from_scan(Cube(np.broadcast_to(p, (2, 2, Q, Q)).astype(np.float32), "halo"))
    assert info["radius_px"] < 1.5 and info["center_px"] == pytest.approx((64.0, 63.0), abs=0.2)  # ... not its size


def test_a_flat_probe_stops_predict(tmp_path, scan, model_file, capsys):
    """A flat image passed as the probe (a gain reference) stops with one line, exit 2, nothing written; on a
    GaN scan it gave 85 vectors per pattern, 83 of them on no reflection (benchmarks/RESULTS.md, "A vacuum
    probe that does not match the scan")."""
    cube, probe = scan
    np.save(tmp_path / "s.npy", cube)
    np.save(tmp_path / "flat.npy", np.ones_like(probe))
    _bad(tmp_path, ["predict", tmp_path / "s.npy", "--probe", tmp_path / "flat.npy", "--q-pixel-size", DQ,
                    "--model", model_file], capsys, "holds no bright-field disk")


# --- start-up: what a call imports (benchmarks/RESULTS.md has the times) ------------------------------
_IMPORTS = ("import sys\nfrom fourdcrystal import cli\ntry:\n    rc = cli.main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nprint(sorted(m for m in ('torch', 'py4DSTEM', 'pandas', 'matplotlib', 'scipy', 'rsciio')"
            " if m in sys.modules))\nsys.exit(rc)\n")


def _heavy_imports(*argv):
    import subprocess
    import sys

    from conftest import ROOT

    r = subprocess.run([sys.executable, "-c", _IMPORTS, *map(str, argv)], capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def test_help_imports_nothing_heavy_and_predict_only_torch(tmp_path, scan):
    cube, probe = scan
    np.save(tmp_path / "s.npy", cube)
    np.save(tmp_path / "p.npy", probe)
    assert _heavy_imports("--help") == "[]"
    assert _heavy_imports("predict", tmp_path / "s.npy", "--probe", tmp_path / "p.npy", "--q-pixel-size", DQ,
                          "--out", tmp_path / "o", "--quiet") == "['torch']"


def test_nan_and_inf_pixels_are_read_as_dead_ones(tmp_path, scan, capsys):
    """A file with masked pixels (a NaN detector row, an Inf pixel, as flat-field corrections and masked gaps
    write them) gives the vectors of the same scan with those pixels at 0, and says how many it read so;
    before, one NaN pixel made every vector of its pattern vanish, the beam's too. A NaN in the probe is
    read as 0 as well."""
    cube, probe = scan
    masked = cube.copy()
    masked[:, :, 3, :] = np.nan
    masked[:, :, 40, 7] = np.inf
    clean = np.where(np.isfinite(masked), masked, 0).astype(np.float32)
    nan_probe = probe.copy()
    nan_probe[0, :] = np.nan
    for name, data, pr in (("clean", clean, probe), ("masked", masked, nan_probe)):
        np.save(tmp_path / f"{name}.npy", data)
        np.save(tmp_path / f"{name}_probe.npy", pr)
        assert _run(["predict", tmp_path / f"{name}.npy", "--probe", tmp_path / f"{name}_probe.npy", "--out",
                     tmp_path / name, "--q-pixel-size", DQ, "--quiet"]) == 0
    n_bad = int((~np.isfinite(masked)).sum())
    assert f"note: {n_bad} pixels of the scan were NaN or ±Inf" in capsys.readouterr().out
    assert json.loads((tmp_path / "masked" / "summary.json").read_text())["nonfinite_pixels_read_as_0"] == n_bad
    a, b = (pd.read_parquet(tmp_path / name / "bragg_vectors.parquet") for name in ("masked", "clean"))
    assert len(a) > 6
    pd.testing.assert_frame_equal(a, b)


def test_the_console_entry_ends_without_teardown_but_with_every_output_and_exit_code(tmp_path, scan):
    """``cli.entry`` (the console script, ``python -m fourdcrystal.cli``) ends the process by ``os._exit``
    after ``main``: what predict printed reaches a pipe, its outputs are whole and equal to an in-process
    call's (to float64 rounding), and a bad input still exits 2 with its one line on stderr."""
    import subprocess
    import sys

    from conftest import ROOT

    cube, probe = scan
    np.save(tmp_path / "s.npy", cube)
    np.save(tmp_path / "p.npy", probe)
    argv = ["predict", str(tmp_path / "s.npy"), "--probe", str(tmp_path / "p.npy"), "--q-pixel-size", str(DQ)]
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", *argv, "--out", str(tmp_path / "fresh")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "Bragg vectors from 6 patterns" in r.stdout
    assert _run([*argv, "--out", tmp_path / "here", "--quiet"]) == 0
    # equal to float64 rounding: the lattice placement's least squares (BLAS products, LAPACK solve) may round
    # a position's last bit otherwise in a process whose arrays lie at other addresses (3.6e-15 px measured)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "fresh" / "bragg_vectors.parquet"),
                                  pd.read_parquet(tmp_path / "here" / "bragg_vectors.parquet"), check_exact=False,
                                  rtol=1e-12, atol=1e-9)
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == sorted(p.name for p in (tmp_path / "here").iterdir())
    bad = subprocess.run([sys.executable, "-m", "fourdcrystal.cli", "predict", str(tmp_path / "missing.npy"),
                          "--out", str(tmp_path / "never")], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("n", [2, 3])
def test_binned_reads_sum_whole_blocks_of_scan_positions(tmp_path, n):
    """``Cube.bin_scan``: each pattern is the sum of its n × n recorded positions, rows and columns beyond
    a whole bin left out, for runs of patterns that cross binned rows; a 3-D stack with its scan shape too."""
    from fourdcrystal.inference.datacube_io import open_datacube

    a = np.random.default_rng(2).integers(0, 50, (7, 8, 16, 18)).astype(np.uint16)
    np.save(tmp_path / "c.npy", a)
    np.save(tmp_path / "s.npy", a.reshape(56, 16, 18))
    bx, by = 7 // n, 8 // n
    want = a[:bx * n, :by * n].astype(np.float64).reshape(bx, n, by, n, 16, 18).sum(axis=(1, 3)).reshape(-1, 16, 18)
    for c in (open_datacube(tmp_path / "c.npy"), open_datacube(tmp_path / "s.npy", scan_shape=(7, 8))):
        c.bin_scan(n)
        assert c.shape == (bx, by, 16, 18) and c.recorded_shape == (7, 8, 16, 18)
        for s, e in [(0, bx * by), (1, bx * by - 1), (by - 1, by + 1)]:
            np.testing.assert_array_equal(c.read(s, e), want[s:e].astype(np.float32))
        np.testing.assert_array_equal(c.region(slice(1, 2), slice(0, 2)), want[by:by + 2].astype(np.float32))


def test_bin_scan_gives_the_vectors_of_the_summed_scan(tmp_path, model_file):
    """`predict --bin-scan 2` on a 4×6 scan of counts = `predict` on the 2×3 scan of their 2×2 sums
    (integer counts: both sums exact), with the binning said in summary.json and index.html."""
    cube, probe, _ = make_scan(4, 6)
    counts = np.rint(cube).astype(np.float32)
    np.save(tmp_path / "probe.npy", probe)
    summed = counts.reshape(2, 2, 3, 2, *counts.shape[2:]).sum(axis=(1, 3))
    args = ("--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    ref, _ = _vectors(tmp_path, "summed", _npy(tmp_path / "summed.npy", summed), model_file, *args)
    df, out = _vectors(tmp_path, "binned", _npy(tmp_path / "scan.npy", counts), model_file, *args, "--bin-scan", "2")
    assert len(ref) > 0 and set(zip(df.rx, df.ry)) <= {(i, j) for i in range(2) for j in range(3)}
    pd.testing.assert_frame_equal(df, ref)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scan_bin"] == 2 and summary["scan_shape"] == [2, 3]
    assert "the sum of 2×2 scan positions" in (out / "index.html").read_text()


@pytest.mark.parametrize("n", ["0", "3"])
def test_bad_bin_scan(tmp_path, scan, model_file, capsys, n):
    cube, _ = scan
    np.save(tmp_path / "s.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "s.npy", "--bin-scan", n, "--q-pixel-size", DQ, "--model", model_file],
         capsys, "--bin-scan")


def test_a_bad_pixel_mask_file_fills_those_pixels(tmp_path, scan, reference, model_file, capsys):
    """`--bad-pixels MASK`: a dead two-column band across every pattern (a gap written as 0) and masked by the
    user's file is read as its neighbours' mean, so the vectors are those of the intact scan; summary.json and
    the printed note count the masked pixels. A mask of another shape stops with one line, exit 2."""
    cube, probe = scan
    dead = cube.copy()
    dead[..., :, 20:22] = 0.0
    mask = np.zeros(cube.shape[2:], np.uint8)
    mask[:, 20:22] = 1
    np.save(tmp_path / "dead.npy", dead)
    np.save(tmp_path / "mask.npy", mask)
    df, out = _vectors(tmp_path, "masked", tmp_path / "dead.npy", model_file, "--probe", tmp_path / "probe.npy",
                       "--q-pixel-size", DQ, "--bad-pixels", tmp_path / "mask.npy")
    bad = json.loads((out / "summary.json").read_text())["bad_pixels"]
    assert bad["n"] == 2 * cube.shape[2] and bad["from the given mask"] == 2 * cube.shape[2], bad
    assert f"note: {2 * cube.shape[2]} (" in capsys.readouterr().out
    assert len(df) == len(reference)
    assert np.abs(df[["qx_px", "qy_px"]].to_numpy() - reference[["qx_px", "qy_px"]].to_numpy()).max() < 0.1
    np.save(tmp_path / "small_mask.npy", mask[:-1])
    _bad(tmp_path, ["predict", tmp_path / "dead.npy", "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ,
                    "--bad-pixels", tmp_path / "small_mask.npy"], capsys, "bad-pixel mask")


# --- outputs that must not be replaced, values argparse took, files that are not arrays (2026-12-05) ---------------
def test_an_output_folder_that_holds_the_data_or_other_files_is_refused_and_kept(tmp_path, scan, capsys):
    """`--out` naming the data's own folder, a folder of other files, a file or the current folder stops before
    anything is read, and every file stays (the output folder is replaced whole: it deleted the data once)."""
    cube, _ = scan
    data = tmp_path / "session"
    data.mkdir()
    np.save(data / "scan.npy", cube)
    (data / "notes.txt").write_text("keep me")
    for out, needle in ((data, "holds the input"), (tmp_path / "session" / "scan.npy", "is a file")):
        rc = _run(["predict", data / "scan.npy", "--q-pixel-size", DQ, "--out", out, "--quiet"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and needle in err and "fix:" in err, err
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me too")
    rc = _run(["predict", data / "scan.npy", "--q-pixel-size", DQ, "--out", other, "--quiet"])
    assert rc == 2 and "already holds 1 other file(s) (e.g. thesis.tex)" in capsys.readouterr().err
    assert (data / "scan.npy").is_file() and (data / "notes.txt").read_text() == "keep me"
    assert (other / "thesis.tex").read_text() == "keep me too"


def test_an_earlier_output_is_replaced_and_strain_keeps_its_input_folder(tmp_path, scan, capsys):
    """Running `predict` again into its own earlier output replaces it; `strain --out` naming `predict`'s folder (its
    input) is refused."""
    from fourdcrystal import cli

    cube, probe = scan
    np.save(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    args = ["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ, "--out",
            tmp_path / "v", "--quiet"]
    assert _run(args) == 0 and _run(args) == 0
    capsys.readouterr()
    assert cli.main(["strain", str(tmp_path / "v"), "--out", str(tmp_path / "v")]) == 2
    assert "holds the input" in capsys.readouterr().err and (tmp_path / "v" / "bragg_vectors.parquet").is_file()


@pytest.mark.parametrize("flag, value, needle", [
    ("--q-pixel-size", "inf", "not a finite number > 0"), ("--q-pixel-size", "1e6", "<= 1"),
    ("--q-pixel-size", "abc", "is not a number"), ("--energy", "200", ">= 1000"), ("--energy", "-5", ">= 1000"),
    ("--min-spacing", "nan", "not a finite number"), ("--bin-scan", "1.5", "invalid int value")])
def test_values_argparse_refuses_are_one_line(tmp_path, scan, capsys, flag, value, needle):
    cube, _ = scan
    np.save(tmp_path / "scan.npy", cube)
    extra = [] if flag == "--q-pixel-size" else ["--q-pixel-size", DQ]
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", *extra, flag, value], capsys, needle)


def test_empty_and_headerless_npy_files_are_named(tmp_path, capsys):
    (tmp_path / "empty.npy").write_bytes(b"")
    _bad(tmp_path, ["predict", tmp_path / "empty.npy", "--q-pixel-size", DQ], capsys, "is empty")
    (tmp_path / "text.npy").write_text("rx ry qx qy\n0 0 1 1\n")
    _bad(tmp_path, ["predict", tmp_path / "text.npy", "--q-pixel-size", DQ], capsys, "no NumPy header")


def test_a_scan_shape_other_than_the_stored_one_is_refused(tmp_path, scan, capsys):
    cube, _ = scan  # 2 × 3 positions
    np.save(tmp_path / "scan.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--q-pixel-size", DQ, "--scan-shape", "3x2"], capsys,
         "differs from the 2x3 scan")


@pytest.mark.parametrize("region", ["0:5,0:1", "-1:2,0:1", "1:1,0:2"])
def test_a_probe_region_outside_the_scan_is_refused(tmp_path, scan, capsys, region):
    cube, _ = scan
    np.save(tmp_path / "scan.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--q-pixel-size", DQ, f"--probe-from-region={region}"],
         capsys, "is not inside the scan (0:2,0:3)")


def test_a_stuck_hot_pixel_brighter_than_the_beam_is_left_out_of_the_probe(tmp_path, scan):
    """A pixel at the detector's ceiling in every frame outshines the beam's pixels: the probe is made from the beam
    found without it (the scan was refused as dark frames), the pixel is read as its neighbours, and the vectors
    are those of the scan without it."""
    cube, _ = scan
    counts = np.round(cube / cube.max() * 3000).astype(np.uint16)  # whole counts, the beam's core at 3,000
    np.save(tmp_path / "plain.npy", counts)
    stuck = counts.copy()
    stuck[:, :, 20, 60] = 65535
    np.save(tmp_path / "stuck.npy", stuck)
    runs = {}
    for name in ("plain", "stuck"):
        assert _run(["predict", tmp_path / f"{name}.npy", "--q-pixel-size", DQ, "--out", tmp_path / name,
                     "--quiet"]) == 0
        runs[name] = pd.read_parquet(tmp_path / name / "bragg_vectors.parquet")
    summary = json.loads((tmp_path / "stuck" / "summary.json").read_text())
    assert "hot pixel (20, 60) left out" in summary["probe"]["path"] and summary["bad_pixels"]["hot"] == 1
    assert summary["saturation"] is None  # the stuck pixel at the ceiling is no saturated beam
    pd.testing.assert_frame_equal(runs["plain"][["rx", "ry", "qx", "qy"]], runs["stuck"][["rx", "ry", "qx", "qy"]],
                                  atol=0.01 * DQ)


def test_a_terminated_run_leaves_no_half_written_folder(tmp_path):
    """SIGTERM to the run's process group (as `timeout` and SLURM at its time limit send it) while the vectors are
    being written, its two worker processes included: the run ends with one line and exit 143 and removes its
    temporary folder (it had left `.out.tmp-*` behind)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    cube, probe, _ = make_scan(2, 3)
    big = np.tile(cube, (12, 8, 1, 1))  # 24 × 24 positions: seconds of detection
    np.save(tmp_path / "scan.npy", big)
    np.save(tmp_path / "probe.npy", probe)
    proc = subprocess.Popen([sys.executable, "-m", "fourdcrystal.cli", "predict", str(tmp_path / "scan.npy"), "--probe",
                             str(tmp_path / "probe.npy"), "--q-pixel-size", str(DQ), "--out", str(tmp_path / "out"),
                             "--quiet", "--workers", "2"], stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.tmp-*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its output folder was begun: make the scan larger"
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.strip().splitlines()[-1] == "fourdcrystal: terminated; nothing was written"
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


def test_a_worker_stopped_before_its_own_handler_ends_silently():
    """A worker forked with the CLI's SIGTERM handler still installed (a pool's process before its initializer ran):
    the signal ends it with 143 and prints nothing — the line and the removal of the output are the main
    process's (two workers' lines had run into the main one's: "…nothing was writtenfourdcrystal: …")."""
    import subprocess
    import sys

    script = (
        "import os, signal, sys\n"
        "from fourdcrystal import cli\n"
        "cli._HANDLER_PID = os.getpid()\n"
        "signal.signal(signal.SIGTERM, cli._stopped)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    os._exit(0)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() == "143" and run.stderr == "", (run.stdout, run.stderr)


def test_no_disk_is_reported_twice(tmp_path):
    """Spot patterns (a 5 × 5 square lattice of 4 px disks 20 px apart, Poisson counts, 37,000 e⁻) read as int16
    with the dark level over-subtracted by 3 counts: two proposals of one disk had climbed to one correlation
    maximum and been written twice (70 of 972 rows); each pattern's vectors now stand at distinct positions."""
    rng = np.random.default_rng(0)
    x, y = np.indices((128, 128))
    cube = np.zeros((3, 3, 128, 128))
    for rx, ry in np.ndindex(3, 3):
        img = np.zeros((128, 128))
        for i, j in np.ndindex(5, 5):
            amp = 1.0 if (i, j) == (2, 2) else 0.15 / ((i - 2) ** 2 + (j - 2) ** 2)
            d = np.hypot(x - 64 - 20 * (i - 2) * (1 + 0.005 * rx), y - 64 - 20 * (j - 2))
            img += amp * np.clip(4.5 - d, 0, 1)
        cube[rx, ry] = rng.poisson(img / img.sum() * 1e5)
    np.save(tmp_path / "scan.npy", (cube - 3).astype(np.int16))
    assert _run(["predict", tmp_path / "scan.npy", "--q-pixel-size", 0.02, "--out", tmp_path / "o", "--quiet"]) == 0
    v = pd.read_parquet(tmp_path / "o" / "bragg_vectors.parquet")
    assert len(v) >= 9 * 25 * 0.9 and not v.duplicated(["rx", "ry", "qx", "qy"]).any()


def test_the_page_says_what_ran_and_what_was_read_as_zero(tmp_path, scan):
    """index.html of `--baseline classical` lists no network settings (it listed the model's threshold and
    precision), and a scan's NaN pixels are on the page as in summary.json."""
    cube, probe = scan
    holed = cube.copy()
    holed[:, :, 3, :5] = np.nan
    np.save(tmp_path / "scan.npy", holed)
    np.save(tmp_path / "probe.npy", probe)
    base = ["predict", tmp_path / "scan.npy", "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ, "--quiet"]
    assert _run(base + ["--out", tmp_path / "c", "--baseline", "classical"]) == 0
    page = (tmp_path / "c" / "index.html").read_text()
    assert "not run (--baseline classical" in page and "peak threshold" not in page
    assert "NaN or ±Inf pixels (read as 0)" in page
    assert _run(base + ["--out", tmp_path / "n"]) == 0
    assert "peak threshold" in (tmp_path / "n" / "index.html").read_text()


def test_a_scan_with_its_background_subtracted_is_told_so(tmp_path, scan, model_file, capsys, monkeypatch):
    """A user who subtracted a smooth background from the scan learns that the checks count electrons against the
    background the patterns no longer show (evidence.subtracted_floor; summary.json, the note, index.html), and the
    floor is added back before detection: the vectors of the scan as recorded, which gets no such note. (The six
    noise-free synthetic patterns of two grains read as a few thousand electrons each, and their sum's size factor,
    ``detectors.MeasuredPattern.measure_edge_scale``, moves by 1 % with the floor's estimate: the batch's lattice is
    left out here; bench_accuracy's ``--subtract-background`` measures it on simulated scans.)"""
    from fourdcrystal.inference import detectors

    monkeypatch.setattr(detectors, "BATCH_LATTICE_MIN_E", np.inf)
    cube, probe = scan
    i, j = np.indices(cube.shape[2:])
    halo = 20.0 * np.exp(-np.hypot(i - cube.shape[2] / 2, j - cube.shape[3] / 2) / 20.0)
    np.save(tmp_path / "subtracted.npy", (cube - halo).astype(np.float32))
    np.save(tmp_path / "recorded.npy", cube)
    np.save(tmp_path / "probe.npy", probe)
    said = {}
    for name in ("subtracted", "recorded"):
        capsys.readouterr()
        assert _run(["predict", tmp_path / f"{name}.npy", "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ,
                     "--out", tmp_path / name, "--model", model_file, "--quiet"]) == 0
        said[name] = (json.loads((tmp_path / name / "summary.json").read_text())["subtracted_floor"],
                      capsys.readouterr().out, (tmp_path / name / "index.html").read_text())
    floor, out, page = said["subtracted"]
    assert floor["patterns"] == floor["of_sampled"] == 6
    assert "a background seems subtracted" in out and "a background seems subtracted" in page
    floor, out, page = said["recorded"]
    assert floor["patterns"] == 0 and "background seems" not in out + page
    subtracted, recorded = (pd.read_parquet(tmp_path / name / "bragg_vectors.parquet") for name in said)
    assert len(subtracted) == len(recorded) > 6
    # the same vectors, each pattern's in any order (a pattern on its batch's lattice lists them by (h, k))
    for (rx, ry), mine in subtracted.groupby(["rx", "ry"]):
        theirs = recorded[(recorded["rx"] == rx) & (recorded["ry"] == ry)][["qx", "qy"]].to_numpy()
        q = mine[["qx", "qy"]].to_numpy()
        assert len(q) == len(theirs) and np.hypot(*(q[:, None] - theirs[None]).T).min(axis=0).max() < 0.1 * DQ



def _counted(cube, electrons, seed):
    """The scan as a counting detector records it at ``electrons`` per pattern: whole counts, most pixels zero."""
    rng = np.random.default_rng(seed)
    return rng.poisson(cube * electrons / cube.sum(axis=(2, 3), keepdims=True)).astype(np.float32)


def test_a_counting_detectors_dark_level_is_found_and_subtracted(tmp_path, scan, model_file, capsys):
    """A counting detector that left its offset in (7 counts on every pixel, uint16), at 2e3 e⁻ per pattern: `predict`
    finds it (most pixels read it exactly and none lower: dark_level.exact_dark_level), says so and gives the vectors
    of the scan without it. Told there is none (--dark-level 0) it keeps the beam and little else, and its note names
    the floor no pixel reads below."""
    cube, probe = scan
    counts = _counted(cube, 2e3, 5)
    np.save(tmp_path / "probe.npy", probe)
    args = ("--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    ref, _ = _vectors(tmp_path, "ref", _npy(tmp_path / "ref.npy", counts), model_file, *args)
    assert len(ref) > 6 * 6
    raw = _npy(tmp_path / "raw.npy", (counts + 7).astype(np.uint16))
    capsys.readouterr()
    df, out = _vectors(tmp_path, "found", raw, model_file, *args)
    _same(df, ref)
    said = capsys.readouterr().out
    assert "a dark level of 7 per pixel was subtracted" in said and "a dark level of 7" in (out / "index.html").read_text()
    assert json.loads((out / "summary.json").read_text())["dark_level"]["level"] == 7.0
    kept, out = _vectors(tmp_path, "kept", raw, model_file, *args, "--dark-level", "0")
    assert len(kept) < 2 * 6
    note = json.loads((out / "summary.json").read_text())["dark_level"]["note"]
    assert "no pixel of the sampled patterns reads below 7" in note and note in capsys.readouterr().out


def test_a_dark_level_given_is_subtracted_from_the_scan_and_from_a_probe_recorded_with_it(tmp_path, scan, model_file,
                                                                                          capsys):
    """An integrating camera's patterns as read out (20 counts per electron, 3 counts of read noise, a pedestal of 100,
    uint16) and its vacuum probe recorded with the same pedestal: with --dark-level 100 the vectors of the same
    patterns dark-subtracted (int16, the read noise below zero) beside the probe without it. Without, a note names the
    flat floor no pixel reads below (the pedestal is not found: under read noise it is not told from a dense
    background; dark_level.py)."""
    cube, probe = scan
    rng = np.random.default_rng(6)
    recorded = np.rint(_counted(cube, 2e3, 5) * 20 + rng.normal(0.0, 3.0, cube.shape))
    np.save(tmp_path / "probe.npy", np.rint(probe))  # the camera's whole counts
    np.save(tmp_path / "probe_raw.npy", np.rint(probe) + 100)
    ref, _ = _vectors(tmp_path, "ref", _npy(tmp_path / "ref.npy", recorded.astype(np.int16)), model_file,
                      "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    assert len(ref) > 6 * 6
    raw = _npy(tmp_path / "raw.npy", (recorded + 100).astype(np.uint16))
    args = ("--probe", tmp_path / "probe_raw.npy", "--q-pixel-size", DQ)
    df, out = _vectors(tmp_path, "given", raw, model_file, *args, "--dark-level", "100")
    _same(df, ref)
    assert json.loads((out / "summary.json").read_text())["dark_level"] == {"level": 100.0, "by": "given (--dark-level)"}
    capsys.readouterr()
    left, out = _vectors(tmp_path, "left", raw, model_file, *args)
    dark = json.loads((out / "summary.json").read_text())["dark_level"]
    assert dark["level"] == 0.0 and 85 < dark["floor"]["floor"] < 100 and "--dark-level" in dark["note"]
    assert dark["note"] in capsys.readouterr().out and len(left) < len(ref)


def test_read_noise_stored_clipped_at_zero_is_judged_as_read_noise(tmp_path, scan, model_file, capsys):
    """The integrating camera's dark-subtracted patterns above as its software may store them, unsigned: the read
    noise's lower half clipped to 0. Every value is then a whole count and none negative, as in counts, but the floor
    is read noise (evidence.clipped_read_noise): the vectors are those of the same patterns stored as int16 (a few
    faint ones may differ: the clipped floor's negative half is lost), and the output says how it read them (the
    summary's ``electrons``, a note, the page). Taken for counts, one electron was one count."""
    cube, probe = scan
    rng = np.random.default_rng(6)
    recorded = np.rint(_counted(cube, 2e3, 5) * 20 + rng.normal(0.0, 3.0, cube.shape))
    np.save(tmp_path / "probe.npy", np.rint(probe))
    args = ("--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    ref, out = _vectors(tmp_path, "ref", _npy(tmp_path / "ref.npy", recorded.astype(np.int16)), model_file, *args)
    electrons = json.loads((out / "summary.json").read_text())["electrons"]
    assert electrons["read_noise_from"] == "the pixels below zero" and 2.7 < electrons["read_noise"] < 3.3
    capsys.readouterr()
    df, out = _vectors(tmp_path, "clip", _npy(tmp_path / "clip.npy", np.clip(recorded, 0, None).astype(np.uint16)),
                       model_file, *args)
    key = ["rx", "ry", "qx_px", "qy_px"]
    both = ref[key].round(0).merge(df[key].round(0), how="inner")
    assert len(both) >= 0.9 * max(len(ref), len(df))
    electrons = json.loads((out / "summary.json").read_text())["electrons"]
    assert electrons["read_noise_from"] == "a floor clipped at zero" and 2.7 < electrons["read_noise"] < 3.3
    assert "read noise clipped at zero" in capsys.readouterr().out
    assert "read noise clipped at zero" in (out / "index.html").read_text()


@pytest.mark.parametrize("value, needle", [("-1", "neither auto nor a non-negative number"),
                                           ("nan", "neither auto nor a non-negative number"),
                                           ("1e6", "above what the patterns' pixels read")])
def test_bad_dark_level(tmp_path, scan, capsys, value, needle):
    cube, _ = scan
    np.save(tmp_path / "scan.npy", cube)
    _bad(tmp_path, ["predict", tmp_path / "scan.npy", "--q-pixel-size", DQ, "--dark-level", value], capsys, needle)


def test_a_vacuum_probe_recorded_with_its_dark_level_gives_it_up(tmp_path, scan, model_file, capsys):
    """A vacuum probe as the camera read it out (a pedestal of 100 counts, twice its disk's) beside a scan without one:
    its median pixel, off the disk, is subtracted (dark_level.probe_floor), the output says so, and the vectors are
    those with the clean probe. Left in, the whole detector read as the disk (its radius is taken at half the
    maximum) and the scan gave 10 vectors where it gives 126."""
    cube, probe = scan
    counts = _npy(tmp_path / "scan.npy", _counted(cube, 2e3, 5))
    np.save(tmp_path / "clean.npy", np.rint(probe))
    np.save(tmp_path / "raw.npy", np.rint(probe) + 100)
    ref, _ = _vectors(tmp_path, "clean", counts, model_file, "--probe", tmp_path / "clean.npy", "--q-pixel-size", DQ)
    capsys.readouterr()
    df, out = _vectors(tmp_path, "raw", counts, model_file, "--probe", tmp_path / "raw.npy", "--q-pixel-size", DQ)
    _same(df, ref)
    assert json.loads((out / "summary.json").read_text())["probe"]["dark_level_subtracted"] == 100.0
    assert "its dark level, 100 per pixel" in capsys.readouterr().out


def _scan_with_descan(Rx, Ry, per_rx, per_ry, seed=0, vacuum_rows=0):
    """``make_scan``'s two grains on a beam that moves by ``per_rx`` / ``per_ry`` px per scan row / column (zero at
    the scan's middle), besides their ±1.5 px of jitter; the first ``vacuum_rows`` rows vacuum (the beam alone)."""
    from test_predict import _disk, _lattice, Q
    rng = np.random.default_rng(seed)
    cube = np.zeros((Rx, Ry, Q, Q), np.float32)
    c0 = np.array([Q / 2 - 0.6, Q / 2 + 0.9])
    for rx in range(Rx):
        for ry in range(Ry):
            drift = np.array(per_rx) * (rx - (Rx - 1) / 2) + np.array(per_ry) * (ry - (Ry - 1) / 2)
            c = c0 + rng.uniform(-1.5, 1.5, 2) + drift
            dp = _disk((Q, Q), c)
            for q in _lattice(0.2 if ry < Ry // 2 else 0.9) if rx >= vacuum_rows else ():
                dp = dp + 0.3 * np.exp(-np.hypot(*q)) * _disk((Q, Q), c + q / DQ)
            cube[rx, ry] = dp * 1000.0
    return cube


@pytest.mark.parametrize("probe_given", [True, False])
def test_a_beam_that_wanders_across_the_detector_is_followed(tmp_path, scan, model_file, capsys, probe_given):
    """A scan whose beam moves 4 px per row and 3 px per column (up to 9.6 px from the middle, beyond the beam search's
    6 px): the descan plane is found from the sampled patterns (descan.fit_descan), said, and taken out, and each
    position's vectors are those of the same scan with a still beam (within 0.05 px), their detector pixels as
    recorded (the beam's move added back). Without it the far corners' beams were not found; without a vacuum probe
    the smeared median made the synthesized disk."""
    _, probe = scan
    np.save(tmp_path / "probe.npy", probe)
    extra = ("--probe", tmp_path / "probe.npy") if probe_given else ()
    still = _npy(tmp_path / "still.npy", _scan_with_descan(4, 6, (0, 0), (0, 0)))
    moving = _npy(tmp_path / "moving.npy", _scan_with_descan(4, 6, (4, 0), (0, 3)))
    ref, out = _vectors(tmp_path, "still", still, model_file, *extra, "--q-pixel-size", DQ)
    assert json.loads((out / "summary.json").read_text())["descan"] is None
    capsys.readouterr()
    df, out = _vectors(tmp_path, "moving", moving, model_file, *extra, "--q-pixel-size", DQ)
    descan = json.loads((out / "summary.json").read_text())["descan"]
    assert 9 < descan["largest_px"] < 10.5 and "moves across the detector" in capsys.readouterr().out
    for (rx, ry), mine in ref.groupby(["rx", "ry"]):
        theirs = df[(df["rx"] == rx) & (df["ry"] == ry)]
        drift = np.array([4 * (rx - 1.5), 3 * (ry - 2.5)])
        # the still scan's vectors whose disks lie on the moving scan's detector too
        x, y = mine["qx_px"] + drift[0], mine["qy_px"] + drift[1]
        inside = (x > R_DISK_MARGIN) & (x < 71 - R_DISK_MARGIN) & (y > R_DISK_MARGIN) & (y < 71 - R_DISK_MARGIN)
        a, b = mine[inside][["qx", "qy"]].to_numpy(), theirs[["qx", "qy"]].to_numpy()
        d = np.hypot(*(a[:, None] - b[None]).T).min(axis=0)
        assert len(a) >= 6 and (d < 0.05 * DQ).all(), (rx, ry, np.round(d / DQ, 3))
        # reported where the detector recorded them: the beam's pixel moved with the scan (a synthesized probe's
        # template, made from other patterns, places it within 0.1 px)
        beam_still = mine[np.hypot(mine["qx"], mine["qy"]) < 1e-9][["qx_px", "qy_px"]].to_numpy()
        beam_moving = theirs[np.hypot(theirs["qx"], theirs["qy"]) < 1e-9][["qx_px", "qy_px"]].to_numpy()
        assert np.abs(beam_moving - beam_still - drift).max() < 0.1


R_DISK_MARGIN = 5.0  # px from the detector's edge: a disk of 3 px and its edge whole on it


def test_a_vacuum_region_whose_beam_wanders_is_aligned_before_it_is_the_probe(tmp_path, model_file, capsys):
    """--probe-from-region over a vacuum row of the moving scan (the beam 3 px further per column, 15 px along it): its
    patterns are moved onto the middle one's beam before their mean is taken (descan.relative_shifts), so the probe is
    one disk, and the vectors of the crystal rows are those found with a still vacuum probe; the mean of the
    unaligned row was a smeared streak."""
    cube = _scan_with_descan(5, 6, (4, 0), (0, 3), vacuum_rows=1)
    scan = _npy(tmp_path / "scan.npy", cube)
    np.save(tmp_path / "probe.npy", cube[0, 2])  # one of the row's own vacuum patterns
    ref, _ = _vectors(tmp_path, "given", scan, model_file, "--probe", tmp_path / "probe.npy", "--q-pixel-size", DQ)
    capsys.readouterr()
    df, out = _vectors(tmp_path, "region", scan, model_file, "--probe-from-region", "0:1,0:6", "--q-pixel-size", DQ)
    assert "each moved onto the middle one's beam" in json.loads((out / "summary.json").read_text())["probe"]["path"]
    crystal = ref[ref["rx"] >= 1]
    assert len(crystal) > 4 * 6 * 6
    mine = df[df["rx"] >= 1]
    assert abs(len(mine) - len(crystal)) <= 0.02 * len(crystal)
    for (rx, ry), theirs in crystal.groupby(["rx", "ry"]):
        a = theirs[["qx", "qy"]].to_numpy()
        b = mine[(mine["rx"] == rx) & (mine["ry"] == ry)][["qx", "qy"]].to_numpy()
        d = np.hypot(*(a[:, None] - b[None]).T).min(axis=1)
        assert np.median(d) < 0.05 * DQ, (rx, ry, np.round(d / DQ, 3))
