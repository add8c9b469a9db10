"""``fourdcrystal export-model``: turn a trained model.pt into a distributable default model.

Stamps the peak-finding settings that `evaluate` tuned on the validation split
(``network_peak_settings`` in metrics.json) into the checkpoint (``peak_settings``), and the py4DSTEM
settings tuned there (``classical_settings``, used by ``predict --baseline classical``), so that
``fourdcrystal predict`` uses them without flags, and writes it atomically. This is how
``src/fourdcrystal/data/pretrained.pt`` is made (``make pretrained``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fourdcrystal.atomic import atomic_path
from fourdcrystal.errors import UserError
from fourdcrystal.learning.model import load_checkpoint

MAX_MB = 20.0  # the shipped default must stay small enough for the repository


def export_model(model_path, metrics_path, out_path, evaluation_summary: dict | None = None) -> dict:
    load_checkpoint(model_path)  # refuses files that are not ours, with the one-line error
    try:
        metrics = json.loads(Path(metrics_path).read_text())
        settings = metrics["network_peak_settings"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"{metrics_path} holds no network_peak_settings ({type(exc).__name__})",
                        "pass the metrics.json written by the workflow's `evaluate` rule") from None
    ck = torch.load(model_path, map_location="cpu", weights_only=True)
    ck["peak_settings"] = {k: v for k, v in settings.items() if k in ("peak_threshold", "min_spacing_px")}
    if metrics.get("classical_settings"):  # py4DSTEM settings tuned on the same val split
        ck["classical_settings"] = metrics["classical_settings"]
    if evaluation_summary:
        ck["evaluation"] = evaluation_summary
    with atomic_path(out_path) as tmp:
        torch.save(ck, tmp)
        size_mb = Path(tmp).stat().st_size / 1e6
        if size_mb > MAX_MB:
            raise UserError(f"exported model is {size_mb:.1f} MB, above the {MAX_MB:.0f} MB limit",
                            "train a smaller model (model.base_channels / model.depth)")
    return ck["peak_settings"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model.pt written by the train rule")
    p.add_argument("--metrics", required=True, help="metrics.json written by the evaluate rule")
    p.add_argument("--out", required=True, help="where to write the stamped model")


def run(args: argparse.Namespace) -> int:
    settings = export_model(args.model, args.metrics, args.out)
    print(f"wrote {args.out} with peak settings {settings}")
    return 0
