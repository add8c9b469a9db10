"""The one way figures are written: Agg backend, tight layout, 110 dpi PNG, published atomically."""
from __future__ import annotations

from pathlib import Path

from fourdcrystal.atomic import atomic_path


def save_figure(fig, path) -> None:
    """Write ``fig`` to ``path`` (format from the suffix, PNG by default) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
