"""The evaluate command: a checkpoint, named attacks, JSON/Markdown/PNG reports."""
from __future__ import annotations

import json

import pytest

from sa_mdrad_jax import cli
from sa_mdrad_jax.train import loop
from util import tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("model"))
    loop.train(tiny_config(**{"train.epochs": 3}), workdir)
    return workdir


def test_evaluate_command_writes_reports_with_ordered_accuracies(trained, tmp_path, capsys):
    out = tmp_path / "eval"
    cli.run(["sa-mdrad", "evaluate", f"--workdir={trained}", "--attacks=clean,fgsm,pgd20",
             "--n_points=64", "--batch_size=32", f"--out_dir={out}"])
    record = json.loads((out / "evaluation.json").read_text())
    acc = record["accuracy"]
    assert record["n_points"] == 64 and record["step"] == 3 * (1437 // 32)
    assert acc["clean"] > 0.3
    assert acc["pgd20"] <= acc["fgsm"] <= acc["clean"]
    curve = list(record["curve"].values())
    assert curve[0] == acc["clean"]
    assert all(b <= a + 1e-9 for a, b in zip(curve, curve[1:]))   # non-increasing in ε (S5)
    assert (out / "robust_accuracy_vs_eps.png").stat().st_size > 1000
    assert "| resnet_tiny (step" in (out / "evaluation.md").read_text()
    assert "| model | clean | fgsm | pgd20 |" in capsys.readouterr().out


def test_unknown_attack_lists_valid_names(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.run(["sa-mdrad", "evaluate", f"--workdir={trained}", "--attacks=clean,pgd21", "--n_points=8",
                 "--batch_size=8", f"--out_dir={tmp_path}"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "pgd21" in err and "apgd_ce" in err and "autoattack" in err
