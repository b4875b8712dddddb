"""Every notebook runs top to bottom in smoke mode; notebooks are stored paired and without outputs."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from vapt.report import paper as P

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = (
    "01_main_results", "02_self_supervised", "03_low_data", "04_backbone_scale", "05_ablations", "06_gradcam",
    "07_efficiency", "08_sample_efficiency", "09_moe_lens",
)
FIGURE_NOTEBOOKS = NAMES[2:]
LIMIT_S = 290  # each notebook must finish well under five minutes
executed: dict[str, nbformat.NotebookNode] = {}


def run_notebook(name: str, **parameters: str) -> tuple[nbformat.NotebookNode, float]:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    if parameters:
        cell = next(c for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        cell.source += "\n" + "\n".join(f"{key} = {value!r}" for key, value in parameters.items())
    client = NotebookClient(notebook, kernel_name="python3", timeout=LIMIT_S,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.perf_counter()
    client.execute()
    return notebook, time.perf_counter() - started


def outputs(notebook: nbformat.NotebookNode, kind: str) -> list[str]:
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if kind == "stream" and output.get("output_type") == "stream":
                found.append(output.get("text", ""))
            elif kind in output.get("data", {}):
                found.append(output["data"][kind])
    return found


def test_notebooks_are_paired_with_scripts_and_stored_without_outputs():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    for name in NAMES:
        stored = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        script = jupytext.read(NOTEBOOKS / f"{name}.py")
        assert [c.source for c in stored.cells] == [c.source for c in script.cells], name
        code = [c for c in stored.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), name
        first = code[0]
        assert first.metadata.get("tags") == ["parameters"] and 'MODE = "smoke"' in first.source, name
        assert stored.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(name, smoke_cache, record_property):
    notebook, seconds = run_notebook(name)
    executed[name] = notebook
    record_property("seconds", round(seconds, 1))
    print(f"{name}: {seconds:.1f} s")
    assert seconds < LIMIT_S
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    if name in FIGURE_NOTEBOOKS:
        assert outputs(notebook, "image/png"), f"{name} shows no figure"


def _markdown_table(text: str) -> tuple[list[str], dict[tuple[str, str], list[str]]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    header, rows = split[0], split[2:]
    return header, {(row[0], row[1]): row for row in rows}


@pytest.mark.slow
def test_main_results_notebook_shows_table_1_in_the_papers_format(smoke_cache):
    notebook = executed.get("01_main_results") or run_notebook("01_main_results")[0]
    tables = [t for t in outputs(notebook, "text/markdown") if "VTAB-1K Natural: CIFAR-100" in t]
    assert len(tables) == 1, "the T1 table is shown once"
    header, rows = _markdown_table(tables[0])
    expected = ["method", "source", "Tuned/Total (%)"] + [f"VTAB-1K Natural: {P.TASK_TITLES[t]}" for t in
                                                        P.GROUP_TASKS["natural"]]
    assert header[: len(expected)] == expected
    assert [key for key in rows if key[1] == "paper"] == [(P.method_label(m), "paper") for m in P.T1_METHODS]
    paper = P.paper_results()
    known = paper[(paper.table == "T1") & (paper.backbone == P.MAIN_BACKBONE) & (paper.metric == "top1")]
    assert len(known) == 120
    for _, value in known.iterrows():
        column = header.index(f"{P.GROUP_TITLES[value.group]}: {P.TASK_TITLES[value.task]}")
        assert rows[(P.method_label(value.method), "paper")][column] == f"{value.value:.1f}"
    means = paper[(paper.table == "T1") & (paper.metric == "group_mean")]
    for _, value in means.iterrows():
        column = header.index(f"{P.GROUP_TITLES[value.group]}: Mean")
        assert rows[(P.method_label(value.method), "paper")][column] == f"{value.value:.2f}"
    cifar = header.index("VTAB-1K Natural: CIFAR-100")
    assert rows[("LoRA", "paper")][cifar] == "" and rows[("VAPT", "paper")][cifar] == ""  # not public
    ours = {key: row for key, row in rows.items() if key[1].startswith("ours")}
    assert {key[0] for key in ours} == {"Full", "Linear", "VPT-Shallow", "VPT-Deep", "VAPT"}
    smoke_column = next(i for i, h in enumerate(header) if h.startswith("Other tasks (custom)"))
    for row in ours.values():
        assert re.fullmatch(r"\d+\.\d", row[smoke_column]), row
        assert row[cifar] == ""  # the smoke task is not CIFAR-100
    assert any("SMOKE" in text for text in outputs(notebook, "stream"))


def test_figures_smoke_never_trains_and_names_the_smoke_command(tmp_path, capsys):
    from vapt.paper import draw

    empty = tmp_path / "empty-cache"
    argv = ["--runs", str(tmp_path / "no-runs"), "--out", str(tmp_path / "figs"), "--smoke", "--cache", str(empty)]
    assert draw.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("run `python -m vapt smoke`") == 6 and not (tmp_path / "figs").exists()
    assert not [p for p in empty.rglob("*") if p.is_file()]  # nothing pre-trained, no runs made


@pytest.mark.slow
def test_figures_command_fills_each_missing_figure_with_its_smoke_stand_in(smoke_cache, tmp_path, capsys):
    from vapt.__main__ import main as vapt_main
    from vapt.paper import draw

    assert vapt_main(["smoke", "--cache", str(smoke_cache)]) == 0
    _result(tmp_path / "runs" / "linear", "linear", 60.0)  # a real run that supports no figure on its own
    capsys.readouterr()
    assert draw.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "figs"), "--smoke"]) == 0
    out = capsys.readouterr().out
    assert "skipped" not in out and out.count("drawn from its smoke stand-in") == 6
    names = sorted(p.name for p in (tmp_path / "figs").iterdir())
    stems = ("ablations", "backbone_scale", "efficiency", "gradcam", "low_data", "theory")
    assert names == sorted(f"{s}.{x}" for s in stems for x in ("pdf", "png"))


def _result(folder: Path, method: str, value: float) -> None:
    folder.mkdir(parents=True)
    config = {"backbone": P.MAIN_BACKBONE, "method": method, "data": "vtab1k/cifar", "data_root": "x", "lr": 1.0,
              "wd": 0.0, "seed": 42, "epochs": 100, "batch_size": 64, "fraction": 1.0,
              "train_split": "train800val200", "eval_splits": ["test"]}
    record = {"run_id": folder.name, "status": "finished", "final": {"test": value}, "config": config,
              "params": {"prompt": 55_608, "head": 76_900, "backbone": 85_798_656, "trainable": 132_508},
              "method_config": {"method": method, "num_tokens": 10}, "wall_time_s": 1.0}
    (folder / "result.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_main_results_notebook_in_full_mode_reads_the_runs_and_prints_the_commands(tmp_path):
    _result(tmp_path / "runs" / "vapt", "vapt", 80.31)
    notebook, _ = run_notebook("01_main_results", MODE="full", RUNS=str(tmp_path / "runs"), DATA_ROOT="/data")
    printed = "".join(outputs(notebook, "stream"))
    assert "python -m vapt sweep --backbone vit_b16_in21k --method vapt --data vtab1k fgvc --data-root /data" in printed
    table = next(t for t in outputs(notebook, "text/markdown") if "VTAB-1K Natural: CIFAR-100" in t)
    header, rows = _markdown_table(table)
    ours = rows[("VAPT", f"ours ({P.MAIN_BACKBONE})")]
    assert ours[header.index("VTAB-1K Natural: CIFAR-100")] == "80.3"
    assert rows[("VAPT", "paper")][header.index("VTAB-1K Natural: Mean")] == "81.43"


@pytest.mark.slow
def test_sample_efficiency_notebook_in_full_mode_shows_the_committed_full_run(tmp_path):
    notebook, _ = run_notebook("08_sample_efficiency", MODE="full", FIGURES=str(tmp_path))
    printed = "".join(outputs(notebook, "stream"))
    assert "python -m theory.sample_efficiency --full" in printed
    table = "".join(outputs(notebook, "text/plain"))
    assert "vapt_linear" in table and "over" in table and "misspecified" in table
    assert outputs(notebook, "image/png")
    assert (tmp_path / "theory.png").exists() and (tmp_path / "theory.pdf").exists()


@pytest.mark.slow
def test_moe_lens_notebook_in_full_mode_reads_the_runs_of_the_given_tasks(smoke_cache, tmp_path):
    from vapt.paper import digits, smoke

    runs = smoke.main_results(methods=("vpt_shallow", "vpt_deep", "vapt"))
    notebook, _ = run_notebook("09_moe_lens", MODE="full", RUNS=str(runs), DATA_ROOT=str(smoke.transfer_data()),
                               TASKS=[digits.TASK], BACKBONE="vit_test", IMAGES=16, FIGURES=str(tmp_path))
    printed = "".join(outputs(notebook, "stream"))
    assert f"python -m vapt lens --run {runs}" in printed and "--images 16" in printed
    table = (tmp_path / f"vtab1k-{digits.TASK}" / "lens.csv").read_text().splitlines()
    assert table[0].startswith("run,method,backbone,data,split,images,num_prompts")
    assert len(table) == 1 + 3 * 4 * 4 * 2  # header + runs x layers x heads x query kinds
    assert (tmp_path / f"vtab1k-{digits.TASK}" / "lens_vs_theory.png").exists()
    assert len(outputs(notebook, "image/png")) == 4  # three lens figures and the one beside the theory


def test_smoke_cache_is_keyed_by_the_code_version(tmp_path, monkeypatch):
    from vapt.paper import smoke

    data = smoke.transfer_data(tmp_path)
    assert f"code{smoke.code_version()}" in str(data)
    monkeypatch.setattr(smoke, "code_version", lambda: "changed0")
    assert smoke.transfer_data(tmp_path) != data and "codechanged0" in str(smoke.transfer_data(tmp_path))
