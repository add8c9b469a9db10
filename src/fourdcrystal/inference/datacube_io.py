"""Lazy readers for 4D-STEM datacubes and vacuum-probe images, as detectors write them.

Nothing here loads a whole datacube: ``.npy`` is read by plain file reads per batch, Zarr and HDF5
are sliced on demand, and other formats go through rosettasciio with ``lazy=True`` (dask).
Layouts: the detector axes are the last two axes longer than 1; singleton axes are dropped
(a Merlin (Rx, Ry, 1, Qx, Qy) scan is 4-D); a 3-D stack of patterns (N, Qx, Qy) takes its scan shape
from the caller (``--scan-shape``) or, for an EMPAD ``.raw``, from its file name; a single pattern is a scan
of one position. Any dtype (integer, big-endian) is read as native float32.
Files holding several arrays: the one array shaped like a datacube (≥ 3 axes, the last two
detector-sized) is chosen, and the choice is said (``Cube.source``); several candidates are an error.
HDF5 external links are followed: a DECTRIS (ARINA, QUADRO, EIGER) NeXus master file links its frames
from data files beside it (``entry/data/data_000001``, …), read here as one stack of frames, with the
beam energy and, where the master states a camera length, the angle per pixel it gives; their
bitshuffle/LZ4 compression is read through ``hdf5plugin``.
Calibration: the stated (scale, units) of a detector axis and the beam energy are kept as the file
says them; ``Cube.q_pixel_size`` converts them (fourdcrystal.inference.calibration).
Scan binning (``Cube.bin_scan``, predict's ``--bin-scan``): each pattern read is the sum of n × n
neighbouring scan positions, as a low-dose strain map is made (the counts add, so the shot-noise
statistics the evidence check relies on hold); rows and columns beyond a whole bin are left out.
"""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourdcrystal.errors import UserError
from fourdcrystal.inference.calibration import invA_per_px
from fourdcrystal.inference.descan import moved_back

HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".emd", ".py4dstem"}
MIN_PATTERN_PX = 16  # fewer detector pixels per axis is no diffraction pattern (and too small for the model)


def _trimmed(shape) -> tuple[int, ...]:
    """``shape`` without trailing singleton axes: the detector axes are the last two of these."""
    s = [int(n) for n in shape]
    while len(s) > 2 and s[-1] == 1:
        s.pop()
    return tuple(s)


def looks_like(shape, ndim: int) -> bool:
    """Whether an array of ``shape`` can be a datacube (ndim 4: scan axes + 2 detector axes) or an
    image (ndim 2), its detector axes detector-sized."""
    s = _trimmed(shape)
    return len(s) >= (3 if ndim == 4 else 2) and min(s[-2:]) >= MIN_PATTERN_PX


