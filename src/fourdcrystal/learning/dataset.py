"""Torch Dataset over the dataset manifest: lazy per-pattern reads, deterministic augmentation.

Each item is read from its Zarr store on demand (``fourdcrystal.simulation.store.read_pattern``: one inner
chunk per array), so memory stays bounded by the batch whatever the dataset size, and DataLoader
workers each open their own store handles.

Augmentation randomness is a pure function of ``(seed, epoch, row)`` (``row`` = the pattern's
position in the manifest split), never of the worker, the rank or the world size: a run on 1 or N
processes, with any number of workers, resumed or not, sees exactly the same augmented samples.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from fourdcrystal.seeds import stable_hash
from fourdcrystal.simulation import store as qstore


def sample_seed(seed: int, epoch: int, row: int) -> int:
    """A 64-bit seed for one sample's augmentation (stable across processes and runs)."""
    return stable_hash(f"augment:{int(seed)}:{int(epoch)}:{int(row)}")


class QuartetDataset(Dataset):
    """Quartets of one manifest split as float32 tensors ``probe, cbed, vg, qz`` (P, P) and ``row``.

    ``manifest``: DataFrame with columns ``store`` (path of quartets.zarr, relative to ``root``) and
    ``index``.  ``augmenter``: an object with ``.apply(cbed, probe, rng) -> cbed`` (e.g.
    fourdcrystal.learning.augment.Augmenter) or None.  Call ``set_epoch`` before iterating each epoch (the
    DataLoader must not use persistent workers, so that workers pick up the new epoch).
    """

    def __init__(self, manifest: pd.DataFrame, root: str | Path = ".", augmenter=None, seed: int = 0):
        self.stores = [str(Path(root) / s) for s in manifest["store"].astype(str)]
        self.indices = manifest["index"].astype(np.int64).to_numpy()
        self.augmenter = augmenter
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, row: int) -> dict:
        q = qstore.read_pattern(self.stores[row], int(self.indices[row]))
        cbed = q["cbed"]
        if self.augmenter is not None:
            rng = np.random.default_rng(sample_seed(self.seed, self.epoch, row))
            cbed = np.asarray(self.augmenter.apply(cbed, q["probe"], rng), dtype=np.float32)
        probe, cbed = model_input(q["probe"], cbed)
        return {"probe": probe, "cbed": cbed,
                "vg": torch.from_numpy(np.ascontiguousarray(q["vg"])),
                "qz": torch.from_numpy(np.ascontiguousarray(q["qz"])),
                "row": row}


def model_input(probe: np.ndarray, cbed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(probe, cbed) as ``fourdcrystal predict`` hands them to the network (model_input.ModelInput): the
    pattern's direct beam found and resampled onto the centre pixel, total scaled to the probe's.

    Training on exactly what inference sees: the augmenter's origin shift (descan) is undone by
    the beam finder as it is in predict, so the labels — on the calibrated grid — stay aligned with
    the input up to the beam finder's own error, instead of the network having to learn the shift.
    """
    from fourdcrystal.inference.model_input import ModelInput

    P = cbed.shape[-1]
    mi = ModelInput(np.asarray(probe, dtype=np.float32), 1.0, P, P // 2)  # P // 2 = Geometry.center_px
    x = torch.from_numpy(np.ascontiguousarray(cbed, dtype=np.float32)[None])
    pr, cb = mi(x, mi.centres(x))
    return pr[0].contiguous(), cb[0].contiguous()


def seed_worker(worker_id: int) -> None:
    """DataLoader worker_init_fn: seed the global RNGs from torch's per-worker seed (itself derived
    from the loader's generator), so any stray global randomness is reproducible too."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    import random

    random.seed(s)
    torch.set_num_threads(1)  # workers only decompress; leave the cores to the training process
