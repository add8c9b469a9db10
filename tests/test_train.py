"""Training loop: real gloo DDP against one process, resumption, determinism, outputs.

Data: tiny synthetic quartet stores written with the real store writer (fourdcrystal.simulation.store) and a
manifest, read back through the real Dataset/DataLoader path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from fourdcrystal.simulation import store as qstore
from fourdcrystal.geometry import Geometry
from fourdcrystal.learning.model import load_checkpoint
from fourdcrystal.learning.train import train

sys.path.insert(0, str(Path(__file__).parent))
from test_model import synth_quartets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
P = 32


def make_dataset(root: Path, n_crystals=4, per_crystal=4, seed=0) -> Path:
    """Stores under root/results/simulate/c{i}/shard-0000 and root/results/dataset/manifest.parquet;
    crystals 0..n-2 train, the last one val."""
    geo = Geometry(box_A=16.0, gpts=64, detector_px=P, thicknesses_A=(10.0,), slice_thickness_A=2.0)
    rows = []
    for c in range(n_crystals):
        arrays = synth_quartets(per_crystal, P, seed=seed + c)
        shard = root / "results" / "simulate" / f"c{c}" / "shard-0000"
        qstore.write_shard(shard, arrays, pd.DataFrame({"crystal_id": [f"c{c}"] * per_crystal}),
                           pd.DataFrame({"index": pd.Series(dtype="int64")}), geo,
                           attrs={"crystal_id": f"c{c}", "shard": 0})
        for i in range(per_crystal):
            rows.append({"crystal_id": f"c{c}", "store": f"results/simulate/c{c}/shard-0000/quartets.zarr",
                         "index": i, "split": "val" if c == n_crystals - 1 else "train"})
    manifest = root / "results" / "dataset" / "manifest.parquet"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def tiny_config(**train):
    return {"seed": 7,
            "model": {"base_channels": 4, "depth": 2, "norm": "group", "dropout": 0.0, "xcorr_amplitude": True},
            "train": {"nproc": 1, "backend": "gloo", "epochs": 2, "batch_size": 4, "lr": 3e-3, "weight_decay": 1e-4,
                      "warmup_steps": 2, "grad_clip": 1.0, "checkpoint_every": 2, "num_workers": 0,
                      "max_steps": None, "qz_mask_threshold": 0.05, "qz_loss_weight": 1.0, "augment": False,
                      **train},
            "augment": {"dose_e_per_pattern": [1.0e4, 1.0e5], "background_const": [0.0, 0.002],
                        "background_diffuse": [0.0, 0.01], "blur_px": [0.0, 0.5], "origin_shift_px": 0.5,
                        "ellipticity": 0.01, "hot_pixel_fraction": 1e-4, "dead_pixel_fraction": 1e-4}}


def run_cli(cfg, manifest, out, root, nproc=1, extra=()):
    """Run the training as separate processes: torchrun (gloo on 127.0.0.1) or plain python."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo",
           "MASTER_ADDR": "127.0.0.1"}
    args = ["-m", "fourdcrystal.learning.train", "--config-json", json.dumps(cfg), "--manifest", str(manifest),
            "--out", str(out), "--root", str(root), *extra]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc_per_node={nproc}",
               "--master_addr=127.0.0.1", "--master_port=0", "--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0",
               *args]
    else:
        cmd = [sys.executable, *args]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_two_gloo_processes_match_one_process_with_double_batch(tmp_path):
    """Gradients are really all-reduced: 2 ranks × batch 2 take the same steps as 1 rank × batch 4."""
    manifest = make_dataset(tmp_path, n_crystals=3, per_crystal=4)  # 8 train patterns: 2 steps/epoch
    cfg1 = tiny_config(batch_size=4, epochs=2)
    cfg2 = tiny_config(batch_size=2, epochs=2, nproc=2)
    run_cli(cfg1, manifest, tmp_path / "one", tmp_path)
    res = run_cli(cfg2, manifest, tmp_path / "two", tmp_path, nproc=2)
    assert "world 2" in res.stderr
    m1, _, meta1 = load_checkpoint(tmp_path / "one" / "model.pt")
    m2, _, meta2 = load_checkpoint(tmp_path / "two" / "model.pt")
    assert meta1["train_config"]["steps"] == meta2["train_config"]["steps"] == 4
    assert meta2["train_config"]["world_size"] == 2
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=f"parameter {k} differs")
    # the logged per-step global losses agree too
    s1 = pd.read_csv(tmp_path / "one" / "metrics_steps.csv")
    s2 = pd.read_csv(tmp_path / "two" / "metrics_steps.csv")
    np.testing.assert_allclose(s1["loss"], s2["loss"], rtol=1e-4)
    # and training really changed the weights (a no-op step would also "match")
    assert s1["loss"].iloc[-1] != s1["loss"].iloc[0]