@dataclass
class Cube:
    """A lazily read array plus what its file says about calibration.

    ``shape`` is the logical (Rx, Ry, Qx, Qy); ``array`` is the array as stored (any layout above).
    """

    array: object  # anything with .shape and numpy-style slicing
    path: str
    q_scale: float | None = None  # detector pixel size as the file states it, in q_units
    q_units: str | None = None
    energy_eV: float | None = None
    semiangle_mrad: float | None = None  # the probe's convergence semi-angle, where the file states it
    source: str = ""
    _keep: list = field(default_factory=list, repr=False)  # open file handles
    scan_shape: tuple[int, int] | None = None  # set for 3-D stacks (and a scan stored as one row of positions)
    scan_bin: int = 1  # each pattern read sums scan_bin × scan_bin recorded scan positions (bin_scan)
    nonfinite_px: int = 0  # NaN / ±Inf pixels read so far, each read as 0
    bad_pixels: object = None  # a bad_pixels.BadPixels: its pixels are read as their neighbours' mean
    dark_level: float = 0.0  # a detector's dark level left in the file, subtracted from every pixel (dark_level.py)
    descan: object = None  # a descan.Descan: every recorded pattern moved back by its whole pixels (descan.py)

    def __post_init__(self):
        raw = tuple(int(s) for s in self.array.shape)
        nd = len(_trimmed(raw))
        self.det_axes = tuple(range(max(0, nd - 2), nd))
        scan_axes = list(range(max(0, nd - 2)))
        while len(scan_axes) > 2 and any(raw[a] == 1 for a in scan_axes):  # squeeze singletons, keep 2 scan axes
            scan_axes.remove(next(a for a in scan_axes if raw[a] == 1))
        self.lead_axes = tuple(scan_axes)
        self.n_patterns = int(np.prod([raw[a] for a in scan_axes]))  # 1 for a single pattern (no scan axes)

    @property
    def recorded_shape(self) -> tuple[int, ...]:
        """(Rx, Ry, Qx, Qy) as recorded (before ``bin_scan``)."""
        raw = tuple(int(s) for s in self.array.shape)
        det = tuple(raw[a] for a in self.det_axes)
        if self.scan_shape is not None:
            return tuple(self.scan_shape) + det
        return tuple(raw[a] for a in self.lead_axes) + det

    @property
    def shape(self) -> tuple[int, ...]:
        """The logical (Rx, Ry, Qx, Qy): the recorded scan divided by ``scan_bin``."""
        rec, n = self.recorded_shape, self.scan_bin
        return (rec[0] // n, rec[1] // n) + rec[2:]

    def bin_scan(self, n: int) -> None:
        """From now on each pattern is the sum of ``n`` × ``n`` recorded scan positions."""
        rx, ry = self.recorded_shape[:2]
        if not 1 <= int(n) <= min(rx, ry):
            raise UserError(f"--bin-scan {n} does not fit the scan {rx}x{ry}",
                            f"pass a bin of 1 to {min(rx, ry)} scan positions")
        self.scan_bin = int(n)

    def _key(self, first, second=None) -> tuple:
        key = [0] * len(self.array.shape)
        for a in self.det_axes:
            key[a] = slice(None)
        for a, k in zip(self.lead_axes, (first, second) if second is not None else (first,)):
            key[a] = k
        return tuple(key)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns with flattened (logical) scan index in [start, stop) as native float32 (n, Qx, Qy);
        binned, each is the float32 sum of its ``scan_bin`` × ``scan_bin`` recorded patterns."""
        n = self.scan_bin
        if n == 1:
            return self._read_recorded(start, stop)
        Ry, Ry_rec, det = self.shape[1], self.recorded_shape[1], self.shape[2:]
        out, k = [], start
        while k < stop:  # one logical row at a time, added up from n recorded row pieces of m·n patterns
            bx, by = divmod(k, Ry)
            m = min(stop - k, Ry - by)
            acc = np.zeros((m,) + det, np.float32)
            for i in range(n):  # one piece in memory at a time: a batch of m·n patterns, not m·n²
                first = (bx * n + i) * Ry_rec + by * n
                acc += self._read_recorded(first, first + m * n).reshape((m, n) + det).sum(axis=1, dtype=np.float32)
            out.append(acc)
            k += m
        return np.concatenate(out) if out else np.zeros((0,) + det, np.float32)

    def _read_recorded(self, start: int, stop: int) -> np.ndarray:
        """Recorded patterns with flattened scan index in [start, stop), native float32 (n, Qx, Qy). A pixel
        the file holds as NaN or ±Inf (a masked detector gap, a division by a dead flat-field pixel) is read
        as 0, as a dead pixel reads, and counted (``nonfinite_px``): one such pixel made every vector of
        its pattern vanish, the beam's too. Then the detector's bad pixels (``bad_pixels``) are filled in, its
        dark level (``dark_level``) is subtracted, and the descan (``descan``) taken out."""
        x, n_bad = finite_pixels(self._read_stored(start, stop))
        self.nonfinite_px += n_bad
        x = x if self.bad_pixels is None else self.bad_pixels.repair(x)
        x = x - np.float32(self.dark_level) if self.dark_level else x
        if self.descan is None or stop <= start:
            return x
        rx, ry = np.divmod(np.arange(start, stop), self.recorded_shape[1])
        return moved_back(x, self.descan.recorded_px(rx, ry))

    def _read_stored(self, start: int, stop: int) -> np.ndarray:
        """``_read_recorded`` as the file holds them."""
        a = self.array
        det = self.recorded_shape[2:]
        if isinstance(a, np.memmap) and a.flags.c_contiguous and stop > start:
            # a C-ordered .npy: one plain read of the contiguous run. Slicing the memory map would map
            # every page read into this process, so its resident size would grow with the scan.
            per = int(np.prod(det))
            raw = np.fromfile(self.path, dtype=a.dtype, count=(stop - start) * per,
                              offset=a.offset + start * per * a.dtype.itemsize)
            return raw.reshape((stop - start,) + det).astype(np.float32, copy=False)
        if not self.lead_axes:  # a single pattern
            return np.asarray(a[self._key(None)], dtype=np.float32).reshape((-1,) + det)[start:stop]
        if len(self.lead_axes) == 1:
            return np.asarray(a[self._key(slice(start, stop))], dtype=np.float32).reshape((-1,) + det)
        Ry = int(a.shape[self.lead_axes[1]])
        out, k = [], start
        while k < stop:
            rx, ry = divmod(k, Ry)
            n = min(stop - k, Ry - ry)
            out.append(np.asarray(a[self._key(rx, slice(ry, ry + n))], dtype=np.float32).reshape((n,) + det))
            k += n
        return np.concatenate(out) if out else np.zeros((0,) + det, np.float32)

    def region(self, sx: slice, sy: slice) -> np.ndarray:
        """Patterns of scan rows ``sx`` × columns ``sy`` (logical scan), (n, Qx, Qy) float32."""
        Rx, Ry = self.shape[:2]
        ry0, ry1, _ = sy.indices(Ry)
        rows = [self.read(rx * Ry + ry0, rx * Ry + ry1) for rx in range(*sx.indices(Rx)) if ry1 > ry0]
        return np.concatenate(rows) if rows else np.zeros((0,) + self.shape[2:], np.float32)

    def q_pixel_size(self, energy_eV: float | None = None) -> float | None:
        """Å⁻¹ per pixel from the file's calibration (None: uncalibrated); ``energy_eV`` overrides the file's."""
        return invA_per_px(self.q_scale, self.q_units, energy_eV or self.energy_eV, f"{self.path}'s detector")

    def close(self) -> None:
        for h in self._keep:
            try:
                h.close()
            except Exception:  # noqa: BLE001 — closing is best effort
                pass


def _choose(path: Path, shapes: dict[str, tuple], dataset: str | None, ndim: int, preferred=()) -> tuple[str, str]:
    """The array to read from a file holding ``shapes`` (name -> shape): ``dataset`` if given, else a
    py4DSTEM/emdfile one (``preferred``), else the only array shaped like a datacube (or an image).
    Returns (name, how it was chosen)."""
    what = "datacube" if ndim == 4 else "image"
    if dataset is not None:
        name = dataset.strip("/")
        if name not in shapes:
            raise UserError(f"{path} has no array '{dataset}' (arrays: {_listing(shapes)})",
                            "pass one of these names to --dataset")
        return name, "named by --dataset"
    if len(preferred) == 1:
        return preferred[0], "py4DSTEM/emdfile"
    cands = [n for n, s in shapes.items() if looks_like(s, ndim)]
    if ndim == 2 and len(cands) > 1:  # a probe file: plain images before stacks
        cands = [n for n in cands if len(_trimmed(shapes[n])) == 2] or cands
    if len(cands) == 1:
        return cands[0], f"the only array shaped like a {what}"
    if not cands:
        raise UserError(f"{path} holds no array shaped like a {what} (≥ {MIN_PATTERN_PX} px detector axes; "
                        f"arrays of two axes or more: {_listing(shapes)})", "name the array with --dataset")
    raise UserError(f"{path} holds {len(cands)} arrays shaped like a {what}: "
                    f"{_listing({n: shapes[n] for n in cands})}", "name one with --dataset")


def _listing(shapes: dict[str, tuple], at_most: int = 8) -> str:
    items = [f"{n} {tuple(int(x) for x in s)}" for n, s in list(shapes.items())[:at_most]]
    return ", ".join(items) + (f" and {len(shapes) - at_most} more" if len(shapes) > at_most else "") or "none"


NPY_MAGIC = b"\x93NUMPY"


def _open_npy(path: Path) -> Cube:
    with open(path, "rb") as f:  # numpy reads any file without its header as a pickle, and an empty one as EOFError
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        what = "is empty" if not head else "has no NumPy header (not a .npy file)"
        raise UserError(f"{path} {what}", "save the array with numpy.save, or check the file was copied whole")
    try:
        arr = np.load(path, mmap_mode="r")
    except (ValueError, EOFError, OSError) as exc:
        raise UserError(f"{path} is not a readable .npy array ({exc or type(exc).__name__})",
                        "save it with numpy.save, or check the file was copied whole") from None
    return Cube(arr, str(path), source="npy")


def _open_zarr(path: Path, dataset: str | None, ndim: int) -> Cube:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        arr, attrs, how = node, dict(node.attrs), "zarr"
    else:
        arrays = {k: v for k, v in node.members(max_depth=None) if isinstance(v, zarr.Array)}
        name, why = _choose(path, {k: v.shape for k, v in arrays.items()}, dataset, ndim)
        arr, attrs, how = arrays[name], {**dict(node.attrs), **dict(arrays[name].attrs)}, f"zarr:{name} ({why})"
    q = attrs.get("q_pixel_size_invA")
    return Cube(arr, str(path), q_scale=q, q_units="1/A" if q is not None else attrs.get("q_units"),
                energy_eV=attrs.get("energy_eV"), source=how)


class _Frames:
    """An (N, Qx, Qy) array-like read in contiguous runs of frames along its first axis: a subclass gives
    ``shape``, ``dtype``, ``ndim`` and ``_run(start, stop, rest)`` (frames [start, stop), ``rest`` indexing the
    detector axes)."""

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        if key == (Ellipsis,):
            key = (slice(None),)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            return self[(slice(int(first), int(first) + 1),) + rest][0]
        start, stop, step = first.indices(self.shape[0])
        if step != 1:
            raise IndexError(f"{type(self).__name__} reads contiguous runs of frames")
        return self._run(start, stop, rest)


class FrameFiles(_Frames):
    """Frames split over several HDF5 datasets (a DECTRIS master's ``entry/data/data_000001``, …), sliced as
    one (N, Qx, Qy) array along its first axis."""

    def __init__(self, parts: list):
        self.parts = parts
        self.starts = np.cumsum([0] + [int(p.shape[0]) for p in parts])
        self.shape = (int(self.starts[-1]),) + tuple(int(n) for n in parts[0].shape[1:])
        self.dtype, self.ndim = parts[0].dtype, len(self.shape)

    def _run(self, start: int, stop: int, rest: tuple) -> np.ndarray:
        out = [p[(slice(max(start, a) - a, min(stop, b) - a),) + rest]
               for p, a, b in zip(self.parts, self.starts[:-1], self.starts[1:]) if max(start, a) < min(stop, b)]
        return np.concatenate(out) if out else np.zeros((0,) + self.shape[1:], self.dtype)


class EmpadFrames(_Frames):
    """An EMPAD scan's ``.raw`` file as an (N, 128, 128) array: each frame is 130 rows of 128 float32 (little-endian)
    counts, its last two rows metadata (as py4DSTEM's and rosettasciio's EMPAD readers take it). Frames are read
    by plain file reads of their runs, so memory stays flat as a scan is read (as for ``.npy``)."""

    ROWS, COLS, KEPT_ROWS = 130, 128, 128

    def __init__(self, path: Path):
        self.path = path
        per = self.ROWS * self.COLS * 4
        size = path.stat().st_size
        if size == 0 or size % per:
            raise UserError(f"{path}: {size} bytes are not EMPAD frames (130 × 128 float32 each)",
                            "open the EMPAD .xml beside it, or convert the scan to .npy (Rx, Ry, Qx, Qy)")
        self.shape = (size // per, self.KEPT_ROWS, self.COLS)
        self.dtype, self.ndim = np.dtype("<f4"), 3

    def _run(self, start: int, stop: int, rest: tuple) -> np.ndarray:
        n = max(stop - start, 0)
        raw = np.fromfile(self.path, dtype=self.dtype, count=n * self.ROWS * self.COLS,
                          offset=start * self.ROWS * self.COLS * 4).reshape(n, self.ROWS, self.COLS)
        return raw[:, :self.KEPT_ROWS][(slice(None),) + rest]


_EMPAD_SCAN = re.compile(r"_x(\d+)_y(\d+)")  # EMPAD's own file names: scan_x256_y256.raw (x the fast axis)


def _open_empad_raw(path: Path) -> Cube:
    """An EMPAD ``.raw``: its scan shape from EMPAD's file name where it holds that many frames (rows y of x
    positions, as rosettasciio lays them out), else ``--scan-shape``; no calibration (the .xml beside it holds
    that: open the .xml to use it)."""
    frames = EmpadFrames(path)
    cube = Cube(frames, str(path), source="EMPAD .raw (130 × 128 px frames, the last two rows metadata)")
    m = _EMPAD_SCAN.search(path.name)
    if m and int(m[1]) * int(m[2]) == frames.shape[0]:
        cube.scan_shape = (int(m[2]), int(m[1]))
    return cube


_DECTRIS_FRAMES = re.compile(r"(.*/)?data/data_\d{6}")  # a DECTRIS master's links to its data files
_DECTRIS_DETECTOR = "entry/instrument/detector"


def _hdf5_arrays(f, path: Path) -> dict:
    """name -> dataset (≥ 2-D) of an open HDF5 file, external links followed. A DECTRIS master's frame links
    whose data file is missing are a one-line error."""
    import h5py

    found, missing = {}, []

    def see(name, link):
        if isinstance(link, h5py.SoftLink):
            return
        try:
            obj = f[name]
        except (KeyError, OSError):
            if isinstance(link, h5py.ExternalLink):
                missing.append(f"{name} -> {link.filename}")
            return
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2:
            found[name] = obj

    f.visititems_links(see)
    if missing:
        raise UserError(f"{path} links to data files that are not beside it ({', '.join(missing[:3])})",
                        "keep the master file and its data files in one folder")
    return found


def _dectris(f, arrays: dict) -> tuple[FrameFiles, str, float | None, str | None, float | None] | None:
    """A DECTRIS master's frames as one stack, with (q_scale, q_units, energy_eV) from the master: the beam
    energy (``photon_energy``, eV) and, where ``detector_distance`` (the camera length) is set, the angle
    per pixel (pixel size / camera length, in mrad). None if ``f`` is not such a master."""
    names = sorted(n for n in arrays if _DECTRIS_FRAMES.fullmatch(n) and arrays[n].ndim == 3)
    if not names or len({arrays[n].shape[1:] for n in names}) != 1:
        return None
    frames = FrameFiles([arrays[n] for n in names])

    def number(key):
        node = f.get(f"{_DECTRIS_DETECTOR}/{key}")
        return float(node[()]) if node is not None and node.shape == () else None

    energy = number("detectorSpecific/photon_energy")
    energy = energy if energy and energy >= 20e3 else None  # electrons (X-ray photon energies are lower)
    pixel_m, distance_m = number("x_pixel_size"), number("detector_distance")
    q_scale = 1e3 * pixel_m / distance_m if pixel_m and distance_m else None
    how = f"DECTRIS master: {len(names)} data file{'s' * (len(names) > 1)}, {frames.shape[0]} frames"
    return frames, how, q_scale, "mrad" if q_scale else None, energy


def _readable(array, path: Path) -> None:
    """One pattern read now, so that a compression filter this Python lacks is a one-line error here."""
    try:
        array[(slice(0, 1),) + (slice(None),) * (array.ndim - 1)]
    except OSError as exc:
        raise UserError(f"{path}'s frames cannot be decompressed here ({str(exc).splitlines()[0][:100]})",
                        "install the HDF5 compression filters: pip install hdf5plugin") from None


def _velox(f) -> bool:
    """Whether the open HDF5 file ``f`` is a Thermo Fisher Velox .emd (its ``Version`` says format Velox)."""
    try:
        return "Data" in f and b"Velox" in bytes(f["Version"][0] if f["Version"].shape else f["Version"][()])
    except (KeyError, TypeError, ValueError):
        return False


def _open_hdf5(path: Path, dataset: str | None, ndim: int) -> Cube | None:
    import h5py

    try:
        import hdf5plugin  # noqa: F401 — registers bitshuffle/LZ4 and other detector filters with h5py
    except ImportError:
        pass
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        if path.suffix.lower() == ".emd":
            return None  # not HDF5 (e.g. a non-HDF5 .emd): the caller tries rosettasciio
        raise UserError(f"{path} is not a readable HDF5 file ({exc})",
                        "check the file (a copy cut short, or another format under an HDF5 name)") from None
    if _velox(f):  # Thermo Fisher Velox stores an image stack as (height, width, frames): rosettasciio reads it
        f.close()  # as frames, with its calibration, where this reader would take its rows for patterns
        return None
    try:
        arrays = _hdf5_arrays(f, path)
        dectris = _dectris(f, arrays) if dataset is None else None
        if dectris is not None:
            frames, how, q_scale, units, energy = dectris
            _readable(frames, path)
            return Cube(frames, str(path), q_scale=q_scale, q_units=units, energy_eV=energy, source=how, _keep=[f])
        shapes = {n: a.shape for n, a in arrays.items()}
        # py4DSTEM / emdfile: a group with python_class DataCube (or Probe / DiffractionSlice) holds `data`
        want = {"DataCube"} if ndim == 4 else {"Probe", "DiffractionSlice", "DiffractionImage"}
        emd = [n for n in shapes
               if n.endswith("/data") and f[n.rsplit("/", 1)[0]].attrs.get("python_class", "") in want]
        name, why = _choose(path, shapes, dataset, ndim, emd)
        _readable(f[name], path)
    except UserError:
        f.close()
        raise
    ds = f[name]
    q_scale, units, energy = ds.attrs.get("q_pixel_size_invA"), "1/A", ds.attrs.get("energy_eV")
    # emdfile calibration: <root>/metadatabundle/calibration/Q_pixel_size (+ units)
    cal = f.get(f"{name.split('/')[0]}/metadatabundle/calibration")
    if q_scale is None and cal is not None and "Q_pixel_size" in cal:
        q_scale = float(cal["Q_pixel_size"][()])
        units = cal["Q_pixel_units"][()] if "Q_pixel_units" in cal else None
    return Cube(ds, str(path), q_scale=None if q_scale is None else float(q_scale), q_units=units,
                energy_eV=None if energy is None else float(energy), source=f"hdf5:{name} ({why})", _keep=[f])


def _open_rsciio(path: Path, ndim: int) -> Cube | None:
    import rsciio

    ext = path.suffix.lstrip(".").lower()
    plugins = [p for p in rsciio.IO_PLUGINS if ext in [e.lower() for e in p["file_extensions"]]]
    errors = []
    for p in plugins:
        reader = importlib.import_module(p["api"]).file_reader
        try:
            sigs = reader(str(path), lazy=True)
        except Exception:  # noqa: BLE001 — some readers cannot read lazily (a .png: "Delayed objects of
            try:  # unspecified length"), and an image is small: read it whole, or try the next plugin
                sigs = reader(str(path), lazy=False)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{p['name']}: {exc}")
                continue
        shapes = {str(k): s["data"].shape for k, s in enumerate(sigs)}
        sig = sigs[int(_choose(path, shapes, None, ndim)[0])] if len(sigs) > 1 else sigs[0]
        axes = sig.get("axes", [])
        tem = ((sig.get("metadata") or {}).get("Acquisition_instrument") or {}).get("TEM") or {}
        energy, alpha = _positive(tem.get("beam_energy"), 1e3), _positive(tem.get("convergence_angle"))  # keV, mrad
        ax = axes[-1] if len(axes) >= 3 else {}  # a detector axis (the signal axes come last)
        return Cube(_grey(sig["data"], path), str(path), q_scale=ax.get("scale"), q_units=ax.get("units"),
                    energy_eV=energy, semiangle_mrad=alpha, source=f"rsciio:{p['name']}")
    if errors:
        raise UserError(f"{path} could not be read ({errors[0][:120]})", "check the file or convert it to .npy/.h5")
    return None


def _positive(value, scale: float = 1.0) -> float | None:
    """A metadata number × ``scale`` where it is one and positive, else None."""
    try:
        v = float(value) * scale
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def _grey(data, path: Path):
    """``data`` as read, or one channel of a colour image (rosettasciio gives RGB(A) as a structured dtype) whose
    colour channels are equal: a grey picture. A picture in colours is a colour map's rendering, not the counts."""
    names = getattr(getattr(data, "dtype", None), "names", None)
    if not names:
        return data
    a = np.asarray(data)
    colours = [a[n] for n in names if n in ("R", "G", "B")]
    if colours and all(np.array_equal(colours[0], c) for c in colours[1:]):
        return colours[0]
    raise UserError(f"{path} is a colour image: its colours render a colour map, not the detector's counts",
                    "save the pattern's counts as a grey image, a TIFF or a .npy")


def open_array(path: str | Path, dataset: str | None = None, ndim: int = 4) -> Cube:
    """Open ``path`` lazily; ``ndim`` is what is wanted (4 datacube, 2 probe image)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "check the path")
    suffix = path.suffix.lower()
    cube = None
    if suffix == ".npy":
        cube = _open_npy(path)
    elif suffix == ".zarr" or (path.is_dir() and (path / "zarr.json").exists()):
        cube = _open_zarr(path, dataset, ndim)
    elif suffix == ".raw":
        cube = _open_empad_raw(path)
    elif suffix in HDF5_SUFFIXES:
        cube = _open_hdf5(path, dataset, ndim)
        if cube is None and suffix == ".emd":
            cube = _open_rsciio(path, ndim)
    else:
        cube = _open_rsciio(path, ndim)
    if cube is None:
        raise UserError(f"{path}: unknown data format '{suffix or path.name}'",
                        "use .npy, .zarr, .h5/.hdf5/.emd, EMPAD .raw or a 4D-STEM format rosettasciio reads "
                        "(.blo, .mib, .dm4)")
    return cube


def open_datacube(path: str | Path, dataset: str | None = None, scan_shape: tuple[int, int] | None = None) -> Cube:
    """A datacube (Rx, Ry, Qx, Qy), or a 3-D stack of patterns laid out on ``scan_shape``; a single pattern
    (a 2-D image, or a stack of one) is a scan of one position: a microscopist's first try is often one
    pattern (a detector's single frame, a camera's diffraction image)."""
    cube = open_array(path, dataset, ndim=4)
    raw = tuple(int(s) for s in cube.array.shape)
    det = tuple(raw[a] for a in cube.det_axes)
    if np.dtype(getattr(cube.array, "dtype", np.float32)).kind == "c":
        cube.close()
        raise UserError(f"{path} holds complex values ({cube.array.dtype}): a wave, not the intensities a detector "
                        "records", "save the intensities |ψ|² (np.abs(a) ** 2)")
    if cube.n_patterns == 1 and len(cube.lead_axes) < 2 and scan_shape is None:
        scan_shape = (1, 1)
    if len(cube.lead_axes) not in (0, 1, 2) or len(det) != 2:
        cube.close()
        raise UserError(f"{path} holds a {len(raw)}-D array {raw}, not a datacube (Rx, Ry, Qx, Qy), a stack of "
                        "patterns (N, Qx, Qy) or one pattern (Qx, Qy)", "pass a 4D-STEM scan (or --dataset naming one)")
    if min(det) < MIN_PATTERN_PX:
        cube.close()
        raise UserError(f"the patterns of {path} ({cube.source or 'array'} {raw}) are {det[0]}×{det[1]} px, too small "
                        f"for diffraction patterns (≥ {MIN_PATTERN_PX} px per axis)",
                        "point --dataset at the datacube (the array whose last two axes are the detector)")
    stored = tuple(raw[a] for a in cube.lead_axes)
    if scan_shape is not None and len(stored) == 2 and min(stored) > 1 and tuple(scan_shape) != stored:
        cube.close()  # a scan laid out again would be scrambled without a word
        raise UserError(f"--scan-shape {scan_shape[0]}x{scan_shape[1]} differs from the {stored[0]}x{stored[1]} scan "
                        f"that {path} stores", "drop --scan-shape (it lays out a 3-D stack of patterns)")
    if scan_shape is not None:
        if int(np.prod(scan_shape)) != cube.n_patterns or min(scan_shape) < 1:
            cube.close()
            raise UserError(f"--scan-shape {scan_shape[0]}x{scan_shape[1]} does not hold the {cube.n_patterns} "
                            f"patterns of {path}", f"pass RXxRY with RX·RY = {cube.n_patterns}")
        cube.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
    elif len(cube.lead_axes) == 1 and cube.scan_shape is None:
        cube.close()
        side = int(round(cube.n_patterns ** 0.5))
        example = f"{side}x{side}" if side * side == cube.n_patterns else f"{cube.n_patterns}x1"
        raise UserError(f"{path} holds a stack of {cube.n_patterns} patterns {raw} without its scan shape",
                        f"pass --scan-shape RXxRY with RX·RY = {cube.n_patterns} (e.g. --scan-shape {example})")
    return cube


def finite_pixels(a: np.ndarray) -> tuple[np.ndarray, int]:
    """``a`` with its NaN and ±Inf pixels read as 0, as a dead pixel reads (a masked detector gap, a division
    by a dead flat-field pixel), and how many there were; ``a`` itself where there are none."""
    bad = ~np.isfinite(a)
    n_bad = int(bad.sum())
    return (np.where(bad, a.dtype.type(0), a) if n_bad else a), n_bad


def open_probe(path: str | Path, dataset: str | None = None) -> tuple[np.ndarray, Cube]:
    """A vacuum probe image; a stack or 4-D cube of vacuum patterns is averaged."""
    cube = open_array(path, dataset, ndim=2)
    a = np.asarray(cube.array[...], dtype=np.float64)
    a, _ = finite_pixels(a)
    a = a.reshape(tuple(n for n in a.shape if n > 1) or a.shape)
    if a.ndim > 2:
        a = a.reshape((-1,) + a.shape[-2:]).mean(axis=0)
    if a.ndim != 2:
        raise UserError(f"probe {path} is {a.ndim}-D", "pass a 2-D vacuum probe image")
    return a.astype(np.float32), cube
