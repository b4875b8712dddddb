"""Result tables on synthetic records: selection, mean ± std, group means, [k], Tuned/Total, paper columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vapt.report import frame as Fr
from vapt.report import paper as P
from vapt.report import tables as T


@pytest.fixture
def paper() -> pd.DataFrame:
    return P.paper_results()


def test_bundled_paper_csv_keeps_values_and_provenance(paper):
    assert {"source", "status"} <= set(paper.columns)
    assert len(paper) > 200
    row = paper[(paper.table == "T1") & (paper.method == "vpt_deep") & (paper.task == "cifar")]
    assert row["value"].tolist() == [78.8]
    assert paper["source"].notna().all() and paper["status"].notna().all()


def test_selection_uses_validation_and_final_retrains(synthetic_records):
    final = T.select_final(synthetic_records)
    vtab = final[final.benchmark == "vtab1k"]
    assert set(vtab["train_split"]) == {"train800val200"}
    assert set(zip(vtab.lr, vtab.wd, strict=False)) == {
        (5.0, 0.01)
    }  # the validation winner, not the decoy's 99.0
    assert (vtab["value"] < 90).all()
    fgvc = final[final.benchmark == "fgvc"]
    assert set(fgvc.lr) == {1.0}  # lr 1.0 is better on val although worse on test
    assert set(final["selection"]) == {"val"}


def test_selection_ties_go_to_the_larger_lr(make_rows):
    _, vtab_cell = make_rows
    rows = vtab_cell(
        "vit_test", "vapt", "cifar", "natural", {(1.0, 0.0): 70.0, (0.5, 0.0): 70.0}, [60.0], best=(1.0, 0.0)
    )
    rows += vtab_cell("vit_test", "vapt", "cifar", "natural", {}, [10.0], best=(0.5, 0.0))
    table = T.task_table(pd.DataFrame(rows))
    assert table["lr"].tolist() == [1.0] and table["mean"].tolist() == [60.0]


def test_failed_runs_are_ignored(make_rows):
    record, _ = make_rows
    rows = [
        record(
            "vit_test",
            "vapt",
            "vtab1k",
            "natural",
            "cifar",
            1.0,
            0.0,
            s,
            "train800val200",
            "test",
            v,
            status=st,
        )
        for s, v, st in ((42, 50.0, "finished"), (44, 52.0, "finished"), (82, 0.0, "failed"))
    ]
    table = T.task_table(pd.DataFrame(rows))
    assert table["n_seeds"].tolist() == [2]
    assert table["mean"].tolist() == [51.0]
    assert table["selection"].tolist() == ["no validation runs"]


def test_mean_std_over_seeds(synthetic_records):
    tasks = T.task_table(synthetic_records)
    final = T.select_final(synthetic_records)
    row = tasks[(tasks.method == "vapt") & (tasks.task == "cifar")].iloc[0]
    values = final[(final.method == "vapt") & (final.task == "cifar")]["value"]
    assert row["n_seeds"] == 5
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=0))  # population std, as the authors report
    text = T.mean_std(tasks.loc[[row.name]]).iloc[0]
    assert text == f"{values.mean():.1f} ± {values.std(ddof=0):.1f}"


def test_group_means_wins_and_tuned_total(synthetic_records, paper):
    tasks = T.task_table(synthetic_records)
    groups = T.group_table(tasks, paper).set_index(["method", "group"])
    by_task = tasks.set_index(["method", "task"])["mean"]
    natural = groups.loc[("vapt", "natural")]
    assert natural["mean"] == pytest.approx((by_task["vapt", "cifar"] + by_task["vapt", "dtd"]) / 2)
    assert natural["n_tasks"] == 2 and not natural["complete"]
    expected_wins = int(by_task["vapt", "cifar"] > by_task["full", "cifar"]) + int(
        by_task["vapt", "dtd"] > by_task["full", "dtd"]
    )
    assert natural["wins_vs_full"] == expected_wins
    assert natural["wins_reference"] == "ours"
    vpt_wins = int(by_task["vpt_deep", "cifar"] > by_task["full", "cifar"]) + int(
        by_task["vpt_deep", "dtd"] > by_task["full", "dtd"]
    )
    assert groups.loc[("vpt_deep", "natural"), "wins_vs_full"] == vpt_wins
    assert np.isnan(groups.loc[("full", "natural"), "wins_vs_full"])
    assert natural["tuned_total_pct"] == pytest.approx(100 * 1000 / 100_000)
    assert groups.loc[("vapt", "all"), "mean"] == pytest.approx(
        natural["mean"]
    )  # Mean Total of VTAB tasks only


def test_mean_total_is_the_mean_over_the_19_vtab_tasks_and_complete(make_rows, paper):
    _, vtab_cell = make_rows
    rows = []
    for index, task in enumerate(P.VTAB_ORDER):
        group = next(g for g, ts in P.GROUP_TASKS.items() if task in ts)
        rows += vtab_cell("vit_test", "vapt", task, group, {(1.0, 0.0): 1.0}, [float(index)], best=(1.0, 0.0))
    groups = T.group_table(T.task_table(pd.DataFrame(rows)), paper).set_index("group")
    assert groups.loc["all", "mean"] == pytest.approx(np.mean(range(19)))
    assert groups.loc["all", "n_tasks"] == 19 and groups.loc["all", "complete"]
    assert groups.loc["natural", "complete"] and groups.loc["natural", "mean"] == pytest.approx(3.0)


def test_wins_fall_back_to_the_papers_full_fine_tuning(make_rows, paper):
    _, vtab_cell = make_rows
    rows = vtab_cell(P.MAIN_BACKBONE, "vapt", "cifar", "natural", {(1.0, 0.0): 1.0}, [70.0], best=(1.0, 0.0))
    rows += vtab_cell(P.MAIN_BACKBONE, "vapt", "dtd", "natural", {(1.0, 0.0): 1.0}, [60.0], best=(1.0, 0.0))
    groups = T.group_table(T.task_table(pd.DataFrame(rows)), paper).set_index("group")
    # paper's full fine-tuning: cifar 68.9 (beaten), dtd 64.3 (not beaten)
    assert groups.loc["natural", "wins_vs_full"] == 1
    assert groups.loc["natural", "wins_reference"] == "paper"


def test_paper_vs_ours_fills_known_values_and_leaves_missing_blank(make_rows, paper):
    _, vtab_cell = make_rows
    rows = vtab_cell(
        P.MAIN_BACKBONE, "vpt_deep", "cifar", "natural", {(1.0, 0.0): 1.0}, [80.0, 81.0], best=(1.0, 0.0)
    )
    rows += vtab_cell(P.MAIN_BACKBONE, "vfpt", "cifar", "natural", {(1.0, 0.0): 1.0}, [77.0], best=(1.0, 0.0))
    tasks = T.task_table(pd.DataFrame(rows))
    comparison = P.paper_vs_ours(tasks, T.group_table(tasks, paper), paper)
    top1 = comparison[(comparison.metric == "top1") & (comparison.task == "cifar")].set_index("method")
    assert top1.loc["vpt_deep", "paper"] == 78.8
    assert top1.loc["vpt_deep", "diff"] == pytest.approx(80.5 - 78.8)
    assert top1.loc["vpt_deep", "paper_status"] == "verified"
    assert np.isnan(top1.loc["vfpt", "paper"]) and np.isnan(
        top1.loc["vfpt", "diff"]
    )  # VFPT per-task: not public
    means = comparison[(comparison.metric == "group_mean") & (comparison.group == "natural")].set_index(
        "method"
    )
    assert means.loc["vfpt", "paper"] == 81.35
    assert means.loc["vfpt", "diff"] == pytest.approx(77.0 - 81.35)


def test_t1_table_has_the_papers_layout_and_values(synthetic_records, paper):
    tasks = T.task_table(synthetic_records)
    t1 = P.t1_table(tasks, T.group_table(tasks, paper), paper)
    sections = list(dict.fromkeys(t1.columns.get_level_values(0)))
    assert sections == ["", "VTAB-1K Natural", "VTAB-1K Specialized", "VTAB-1K Structured", "VTAB-1K", "FGVC"]
    natural = [c for s, c in t1.columns if s == "VTAB-1K Natural"]
    assert natural == [
        "CIFAR-100",
        "Caltech101",
        "DTD",
        "Flowers102",
        "Pets",
        "SVHN",
        "Sun397",
        "Mean",
        "[k]",
    ]
    paper_rows = [m for m, s in t1.index if s == "paper"]
    assert paper_rows == [P.method_label(m) for m in P.T1_METHODS]
    known = paper[(paper.table == "T1") & (paper.backbone == P.MAIN_BACKBONE) & (paper.metric == "top1")]
    for _, row in known.iterrows():
        column = (P.GROUP_TITLES[row.group], P.TASK_TITLES[row.task])
        assert t1.loc[(P.method_label(row.method), "paper"), column] == row.value
    assert np.isnan(t1.loc[("LoRA", "paper"), ("VTAB-1K Natural", "CIFAR-100")])
    assert t1.loc[("VAPT", "paper"), ("VTAB-1K Natural", "Mean")] == 81.43
    assert t1.loc[("VAPT", "paper"), ("", "Tuned/Total (%)")] == 0.36
    assert t1.loc[("VAPT", "paper"), ("VTAB-1K", "Mean Total")] == 72.91
    ours = t1.loc[("VAPT", "ours (vit_test)")]
    assert ours[("VTAB-1K Natural", "CIFAR-100")] == pytest.approx(
        tasks.set_index(["method", "task"]).loc[("vapt", "cifar"), "mean"]
    )
    assert "incomplete" in ours[("", "Paper status")]


def test_t1_derived_paper_cells_are_labelled(paper):
    t1 = P.t1_table(
        pd.DataFrame(columns=["backbone", "method", "group", "task", "mean", "tuned_total_pct"]),
        pd.DataFrame(columns=["backbone", "method", "group", "mean", "wins_vs_full", "complete"]),
        paper,
    )
    linear = t1.loc[("Linear", "paper")]
    values = paper[(paper.table == "T1") & (paper.method == "linear") & (paper.group == "natural")]["value"]
    assert linear[("VTAB-1K Natural", "Mean")] == pytest.approx(values.mean())
    assert "derived" in linear[("", "Paper status")]
    assert "derived" not in t1.loc[("VAPT", "paper"), ("", "Paper status")]


def test_tasks_outside_the_paper_get_their_own_columns(make_rows, paper):
    _, vtab_cell = make_rows
    rows = vtab_cell("vit_test", "vapt", "digits", "custom", {(1.0, 0.0): 1.0}, [90.0, 92.0], best=(1.0, 0.0))
    tasks = T.task_table(pd.DataFrame(rows))
    t1 = P.t1_table(tasks, T.group_table(tasks, paper), paper)
    assert t1.loc[("VAPT", "ours (vit_test)"), ("Other tasks (custom)", "digits")] == pytest.approx(91.0)
    assert np.isnan(t1.loc[("VAPT", "paper"), ("Other tasks (custom)", "digits")])


def test_t2_table_reads_self_supervised_group_means(paper):
    empty = pd.DataFrame(columns=["backbone", "method", "group", "mean"])
    t2 = P.t2_table(empty, paper)
    assert t2.loc[("VAPT", "paper"), ("vit_b16_mae", "Natural")] == 59.23
    assert t2.loc[("GateVPT", "paper"), ("vit_b16_mocov3", "Structured")] == 49.1


def test_ablation_and_low_data_variants_are_kept_apart(make_rows):
    _, vtab_cell = make_rows
    rows = []
    for kernel, value in ((2, 70.0), (3, 60.0)):
        rows += vtab_cell(
            "vit_test",
            "vapt",
            "cifar",
            "natural",
            {(1.0, 0.0): value},
            [value],
            best=(1.0, 0.0),
            kernel_size=kernel,
        )
    records = pd.DataFrame(rows)
    tasks = T.task_table(records)
    assert sorted(tasks["kernel_size"]) == [2, 3]
    main = T.task_table(Fr.main_records(records))
    assert main["mean"].tolist() == [70.0]  # the default kernel (K = 2) only


def test_exports_markdown_and_latex(synthetic_records, paper):
    tables = T.build_tables(synthetic_records, paper)
    text = T.to_markdown(T.format_table(tables.t1))
    header = text.splitlines()[0]
    assert "VTAB-1K Natural: CIFAR-100" in header and "FGVC: Stanford Cars" in header
    row = next(line for line in text.splitlines() if line.startswith("| VPT-Deep | paper |"))
    assert "| 78.8 |" in row and "| 78.48 |" in row
    latex = T.to_latex(T.format_table(tables.t1))
    assert "\\multicolumn" in latex and "VTAB-1K Natural" in latex and "78.8" in latex
    report = T.report_markdown(tables)
    assert "## Per-task top-1 (%)" in report and " ± " in report and "## Table 1" in report


def test_run_options_reads_nested_configs(tmp_path):
    run = tmp_path / "run-a"
    run.mkdir()
    (run / "result.json").write_text(
        json.dumps({"run_id": "run-a", "status": "finished",
                    "config": {"backbone": "vit_test", "method": "vapt", "data": "vtab1k/cifar", "seed": 42,
                               "lr": 1.0, "wd": 0.0, "epochs": 1, "method_options": {"conv": False}},
                    "method_config": {"method": "vapt", "nested": {"kernel_size": 3}}})
    )
    options = Fr.run_options(tmp_path)
    assert options.to_dict("records") == [{"run_id": "run-a", "kernel_size": 3, "conv": False}]


def test_t2_table_gives_other_backbones_their_own_columns(make_rows, paper):
    _, vtab_cell = make_rows
    rows = vtab_cell("vit_test", "vapt", "digits", "custom", {(1.0, 0.0): 1.0}, [80.0], best=(1.0, 0.0))
    tasks = T.task_table(pd.DataFrame(rows))
    t2 = P.t2_table(T.group_table(tasks, paper), paper)
    assert t2.loc[("VAPT", "ours"), ("ours: vit_test", "custom")] == 80.0
    assert np.isnan(t2.loc[("VAPT", "ours"), ("vit_b16_mae", "Natural")])
    assert t2.loc[("VAPT", "paper"), ("vit_b16_mae", "Natural")] == 59.23


def test_custom_tasks_do_not_count_in_the_mean_total(make_rows, paper):
    _, vtab_cell = make_rows
    rows = vtab_cell("vit_test", "vapt", "cifar", "natural", {(1.0, 0.0): 1.0}, [50.0], best=(1.0, 0.0))
    rows += vtab_cell("vit_test", "vapt", "digits", "custom", {(1.0, 0.0): 1.0}, [90.0], best=(1.0, 0.0))
    groups = T.group_table(T.task_table(pd.DataFrame(rows)), paper).set_index("group")
    assert groups.loc["all", "mean"] == 50.0 and groups.loc["all", "n_tasks"] == 1
    assert groups.loc["custom", "mean"] == 90.0


def test_markdown_keeps_counts_and_learning_rates_readable():
    table = pd.DataFrame({"method": ["vapt"], "n_seeds": [5.0], "lr": [0.005], "mean": [71.234], "std": [np.nan]})
    lines = T.to_markdown(table.iloc[[0]].set_axis([7])).splitlines()
    assert lines[0] == "| method | n_seeds | lr | mean | std |"
    assert lines[2] == "| vapt | 5 | 0.005 | 71.23 |  |"
