"""`python -m vapt gpu-check --smoke`: the GPU check's steps on the CPU with vit_test, and its projection."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import vapt.run.gpu_check as gpu_check_module
from vapt.__main__ import main as vapt_main
from vapt.run.gpu_check import CheckPlan, gpu_check, projected_hours, sweep_images


class _TimedLines(io.StringIO):
    def __init__(self, start: float) -> None:
        super().__init__()
        self.start, self.lines = start, []

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.lines.append((time.perf_counter() - self.start, line))
        return len(text)


def _in_process(command: list[str], log: Path, timed_lines: bool = False) -> tuple[list, float]:
    """The check's `python -m vapt ...` steps, run in this process (same code, no interpreter start-up)."""
    start = time.perf_counter()
    stream = _TimedLines(start)
    with contextlib.redirect_stdout(stream):
        code = vapt_main(command)
    assert code == 0, stream.lines[-5:]
    return stream.lines, time.perf_counter() - start


@pytest.fixture
def shared_bench_servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Every `bench` of the check reuses its worker servers (one per environment) instead of starting new ones.

    A server only imports the library and forks one fresh worker per method with each request's settings,
    so reusing it runs the same measuring code; it saves two interpreter start-ups per bench variant.
    """
    import vapt.run.bench as bench_module

    real_start, real_stop, servers = bench_module._start_server, bench_module._stop_server, {}

    def start(extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        key = tuple(sorted((extra_env or {}).items()))
        if key not in servers:
            servers[key] = real_start(extra_env)
        return servers[key]

    monkeypatch.setattr(bench_module, "_start_server", start)
    monkeypatch.setattr(bench_module, "_stop_server", lambda server: None)
    yield servers
    for server in servers.values():
        real_stop(server)


@pytest.mark.slow
def test_smoke_check_writes_the_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        shared_bench_servers: dict) -> None:
    monkeypatch.setattr(gpu_check_module, "_run", _in_process)
    monkeypatch.setattr(gpu_check_module, "check_methods", lambda: ("linear", "vapt"))
    plan = dataclasses.replace(CheckPlan.smoke_plan(), compile=False, counts=(16, 8, 8))
    summary = gpu_check(tmp_path / "check", plan=plan)
    on_disk = pd.read_csv(tmp_path / "check" / "summary.csv")
    assert list(on_disk.columns) == list(gpu_check_module.SUMMARY_COLUMNS) and len(on_disk) == len(summary)
    bench = on_disk[on_disk["section"] == "bench"]
    assert set(bench["name"]) == {"linear", "vapt"} and set(bench["precision"]) == {"bf16", "fp32"}
    assert bench["recompute"].any() and (bench["step_time_s"] > 0).all() and (bench["peak_memory_mb"] >= 0).all()
    projected = bench[bench["t1_gpu_hours"].notna()]
    assert set(projected["name"]) == {"linear", "vapt"} and (projected["t1_gpu_hours"] > 0).all()
    assert projected.set_index("name")["t2_gpu_hours"].isna().to_dict() == {"linear": True, "vapt": False}
    train = on_disk[on_disk["section"] == "train"]
    assert list(train["name"]) == ["vapt_cached", "vapt_uncached"] and (train["images_per_s"] > 0).all()
    loader = on_disk[on_disk["section"] == "loader"]
    assert list(loader["name"]) == ["cold", "cached"] and (loader["images_per_s"] > 0).all()
    markdown = (tmp_path / "check" / "summary.md").read_text()
    assert markdown.startswith("# GPU check: CPU smoke run") and "| section | name |" in markdown
    assert len(shared_bench_servers) == 2  # a plain server and the CPU-memory one, shared by the 3 bench variants
    with pytest.raises(gpu_check_module.ConfigError, match="already holds data from an earlier check"):
        gpu_check(tmp_path / "check", plan=plan)


def test_projection_is_runs_times_epochs_times_images_over_throughput() -> None:
    images = sweep_images("vapt")
    vtab_train = 19 * (40 * 800 + 5 * 1000) * 100
    assert images["vtab1k"][0] == vtab_train
    assert images["fgvc"][0] == (36 + 5) * (5394 + 21536 + 1020 + 10800 + 7329) * 100
    assert sweep_images("full")["vtab1k"][0] == 19 * (16 * 800 + 5 * 1000) * 100
    t1, t2 = projected_hours("vapt", 1000.0, float("inf"))
    assert t1 == pytest.approx((vtab_train + images["fgvc"][0]) / 1000 / 3600)
    assert t2 == pytest.approx(2 * vtab_train / 1000 / 3600)
    assert projected_hours("full", 1000.0, 1000.0)[1] is None


def test_gpu_check_without_a_gpu_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vapt_main(["gpu-check", "--out", str(tmp_path / "check")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: gpu-check needs a CUDA GPU; use --smoke") and "Traceback" not in err
    assert not (tmp_path / "check").exists()
