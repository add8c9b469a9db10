"""Training: one readable (DDP) loop, every knob in config `train` / `model` or a constant below.

Launch::

    torchrun --standalone --nproc_per_node=N -m fourdcrystal.learning.train \
        --config config/config.yaml --manifest results/dataset/manifest.parquet \
        --out results/model --figures results/figures
    python -m fourdcrystal.learning.train ...          # the same, one process (world size 1)

Each process trains on its DistributedSampler slice of the train split (batch ``train.batch_size``
per process) and DDP all-reduces (averages) the gradients, so N processes with batch b take the
same steps as one process with batch N·b.  Backend ``train.backend``: auto = NCCL on GPUs, gloo on
CPU.  bf16 autocast on GPU only (CPU bf16 convolutions are slow and would change the CPU numbers
that the tests pin down).

Loss, per pattern, then averaged over the batch (so that the DDP average equals the big-batch
mean):

* V_g: the direct beam (mean inner potential) is 10²–10⁴× the weak reflections, so a plain MSE
  would only ever fit the centre pixel.  Both prediction and truth are compressed with
  ``log1p(V / (VG_LOG_KNEE · max V_true)) / log1p(1 / VG_LOG_KNEE)`` — per-pattern normalised, so
  light and heavy crystals weigh alike, the brightest pixel maps to 1 and a reflection at 1 % of it
  still to ~0.15 — and compared by squared error, averaged separately over the reflection pixels
  (``V_true > VG_FOREGROUND · max V_true``) and over the rest, and the two means averaged.  Bragg
  reflections cover a few % of the detector, so a plain pixel mean is minimised by a featureless
  constant (seen: the network predicted one value over whole patterns); the class-balanced mean makes
  missing a reflection cost as much as mis-predicting the whole background.
* q_z: only meaningful where there is a reflection: L1 error in units of the data's typical |q_z|
  (``qz_scale``), averaged over pixels with ``V_true > train.qz_mask_threshold · max V_true``,
  weighted by ``train.qz_loss_weight``.

Schedule: linear warm-up over ``train.warmup_steps``, then cosine decay to MIN_LR_FRACTION·lr at the
last step.  Gradients are clipped to norm ``train.grad_clip`` (0: off).

Fault tolerance: every ``train.checkpoint_every`` steps and at each epoch end, rank 0 writes
``<out>/checkpoint.pt`` atomically (model, optimizer, scheduler, step, epoch, batches done in the
epoch, RNG states, metric history).  A rerun with the same config and data resumes from it and
continues exactly where the checkpoint left off (mid-epoch included: the epoch's sampler order is a
function of (seed, epoch), so the consumed batches are skipped).  On CPU the run is deterministic
for a seed (torch.use_deterministic_algorithms).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from fourdcrystal.simulation import store as qstore
from fourdcrystal.atomic import atomic_path, write_table
from fourdcrystal.config import digest, fill_defaults
from fourdcrystal.learning.dataset import QuartetDataset, seed_worker
from fourdcrystal.errors import UserError, print_error
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.model import build_model, model_config_from, save_checkpoint, size_multiple

log = logging.getLogger("fourdcrystal.learning.train")

VG_LOG_KNEE = 1e-2  # V_g loss compression knee, fraction of the pattern's max V_g
VG_FOREGROUND = 5e-3  # reflection pixels for the balanced V_g loss, fraction of the pattern's max V_g (the direct
# beam, V_0): below the label floor simulation.label_min_vg_fraction (1 % of V_0), so every rendered peak counts
MIN_LR_FRACTION = 0.05  # cosine decay ends at this fraction of train.lr
LOG_EVERY = 10  # steps between progress log lines
SCALE_SAMPLES = 32  # training patterns used to measure vg_scale / qz_scale
CHECKPOINT_NAME = "checkpoint.pt"

# keys that may change between a checkpoint and its resumption without changing the trajectory
_RESUME_NEUTRAL = {"checkpoint_every", "num_workers", "nproc"}


# --- distributed setup ------------------------------------------------------------------------
def setup_distributed(backend: str):
    """Read torchrun's environment; init the process group when world size > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and backend != "gloo"
    if backend == "nccl" and not torch.cuda.is_available():
        raise UserError("train.backend is nccl but no CUDA GPU is visible", "set train.backend: auto (gloo on CPU)")
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return world, rank, local_rank, device


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# --- loss and schedule ------------------------------------------------------------------------
def pattern_losses(vg_pred, qz_pred, vg, qz, qz_mask_threshold: float, qz_scale: float):
    """Per-pattern (B,) V_g and q_z losses (see module docstring)."""
    vmax = vg.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
    knee = VG_LOG_KNEE * vmax
    norm = math.log1p(1.0 / VG_LOG_KNEE)
    t_pred = torch.log1p(vg_pred.clamp_min(0) / knee) / norm
    t_true = torch.log1p(vg.clamp_min(0) / knee) / norm
    se = (t_pred - t_true).square()
    fg = (vg > VG_FOREGROUND * vmax).float()
    bg = 1.0 - fg
    vg_loss = 0.5 * ((se * fg).sum(dim=(-2, -1)) / fg.sum(dim=(-2, -1)).clamp_min(1.0)
                     + (se * bg).sum(dim=(-2, -1)) / bg.sum(dim=(-2, -1)).clamp_min(1.0))
    mask = (vg > qz_mask_threshold * vmax).float()
    qz_err = (qz_pred - qz).abs() / qz_scale
    qz_loss = (qz_err * mask).sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1)).clamp_min(1.0)
    return vg_loss, qz_loss


