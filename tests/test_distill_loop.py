"""The distillation loop end to end on digits: teachers restored, SA-MDRAD trained, checkpointed."""
from __future__ import annotations

import pytest

from sa_mdrad_jax import checkpoints
from sa_mdrad_jax.config import distill_config, method_config, teacher_entry
from sa_mdrad_jax.train import loop, writers
from util import apply_overrides, assert_trees_equal, final_params, tiny_config


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    dirs = {}
    for name in ("resnet_tiny", "wrn_tiny"):
        dirs[name] = str(root / name)
        loop.train(tiny_config(**{"model.name": name, "train.max_steps": 20}), dirs[name])
    return dirs


def _config(teachers, **overrides):
    c = distill_config("sa_mdrad")
    base = tiny_config()
    for block in ("dataset", "model", "train", "optim", "eval", "log", "checkpoint"):
        c[block] = base[block]
    c.method.update(steps=2)
    for name, workdir in teachers.items():
        c.teachers[name] = teacher_entry(name, workdir, normalize="digits")
    return apply_overrides(c, overrides)


@pytest.mark.slow
def test_sa_mdrad_trains_logs_diagnostics_and_resumes_exactly(teachers, tmp_path):
    full = _config(teachers, **{"train.max_steps": 6, "log.every_steps": 3})
    loop.train(full, str(tmp_path / "full"))
    records = writers.read_metrics(str(tmp_path / "full"), "train")
    for key in ("kl_adv", "kl_nat", "feat_adv", "teacher_correct_adv_t0", "teacher_correct_nat_t1",
                "all_wrong_adv", "w_adv_t0", "w_adv_entropy", "accuracy_nat"):
        assert key in records[-1], key
    assert records[0]["feat_adv"] == 0.0 or records[0]["feat_adv"] > 0  # present; warm-up zeroes β, not L_F
    saved = final_params(str(tmp_path / "full"))
    assert "connectors" in saved["extra"] and "connector_opt_state" in saved["extra"]

    # Interrupt after 3 steps, resume to 6: equal to the uninterrupted run, connectors included.
    part = str(tmp_path / "part")
    loop.train(_config(teachers, **{"train.max_steps": 3}), part)
    loop.train(full, part)
    assert_trees_equal(final_params(part), saved)


def test_teacher_of_another_architecture_is_refused(teachers, tmp_path):
    bad = dict(teachers)
    c = _config(bad, **{"train.max_steps": 1})
    c.teachers["resnet_tiny"].model.name = "vgg_tiny"
    with pytest.raises(checkpoints.CheckpointMismatchError, match="vgg_tiny"):
        loop.train(c, str(tmp_path))
    c.teachers["resnet_tiny"].model.name = "resnet_tiny"
    c.teachers["resnet_tiny"].workdir = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="resnet_tiny"):
        loop.train(c, str(tmp_path / "x"))


@pytest.mark.slow
def test_mtard_balance_state_is_checkpointed_and_resumes_exactly(teachers, tmp_path):
    """MTARD's weights (method state) survive a kill-and-resume: the resumed run equals the straight one."""
    def config(steps):
        c = _config(teachers, **{"train.max_steps": steps, "log.every_steps": 2})
        c.method = method_config("mtard")
        c.method.update(steps=1, robust_teacher="wrn_tiny", natural_teacher="resnet_tiny")
        return c

    loop.train(config(4), str(tmp_path / "full"))
    saved = final_params(str(tmp_path / "full"))
    state = saved["extra"]["method"]
    assert int(state["started"]) == 1 and float(state["w_nat"]) != 0.5 and float(state["loss0_adv"]) > 0
    assert "balance_w_nat" in writers.read_metrics(str(tmp_path / "full"), "train")[-1]
    part = str(tmp_path / "part")
    loop.train(config(2), part)
    assert float(final_params(part)["extra"]["method"]["w_nat"]) != float(state["w_nat"])
    loop.train(config(4), part)
    assert_trees_equal(final_params(part), saved)
