"""One writer for the outputs of ``predict``: bragg_vectors.parquet (streamed batch by batch), the
Bragg vector map (.npy + .png), py4DSTEM's BraggVectors file (braggvectors.h5) and index.html (a few
patterns with their vectors, the map, the run's settings)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fourdcrystal.inference import page
from fourdcrystal.inference.braggvectors_file import write_braggvectors

VECTOR_COLUMNS = ["rx", "ry", "qx", "qy", "qx_px", "qy_px", "intensity", "vg", "qz", "snr"]


class VectorWriter:
    """``write`` one batch of vectors (keeps those on the detector), ``close`` the table, then
    ``finish(origin)`` writes the map and the BraggVectors file (origin: (2, Rx, Ry) beam positions)."""

    def __init__(self, out_dir: Path, scan_shape: tuple[int, int], pattern_shape: tuple[int, int],
                 q_pixel_size_invA: float):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.out_dir, self.scan_shape, self.pattern_shape = Path(out_dir), tuple(scan_shape), tuple(pattern_shape)
        self.dq_invA = float(q_pixel_size_invA)
        self.schema = pa.schema([(c, pa.int32() if c in ("rx", "ry") else pa.float64()) for c in VECTOR_COLUMNS])
        self.table = pq.ParquetWriter(self.out_dir / "bragg_vectors.parquet", self.schema)
        self.map = np.zeros(self.pattern_shape)  # vector counts on the input pixel grid, beam at the centre
        self.kept: list[np.ndarray] = []  # per batch: (5, n) rx, ry, qx_px, qy_px, intensity
        self.n_vectors = 0

    def on_detector(self, vec: dict[str, np.ndarray]) -> np.ndarray:
        """Which vectors lie on the input detector (the only ones written)."""
        Qx, Qy = self.pattern_shape
        px, py = vec["qx_px"], vec["qy_px"]
        return (px >= 0) & (px <= Qx - 1) & (py >= 0) & (py <= Qy - 1)

    def write(self, rx: np.ndarray, ry: np.ndarray, vec: dict[str, np.ndarray]) -> None:
        """Vectors of one batch (``detectors`` layout) at scan positions ``rx[pattern]``, ``ry[pattern]``."""
        import pyarrow as pa

        Qx, Qy = self.pattern_shape
        b, px, py = vec["pattern"], vec["qx_px"], vec["qy_px"]
        inside = self.on_detector(vec)
        cols = {"rx": rx[b].astype(np.int32), "ry": ry[b].astype(np.int32), "qx": vec["qx"], "qy": vec["qy"],
                "qx_px": px, "qy_px": py, "intensity": vec["intensity"], "vg": vec["vg"], "qz": vec["qz"],
                "snr": vec["snr"]}
        cols = {k: v[inside] for k, v in cols.items()}
        # Arrow arrays straight from the numpy buffers: pa.array()/pa.table() would import pandas
        # (≈ 0.25 s of a short call) only to check whether the columns are pandas objects
        arrays = [pa.Array.from_buffers(f.type, len(cols[f.name]), [None, pa.py_buffer(np.ascontiguousarray(
            cols[f.name], dtype=np.int32 if f.type == pa.int32() else np.float64))]) for f in self.schema]
        self.table.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self.n_vectors += int(inside.sum())
        bi = np.rint(Qx // 2 + cols["qx"] / self.dq_invA).astype(int)
        bj = np.rint(Qy // 2 + cols["qy"] / self.dq_invA).astype(int)
        ok = (bi >= 0) & (bi < Qx) & (bj >= 0) & (bj < Qy)
        np.add.at(self.map, (bi[ok], bj[ok]), 1.0)
        self.kept.append(np.stack([cols["rx"], cols["ry"], cols["qx_px"], cols["qy_px"], cols["intensity"]]))

    def close(self) -> None:
        self.table.close()

    def finish(self, origin: np.ndarray) -> None:
        np.save(self.out_dir / "bragg_vector_map.npy", self.map)
        # log(1 + count), inferno, rows = q_x downwards, columns = q_y; the direct beam at the centre pixel
        page.write_png(self.out_dir / "bragg_vector_map.png", self.map, log=True, vmin=0.0, vmax=None)
        vectors = np.concatenate(self.kept, axis=1) if self.kept else np.zeros((5, 0))
        write_braggvectors(self.out_dir / "braggvectors.h5", self.scan_shape, self.pattern_shape, vectors, origin,
                           self.dq_invA)


def write_index(out_dir: Path, examples: list[tuple], bvm: np.ndarray, dq: float, settings: dict) -> None:
    """index.html: ``examples`` (rx, ry, pattern, (n, 2) vector pixel positions) with their vectors,
    the Bragg vector map (``dq`` Å⁻¹ per pixel), and ``settings`` (what this run did)."""
    shots = [page.Panel(f"scan position ({rx}, {ry}): {len(pts)} vectors (log intensity; rows q_x, columns q_y)",
                        pat, points=pts, log=True) for rx, ry, pat, pts in examples]
    Qx, Qy = bvm.shape
    span = f"; q_x ±{Qx // 2 * dq:.2f}, q_y ±{Qy // 2 * dq:.2f} 1/Å"
    sections = [page.Section("Patterns across the scan with their Bragg vectors", shots,
                             "Circles: the vectors written to bragg_vectors.parquet (input pixels)."),
                page.Section("Bragg vector map", [page.Panel(
                    f"all vectors, counted on the input pixel grid about the direct beam (log(1 + count){span})",
                    bvm, log=True, vmin=0.0)])]
    page.write_page(Path(out_dir) / "index.html", "fourdcrystal predict", sections, settings)
