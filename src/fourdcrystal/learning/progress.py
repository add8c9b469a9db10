"""Training progress on disk: ``checkpoint.pt`` for resumption and the metrics CSVs.

A checkpoint holds the model, optimizer, scheduler, the step, the epoch and the batches done in it, the
RNG states and the metric history, under a ``run_key`` (a digest of the config sections and data that
determine the trajectory); a rerun resumes only from its own run's checkpoint.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fourdcrystal.atomic import atomic_path, write_table
from fourdcrystal.config import digest

log = logging.getLogger("fourdcrystal.learning.train")

CHECKPOINT_NAME = "checkpoint.pt"

# keys that may change between a checkpoint and its resumption without changing the trajectory
_RESUME_NEUTRAL = {"checkpoint_every", "num_workers", "nproc"}


def run_key(cfg: dict, fingerprint: str, world: int) -> str:
    tcfg = {k: v for k, v in cfg["train"].items() if k not in _RESUME_NEUTRAL}
    sub = {"seed": cfg["seed"], "model": cfg["model"], "train": tcfg, "world": world,
           "augment": cfg["augment"] if cfg["train"]["augment"] else None, "data": fingerprint}
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


@dataclass
class Progress:
    """Where a run stands: optimizer steps taken, the epoch and its batches done, the metric rows."""
    step: int = 0
    epoch: int = 0
    batches_done: int = 0
    steps_log: list[dict] = field(default_factory=list)
    epochs_log: list[dict] = field(default_factory=list)


def write_metrics(out: Path, steps: list[dict], epochs: list[dict]) -> None:
    step_cols = ["step", "epoch", "lr", "loss", "vg_loss", "qz_loss", "grad_norm", "samples_per_s"]
    epoch_cols = ["epoch", "step", "train_loss", "train_vg_loss", "train_qz_loss", "val_loss", "val_vg_loss",
                  "val_qz_loss", "lr", "epoch_time_s"]
    write_table(out / "metrics_steps.csv", pd.DataFrame(steps, columns=step_cols))
    write_table(out / "metrics_epochs.csv", pd.DataFrame(epochs, columns=epoch_cols))


def save_progress(out: Path, key: str, model, opt, sched, progress: Progress, epoch: int, batches: int) -> None:
    """``<out>/checkpoint.pt`` (atomically) after ``batches`` batches of ``epoch``, and the metrics so far."""
    state = {"run_key": key, "model": model.state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "step": progress.step, "epoch": epoch, "batches_done": batches,
             "rng": rng_state(), "steps_log": progress.steps_log, "epochs_log": progress.epochs_log,
             "model_config": model.config}
    with atomic_path(out / CHECKPOINT_NAME) as tmp:
        torch.save(state, tmp)
    write_metrics(out, progress.steps_log, progress.epochs_log)


def resume(out: Path, key: str, model, opt, sched, steps_per_epoch: int, is_main: bool) -> Progress:
    """Restore model, optimizer, scheduler and RNGs from ``<out>/checkpoint.pt`` if this run (same
    ``run_key``) wrote it; the progress to continue from (a fresh one otherwise)."""
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        return Progress()
    ck = torch.load(path, map_location="cpu", weights_only=False)  # our own file: RNG states need pickle
    if ck.get("run_key") != key:
        if is_main:
            log.warning("ignoring %s: written for another config or dataset (run key %s != %s)",
                        path, ck.get("run_key"), key)
        return Progress()
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    set_rng_state(ck["rng"])
    p = Progress(ck["step"], ck["epoch"], ck["batches_done"], ck["steps_log"], ck["epochs_log"])
    if p.batches_done >= steps_per_epoch:  # that epoch (and its validation) was complete
        p.epoch, p.batches_done = p.epoch + 1, 0
    if is_main:
        log.info("resuming from %s at step %d (epoch %d, batch %d)", path, p.step, p.epoch, p.batches_done)
    return p
