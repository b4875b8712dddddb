"""`make lab`: JupyterLab in the project's environment, opened on the notebooks folder."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


def _lab_command(venv: Path) -> list[str]:
    """The command `make lab` runs (dry run, `make -n`), for a given .venv folder."""
    # under `make test` the parent make's variables would make this one print "Entering/Leaving directory"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    done = subprocess.run(["make", "--no-print-directory", "-n", "lab", f"VENV={venv}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return shlex.split(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_lab_runs_jupyterlab_from_the_venv_on_the_notebooks(tmp_path: Path) -> None:
    command = _lab_command(tmp_path / "venv")
    assert command[:3] == [str(tmp_path / "venv" / "bin" / "python"), "-m", "jupyterlab"]
    assert "--notebook-dir=notebooks" in command


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_jupyterlab_takes_the_notebooks_folder_as_its_root(tmp_path: Path) -> None:
    command = _lab_command(tmp_path / "venv")
    done = subprocess.run([sys.executable, *command[1:], "--show-config"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ".root_dir = 'notebooks'" in done.stdout
