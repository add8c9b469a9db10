"""Torch Dataset over the dataset manifest: lazy per-pattern reads, deterministic augmentation.

Each item is read from its Zarr store on demand (``fourdcrystal.simulation.store.read_pattern``: one inner
chunk per array), so memory stays bounded by the batch whatever the dataset size, and DataLoader
workers each open their own store handles.

Augmentation randomness is a pure function of ``(seed, epoch, row)`` (``row`` = the pattern's
position in the manifest split), never of the worker, the rank or the world size: a run on 1 or N
processes, with any number of workers, resumed or not, sees exactly the same augmented samples.

Below the Dataset, what a training run reads: the manifest's splits checked against the model
(``load_data``), the label scales, and the DataLoaders, whose workers persist from epoch to epoch.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from fourdcrystal.errors import UserError
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.model import size_multiple
from fourdcrystal.learning.negatives import Scenes, scene_rng
from fourdcrystal.seeds import stable_hash
from fourdcrystal.simulation import store as qstore

SCALE_SAMPLES = 32  # training patterns used to measure vg_scale / qz_scale


def sample_seed(seed: int, epoch: int, row: int) -> int:
    """A 64-bit seed for one sample's augmentation (stable across processes and runs)."""
    return stable_hash(f"augment:{int(seed)}:{int(epoch)}:{int(row)}")


class QuartetDataset(Dataset):
    """Quartets of one manifest split as float32 tensors ``probe, cbed, vg, qz`` (P, P) and ``row``.

    ``manifest``: DataFrame with columns ``store`` (path of quartets.zarr, relative to ``root``) and
    ``index``.  ``augmenter``: an object with ``.apply(cbed, probe, rng) -> cbed`` (e.g.
    fourdcrystal.learning.augment.Augmenter) or None.  An item is indexed by its row (augmented for the
    epoch of ``set_epoch``) or by ``(epoch, row)``, which is how DataLoader workers that persist from epoch
    to epoch (and so never see ``set_epoch``) learn it (see ``EpochSampler``).
    """

    def __init__(self, manifest: pd.DataFrame, root: str | Path = ".", augmenter=None, seed: int = 0, scenes=None,
                 counted=None, symmetry: bool = False):
        self.stores = [str(Path(root) / s) for s in manifest["store"].astype(str)]
        self.indices = manifest["index"].astype(np.int64).to_numpy()
        self.augmenter = augmenter
        self.scenes = scenes  # learning.negatives.Scenes (negatives, support film) or None
        self.counted = counted  # learning.counted_labels.CountedLabels (labels at the drawn dose) or None
        self.seed = int(seed)
        self.epoch = 0
        self.symmetry = bool(symmetry)  # each sample turned or mirrored about the beam (``turned``)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        epoch, row = index if isinstance(index, tuple) else (self.epoch, index)
        q = qstore.read_pattern(self.stores[row], int(self.indices[row]))
        cbed, vg, qz, negative = q["cbed"], q["vg"], q["qz"], False
        if self.scenes is not None:
            cbed, vg, qz, negative = self.scenes.scene(q, scene_rng(self.seed, epoch, row))
        if self.augmenter is not None:
            rng = np.random.default_rng(sample_seed(self.seed, epoch, row))
            recorded, params = self.augmenter.apply_drawn(cbed, q["probe"], rng)
            if self.counted is not None and not negative:  # the label at the drawn dose
                vg, qz = self.counted.label(row, q, cbed, params)
            cbed = np.asarray(recorded, dtype=np.float32)
        probe, cbed = model_input(q["probe"], cbed)
        maps = [probe, cbed, torch.from_numpy(np.ascontiguousarray(vg)), torch.from_numpy(np.ascontiguousarray(qz))]
        if self.symmetry:  # its own stream: the noise, film and dose draws stay those of the unturned sample
            maps = turned(maps, int(np.random.default_rng([self.seed, epoch, row, 8]).integers(8)))
        return {"probe": maps[0], "cbed": maps[1], "vg": maps[2], "qz": maps[3], "row": row}


def turned(maps: list[torch.Tensor], op: int) -> list[torch.Tensor]:
    """Each (P, P) map under one of the 8 symmetries of the square detector about its centre pixel P // 2
    (``op``: bit 0 mirrors the rows, bit 1 the columns, bit 2 swaps the axes; 0 is the identity).

    A pattern and its labels turned by 90° or mirrored together are those of the crystal turned or
    mirrored about the beam: the kinematic |F_g|², each reflection's excitation error and q_z depend on
    g and the tilt only through lengths and the products g·tilt, which the same in-plane isometry keeps.
    So every simulated orientation stands for eight, where the data hold one (train.symmetry_augment).
    A mirror about pixel c = P // 2 maps i to (2c − i) mod P = (P − i) mod P: flip, then roll by one.
    """
    out = []
    for m in maps:
        if op & 1:
            m = torch.roll(torch.flip(m, (0,)), 1, 0)
        if op & 2:
            m = torch.roll(torch.flip(m, (1,)), 1, 1)
        if op & 4:
            m = m.transpose(0, 1)
        out.append(m.contiguous())
    return out


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


# --- the training run's data -------------------------------------------------------------------
def data_fingerprint(manifest: pd.DataFrame, dataset_info: Path | None = None) -> str:
    """Hash of which patterns are in which split (stores + indices) and of dataset.json."""
    h = hashlib.sha256()
    cols = manifest[["store", "index", "split"]].astype(str).sort_values(["store", "index"])
    h.update(pd.util.hash_pandas_object(cols, index=False).to_numpy().tobytes())
    if dataset_info is not None and Path(dataset_info).is_file():
        h.update(Path(dataset_info).read_bytes())
    return h.hexdigest()[:16]


