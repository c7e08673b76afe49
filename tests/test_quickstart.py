"""The quickstart pipeline (shortened): teachers, PGD-AT and SA-MDRAD students, one robustness table."""
from __future__ import annotations

import json

import pytest

from sa_mdrad_jax import checkpoints, quickstart
from sa_mdrad_jax.config import ConfigError

ATTACKS = ["clean", "fgsm", "pgd20", "autoattack"]


@pytest.mark.slow
def test_quickstart_trains_teachers_and_students_and_writes_one_robustness_table(tmp_path, capsys):
    config = quickstart.get_config()
    # The real pipeline on the tiniest zoo models: every compile (4 trainings, 4 models × 7 attack
    # programs) is what costs here, not the 3 steps or the 8 points.
    config.teachers.resnet18.model.name = "resnet_tiny"
    config.teachers.wrn16.model.update(name="wrn_tiny", width=1.0)
    config.teachers.resnet18.model.width = 1.0
    config.train.max_steps = 3
    config.student.pgd_steps = 2
    config.robustness.update(n_points=8, batch_size=8)
    config.log.update(progress=False, tensorboard=False)
    rows = quickstart.run(config, str(tmp_path))

    assert [(r["role"], r["name"]) for r in rows] == [
        ("teacher", "resnet18"), ("teacher", "wrn16"), ("student", "pgd_at"), ("student", "sa_mdrad")]
    for row in rows:
        acc = row["accuracy"]
        assert list(acc) == ATTACKS
        assert row["n_points"] == 8 and row["eps"] == pytest.approx(config.eps) and row["seed"] == 0
        assert row["train_seed"] == config.seed
        assert all(acc[name] <= acc["clean"] for name in ATTACKS)
        assert acc["autoattack"] <= acc["pgd20"]
        # AutoAttack ran its four standard stages and counted clean accuracy as the table does.
        assert list(row["autoattack"]["robust_accuracy_after"]) == ["apgd_ce", "apgd_t", "fab_t", "square"]
        assert row["autoattack"]["clean_accuracy"] == pytest.approx(acc["clean"])
        model_cfg, _, meta = checkpoints.load_variables(row["workdir"])
        assert meta["step"] == 3
        assert meta["method"] == ("natural" if row["role"] == "teacher" else row["name"])
    students = [checkpoints.load_variables(r["workdir"])[0] for r in rows[2:]]
    assert students[0] == students[1] and students[0]["name"] == config.student.model.name

    # The files hold exactly what was returned and printed.
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["rows"] == json.loads(json.dumps(rows, default=float))
    table = quickstart.format_table(rows)
    assert table in (tmp_path / "results.md").read_text()
    assert table in capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0] == ("| model | method | clean | fgsm | pgd20 | autoattack | n points | eps | train seed | "
                        "attack seed |")
    assert len(lines) == 2 + 4


def test_student_config_uses_the_threat_model_and_the_trained_teachers():
    config = quickstart.get_config()
    dirs = {"resnet18": "teachers/resnet18", "wrn16": "teachers/wrn16"}  # recorded, not read
    for method in ("pgd_at", "sa_mdrad"):
        c = quickstart.student_config(config, method, dirs)
        assert c.method.name == method
        assert c.method.eps == config.eps and c.method.steps == config.student.pgd_steps
        assert c.method.step_size == pytest.approx(2.5 * config.eps / config.student.pgd_steps)
        assert {n: t.workdir for n, t in c.teachers.items()} == dirs
        assert c.teachers.resnet18.model.to_dict() == config.teachers.resnet18.model.to_dict()
        assert c.model.to_dict() == config.student.model.to_dict() and c.seed == config.seed


@pytest.mark.parametrize("field, value, message", [
    ("student.methods", ("pgd_at", "trades_x"), "student.methods has"),
    ("eps", 0.0, "eps must be in"),
    ("robustness.n_points", 0, "n_points must be positive")])
def test_bad_quickstart_settings_are_refused_before_training(tmp_path, field, value, message):
    config = quickstart.get_config()
    node, leaf = (config, field) if "." not in field else (config[field.split(".")[0]], field.split(".")[1])
    node[leaf] = value
    with pytest.raises(ConfigError, match=message):
        quickstart.run(config, str(tmp_path))
    assert not any(tmp_path.iterdir())


def test_loading_a_checkpoint_of_another_shape_is_refused(tmp_path):
    from sa_mdrad_jax.train import loop
    from util import tiny_config
    workdir = str(tmp_path)
    loop.train(tiny_config(**{"train.max_steps": 1}), workdir)
    # Corrupt the metadata as if another architecture's arrays were stored under this model name.
    ckpt = checkpoints.Checkpointer(workdir, async_save=False)
    meta = ckpt.read_meta()
    state = ckpt.restore_raw()
    ckpt.close()
    meta["model"]["width"] = 2.0
    other = checkpoints.Checkpointer(str(tmp_path / "other"), async_save=False)
    other.save(1, state, meta)
    other.wait()
    other.close()
    with pytest.raises(checkpoints.CheckpointMismatchError, match="wrong shapes"):
        checkpoints.load_variables(str(tmp_path / "other"))
