"""Checkpoint retention: the last N plus the best by the chosen metric."""
import jax.numpy as jnp
import pytest

from sa_mdrad_jax import checkpoints


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 3)])
def test_keeps_last_n_and_the_best(tmp_path, mode, best):
    ckpt = checkpoints.Checkpointer(str(tmp_path), keep=2, best_metric="test_accuracy", best_mode=mode,
                                    async_save=False)
    accuracy = {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.6, 5: 0.7}
    for step, acc in accuracy.items():
        ckpt.save(step, {"w": jnp.full((2,), float(step))}, {"step": step},
                  metrics={"test_accuracy": acc})
    ckpt.wait()
    assert sorted(ckpt.manager.all_steps()) == sorted({best, 4, 5})
    assert ckpt.best_step() == best
    assert float(ckpt.restore_raw(best)["w"][0]) == best
    ckpt.close()


def test_load_variables_can_pick_the_best_checkpoint(tmp_path):
    from sa_mdrad_jax.train import loop
    from util import tiny_config
    loop.train(tiny_config(**{"train.epochs": 2, "checkpoint.keep": 1, "dataset.validation_size": 287,
                               "checkpoint.best_metric": "val_accuracy", "train.num_devices": 1}), str(tmp_path))
    ckpt = checkpoints.Checkpointer(str(tmp_path), read_only=True)
    steps = sorted(ckpt.manager.all_steps())
    accs = {s: ckpt.read_meta(s)["metrics"]["val_accuracy"] for s in steps}
    best = max(accs, key=accs.get)
    assert ckpt.best_step() == best
    _, variables, meta = checkpoints.load_variables(str(tmp_path), best=True)
    assert meta["step"] == best
