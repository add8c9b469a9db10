"""Training throughput: data loader vs train step (CPU), the default-config training time, and a GPU
section (bf16 samples/s per GPU, 1 -> N GPU scaling) that runs only where CUDA is available.

    .venv/bin/python benchmarks/bench_train.py [--manifest results/dataset/manifest.parquet] [--no-full]

Without --manifest (or when the demo's manifest does not exist) a synthetic dataset of the demo's
size is written with the real store writer: 6 crystals x 18 patterns at config geometry.detector_px,
4 train crystals, 1 val, 1 test.  Goal: loader >= 5x the train step's samples/s, so reading and
augmenting never starve the optimiser.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from fourdcrystal.simulation import store as qstore  # noqa: E402
from fourdcrystal.learning.dataset import QuartetDataset, label_scales, make_augmenter, seed_worker  # noqa: E402
from fourdcrystal.geometry import Geometry  # noqa: E402
from fourdcrystal.learning.model import build_model  # noqa: E402
from fourdcrystal.learning.train import pattern_losses, train  # noqa: E402


def synthetic_dataset(root: Path, p: int, n_crystals=6, per_crystal=18) -> Path:
    from test_model import synth_quartets

    geo = Geometry(box_A=32.0, gpts=max(256, 2 * p), detector_px=p, thicknesses_A=(20.0, 40.0, 60.0),
                   slice_thickness_A=2.0)
    splits = ["train"] * (n_crystals - 2) + ["val", "test"]
    rows = []
    for c in range(n_crystals):
        shard = root / f"c{c}" / "shard-0000"
        qstore.write_shard(shard, synth_quartets(per_crystal, p, seed=c),
                           pd.DataFrame({"crystal_id": [f"c{c}"] * per_crystal}),
                           pd.DataFrame({"index": pd.Series(dtype="int64")}), geo)
        rows += [{"store": str(shard / "quartets.zarr"), "index": i, "split": splits[c]} for i in range(per_crystal)]
    manifest = root / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(manifest, index=False)
    return manifest


def loader_rate(cfg, manifest, n_batches: int) -> float:
    tcfg = cfg["train"]
    df = qstore.load_manifest(manifest, "train")
    ds = QuartetDataset(df, ".", make_augmenter(cfg), cfg["seed"])
    loader = torch.utils.data.DataLoader(ds, batch_size=tcfg["batch_size"], shuffle=True,
                                         num_workers=tcfg["num_workers"], worker_init_fn=seed_worker)
    n, t0 = 0, time.perf_counter()
    while n < n_batches * tcfg["batch_size"]:
        for b in loader:
            n += len(b["row"])
            if n >= n_batches * tcfg["batch_size"]:
                break
    return n / (time.perf_counter() - t0)


def step_rate(cfg, manifest, n_steps: int, device="cpu", bf16=False) -> float:
    tcfg = cfg["train"]
    df = qstore.load_manifest(manifest, "train")
    ds = QuartetDataset(df, ".", None, cfg["seed"])
    vg_scale, qz_scale = label_scales(ds, tcfg["qz_mask_threshold"])
    model = build_model({**cfg["model"], "vg_scale": vg_scale, "qz_scale": qz_scale}).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"])
    items = [ds[i % len(ds)] for i in range(tcfg["batch_size"])]
    batch = {k: torch.stack([it[k] for it in items]).to(device) for k in ("probe", "cbed", "vg", "qz")}

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            vg, qz = model(batch["probe"], batch["cbed"])
        lv, lq = pattern_losses(vg.float(), qz.float(), batch["vg"], batch["qz"], tcfg["qz_mask_threshold"], qz_scale)
        loss = (lv + lq).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up (allocator, autotuning)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return n_steps * tcfg["batch_size"] / (time.perf_counter() - t0)


def gpu_section(cfg, tmp: Path) -> list[str]:
    n_gpu = torch.cuda.device_count()
    manifest = synthetic_dataset(tmp / "gpu", 256, n_crystals=6, per_crystal=64)
    gcfg = json.loads(json.dumps(cfg))
    gcfg["train"].update(batch_size=16, num_workers=4, augment=False)
    rows = ["", "GPU (256² patterns, batch 16 per GPU)", "",
            "| setting | samples/s | per GPU |", "|---|---|---|"]
    for bf16 in (False, True):
        r = step_rate(gcfg, manifest, 30, device="cuda", bf16=bf16)
        rows.append(f"| 1 GPU train step, {'bf16' if bf16 else 'fp32'} | {r:.0f} | {r:.0f} |")
    for n in sorted({1, n_gpu}):
        gcfg["train"].update(nproc=n, epochs=3, backend="nccl")
        out = tmp / f"ddp{n}"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "fourdcrystal.learning.train", "--config-json", json.dumps(gcfg), "--manifest", str(manifest),
               "--out", str(out)]
        subprocess.run(cmd, check=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True)
        s = pd.read_csv(out / "metrics_steps.csv")
        r = float(s["samples_per_s"].iloc[len(s) // 3:].median())  # skip warm-up steps
        rows.append(f"| torchrun DDP, {n} GPU(s), bf16, loader included | {r:.0f} | {r / n:.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--manifest", default=str(ROOT / "results/dataset/manifest.parquet"))
    ap.add_argument("--no-full", action="store_true", help="skip the full default-config training run")
    args = ap.parse_args()
    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    cfg = {k: cfg[k] for k in ("seed", "model", "train", "augment", "geometry")}
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        manifest = Path(args.manifest)
        source = "demo manifest"
        if not manifest.exists():
            manifest = synthetic_dataset(tmp / "cpu", int(cfg["geometry"]["detector_px"]))
            source = "synthetic, demo-sized"
        p = qstore.read_pattern(*qstore.load_manifest(manifest).iloc[0][["store", "index"]])["cbed"].shape[0]
        lr_ = loader_rate(cfg, manifest, 20)
        sr = step_rate(cfg, manifest, 8)
        print(f"# bench_train — data: {source}, {p}x{p} px, batch {cfg['train']['batch_size']}, "
              f"model base {cfg['model']['base_channels']} depth {cfg['model']['depth']}, "
              f"{torch.get_num_threads()} threads, workers {cfg['train']['num_workers']}\n")
        print("| stage | samples/s | ratio to train step |")
        print("|---|---|---|")
        print(f"| data loader (read + augment) | {lr_:.1f} | {lr_ / sr:.1f}x |")
        print(f"| train step (fwd + bwd + AdamW, CPU fp32) | {sr:.1f} | 1.0x |")
        if not args.no_full:
            t0 = time.perf_counter()
            path = train(cfg, manifest, tmp / "model", figures_dir=tmp / "fig")
            wall = time.perf_counter() - t0
            e = pd.read_csv(tmp / "model" / "metrics_epochs.csv")
            print(f"\nfull default-config training ({len(e)} epochs, {int(e['step'].iloc[-1])} steps, incl. figures): "
                  f"{wall:.0f} s; val loss {e['val_loss'].iloc[0]:.4f} -> {e['val_loss'].iloc[-1]:.4f}; "
                  f"train loss {e['train_loss'].iloc[0]:.4f} -> {e['train_loss'].iloc[-1]:.4f}")
            assert path is not None
        if torch.cuda.is_available():
            print("\n".join(gpu_section(cfg, tmp)))
        else:
            print("\n(GPU section skipped: CUDA not available)")


if __name__ == "__main__":
    main()
