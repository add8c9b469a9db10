"""Lazy readers for 4D-STEM datacubes (Rx, Ry, Qx, Qy) and vacuum-probe images.

Nothing here loads a whole datacube: ``.npy`` is memory-mapped and read in plain reads per batch,
Zarr and HDF5 are sliced on demand, and other formats go through rosettasciio with ``lazy=True``
(dask).  Calibration (reciprocal pixel size in Å⁻¹/px, beam energy in eV) is read from file
metadata where the format carries it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fourdcrystal.errors import UserError

HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".emd", ".py4dstem"}


@dataclass
class Cube:
    """A lazily read array plus what its file says about calibration."""

    array: object  # anything with .shape and numpy-style slicing
    path: str
    q_pixel_size_invA: float | None = None
    energy_eV: float | None = None
    source: str = ""
    _keep: list = field(default_factory=list, repr=False)  # open file handles

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns with flattened scan index in [start, stop) as float32 (n, Qx, Qy)."""
        a = self.array
        if isinstance(a, np.memmap) and a.flags.c_contiguous and stop > start:
            # a C-ordered .npy: one plain read of the contiguous run. Slicing the memory map would map
            # every page read into this process, so its resident size would grow with the scan.
            per = int(np.prod(self.shape[2:]))
            raw = np.fromfile(self.path, dtype=a.dtype, count=(stop - start) * per,
                              offset=a.offset + start * per * a.dtype.itemsize)
            return raw.reshape((stop - start,) + self.shape[2:]).astype(np.float32, copy=False)
        Rx, Ry = self.shape[:2]
        out = []
        k = start
        while k < stop:
            rx, ry = divmod(k, Ry)
            n = min(stop - k, Ry - ry)
            out.append(np.asarray(self.array[rx, ry:ry + n], dtype=np.float32))
            k += n
        return np.concatenate(out) if out else np.zeros((0,) + self.shape[2:], np.float32)

    def close(self) -> None:
        for h in self._keep:
            try:
                h.close()
            except Exception:  # noqa: BLE001 — closing is best effort
                pass


def _invA_from_units(scale: float, units: str | None, energy_eV: float | None) -> float | None:
    """Reciprocal pixel size in Å⁻¹ from a (scale, units) pair; None when not reciprocal space."""
    if units is None:
        return None
    u = str(units).strip().replace("Å", "A").replace(" ", "").lower()
    if u in {"a^-1", "1/a", "a-1", "inva"}:
        return float(scale)
    if u in {"1/nm", "nm^-1", "nm-1"}:
        return float(scale) / 10.0
    if u in {"mrad"} and energy_eV:
        from fourdcrystal.geometry import electron_wavelength_A
        return float(scale) * 1e-3 / electron_wavelength_A(energy_eV)
    return None


def _open_npy(path: Path) -> Cube:
    try:
        arr = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise UserError(f"{path} is not a readable .npy array ({exc})", "save it with numpy.save") from None
    return Cube(arr, str(path), source="npy")


def _open_zarr(path: Path, dataset: str | None) -> Cube:
    import zarr

    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        arr, attrs = node, dict(node.attrs)
    else:
        if dataset is None:
            cands = [k for k, a in node.arrays() if len(a.shape) in (2, 4)]
            if len(cands) != 1:
                raise UserError(f"{path} holds arrays {cands}, cannot tell which is the datacube",
                                "name it with --dataset")
            dataset = cands[0]
        if dataset not in node:
            raise UserError(f"{path} has no array '{dataset}'", "pass an existing name to --dataset")
        arr = node[dataset]
        attrs = {**dict(node.attrs), **dict(arr.attrs)}
    energy = attrs.get("energy_eV")
    return Cube(arr, str(path), q_pixel_size_invA=attrs.get("q_pixel_size_invA"), energy_eV=energy, source="zarr")


