"""The quickstart pipeline (shortened): teachers trained, checkpointed, restored, reported."""
from __future__ import annotations

import pytest

from sa_mdrad_jax import checkpoints, quickstart


@pytest.mark.slow
def test_quickstart_restores_each_teacher_to_its_trained_accuracy(tmp_path, capsys):
    config = quickstart.get_config()
    config.train.max_steps = 4
    config.dataset.image_size = 8
    config.log.update(progress=False, tensorboard=False)
    rows = quickstart.run(config, str(tmp_path))
    assert [r["teacher"] for r in rows] == list(config.teachers)
    for row in rows:
        assert row["step"] == 4
        # The restored checkpoint reproduces the accuracy measured at the end of training.
        assert row["restored_accuracy"] == pytest.approx(row["trained_accuracy"], abs=1e-6)
        model_config, variables, meta = checkpoints.load_variables(row["workdir"])
        assert model_config["name"] == config.teachers[row["teacher"]].model.name
        assert set(variables) == {"params", "batch_stats"}
    table = capsys.readouterr().out
    assert "| resnet18 |" in table and "| wrn16 |" in table


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