def lr_factor(step: int, warmup: int, total: int) -> float:
    """LambdaLR factor for optimizer step ``step`` (0-based): linear warm-up, then cosine decay."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


# --- data ---------------------------------------------------------------------------------------
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
    if not cfg["train"].get("augment", False):
        return None
    from fourdcrystal.learning.augment import Augmenter  # imported only when used

    return Augmenter(cfg["augment"])


def geometry_of(df: pd.DataFrame, root: Path) -> Geometry:
    """The detector geometry the data were simulated on (the first store's attribute)."""
    return Geometry.from_dict(qstore.store_attrs(root / str(df["store"].iloc[0]))["geometry"])


# --- checkpoints --------------------------------------------------------------------------------
def run_key(cfg: dict, fingerprint: str, world: int) -> str:
    tcfg = {k: v for k, v in cfg["train"].items() if k not in _RESUME_NEUTRAL}
    sub = {"seed": cfg.get("seed"), "model": cfg.get("model"), "train": tcfg, "world": world,
           "augment": cfg.get("augment") if cfg["train"].get("augment") else None, "data": fingerprint}
    return digest(sub)


def rng_state() -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def save_training_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_metrics(out: Path, steps: list[dict], epochs: list[dict]) -> None:
    step_cols = ["step", "epoch", "lr", "loss", "vg_loss", "qz_loss", "grad_norm", "samples_per_s"]
    epoch_cols = ["epoch", "step", "train_loss", "train_vg_loss", "train_qz_loss", "val_loss", "val_vg_loss",
                  "val_qz_loss", "lr", "epoch_time_s"]
    write_table(out / "metrics_steps.csv", pd.DataFrame(steps, columns=step_cols))
    write_table(out / "metrics_epochs.csv", pd.DataFrame(epochs, columns=epoch_cols))


# --- validation ---------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, ds: QuartetDataset, rank: int, world: int, bs: int, tcfg: dict, qz_scale: float, device,
             autocast) -> dict:
    """Mean val losses over the whole split: each rank takes rows rank::world, sums all-reduced."""
    model.eval()
    rows = list(range(rank, len(ds), world))
    sums = [0.0, 0.0, 0.0]  # vg_loss, qz_loss, count
    for i in range(0, len(rows), bs):
        items = [ds[r] for r in rows[i:i + bs]]
        probe, cbed, vg, qz = (torch.stack([it[k] for it in items]).to(device) for k in ("probe", "cbed", "vg", "qz"))
        with autocast():
            vg_p, qz_p = model(probe, cbed)
        lv, lq = pattern_losses(vg_p.float(), qz_p.float(), vg, qz, tcfg["qz_mask_threshold"], qz_scale)
        sums[0] += float(lv.sum())
        sums[1] += float(lq.sum())
        sums[2] += len(items)
    sums = all_reduce_sum(sums, device)
    model.train()
    n = max(sums[2], 1.0)
    vg_l, qz_l = sums[0] / n, sums[1] / n
    return {"val_loss": vg_l + tcfg["qz_loss_weight"] * qz_l, "val_vg_loss": vg_l, "val_qz_loss": qz_l}


