"""Tuning of both detectors by one rule: exhaustive grid, highest pooled F1 on validation data,
ties to the first combination in grid order. The grids are config ``evaluate.tune_classical.grid``
and ``evaluate.tune_network.grid``. The network's threshold may instead maximise F_β
(``evaluate.tune_network.beta``; β < 1 weighs precision above recall): py4DSTEM keeps F1, its best
chance at the F1 both are compared by. Thresholds whose F_β lies within ``evaluate.tune_network.tie_tolerance``
of the best are a tie (a few dozen val patterns cannot tell them apart) and the tie goes to the highest
threshold: a false vector costs a user more than a missed one, and the rule is fixed before any run looks."""
from __future__ import annotations

import itertools

import pandas as pd

from fourdcrystal.inference import classical


def grid_search(score_fn, grid: dict[str, list], key: str = "f1") -> tuple[dict, list[dict]]:
    """Every combination of ``grid`` (key -> values) through ``score_fn(combination) -> dict`` with at
    least ``key``. Returns (the combination of the highest ``key``, one row per combination with its scores)."""
    keys = list(grid)
    if not keys or any(len(grid[k]) == 0 for k in keys):
        raise ValueError(f"grid_search: empty grid {grid}")
    rows, best, best_score = [], None, -1.0
    for values in itertools.product(*(grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        sc = score_fn(combo)
        rows.append({**combo, **sc})
        if sc[key] > best_score:
            best, best_score = combo, sc[key]
    return best, rows


def tune_classical(score_fn, base: dict | None, grid: dict[str, list]) -> tuple[dict, pd.DataFrame]:
    """py4DSTEM settings: ``score_fn(settings)`` over ``grid`` around ``base``; (best settings, table)."""
    base = classical.settings_from(base)
    best, rows = grid_search(lambda combo: score_fn({**base, **combo}), grid)
    return {**base, **best}, pd.DataFrame(rows)


def f_beta(precision: float, recall: float, beta: float) -> float:
    """(1 + β²)·P·R / (β²·P + R); 0 where nothing was found (P undefined) or nothing matched."""
    p = 0.0 if precision is None or precision != precision else float(precision)
    r = float(recall)
    b2 = float(beta) ** 2
    return (1 + b2) * p * r / (b2 * p + r) if p > 0 and r > 0 else 0.0


def tune_threshold(score_fn, grid: list[float], beta: float = 1.0,
                   tie_tolerance: float = 0.0) -> tuple[float, list[dict]]:
    """The network's relative V_g threshold: ``score_fn(threshold)`` (pooled scores with precision and
    recall) over ``grid``, highest F_β; among thresholds within ``tie_tolerance`` of that F_β the highest
    threshold (with 0: ties to the first in grid order); (chosen, rows)."""
    def scored(combo):
        sc = score_fn(combo["peak_threshold"])
        return {**sc, "f_beta": f_beta(sc["precision"], sc["recall"], beta)}

    best, rows = grid_search(scored, {"peak_threshold": [float(t) for t in grid]}, key="f_beta")
    if tie_tolerance <= 0:
        return best["peak_threshold"], rows
    top = max(r["f_beta"] for r in rows)
    return max(r["peak_threshold"] for r in rows if r["f_beta"] >= top - tie_tolerance), rows
