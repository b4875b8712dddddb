"""Named and file truths, their validation, and the local alternative."""

import json

import numpy as np
import pytest

from theory.runner import run_experiment
from theory.summary import summarize
from theory.truths import (
    DEFAULT_TRUTH,
    PRESETS,
    TruthError,
    load_truth,
    local_delta,
    local_truth,
    split_direction,
)
from theory.voronoi import local_metrics, transport_w1


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_fit_every_family(name):
    truth = load_truth(name)
    assert truth.families == ["vpt", "prefix", "vapt", "vapt_gelu", "vapt_linear"]
    for family in truth.families:
        model, G = truth.model(family)
        assert G.atoms.shape[0] == len(PRESETS[name]["biases"])
        assert np.isfinite(model.predict(np.zeros((3, 2)), G)).all()
    assert load_truth("three_atoms").biases.size == 3


def test_default_truth_is_the_default_preset():
    assert load_truth(None) is DEFAULT_TRUTH
    np.testing.assert_array_equal(load_truth("default").atoms["vapt"], DEFAULT_TRUTH.atoms["vapt"])


def _write(tmp_path, data):
    path = tmp_path / "truth.json"
    path.write_text(json.dumps(data))
    return str(path)


def _without(data, *keys):
    data = json.loads(json.dumps(data))
    target = data
    for key in keys[:-1]:
        target = target[key]
    del target[keys[-1]]
    return data


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda d: _without(d, "biases"), "biases"),
        (lambda d: _without(d, "pretrained", "e0"), "pretrained.e0"),
        (lambda d: {**d, "B": [[1, 0], [0]]}, "field B"),
        (lambda d: {**d, "atoms": {**d["atoms"], "vpt": [[1, 2, 3], [4, 5, 6]]}}, "atoms.vpt"),
        (lambda d: {**d, "atoms": {"vpt": [[1, -0.5], [1.1, -0.5]]}}, "atoms.vpt"),  # atoms too close
        (lambda d: {**d, "atoms": {"transformer": [[1, 2]]}}, "atoms.transformer"),
        (lambda d: {**d, "c": "one, two"}, "field c"),
    ],
)
def test_bad_truth_file_names_the_field(tmp_path, edit, field):
    path = _write(tmp_path, edit(PRESETS["default"]))
    with pytest.raises(TruthError, match=field.replace(".", r"\.")):
        load_truth(path)


