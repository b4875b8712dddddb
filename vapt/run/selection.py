"""The protocol's splits and its one selection rule, used by both the sweep and the tables.

Rule: among the settings tried (e.g. lr x wd), the one with the best mean validation top-1 wins;
ties go to the smaller value of each setting column in turn (the smaller lr, then the smaller wd).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ProtocolSplits:
    """Where a benchmark's grid trains, what it is chosen on, where final runs train, what is reported."""

    grid: str
    select: str
    final: str
    report: str


PROTOCOL_SPLITS: dict[str, ProtocolSplits] = {
    "vtab1k": ProtocolSplits(grid="train800", select="val200", final="train800val200", report="test"),
    "fgvc": ProtocolSplits(grid="train", select="val", final="train", report="test"),
}


def select_setting(scores: pd.DataFrame, keys: Sequence[str], value: str = "value") -> dict[str, Any]:
    """The setting (values of `keys`) with the best mean `value`; ties -> smaller key values, in order."""
    keys = list(keys)
    if scores.empty:
        raise ValueError("no scores to select from")
    means = scores.groupby(keys, dropna=False)[value].mean().reset_index()
    ordered = means.sort_values([value, *keys], ascending=[False] + [True] * len(keys), kind="mergesort")
    best = ordered.iloc[0]
    return {key: best[key] for key in keys}


__all__ = ["PROTOCOL_SPLITS", "ProtocolSplits", "select_setting"]
