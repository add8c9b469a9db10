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

Data loading: ``train.num_workers`` DataLoader worker processes read and augment the training batches,
and as many read each rank's val rows ``rank::world`` (the same augmentation every epoch); both sets of
workers are started once and serve every epoch (the training indices carry their epoch, see
fourdcrystal.learning.dataset.EpochSampler).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from fourdcrystal.config import fill_defaults
from fourdcrystal.errors import UserError, print_error
from fourdcrystal.learning.dataset import EpochSampler, TrainData, label_scales, load_data, train_loader, val_loader
from fourdcrystal.learning.model import build_model, configure_optimizer, model_config_from, save_checkpoint
from fourdcrystal.learning.progress import Progress, resume, run_key, save_progress, write_metrics

log = logging.getLogger("fourdcrystal.learning.train")

VG_LOG_KNEE = 1e-2  # V_g loss compression knee, fraction of the pattern's max V_g
VG_FOREGROUND = 5e-3  # reflection pixels for the balanced V_g loss, fraction of the pattern's max V_g (the direct
# beam, V_0): below the label floor simulation.label_min_vg_fraction (1 % of V_0), so every rendered peak counts
MIN_LR_FRACTION = 0.05  # cosine decay ends at this fraction of train.lr
LOG_EVERY = 10  # steps between progress log lines
NO_VAL = {"val_loss": float("nan"), "val_vg_loss": float("nan"), "val_qz_loss": float("nan")}


# --- distributed setup ------------------------------------------------------------------------
@contextlib.contextmanager
def distributed(backend: str):
    """``(world size, rank, device)`` from torchrun's environment; the process group (world size > 1)
    lives as long as the block."""
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
    try:
        yield world, rank, device
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def all_reduce_sum(values: list[float], device) -> list[float]:
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def seed_everything(seed: int, device: torch.device) -> None:
    if device.type == "cpu":
        # bitwise reproducible CPU runs for a seed (the tests compare loss trajectories)
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True  # GPU: speed over bitwise reproducibility
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on GPU; a no-op on CPU."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


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


def clip_gradients(model: torch.nn.Module, grad_clip: float) -> float:
    """Clip the gradient norm to ``grad_clip`` (0: off); returns the norm before clipping."""
    if grad_clip > 0:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip)))
    return float(torch.sqrt(sum(p.grad.square().sum() for p in model.parameters() if p.grad is not None)))


# --- one step's bookkeeping -------------------------------------------------------------------
def to_device(batch: dict, device: torch.device, non_blocking: bool):
    return (batch[k].to(device, non_blocking=non_blocking) for k in ("probe", "cbed", "vg", "qz"))


def log_step(progress: Progress, epoch: int, lr: float, loss, lv, lq, gnorm: float, t_last: float,
             total_steps: int, device, is_main: bool) -> list[float]:
    """Append the step's metrics row (global means over all ranks' samples); returns the summed
    ``[loss, vg_loss, qz_loss, n_samples]``."""
    n = float(len(lv))
    tot = all_reduce_sum([loss.item() * n, lv.sum().item(), lq.sum().item(), n], device)
    row = {"step": progress.step, "epoch": epoch, "lr": lr, "loss": tot[0] / tot[3], "vg_loss": tot[1] / tot[3],
           "qz_loss": tot[2] / tot[3], "grad_norm": gnorm,
           "samples_per_s": tot[3] / max(time.perf_counter() - t_last, 1e-9)}
    progress.steps_log.append(row)
    if is_main and (progress.step % LOG_EVERY == 0 or progress.step == 1):
        log.info("step %d/%d epoch %d lr %.2e loss %.4f (vg %.4f, qz %.4f) %.1f samples/s", progress.step,
                 total_steps, epoch, lr, row["loss"], row["vg_loss"], row["qz_loss"], row["samples_per_s"])
    return tot


def epoch_row(progress: Progress, epoch: int, sums: list[float], val: dict, lr: float, t_epoch: float,
              is_main: bool) -> None:
    """Append the epoch's metrics row: train means over all ranks' samples, the val losses."""
    n = max(sums[3], 1)
    row = {"epoch": epoch, "step": progress.step, "train_loss": sums[0] / n, "train_vg_loss": sums[1] / n,
           "train_qz_loss": sums[2] / n, **val, "lr": lr, "epoch_time_s": time.perf_counter() - t_epoch}
    progress.epochs_log.append(row)
    if is_main:
        log.info("epoch %d done: train loss %.4f, val loss %.4f (vg %.4f, qz %.4f), %.1f s", epoch, row["train_loss"],
                 row["val_loss"], row["val_vg_loss"], row["val_qz_loss"], row["epoch_time_s"])