def label_scales(ds: QuartetDataset, qz_mask_threshold: float) -> tuple[float, float]:
    """Typical label magnitudes from a few evenly spaced training patterns (deterministic):
    vg_scale = median per-pattern max V_g; qz_scale = rms q_z where V_g is significant."""
    rows = np.unique(np.linspace(0, len(ds) - 1, min(SCALE_SAMPLES, len(ds))).astype(int))
    vmax, qz2, n = [], 0.0, 0
    for r in rows:
        q = qstore.read_pattern(ds.stores[r], int(ds.indices[r]))
        m = float(q["vg"].max())
        vmax.append(m)
        sel = q["vg"] > qz_mask_threshold * m
        qz2 += float((q["qz"][sel].astype(np.float64) ** 2).sum())
        n += int(sel.sum())
    vg_scale = float(np.median(vmax)) if vmax and np.median(vmax) > 0 else 1.0
    qz_scale = math.sqrt(qz2 / n) if n and qz2 > 0 else 0.1
    return vg_scale, max(qz_scale, 1e-3)


def make_augmenter(cfg: dict):
    if not cfg["train"]["augment"]:
        return None
    from fourdcrystal.learning.augment import Augmenter  # imported only when used

    return Augmenter(cfg["augment"])


def geometry_of(df: pd.DataFrame, root: Path) -> Geometry:
    """The detector geometry the data were simulated on (the first store's attribute)."""
    return Geometry.from_dict(qstore.store_attrs(root / str(df["store"].iloc[0]))["geometry"])


@dataclass
class TrainData:
    train: QuartetDataset
    val: QuartetDataset
    geometry: Geometry
    fingerprint: str  # data_fingerprint: a checkpoint resumes only on the same data


def load_data(cfg: dict, model_cfg: dict, manifest_path: Path, root: Path, dataset_info, seed: int) -> TrainData:
    """The manifest's train and val splits as datasets, checked against the model's size multiple."""
    manifest = qstore.load_manifest(manifest_path)
    for col in ("store", "index", "split"):
        if col not in manifest.columns:
            raise UserError(f"manifest {manifest_path} lacks column '{col}'", "rebuild it with `snakemake results/dataset/manifest.parquet`")
    train_df = manifest[manifest["split"] == "train"].reset_index(drop=True)
    val_df = manifest[manifest["split"] == "val"].reset_index(drop=True)
    if train_df.empty:
        raise UserError(f"manifest {manifest_path} has no train patterns", "simulate more crystals (selection.n_crystals >= 3)")
    if dataset_info is None and (manifest_path.parent / "dataset.json").is_file():
        dataset_info = manifest_path.parent / "dataset.json"
    geometry = geometry_of(train_df, root)
    multiple = size_multiple(model_cfg)
    if geometry.detector_px % multiple:
        raise UserError(f"detector_px {geometry.detector_px} is not divisible by model.stem_stride * 2**model.depth = {multiple}",
                        "lower model.depth or model.stem_stride, or pick a detector_px that is a multiple of it")
    augmenter = make_augmenter(cfg)
    tc = cfg["train"]
    scenes = Scenes(tc["negative_fraction"], tc["film_fraction"], geometry.dk_invA, geometry.center_px) \
        if tc["negative_fraction"] or tc["film_fraction"] else None
    counted = [None, None]
    if augmenter is not None and tc.get("label_min_snr") is not None:
        from fourdcrystal.learning.counted_labels import CountedLabels, load_reflections

        refl = load_reflections(manifest_path)
        counted = [CountedLabels(df, refl, geometry, tc["label_min_snr"]) for df in (train_df, val_df)]
    # validation always sees the same augmented patterns (fixed epoch and its own seed stream)
    # only the training samples are turned: validation measures the data as simulated
    return TrainData(QuartetDataset(train_df, root, augmenter, seed, scenes, counted[0],
                                    symmetry=bool(tc.get("symmetry_augment", False))),
                     QuartetDataset(val_df, root, augmenter, seed + 1, scenes, counted[1]),
                     geometry, data_fingerprint(manifest, dataset_info))


class EpochSampler(Sampler):
    """The current epoch's ``(epoch, row)`` indices, set by ``set`` before each pass: the epoch travels
    with every index, so one DataLoader and its workers serve every epoch."""

    def __init__(self):
        self.epoch, self.rows = 0, []

    def set(self, epoch: int, rows: list[int]) -> None:
        self.epoch, self.rows = int(epoch), list(rows)

    def __iter__(self):
        return ((self.epoch, r) for r in self.rows)

    def __len__(self) -> int:
        return len(self.rows)


def train_loader(ds: QuartetDataset, order: EpochSampler, bs: int, seed: int, num_workers: int,
                 pin: bool) -> DataLoader:
    """Batches of the rows ``order`` holds when iterated; the workers persist from epoch to epoch."""
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003)  # worker seeds: a function of the seed only
    return DataLoader(ds, batch_size=bs, sampler=order, num_workers=num_workers, worker_init_fn=seed_worker,
                      generator=g, pin_memory=pin, drop_last=False, persistent_workers=num_workers > 0)


def val_loader(ds: QuartetDataset, rank: int, world: int, bs: int, seed: int, num_workers: int,
               pin: bool) -> DataLoader:
    """This rank's val rows ``rank::world`` in batches of ``bs``, read and augmented by the workers.
    The val set never changes epoch, so the workers persist from one validation to the next."""
    g = torch.Generator()
    g.manual_seed(seed + 1)  # its own generator: iterating must not draw from the global torch RNG
    return DataLoader(ds, batch_size=bs, sampler=list(range(rank, len(ds), world)), num_workers=num_workers,
                      worker_init_fn=seed_worker, generator=g, pin_memory=pin, drop_last=False,
                      persistent_workers=num_workers > 0)