def test_cli_bad_truth_file_is_one_error_line(tmp_path, run_module):
    path = _write(tmp_path, _without(PRESETS["default"], "pretrained", "a0"))
    proc = run_module("theory.sample_efficiency", "--truth", path, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "pretrained.a0" in lines[0] and path in lines[0]
    assert not (tmp_path / "out").exists()
    proc = run_module("theory.sample_efficiency", "--truth", "nonexistent_truth")
    assert proc.returncode == 2 and "three_atoms" in proc.stderr and "Traceback" not in proc.stderr


def test_truth_file_without_a_family_limits_the_run(tmp_path, capsys):
    from theory.sample_efficiency import main

    data = {**PRESETS["default"], "atoms": {"vpt": PRESETS["default"]["atoms"]["vpt"]}}
    path = _write(tmp_path, data)
    assert main(["--truth", path, "--families", "vapt", "--out", str(tmp_path / "o")]) == 2
    assert "atoms.vapt" in capsys.readouterr().err
    truth = load_truth(path)
    assert truth.families == ["vpt"]
    fits = run_experiment(["vpt"], ["exact"], [300, 600], 2, truth=truth, jobs=1)
    assert set(fits["family"]) == {"vpt"} and (fits["truth_name"] == truth.name).all()


@pytest.mark.parametrize("n", [1000, 10_000, 100_000])
def test_local_truth_splits_one_atom_delta_n_apart(n):
    G = DEFAULT_TRUTH.model("vapt")[1]
    local = local_truth(G, n, 2.0)
    pair = local.atoms[-2:]
    assert np.linalg.norm(pair[0] - pair[1]) == pytest.approx(2.0 * n**-0.25, rel=1e-12)
    assert local_delta(n, 2.0) == pytest.approx(2.0 * n**-0.25)
    np.testing.assert_allclose(pair.mean(axis=0), G.atoms[0])
    np.testing.assert_allclose((pair[1] - pair[0]) / np.linalg.norm(pair[1] - pair[0]), split_direction(4))
    assert local.weights[-2:].sum() == pytest.approx(G.weights[0])
    np.testing.assert_array_equal(local.atoms[0], G.atoms[1])


def test_w1_of_the_truth_against_itself_is_zero_and_grows_with_an_offset():
    G = DEFAULT_TRUTH.model("vpt")[1]
    local = local_truth(G, 10_000, 2.0)
    metrics = local_metrics(local, G, local)
    assert metrics["W1"] == pytest.approx(0.0, abs=1e-12) and metrics["mass_err"] == pytest.approx(0.0, abs=1e-12)
    assert metrics["max_pair_err"] == 0.0 and metrics["resolved"] and not metrics["degenerate"]
    # one fitted atom at the pair's centre: W1 = delta_n / 2, neither resolved
    from theory.models import MixingMeasure

    merged = MixingMeasure(np.vstack([G.atoms[1], G.atoms[0]]), np.array([G.biases[1], G.biases[0]]))
    m = local_metrics(merged, G, local)
    assert m["W1"] == pytest.approx(local_delta(10_000, 2.0) / 2) and not m["resolved"]
    assert transport_w1(np.array([[0.0], [1.0]]), [1, 3], np.array([[0.0], [1.0]]), [3, 1]) == pytest.approx(0.5)


def test_local_experiment_rows():
    fits = run_experiment([], ["exact"], [500, 1000, 2000], 3, expressiveness=False, local_families=["vpt"], jobs=1)
    assert set(fits["regime"]) == {"local"} and (fits["fitted_atoms"] == 3).all()
    np.testing.assert_allclose(fits["delta_n"], 2.0 * fits["n"] ** -0.25)
    assert {"W1", "mass_err", "max_pair_err", "resolved", "degenerate"} <= set(fits.columns)
    summary = summarize(fits, n_boot=100).set_index("metric")
    assert summary.loc["W1", "kind"] == "rate" and summary.loc["W1", "predicted"] == -0.25
    assert summary.loc["max_pair_err", "kind"] == "none" and summary.loc["max_pair_err", "verdict"] in (
        "reported", "fit failed")
    assert np.isfinite(summary.loc["W1", "resolved_share"])


def test_local_report_labels_a_pre_asymptotic_family():
    import pandas as pd

    from theory.report import local_lines as _local_report

    summary = pd.DataFrame(
        [dict(family=f, regime="local", metric="W1", kind="rate", slope=s, ci_low=s - 0.05, ci_high=s + 0.1,
              predicted=-0.25, verdict="consistent") for f, s in (("vpt", -0.29), ("vapt", -0.39))]
    )
    degenerate = pd.DataFrame(
        [dict(family=f, regime="local", n=n, resolved_share=r, degenerate_share=0.7)
         for f, r in (("vpt", 0.1), ("vapt", 0.0)) for n in (1000, 10_000)]
    )
    lines = _local_report(summary, degenerate)
    labelled = [line for line in lines if "pre-asymptotic" in line]
    assert len(labelled) == 1 and labelled[0].strip().startswith("vapt")


@pytest.mark.parametrize(
    "edit,field",
    [
        (lambda d: {**d, "biases": [0.0, -60.0]}, "biases"),  # weight 1e-26: no prompt at all
        (lambda d: {**d, "B": [[0, 0], [0, 0]], "atoms": {"vpt": d["atoms"]["vpt"]}}, "atoms.vpt"),  # B = 0
        (lambda d: {**d, "weights": [1.0, 0.6]}, "weights"),  # unknown field
        (lambda d: {**d, "pretrained": {**d["pretrained"], "scale": 2}}, "pretrained.scale"),
        (lambda d: {**d, "pretrained": {**d["pretrained"], "e0": True}}, "pretrained.e0"),  # a boolean
        (lambda d: {**d, "biases": [0.0, False]}, "biases"),
    ],
)
def test_truth_validation_refuses_what_it_used_to_accept(tmp_path, edit, field):
    path = _write(tmp_path, edit(PRESETS["default"]))
    with pytest.raises(TruthError, match=field.replace(".", r"\.")):
        load_truth(path)


def test_cli_refuses_an_unidentifiable_truth_in_one_line(tmp_path, run_module):
    data = {**PRESETS["default"], "B": [[0, 0], [0, 0]], "atoms": {"vpt": PRESETS["default"]["atoms"]["vpt"]}}
    path = _write(tmp_path, data)
    proc = run_module("theory.sample_efficiency", "--truth", path, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "atoms.vpt" in lines[0] and "identifiable" in lines[0]


@pytest.mark.parametrize(
    "args",
    [
        ["--experiments", "expressiveness", "--no-expressiveness"],
        ["--experiments", "expressiveness", "--truth", "VAPT_ONLY"],
    ],
)
def test_nothing_to_run_is_one_error_line(tmp_path, run_module, args):
    data = {**PRESETS["default"], "atoms": {"vapt": PRESETS["default"]["atoms"]["vapt"]}}
    args = [_write(tmp_path, data) if a == "VAPT_ONLY" else a for a in args]
    proc = run_module("theory.sample_efficiency", *args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "nothing to run" in lines[0]
    assert not (tmp_path / "out").exists()
