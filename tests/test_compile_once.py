"""Each program of a run compiles once: the training step over steps and epoch boundaries, the
robust evaluation over radii (ε is traced, not static)."""
from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np
import pytest

from sa_mdrad_jax import attacks
from sa_mdrad_jax.config import distill_config
from sa_mdrad_jax.evaluate import robustness
from sa_mdrad_jax.train import loop, step as step_lib
from util import apply_overrides, tiny_config


def _captured_epoch_fns(monkeypatch) -> list:
    """Records the (train_on, eval_on) pair every `compiled_epoch_fns` call of the loop builds."""
    built = []
    original = step_lib.compiled_epoch_fns

    def capture(*args, **kwargs):
        fns = original(*args, **kwargs)
        built.append(fns)
        return fns

    monkeypatch.setattr(step_lib, "compiled_epoch_fns", capture)
    return built


def test_training_step_compiles_once_over_steps_and_an_epoch_boundary(tmp_path, monkeypatch):
    """Four steps: three in the first epoch (batch 448 of the 1437 digits training images), then an
    epoch boundary (new order, new step context, the evaluation in between) and a fourth step."""
    built = _captured_epoch_fns(monkeypatch)
    config = distill_config("pgd_at")
    base = tiny_config(**{"train.epochs": 2, "train.batch_size": 448, "train.max_steps": 4,
                          "train.num_devices": 1, "model.width": 0.5})
    for block in ("dataset", "model", "train", "optim", "eval", "log", "checkpoint"):
        config[block] = base[block]
    config = apply_overrides(config, {"method.steps": 1})
    result = loop.train(config, str(tmp_path))
    assert result["step"] == 4
    (train_on, eval_on), = built
    assert train_on._cache_size() == 1, "the training step compiled more than once"
    assert eval_on._cache_size() == 1


class _Linear(nn.Module):   # the zoo's interface: apply(variables, x, train=) -> (logits, features)
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(10)(x.reshape(x.shape[0], -1) - 0.5), {}


def test_robustness_curve_compiles_the_attack_once_for_all_radii():
    model = _Linear()
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32), train=False)
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(8, 8, 8, 3)).astype(np.float32), rng.integers(0, 10, 8)
    robustness._correct_after.clear_cache()
    eps_list = (0.0, 1 / 255, 4 / 255, 8 / 255, 16 / 255)
    result = robustness.evaluate_model(model, variables, x, y, attack_names=("clean", "fgsm"), batch_size=8,
                                       curve_eps=eps_list)
    # clean and fgsm (one program each), then pgd20 for the four positive radii: one program.
    assert robustness._correct_after._cache_size() == 3
    curve = list(result["curve"].values())
    assert curve[0] == result["accuracy"]["clean"]
    # A traced ε attacks as the radius compiled in as a constant does.
    logits_fn = robustness.model_logits(model, variables)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 99), 0)
    with jax.default_matmul_precision("highest"):
        x_adv = jax.jit(lambda x, y: attacks.pgd20(logits_fn, x, y, key, eps=8 / 255))(x, y)
        static = np.mean(np.argmax(np.asarray(logits_fn(x_adv)), -1) == y)
    assert curve[4] == pytest.approx(static)
    assert robustness._correct_after._cache_size() == 3
