"""Invalid command-line arguments give one clear line and exit code 2."""

import pytest

CASES = [
    (["--families", "vpt,transformer"], "'transformer'", "vpt, prefix, vapt"),
    (["--regimes", "exact,under"], "'under'", "exact, over"),
    (["--replicates", "1"], "'1'", ">= 2"),
    (["--jobs", "0"], "'0'", ">= 1"),
    (["--n", "1000"], "'1000'", "at least two distinct"),
    (["--seed", "minus"], "'minus'", "integer"),
    (["--sigma", "-1"], "'-1'", "positive"),
    (["--bogus"], "--bogus", "unrecognized"),
]


@pytest.mark.parametrize("args,value,expected", CASES)
def test_invalid_arguments(run_module, args, value, expected):
    proc = run_module("theory.sample_efficiency", *args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert value in lines[0] and expected in lines[0]
    assert proc.stdout == ""


def test_in_process_errors_exit_2(capsys):
    from theory.sample_efficiency import main

    with pytest.raises(SystemExit) as exc:
        main(["--families", "nope"])
    assert exc.value.code == 2
    assert "'nope'" in capsys.readouterr().err


def test_identifiability_rejects_arguments(run_module):
    proc = run_module("theory.identifiability", "--fast")
    assert proc.returncode == 2 and "takes no arguments" in proc.stderr and "Traceback" not in proc.stderr
