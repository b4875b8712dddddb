"""docs/adding_a_method.md, step by step: a sixth method registered here reaches every command and report.

The toy method, VPT-projected, inserts one set of prompts before the first block and maps the previous
block's prompt outputs into every later block with that block's own feature projector. It is
registered by this test only (no project file names it) and removed from the registry afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from torch import Tensor, nn

from vapt.__main__ import main as vapt_main
from vapt.config import METHODS, MethodSpec, register_method
from vapt.errors import check_positive_int
from vapt.methods.vapt import FeatureProjector
from vapt.models.prompts import StaticPrompts
from vapt.report import figures
from vapt.report.paper import paper_results, t1_table
from vapt.report.tables import build_tables, load_records, main_tasks

NAME, LABEL = "vpt_projected", "VPT-Projected"


# step 1: the config
@dataclass(frozen=True)
class ProjectedConfig:
    """VPT-projected: `num_tokens` prompts at block 0, mapped by a per-block projector of width `hidden`."""

    num_tokens: int = 10
    hidden: int = 8

    def __post_init__(self) -> None:
        check_positive_int("num_tokens", self.num_tokens)
        check_positive_int("hidden", self.hidden)

    @property
    def name(self) -> str:
        return NAME


# step 2: the prompt generator
class ProjectedPrompts(nn.Module):
    """Static prompts before block 0; before block i > 0, projector i applied to block i-1's prompt outputs."""

    def __init__(self, config: ProjectedConfig, dim: int, num_blocks: int, init_range: float):
        super().__init__()
        self.first = StaticPrompts(1, config.num_tokens, dim, init_range)
        self.projectors = nn.ModuleList(FeatureProjector(dim, config.hidden) for _ in range(num_blocks - 1))

    @classmethod
    def for_blocks(cls, config: ProjectedConfig, dim: int, grid_size: tuple[int, int], num_blocks: int,
                   init_range: float) -> ProjectedPrompts:
        return cls(config, dim, num_blocks, init_range)

    def forward(self, index: int, patches: Tensor, prompts: Tensor | None) -> Tensor:
        if index == 0:
            return self.first(0, patches.shape[0])
        return self.projectors[index - 1](prompts)


# step 3: the registration (undone after the test, so that other tests see the built-in methods only)
@pytest.fixture
def registered():
    spec = register_method(MethodSpec(NAME, ProjectedConfig, LABEL, "#bcbd22", ProjectedPrompts))
    yield spec
    METHODS.pop(NAME)


RUN_OPTIONS = ["--backbone", "vit_test", "--method", NAME, "--data", "vtab1k/cifar", "--no-pretrained",
               "--device", "cpu", "--image-size", "32", "--batch-size", "32", "--num-tokens", "2", "--epochs", "1"]


# step 4: what then works
@pytest.mark.slow
def test_a_registered_method_reaches_every_command_and_report(registered, data_root: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        vapt_main(["train", "--help"])
    assert exit_.value.code == 0 and NAME in capsys.readouterr().out

    out = tmp_path / "runs"
    root = ["--data-root", str(data_root), "--out", str(out)]
    assert vapt_main(["train", *RUN_OPTIONS, *root, "--lr", "5", "--wd", "0", "--seed", "1"]) == 0
    assert vapt_main(["sweep", *RUN_OPTIONS, *root, "--grid", "5:0", "--seeds", "42", "--executor", "debug"]) == 0
    finals = list((out / "vtab1k-cifar" / "vit_test").glob(f"{NAME}_num_tokens2/train800val200-test/*/result.json"))
    assert len(finals) == 1
    capsys.readouterr()

    records = load_records(out)
    tasks = main_tasks(records)
    assert set(records["method"]) == {NAME} and NAME in set(tasks["method"])
    t1 = t1_table(tasks, build_tables(records).groups, paper_results(), backbone="vit_test")
    assert (LABEL, "ours (vit_test)") in t1.index
    figure = figures.scale_figure(tasks, paper_results())
    legend = [text.get_text() for ax in figure.axes for text in (ax.get_legend().get_texts() if ax.get_legend()
                                                                 else [])]
    legend += [text.get_text() for legend_ in figure.legends for text in legend_.get_texts()]
    plt.close(figure)
    assert LABEL in legend

    bench = tmp_path / "bench.csv"
    assert vapt_main(["bench", "--backbone", "vit_test", "--methods", NAME, "--batch", "2", "--num-tokens", "2",
                      "--device", "cpu", "--steps", "1", "--warmup", "0", "--threads", "1", "--out", str(bench)]) == 0
    measured = pd.read_csv(bench)
    assert list(measured["method"]) == [NAME] and measured["trainable_params"].iloc[0] > 0

    lens_out = tmp_path / "lens"
    assert vapt_main(["lens", "--run", str(finals[0].parent), "--data-root", str(data_root), "--split", "test",
                      "--images", "4", "--out", str(lens_out)]) == 0
    gates = pd.read_csv(lens_out / "lens.csv")
    assert set(gates["method"]) == {NAME} and (gates["num_prompts"] == 2).all()
