"""One writer for the outputs of ``predict``: bragg_vectors.parquet (streamed batch by batch), the
Bragg vector map (.npy + .png) and py4DSTEM's BraggVectors file (braggvectors.h5)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fourdcrystal.inference.braggvectors_file import write_braggvectors
from fourdcrystal.plotting import save_figure

VECTOR_COLUMNS = ["rx", "ry", "qx", "qy", "qx_px", "qy_px", "intensity", "qz"]


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

    def write(self, rx: np.ndarray, ry: np.ndarray, vec: dict[str, np.ndarray]) -> None:
        """Vectors of one batch (``detectors`` layout) at scan positions ``rx[pattern]``, ``ry[pattern]``."""
        import pyarrow as pa

        Qx, Qy = self.pattern_shape
        b, px, py = vec["pattern"], vec["qx_px"], vec["qy_px"]
        inside = (px >= 0) & (px <= Qx - 1) & (py >= 0) & (py <= Qy - 1)
        cols = {"rx": rx[b].astype(np.int32), "ry": ry[b].astype(np.int32), "qx": vec["qx"], "qy": vec["qy"],
                "qx_px": px, "qy_px": py, "intensity": vec["intensity"], "qz": vec["qz"]}
        cols = {k: v[inside] for k, v in cols.items()}
        self.table.write_table(pa.table(cols, schema=self.schema))
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
        map_figure(self.map, self.out_dir / "bragg_vector_map.png", self.dq_invA)
        vectors = np.concatenate(self.kept, axis=1) if self.kept else np.zeros((5, 0))
        write_braggvectors(self.out_dir / "braggvectors.h5", self.scan_shape, self.pattern_shape, vectors, origin,
                           self.dq_invA)


def map_figure(bvm: np.ndarray, path: Path, dq: float) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Qx, Qy = bvm.shape
    ext = [-(Qy // 2) * dq, (Qy - 1 - Qy // 2) * dq, (Qx - 1 - Qx // 2) * dq, -(Qx // 2) * dq]
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(np.log1p(bvm), cmap="inferno", extent=ext)
    ax.set_xlabel("q_y (1/Å)")
    ax.set_ylabel("q_x (1/Å)")
    ax.set_title("Bragg vector map (log(1 + count))")
    fig.colorbar(im, ax=ax, shrink=0.8)
    save_figure(fig, path)