# --- the training run ---------------------------------------------------------------------------
def train(cfg: dict, manifest_path, out_dir, figures_dir=None, root=".", dataset_info=None,
          stop_after: int | None = None) -> Path | None:
    """Train (or resume) and write ``<out_dir>/model.pt``; returns its path on rank 0.

    ``stop_after``: end abruptly right after this optimizer step, writing nothing (simulates a
    crash or a preempted job; tests use it to check resumption).
    """
    cfg = fill_defaults(cfg)  # the schema's defaults, as for the workflow
    tcfg = cfg["train"]
    seed = int(cfg.get("seed", 0))
    root, out = Path(root), Path(out_dir)
    backend = tcfg["backend"]
    world, rank, local_rank, device = setup_distributed(backend)
    is_main = rank == 0
    try:
        return _train(cfg, tcfg, seed, Path(manifest_path), root, out, figures_dir, dataset_info, stop_after,
                      world, rank, device, is_main)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg, tcfg, seed, manifest_path, root, out, figures_dir, dataset_info, stop_after, world, rank, device,
           is_main):
    if device.type == "cpu":
        # bitwise reproducible CPU runs for a seed (the tests compare loss trajectories)
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True  # GPU: speed over bitwise reproducibility
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)

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
    fingerprint = data_fingerprint(manifest, dataset_info)
    geometry = geometry_of(train_df, root)
    mcfg = model_config_from(cfg.get("model"))
    multiple = size_multiple(mcfg)
    if geometry.detector_px % multiple:
        raise UserError(f"detector_px {geometry.detector_px} is not divisible by model.stem_stride * 2**model.depth = {multiple}",
                        "lower model.depth or model.stem_stride, or pick a detector_px that is a multiple of it")

    augmenter = make_augmenter(cfg)
    train_ds = QuartetDataset(train_df, root, augmenter, seed)
    # validation always sees the same augmented patterns (fixed epoch and its own seed stream)
    val_ds = QuartetDataset(val_df, root, augmenter, seed + 1)
    vg_scale, qz_scale = label_scales(train_ds, tcfg["qz_mask_threshold"])
    model = build_model({**mcfg, "vg_scale": vg_scale, "qz_scale": qz_scale}).to(device)
    raw = model

    bs = int(tcfg["batch_size"])
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
    steps_per_epoch = math.ceil(len(sampler) / bs)
    total_steps = int(tcfg["max_steps"]) if tcfg.get("max_steps") else int(tcfg["epochs"]) * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    # AdamW; as in nanoGPT, weight decay only on conv weights (dim >= 2), never on biases/norms
    decay = [p for p in raw.parameters() if p.dim() >= 2]
    no_decay = [p for p in raw.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(tcfg["weight_decay"])},
                             {"params": no_decay, "weight_decay": 0.0}], lr=float(tcfg["lr"]),
                            betas=(0.9, 0.99), foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, int(tcfg["warmup_steps"]), total_steps))

    key = run_key(cfg, fingerprint, world)
    ckpt_path = out / CHECKPOINT_NAME
    step, start_epoch, batches_done = 0, 0, 0
    steps_log: list[dict] = []
    epochs_log: list[dict] = []
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)  # our own file: RNG states need pickle
        if ck.get("run_key") == key:
            raw.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"])
            step, start_epoch, batches_done = ck["step"], ck["epoch"], ck["batches_done"]
            steps_log, epochs_log = ck["steps_log"], ck["epochs_log"]
            if batches_done >= steps_per_epoch:  # that epoch (and its validation) was complete
                start_epoch, batches_done = start_epoch + 1, 0
            if is_main:
                log.info("resuming from %s at step %d (epoch %d, batch %d)", ckpt_path, step, start_epoch, batches_done)
        elif is_main:
            log.warning("ignoring %s: written for another config or dataset (run key %s != %s)",
                        ckpt_path, ck.get("run_key"), key)

    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None)

    def autocast():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def state(epoch, batches):
        return {"run_key": key, "model": raw.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "step": step, "epoch": epoch, "batches_done": batches,
                "rng": rng_state(), "steps_log": steps_log, "epochs_log": epochs_log,
                "model_config": raw.config}

    if is_main:
        n_par = sum(p.numel() for p in raw.parameters())
        log.info("train %d / val %d patterns, %dx%d px; world %d on %s; batch %d/process; %d steps "
                 "(%d epochs x %d); model %.2f M parameters; vg_scale %.3g, qz_scale %.3g 1/Å",
                 len(train_ds), len(val_ds), geometry.detector_px, geometry.detector_px, world, device, bs,
                 total_steps, n_epochs, steps_per_epoch, n_par / 1e6, vg_scale, qz_scale)
        out.mkdir(parents=True, exist_ok=True)

    pin = device.type == "cuda"
    model.train()
    t_run = time.perf_counter()
    for epoch in range(start_epoch, n_epochs):
        if step >= total_steps:
            break
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        order = list(iter(sampler))
        skip = batches_done * bs if epoch == start_epoch else 0
        g = torch.Generator()
        g.manual_seed(seed * 1_000_003 + epoch)  # worker seeds: a function of (seed, epoch) only
        loader = DataLoader(train_ds, batch_size=bs, sampler=order[skip:], num_workers=int(tcfg["num_workers"]),
                            worker_init_fn=seed_worker, generator=g, pin_memory=pin, drop_last=False,
                            persistent_workers=False)
        batch_i = skip // bs
        sums = [0.0, 0.0, 0.0, 0]
        t_epoch = t_last = time.perf_counter()
        for batch in loader:
            probe, cbed, vg, qz = (batch[k].to(device, non_blocking=pin) for k in ("probe", "cbed", "vg", "qz"))
            with autocast():
                vg_p, qz_p = model(probe, cbed)
            lv, lq = pattern_losses(vg_p.float(), qz_p.float(), vg, qz, tcfg["qz_mask_threshold"], qz_scale)
            loss = (lv + tcfg["qz_loss_weight"] * lq).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg["grad_clip"] > 0:
                gnorm = float(torch.nn.utils.clip_grad_norm_(raw.parameters(), float(tcfg["grad_clip"])))
            else:
                gnorm = float(torch.sqrt(sum(p.grad.square().sum() for p in raw.parameters() if p.grad is not None)))
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            step += 1
            batch_i += 1
            # logged losses are global means over all ranks' samples
            tot = all_reduce_sum([loss.item() * len(vg), lv.sum().item(), lq.sum().item(), float(len(vg))], device)
            now = time.perf_counter()
            row = {"step": step, "epoch": epoch, "lr": lr, "loss": tot[0] / tot[3], "vg_loss": tot[1] / tot[3],
                   "qz_loss": tot[2] / tot[3], "grad_norm": gnorm, "samples_per_s": tot[3] / max(now - t_last, 1e-9)}
            t_last = now
            steps_log.append(row)
            sums = [sums[0] + tot[0], sums[1] + tot[1], sums[2] + tot[2], sums[3] + tot[3]]
            if is_main and (step % LOG_EVERY == 0 or step == 1):
                log.info("step %d/%d epoch %d lr %.2e loss %.4f (vg %.4f, qz %.4f) %.1f samples/s", step,
                         total_steps, epoch, lr, row["loss"], row["vg_loss"], row["qz_loss"], row["samples_per_s"])
            if stop_after is not None and step >= stop_after:
                log.warning("stopping abruptly after step %d (--stop-after)", step)
                return None
            if step >= total_steps:
                break
            if step % int(tcfg["checkpoint_every"]) == 0 and batch_i < steps_per_epoch and is_main:
                save_training_state(out / CHECKPOINT_NAME, state(epoch, batch_i))
                write_metrics(out, steps_log, epochs_log)
        val = validate(model, val_ds, rank, world, bs, tcfg, qz_scale, device, autocast) if len(val_ds) else \
            {"val_loss": float("nan"), "val_vg_loss": float("nan"), "val_qz_loss": float("nan")}
        n = max(sums[3], 1)
        erow = {"epoch": epoch, "step": step, "train_loss": sums[0] / n, "train_vg_loss": sums[1] / n,
                "train_qz_loss": sums[2] / n, **val, "lr": opt.param_groups[0]["lr"],
                "epoch_time_s": time.perf_counter() - t_epoch}
        epochs_log.append(erow)
        if is_main:
            log.info("epoch %d done: train loss %.4f, val loss %.4f (vg %.4f, qz %.4f), %.1f s", epoch,
                     erow["train_loss"], erow["val_loss"], erow["val_vg_loss"], erow["val_qz_loss"], erow["epoch_time_s"])
            save_training_state(out / CHECKPOINT_NAME, state(epoch, steps_per_epoch))
            write_metrics(out, steps_log, epochs_log)

    if not is_main:
        return None
    write_metrics(out, steps_log, epochs_log)
    final = epochs_log[-1] if epochs_log else {}
    train_config = {"seed": seed, "train": tcfg, "augment": cfg.get("augment") if tcfg["augment"] else None,
                    "world_size": world, "steps": step, "epochs": len(epochs_log),
                    "final_val_loss": final.get("val_loss"), "train_patterns": len(train_ds),
                    "val_patterns": len(val_ds), "train_time_s": time.perf_counter() - t_run}
    path = save_checkpoint(out / "model.pt", raw, geometry, fingerprint, train_config)
    log.info("wrote %s (%d steps, final val loss %s)", path, step, final.get("val_loss"))
    if figures_dir:
        from fourdcrystal.learning.figures import loss_figure, validation_figure

        loss_figure(out / "metrics_steps.csv", out / "metrics_epochs.csv", Path(figures_dir) / "loss.png")
        validation_figure(raw.cpu().eval(), val_ds if len(val_ds) else train_ds, Path(figures_dir) / "validation.png")
    return path


