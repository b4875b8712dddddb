"""Invalid command-line arguments give one clear line and exit code 2."""

import pytest

CASES = [
    (["--families", "vpt,transformer"], "'transformer'", "vpt, prefix, vapt"),
    (["--regimes", "exact,under"], "'under'", "exact, over"),
    (["--replicates", "1"], "'1'", "[2, 1000]"),
    (["--jobs", "0"], "'0'", ">= 1"),
    (["--n", "1000"], "'1000'", "at least two distinct"),
    (["--seed", "minus"], "'minus'", "integer"),
    (["--sigma", "-1"], "'-1'", "[1e-06, 10]"),
    # absurd numbers are refused before any work starts, each with its documented range
    (["--n", "50,100000000000"], "'50,100000000000'", "[50, 1e+06]"),
    (["--bootstrap", "1000000000"], "'1000000000'", "[100, 100000]"),
    (["--delta0", "1e308"], "'1e308'", "[0.01, 20]"),
    (["--sigma", "1e308"], "'1e308'", "[1e-06, 10]"),
    (["--jobs", "100000"], "100000", "usable CPU cores"),
    (["--theta-bound", "1"], "'1'", "[1.5, 100]"),
    (["--n-min", "40000"], "40000", "at least two sample sizes"),
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


def test_identifiability_rejects_unknown_arguments(run_module):
    proc = run_module("theory.identifiability", "--fast")
    assert proc.returncode == 2 and "--fast" in proc.stderr and "Traceback" not in proc.stderr


def test_identifiability_takes_a_truth(run_module):
    proc = run_module("theory.identifiability", "--truth", "three_atoms", "--families", "vpt")
    assert proc.returncode == 0, proc.stderr
    assert "truth three_atoms" in proc.stdout and "vpt" in proc.stdout and "prefix" not in proc.stdout