# --- validation ---------------------------------------------------------------------------------
@torch.no_grad()
def validate(model, loader: DataLoader, tcfg: dict, qz_scale: float, device) -> dict:
    """Mean val losses over the whole split: each rank sums over its loader's rows, sums all-reduced."""
    model.eval()
    sums = [0.0, 0.0, 0.0]  # vg_loss, qz_loss, count
    for batch in loader:
        probe, cbed, vg, qz = to_device(batch, device, loader.pin_memory)
        with autocast(device):
            vg_p, qz_p = model(probe, cbed)
        lv, lq = pattern_losses(vg_p.float(), qz_p.float(), vg, qz, tcfg["qz_mask_threshold"], qz_scale)
        sums[0] += float(lv.sum())
        sums[1] += float(lq.sum())
        sums[2] += len(vg)
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
    tcfg, seed, out = cfg["train"], int(cfg["seed"]), Path(out_dir)
    with distributed(tcfg["backend"]) as (world, rank, device):
        is_main, pin, bs, workers = rank == 0, device.type == "cuda", int(tcfg["batch_size"]), int(tcfg["num_workers"])
        seed_everything(seed, device)
        mcfg = model_config_from(cfg["model"])
        data = load_data(cfg, mcfg, Path(manifest_path), Path(root), dataset_info, seed)
        vg_scale, qz_scale = label_scales(data.train, tcfg["qz_mask_threshold"])
        raw = build_model({**mcfg, "vg_scale": vg_scale, "qz_scale": qz_scale}).to(device)
        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=False)
        steps_per_epoch = math.ceil(len(sampler) / bs)
        total_steps = int(tcfg["max_steps"]) if tcfg["max_steps"] else int(tcfg["epochs"]) * steps_per_epoch
        opt = configure_optimizer(raw, tcfg["lr"], tcfg["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, int(tcfg["warmup_steps"]), total_steps))
        key = run_key(cfg, data.fingerprint, world)
        progress = resume(out, key, raw, opt, sched, steps_per_epoch, is_main)
        start_epoch, n_epochs = progress.epoch, math.ceil(total_steps / steps_per_epoch)
        model = raw if world == 1 else torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if device.type == "cuda" else None)
        order = EpochSampler()
        loader = train_loader(data.train, order, bs, seed, workers, pin)
        vloader = val_loader(data.val, rank, world, bs, seed, workers, pin) if len(data.val) else None
        if is_main:
            log.info("train %d / val %d patterns, %dx%d px; world %d on %s; batch %d/process; %d steps "
                     "(%d epochs x %d); model %.2f M parameters; vg_scale %.3g, qz_scale %.3g 1/Å",
                     len(data.train), len(data.val), data.geometry.detector_px, data.geometry.detector_px, world,
                     device, bs, total_steps, n_epochs, steps_per_epoch,
                     sum(p.numel() for p in raw.parameters()) / 1e6, vg_scale, qz_scale)
            out.mkdir(parents=True, exist_ok=True)

        model.train()
        t_run = time.perf_counter()
        for epoch in range(start_epoch, n_epochs):
            if progress.step >= total_steps:
                break
            sampler.set_epoch(epoch)
            skip = progress.batches_done if epoch == start_epoch else 0  # batches a resumed epoch already took
            order.set(epoch, list(iter(sampler))[skip * bs:])
            sums, t_epoch = [0.0, 0.0, 0.0, 0.0], time.perf_counter()
            t_last = t_epoch
            for batch_i, batch in enumerate(loader, start=skip + 1):
                probe, cbed, vg, qz = to_device(batch, device, pin)
                with autocast(device):
                    vg_p, qz_p = model(probe, cbed)
                lv, lq = pattern_losses(vg_p.float(), qz_p.float(), vg, qz, tcfg["qz_mask_threshold"], qz_scale)
                loss = (lv + tcfg["qz_loss_weight"] * lq).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = clip_gradients(raw, tcfg["grad_clip"])
                lr = opt.param_groups[0]["lr"]
                opt.step()
                sched.step()
                progress.step += 1
                tot = log_step(progress, epoch, lr, loss, lv, lq, gnorm, t_last, total_steps, device, is_main)
                sums, t_last = [a + b for a, b in zip(sums, tot)], time.perf_counter()
                if stop_after is not None and progress.step >= stop_after:
                    log.warning("stopping abruptly after step %d (--stop-after)", progress.step)
                    return None
                if progress.step >= total_steps:
                    break
                if progress.step % int(tcfg["checkpoint_every"]) == 0 and batch_i < steps_per_epoch and is_main:
                    save_progress(out, key, raw, opt, sched, progress, epoch, batch_i)
            val = validate(model, vloader, tcfg, qz_scale, device) if vloader is not None else dict(NO_VAL)
            epoch_row(progress, epoch, sums, val, opt.param_groups[0]["lr"], t_epoch, is_main)
            if is_main:
                save_progress(out, key, raw, opt, sched, progress, epoch, steps_per_epoch)
        return finish(cfg, out, raw, data, progress, world, t_run, figures_dir) if is_main else None


def finish(cfg: dict, out: Path, model, data: TrainData, progress: Progress, world: int, t_run: float,
           figures_dir) -> Path:
    """Write the metrics, ``<out>/model.pt`` and (``figures_dir``) the loss and validation figures."""
    write_metrics(out, progress.steps_log, progress.epochs_log)
    tcfg = cfg["train"]
    final = progress.epochs_log[-1] if progress.epochs_log else {}
    train_config = {"seed": int(cfg["seed"]), "train": tcfg, "augment": cfg["augment"] if tcfg["augment"] else None,
                    "world_size": world, "steps": progress.step, "epochs": len(progress.epochs_log),
                    "final_val_loss": final.get("val_loss"), "train_patterns": len(data.train),
                    "val_patterns": len(data.val), "train_time_s": time.perf_counter() - t_run}
    path = save_checkpoint(out / "model.pt", model, data.geometry, data.fingerprint, train_config)
    log.info("wrote %s (%d steps, final val loss %s)", path, progress.step, final.get("val_loss"))
    if figures_dir:
        from fourdcrystal.learning.figures import loss_figure, validation_figure

        loss_figure(out / "metrics_steps.csv", out / "metrics_epochs.csv", Path(figures_dir) / "loss.png")
        validation_figure(model.cpu().eval(), data.val if len(data.val) else data.train, Path(figures_dir) / "validation.png")
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