# --- command line -------------------------------------------------------------------------------
def load_cfg(args) -> dict:
    if args.config_json:
        try:
            cfg = json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise UserError(f"--config-json is not valid JSON ({exc})", "pass json.dumps(config)") from None
    elif args.config:
        from fourdcrystal.config import load

        cfg = load(args.config)
    else:
        raise UserError("no configuration given", "pass --config config/config.yaml")
    for section in ("model", "train"):
        if not isinstance(cfg.get(section), dict):
            raise UserError(f"configuration lacks the '{section}' section", "add it (see config/config.yaml)")
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fourdcrystal.learning.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="workflow config YAML (sections seed, model, train, augment)")
    p.add_argument("--config-json", help="the same as one JSON string (what the Snakemake rule passes)")
    p.add_argument("--manifest", required=True, help="results/dataset/manifest.parquet")
    p.add_argument("--dataset-info", default=None, help="dataset.json (default: beside the manifest)")
    p.add_argument("--out", required=True, help="output folder: model.pt, checkpoint.pt, metrics CSVs")
    p.add_argument("--figures", default=None, help="folder for loss.png and validation.png (omit: no figures)")
    p.add_argument("--root", default=".", help="folder the manifest's store paths are relative to")
    p.add_argument("--stop-after", type=int, default=None, help="end abruptly after this step (tests resumption)")
    p.add_argument("--log", default=None, help="also log to this file")
    args = p.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if args.log and rank == 0:
        handlers.append(logging.FileHandler(args.log, mode="a"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, handlers=handlers, force=True,
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    try:
        cfg = load_cfg(args)
        train(cfg, args.manifest, args.out, args.figures, args.root, args.dataset_info, args.stop_after)
    except UserError as err:
        print_error(err)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
