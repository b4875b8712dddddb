"""The figures' former import path, kept for notebooks written against it.

Figures are now drawn by `vapt.report.figures` (data in, figure out) and the paper's commands are in
`vapt.paper.catalog`; the wrappers below keep the earlier call form (draw, save, return the paths).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from vapt.paper.catalog import NEEDS, REPRODUCE, reproduce_commands
from vapt.report import figures as _figures


def theory_figure(summary: pd.DataFrame, out_dir: str | os.PathLike, name: str = "theory",
                  note: str | None = None) -> list[Path] | None:
    """Draw the theory figure and save it as `name`.png/.pdf under `out_dir`; None (with a line) if not drawable."""
    source = _figures.DataSource(note, paper_datasets=False) if note else None
    try:
        fig = _figures.theory_figure(summary, source=source)
    except _figures.NotDrawable as reason:
        print(f"skipped {name}: {reason}")
        return None
    return _figures.save_figure(fig, out_dir, name)


__all__ = ["NEEDS", "REPRODUCE", "reproduce_commands", "theory_figure"]
