"""Synthetic result records in the long format of `vapt.records.load_results`."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

SEEDS = (42, 44, 82, 100, 800)


def record_rows(
    backbone,
    method,
    benchmark,
    group,
    task,
    lr,
    wd,
    seed,
    train_split,
    split,
    value,
    trainable=1000,
    backbone_params=100_000,
    fraction=1.0,
    num_tokens=10,
    status="finished",
    **extra,
):
    """One long-format record row."""
    return {
        "run_id": f"{backbone}-{method}-{task}-{train_split}-lr{lr}-wd{wd}-s{seed}-f{fraction}-n{num_tokens}"
        + "".join(f"-{k}{v}" for k, v in extra.items()),
        "backbone": backbone,
        "method": method,
        "benchmark": benchmark,
        "task": task,
        "group": group,
        "train_split": train_split,
        "split": split,
        "seed": seed,
        "lr": lr,
        "wd": wd,
        "fraction": fraction,
        "epochs": 100,
        "num_tokens": num_tokens,
        "metric": "top1",
        "value": value,
        "status": status,
        "trainable_params": trainable,
        "prompt_params": trainable - 100,
        "backbone_params": backbone_params,
        "wall_time_s": 1.0,
        **extra,
    }


def vtab_cell(backbone, method, task, group, val_scores, test_values, best, trainable=1000, **extra):
    """Grid runs (train800 -> val200, one per (lr, wd) in val_scores) and final runs at `best` on test."""
    rows = [
        record_rows(
            backbone,
            method,
            "vtab1k",
            group,
            task,
            lr,
            wd,
            42,
            "train800",
            "val200",
            score,
            trainable=trainable,
            **extra,
        )
        for (lr, wd), score in val_scores.items()
    ]
    rows += [
        record_rows(
            backbone,
            method,
            "vtab1k",
            group,
            task,
            best[0],
            best[1],
            seed,
            "train800val200",
            "test",
            value,
            trainable=trainable,
            **extra,
        )
        for seed, value in zip(SEEDS, test_values, strict=False)
    ]
    return rows


@pytest.fixture
def make_rows():
    """The row builders, for tests that write their own records."""
    return record_rows, vtab_cell


@pytest.fixture
def synthetic_records() -> pd.DataFrame:
    """Two VTAB tasks (natural: cifar, dtd), one FGVC task, methods full / vpt_deep / vapt, 5 seeds."""
    rng = np.random.default_rng(0)
    rows = []
    means = {
        ("full", "cifar"): 60.0,
        ("vpt_deep", "cifar"): 70.0,
        ("vapt", "cifar"): 75.0,
        ("full", "dtd"): 65.0,
        ("vpt_deep", "dtd"): 62.0,
        ("vapt", "dtd"): 66.0,
    }
    trainable = {"full": 100_000, "vpt_deep": 2_000, "vapt": 1_000}
    for (method, task), mean in means.items():
        val = {(lr, wd): 50.0 + lr for lr, wd in itertools.product((0.5, 5.0), (0.0, 0.01))}
        val[(5.0, 0.01)] = 80.0  # the best on validation
        tests = list(mean + rng.normal(0, 1, size=5))
        rows += vtab_cell(
            "vit_test", method, task, "natural", val, tests, best=(5.0, 0.01), trainable=trainable[method]
        )
        # a decoy: a test result at a setting that validation did not choose must not be used
        rows.append(
            record_rows(
                "vit_test",
                method,
                "vtab1k",
                "natural",
                task,
                0.5,
                0.0,
                42,
                "train800val200",
                "test",
                99.0,
                trainable=trainable[method],
            )
        )
    for method, mean in (("full", 80.0), ("vapt", 85.0)):
        for lr in (1.0, 2.0):
            for seed in SEEDS:
                value = mean + (seed % 7) / 10.0
                rows.append(
                    record_rows(
                        "vit_test",
                        method,
                        "fgvc",
                        "fgvc",
                        "cub",
                        lr,
                        0.0,
                        seed,
                        "train",
                        "val",
                        value + (lr == 1.0),
                        trainable=trainable[method],
                    )
                )
                rows.append(
                    record_rows(
                        "vit_test",
                        method,
                        "fgvc",
                        "fgvc",
                        "cub",
                        lr,
                        0.0,
                        seed,
                        "train",
                        "test",
                        value - 5 * (lr == 2.0),
                        trainable=trainable[method],
                    )
                )
    return pd.DataFrame(rows)
