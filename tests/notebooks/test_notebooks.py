"""Every notebook runs top to bottom in smoke mode; notebooks are stored paired and without outputs."""

from __future__ import annotations

import re
import time
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

from vapt import results as R

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = (
    "01_main_results", "02_self_supervised", "03_low_data", "04_backbone_scale", "05_ablations", "06_gradcam",
    "07_efficiency", "08_sample_efficiency",
)
FIGURE_NOTEBOOKS = NAMES[2:]
LIMIT_S = 290  # each notebook must finish well under five minutes
executed: dict[str, nbformat.NotebookNode] = {}


def run_notebook(name: str) -> tuple[nbformat.NotebookNode, float]:
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
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


def test_main_results_notebook_shows_table_1_in_the_papers_format(smoke_cache):
    notebook = executed.get("01_main_results") or run_notebook("01_main_results")[0]
    tables = [t for t in outputs(notebook, "text/markdown") if "VTAB-1K Natural: CIFAR-100" in t]
    assert len(tables) == 1, "the T1 table is shown once"
    header, rows = _markdown_table(tables[0])
    expected = ["method", "source", "Tuned/Total (%)"] + [f"VTAB-1K Natural: {R.TASK_TITLES[t]}" for t in
                                                        R.GROUP_TASKS["natural"]]
    assert header[: len(expected)] == expected
    assert [key for key in rows if key[1] == "paper"] == [(R.METHOD_LABELS[m], "paper") for m in R.T1_METHODS]
    paper = R.paper_results()
    known = paper[(paper.table == "T1") & (paper.backbone == R.MAIN_BACKBONE) & (paper.metric == "top1")]
    assert len(known) == 120
    for _, value in known.iterrows():
        column = header.index(f"{R.GROUP_TITLES[value.group]}: {R.TASK_TITLES[value.task]}")
        assert rows[(R.METHOD_LABELS[value.method], "paper")][column] == f"{value.value:.1f}"
    means = paper[(paper.table == "T1") & (paper.metric == "group_mean")]
    for _, value in means.iterrows():
        column = header.index(f"{R.GROUP_TITLES[value.group]}: Mean")
        assert rows[(R.METHOD_LABELS[value.method], "paper")][column] == f"{value.value:.2f}"
    cifar = header.index("VTAB-1K Natural: CIFAR-100")
    assert rows[("LoRA", "paper")][cifar] == "" and rows[("VAPT", "paper")][cifar] == ""  # not public
    ours = {key: row for key, row in rows.items() if key[1].startswith("ours")}
    assert {key[0] for key in ours} == {"Full", "Linear", "VPT-Shallow", "VPT-Deep", "VAPT"}
    smoke_column = next(i for i, h in enumerate(header) if h.startswith("Other tasks (custom)"))
    for row in ours.values():
        assert re.fullmatch(r"\d+\.\d", row[smoke_column]), row
        assert row[cifar] == ""  # the smoke task is not CIFAR-100
    assert any("SMOKE" in text for text in outputs(notebook, "stream"))
