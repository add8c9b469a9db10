"""Write py4DSTEM's BraggVectors HDF5 file directly with h5py (no py4DSTEM import).

Why not ``py4DSTEM.save``: importing py4DSTEM costs ≈ 3 s of a `predict` call's start-up and pulls in
dozens of packages (hdf5plugin alone is 46 MB, which a GPU node's environment may lack), only to write
one small file. The file written here has the layout py4DSTEM 0.14 / emdfile 0.0.16 write for a
``BraggVectors`` object (an emdfile tree: a root group, the ``braggvectors`` custom node with its raw
vectors as a PointListArray of (qx, qy, intensity) in detector pixels, and the root's calibration
metadata: Q pixel size and units, origin per scan position), so ``py4DSTEM.read(path)`` returns a
BraggVectors with the same vectors and calibration; tests/test_predict.py checks that round trip.
"""
from __future__ import annotations

import uuid
from pathlib import Path

import h5py
import numpy as np

# the raw-vector record of py4DSTEM's BraggVectors (detector pixels, unnormalised intensity)
VECTOR_DTYPE = np.dtype([("qx", "<f8"), ("qy", "<f8"), ("intensity", "<f8")])
_NODE = "braggvectors"
_ROOT = f"{_NODE}_root"


def _tag(grp: h5py.Group, group_type: str, python_class: str | None = None) -> h5py.Group:
    grp.attrs.create("emd_group_type", group_type)
    if python_class:
        grp.attrs.create("python_class", python_class)
    return grp


def _metadata(bundle: h5py.Group, name: str, python_class: str, items: dict) -> None:
    """One emdfile Metadata group: every item a dataset tagged with its emdfile ``type``."""
    grp = _tag(bundle.create_group(name), "metadata", python_class)
    for key, value in items.items():
        if isinstance(value, list):  # list of strings
            sub = grp.create_group(key)
            sub.attrs["type"] = b"list_of_strings"
            sub.attrs["length"] = len(value)
            for i, s in enumerate(value):
                sub.create_dataset(str(i), data=s.encode("utf-8"))
            continue
        if isinstance(value, str):
            dset, kind = grp.create_dataset(key, data=value.encode("utf-8")), b"string"
        elif isinstance(value, bool):
            dset, kind = grp.create_dataset(key, data=value, dtype=bool), b"bool"
        elif isinstance(value, tuple):
            dset, kind = grp.create_dataset(key, data=np.asarray(value, dtype=np.int64)), b"tuple"
        elif isinstance(value, np.ndarray):
            dset, kind = grp.create_dataset(key, data=value, dtype=value.dtype), b"array"
        else:
            dset, kind = grp.create_dataset(key, data=value, dtype=type(value)), b"number"
        dset.attrs["type"] = kind


def _pointlists(vectors: np.ndarray, Rshape: tuple[int, int]) -> np.ndarray:
    """(Rx, Ry) object array of VECTOR_DTYPE records from ``vectors`` rows rx, ry, qx_px, qy_px, intensity."""
    Rx, Ry = Rshape
    lin = (vectors[0] * Ry + vectors[1]).astype(np.int64)
    order = np.argsort(lin, kind="stable")
    counts = np.bincount(lin, minlength=Rx * Ry)
    rec = np.empty(len(order), dtype=VECTOR_DTYPE)
    rec["qx"], rec["qy"], rec["intensity"] = vectors[2, order], vectors[3, order], vectors[4, order]
    out = np.empty(Rx * Ry, dtype=object)
    for k, pointlist in enumerate(np.split(rec, np.cumsum(counts)[:-1])):
        out[k] = pointlist  # one by one: equal-length lists assigned at once would become a 2-D array
    return out.reshape(Rx, Ry)


def write_braggvectors(path: str | Path, Rshape, Qshape, vectors: np.ndarray, origin_px: np.ndarray,
                       q_pixel_size_invA: float) -> None:
    """Write raw Bragg vectors (detector pixels) with their calibration as a py4DSTEM BraggVectors file.

    ``vectors``: (5, n) rows rx, ry, qx_px, qy_px, intensity, in any order. ``origin_px``: (2, Rx, Ry)
    direct-beam position per scan position (detector pixels). ``q_pixel_size_invA``: Å⁻¹ per pixel.
    """
    Rshape = tuple(int(r) for r in Rshape)
    qx0, qy0 = (np.asarray(o, dtype=np.float64).reshape(Rshape) for o in origin_px)
    with h5py.File(path, "w") as f:
        for key, value in {"emd_group_type": "file", "version_major": 1, "version_minor": 0,
                           "UUID": str(uuid.uuid4()), "authoring_program": "emdfile", "authoring_user": ""}.items():
            f.attrs[key] = value
        root = _tag(f.create_group(_ROOT), "root", "Root")
        node = _tag(root.create_group(_NODE), "custom", "BraggVectors")
        _metadata(_tag(node.create_group("metadatabundle"), "metadatabundle"), f"_{_NODE}_shape", "Metadata",
                  {"Qshape": tuple(int(q) for q in Qshape), "Rshape": Rshape})
        raw = _tag(node.create_group("_v_uncal"), "custom_pointlistarray", "PointListArray")
        # write_direct: `dset[...] = ` fails or mis-shapes when every position holds the same number of vectors
        raw.create_dataset("data", Rshape, h5py.vlen_dtype(VECTOR_DTYPE)).write_direct(_pointlists(vectors, Rshape))
        _metadata(_tag(root.create_group("metadatabundle"), "metadatabundle"), "calibration", "Calibration", {
            "QR_flip": False, "Q_pixel_size": float(q_pixel_size_invA), "Q_pixel_units": "A^-1",
            "R_pixel_size": 1, "R_pixel_units": "pixels", "_root_treepath": "", "_target_paths": [f"/{_NODE}"],
            "qx0": qx0, "qx0_mean": float(qx0.mean()), "qx0_shift": qx0 - qx0.mean(),
            "qy0": qy0, "qy0_mean": float(qy0.mean()), "qy0_shift": qy0 - qy0.mean()})