def _open_hdf5(path: Path, dataset: str | None, ndim: int) -> Cube | None:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError:
        return None  # not HDF5 (e.g. a non-HDF5 .emd): the caller tries rosettasciio
    found: list[str] = []
    f.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) and o.ndim == ndim else None)
    if dataset is None:
        # py4DSTEM / emdfile: a group with python_class DataCube (or Probe / DiffractionSlice) holds `data`
        want = {"DataCube"} if ndim == 4 else {"Probe", "DiffractionSlice", "DiffractionImage"}
        emd = [n for n in found if n.endswith("/data")
               and f[n.rsplit("/", 1)[0]].attrs.get("python_class", "") in want]
        cands = emd or found
        if len(cands) != 1:
            f.close()
            raise UserError(f"{path} holds {len(cands)} {ndim}-D datasets {cands[:5]}, cannot tell which to use",
                            "name it with --dataset")
        dataset = cands[0]
    if dataset not in f:
        f.close()
        raise UserError(f"{path} has no dataset '{dataset}'", "pass an existing HDF5 path to --dataset")
    ds = f[dataset]
    q_size, energy = ds.attrs.get("q_pixel_size_invA"), ds.attrs.get("energy_eV")
    # emdfile calibration: <root>/metadatabundle/calibration/Q_pixel_size (+ units)
    root = dataset.split("/")[0]
    cal = f.get(f"{root}/metadatabundle/calibration")
    if q_size is None and cal is not None and "Q_pixel_size" in cal:
        units = cal["Q_pixel_units"][()] if "Q_pixel_units" in cal else None
        units = units.decode() if isinstance(units, bytes) else units
        q_size = _invA_from_units(float(cal["Q_pixel_size"][()]), units, None)
    return Cube(ds, str(path), q_pixel_size_invA=None if q_size is None else float(q_size),
                energy_eV=None if energy is None else float(energy), source=f"hdf5:{dataset}", _keep=[f])


def _open_rsciio(path: Path) -> Cube | None:
    import rsciio

    ext = path.suffix.lstrip(".").lower()
    plugins = [p for p in rsciio.IO_PLUGINS if ext in [e.lower() for e in p["file_extensions"]]]
    errors = []
    for p in plugins:
        try:
            mod = importlib.import_module(p["api"])
            sigs = mod.file_reader(str(path), lazy=True)
        except Exception as exc:  # noqa: BLE001 — try the next plugin claiming this extension
            errors.append(f"{p['name']}: {exc}")
            continue
        sig = next((s for s in sigs if getattr(s["data"], "ndim", 0) == 4), sigs[0])
        axes = sig.get("axes", [])
        md = sig.get("metadata", {}) or {}
        energy = None
        try:
            energy = float(md["Acquisition_instrument"]["TEM"]["beam_energy"]) * 1e3  # keV -> eV
        except (KeyError, TypeError, ValueError):
            pass
        q_size = None
        if len(axes) == 4:
            q_size = _invA_from_units(axes[-1].get("scale", 1.0), axes[-1].get("units"), energy)
        return Cube(sig["data"], str(path), q_pixel_size_invA=q_size, energy_eV=energy, source=f"rsciio:{p['name']}")
    if errors:
        raise UserError(f"{path} could not be read ({errors[0][:120]})", "check the file or convert it to .npy/.h5")
    return None


def open_array(path: str | Path, dataset: str | None = None, ndim: int = 4) -> Cube:
    """Open ``path`` lazily; ``ndim`` is the expected dimensionality (4 datacube, 2 probe)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} does not exist", "check the path")
    suffix = path.suffix.lower()
    cube = None
    if suffix == ".npy":
        cube = _open_npy(path)
    elif suffix == ".zarr" or (path.is_dir() and (path / "zarr.json").exists()):
        cube = _open_zarr(path, dataset)
    elif suffix in HDF5_SUFFIXES:
        cube = _open_hdf5(path, dataset, ndim)
        if cube is None and suffix == ".emd":
            cube = _open_rsciio(path)
    else:
        cube = _open_rsciio(path)
    if cube is None:
        raise UserError(f"{path}: unknown data format '{suffix or path.name}'",
                        "use .npy, .zarr, .h5/.hdf5/.emd or a 4D-STEM format rosettasciio reads (.blo, .mib, .dm4)")
    return cube


def open_datacube(path: str | Path, dataset: str | None = None) -> Cube:
    cube = open_array(path, dataset, ndim=4)
    if len(cube.shape) != 4:
        raise UserError(f"{path} holds a {len(cube.shape)}-D array {cube.shape}, not a 4-D datacube (Rx, Ry, Qx, Qy)",
                        "pass a 4-D 4D-STEM scan (reshape a pattern stack to (Rx, Ry, Qx, Qy))")
    return cube


def open_probe(path: str | Path, dataset: str | None = None) -> tuple[np.ndarray, Cube]:
    """A vacuum probe image; a stack or 4-D cube of vacuum patterns is averaged."""
    cube = open_array(path, dataset, ndim=2)
    a = np.asarray(cube.array[...], dtype=np.float64)
    if a.ndim > 2:
        a = a.reshape((-1,) + a.shape[-2:]).mean(axis=0)
    if a.ndim != 2:
        raise UserError(f"probe {path} is {a.ndim}-D", "pass a 2-D vacuum probe image")
    return a.astype(np.float32), cube