def test_resume_after_interruption_reproduces_the_trajectory(tmp_path):
    """Stop after step 5 (checkpoint at 4, step 5 lost), rerun: same losses and weights as a run
    that was never interrupted (CPU, fixed seed, augmentation on)."""
    manifest = make_dataset(tmp_path, n_crystals=3, per_crystal=4)
    cfg = tiny_config(batch_size=2, epochs=2, checkpoint_every=2, augment=True)  # 4 steps/epoch, 8 total
    assert train(cfg, manifest, tmp_path / "a", root=tmp_path, stop_after=5) is None
    assert not (tmp_path / "a" / "model.pt").exists()
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert (ck["step"], ck["epoch"], ck["batches_done"]) == (4, 0, 4)  # end of epoch 0 (4 steps/epoch)
    assert train(cfg, manifest, tmp_path / "a", root=tmp_path) is not None
    assert train(cfg, manifest, tmp_path / "b", root=tmp_path) is not None
    a = pd.read_csv(tmp_path / "a" / "metrics_steps.csv")
    b = pd.read_csv(tmp_path / "b" / "metrics_steps.csv")
    assert list(a["step"]) == list(range(1, 9))
    pd.testing.assert_series_equal(a["loss"], b["loss"], rtol=0, atol=0)
    ma, _, _ = load_checkpoint(tmp_path / "a" / "model.pt")
    mb, _, _ = load_checkpoint(tmp_path / "b" / "model.pt")
    for x, y in zip(ma.state_dict().values(), mb.state_dict().values()):
        assert torch.equal(x, y)


def test_resume_mid_epoch(tmp_path):
    """A checkpoint in the middle of an epoch resumes with the remaining batches of that epoch."""
    manifest = make_dataset(tmp_path, n_crystals=3, per_crystal=4)
    cfg = tiny_config(batch_size=2, epochs=1, checkpoint_every=2, max_steps=None)
    train(cfg, manifest, tmp_path / "a", root=tmp_path, stop_after=3)  # checkpoint at step 2 of 4
    ck = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert (ck["step"], ck["batches_done"]) == (2, 2)
    train(cfg, manifest, tmp_path / "a", root=tmp_path)
    train(cfg, manifest, tmp_path / "b", root=tmp_path)
    a = pd.read_csv(tmp_path / "a" / "metrics_steps.csv")
    b = pd.read_csv(tmp_path / "b" / "metrics_steps.csv")
    pd.testing.assert_series_equal(a["loss"], b["loss"], rtol=0, atol=0)
    e = pd.read_csv(tmp_path / "a" / "metrics_epochs.csv")
    assert len(e) == 1 and np.isfinite(e["val_loss"]).all()


def test_outputs_figures_and_stale_checkpoint(tmp_path):
    """model.pt follows the contract, metrics and figures exist; a checkpoint from another config
    is ignored rather than resumed."""
    manifest = make_dataset(tmp_path, n_crystals=3, per_crystal=4)
    cfg = tiny_config(batch_size=4, epochs=1)
    train(cfg, manifest, tmp_path / "m", figures_dir=tmp_path / "fig", root=tmp_path)
    model, geo, meta = load_checkpoint(tmp_path / "m" / "model.pt")
    assert geo.detector_px == P and meta["format_version"] == 1 and len(meta["data_fingerprint"]) == 16
    assert {"lr", "batch_size"} <= set(meta["train_config"]["train"])
    for f in ("loss.png", "validation.png"):
        assert (tmp_path / "fig" / f).stat().st_size > 10_000
    cols = set(pd.read_csv(tmp_path / "m" / "metrics_steps.csv").columns)
    assert {"step", "epoch", "lr", "loss", "vg_loss", "qz_loss", "samples_per_s"} <= cols
    # another lr: the old checkpoint (end of training) must not be taken as "already done"
    train(tiny_config(batch_size=4, epochs=1, lr=1e-3), manifest, tmp_path / "m", root=tmp_path)
    s = pd.read_csv(tmp_path / "m" / "metrics_steps.csv")
    assert list(s["step"]) == [1, 2] and s["lr"].max() <= 1e-3


def test_bad_inputs_give_one_line_errors(tmp_path):
    from fourdcrystal.errors import UserError

    manifest = make_dataset(tmp_path, n_crystals=2, per_crystal=2)
    with pytest.raises(UserError, match="divisible by model.stem_stride \\* 2\\*\\*model.depth = 128"):
        cfg = tiny_config()
        cfg["model"].update(depth=6, stem_stride=2)
        train(cfg, manifest, tmp_path / "x", root=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        train(tiny_config(), tmp_path / "nope.parquet", tmp_path / "x", root=tmp_path)


def test_data_loader_workers_change_nothing(tmp_path):
    """Training and validation batches read and augmented by 2 worker processes (the val workers
    persisting across epochs) give the same losses, val losses included, as the main process alone."""
    manifest = make_dataset(tmp_path, n_crystals=4, per_crystal=3)  # 9 train, 3 val patterns
    for workers in (0, 2):
        train(tiny_config(batch_size=2, epochs=2, augment=True, num_workers=workers), manifest,
              tmp_path / f"w{workers}", root=tmp_path)
    for name in ("metrics_steps.csv", "metrics_epochs.csv"):
        a, b = (pd.read_csv(tmp_path / f"w{w}" / name) for w in (0, 2))
        for col in ("loss", "train_loss", "val_loss", "val_vg_loss", "val_qz_loss"):
            if col in a:
                pd.testing.assert_series_equal(a[col], b[col], rtol=0, atol=0)
    e = pd.read_csv(tmp_path / "w2" / "metrics_epochs.csv")
    assert len(e) == 2 and np.isfinite(e["val_loss"]).all()
