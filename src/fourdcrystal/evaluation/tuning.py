"""Tuning of both detectors by one rule: exhaustive grid, highest pooled F1 on validation data,
ties to the first combination in grid order. The grids are config ``evaluate.tune_classical.grid``
and ``evaluate.tune_network.grid``."""
from __future__ import annotations

import itertools

import pandas as pd

from fourdcrystal.inference import classical


def grid_search(score_fn, grid: dict[str, list]) -> tuple[dict, list[dict]]:
    """Every combination of ``grid`` (key -> values) through ``score_fn(combination) -> dict`` with at
    least ``f1``. Returns (the best combination, one row per combination with its scores)."""
    keys = list(grid)
    if not keys or any(len(grid[k]) == 0 for k in keys):
        raise ValueError(f"grid_search: empty grid {grid}")
    rows, best, best_f1 = [], None, -1.0
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        sc = score_fn(combo)
        rows.append({**combo, **sc})
        if sc["f1"] > best_f1:
            best, best_f1 = combo, sc["f1"]
    return best, rows


def tune_classical(score_fn, base: dict | None, grid: dict[str, list]) -> tuple[dict, pd.DataFrame]:
    """py4DSTEM settings: ``score_fn(settings)`` over ``grid`` around ``base``; (best settings, table)."""
    base = classical.settings_from(base)
    best, rows = grid_search(lambda combo: score_fn({**base, **combo}), grid)
    return {**base, **best}, pd.DataFrame(rows)


def tune_threshold(score_fn, grid: list[float]) -> tuple[float, list[dict]]:
    """The network's relative V_g threshold: ``score_fn(threshold)`` over ``grid``; (best, rows)."""
    best, rows = grid_search(lambda combo: score_fn(combo["peak_threshold"]), {"peak_threshold": [float(t) for t in grid]})
    return best["peak_threshold"], rows
