"""Shared helpers for the training tests: a tiny digits config and CLI subprocess runs."""
from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sa_mdrad_jax import checkpoints
from sa_mdrad_jax.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(ROOT, "tests", "tiny_config.py")


def tiny_config(**overrides):
    """resnet_tiny on 8x8 digits, a few dozen steps an epoch; overrides as dotted keys."""
    c = base_config()
    c.dataset.update(name="digits", image_size=8, crop_pad=2, flip=False)
    c.model.update(name="resnet_tiny", normalize="digits")
    c.train.update(epochs=2, batch_size=32)
    c.optim.update(lr=0.05, schedule="cosine", boundaries=())
    c.eval.batch_size = 120
    c.log.update(every_steps=10, progress=False, tensorboard=False)
    c.checkpoint.async_save = True
    return apply_overrides(c, overrides)


def apply_overrides(config, overrides: dict):
    """Sets dotted keys ('train.epochs': 3) on a ConfigDict, as --config.train.epochs=3 would."""
    for key, value in overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def run_cli(*args, env=None, devices: int | None = None, check=True, timeout=600):
    full_env = dict(os.environ, **(env or {}))
    if devices is not None:
        full_env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    proc = subprocess.run([sys.executable, "-m", "sa_mdrad_jax", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"CLI failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def final_params(workdir: str, step: int | None = None):
    ckpt = checkpoints.Checkpointer(workdir, read_only=True, async_save=False)
    state = ckpt.restore_raw(step)
    ckpt.close()
    return state


def assert_trees_equal(a, b, atol=0.0):
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


def snapshot(directory: str) -> dict:
    """{relative path: (size, mtime_ns)} of every file under `directory`."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, directory)] = (st.st_size, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------------------ shared digits MLP

class DigitsModel(NamedTuple):
    """A classifier trained on 8×8 digits: `logits_fn` is a stable object (a partial), so attacks
    jitted with it as a static argument compile once per session; x_test float32 [360,8,8,3] in
    [0,1], y_test int32 [360]."""
    logits_fn: Callable
    x_test: jax.Array
    y_test: jax.Array


def _mlp(params, x, mu, sd):
    z = ((x - mu) / sd).reshape(x.shape[0], -1)
    return jax.nn.relu(z @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


ADV_EPS = 16 / 255


@functools.lru_cache(maxsize=None)
def digits_mlp(adversarial: bool = False) -> DigitsModel:
    """A 192-64-10 MLP on 8×8 digits trained with Adam (1e-2) for 300 steps, cached per session.

    natural (full batch, clean images): inputs standardised per pixel (std floored at 0.01)
    inside the model, as CIFAR models normalise theirs; this makes it non-robust enough that
    attacks at ε = 8/255 separate clearly (clean ≈ 97 %, FGSM ≈ 62 %, PGD-20 ≈ 46 %).

    adversarial (PGD-AT, Madry et al. 2018): inputs only centred (x − 0.5); every step trains on
    PGD examples of a random batch of 256 (`attacks.pgd`, the training PGD: 5 steps of 2.5ε/5 from
    a uniform start) at ε = ADV_EPS = 16/255, a radius at which the model is robust-ish on digits
    (clean ≈ 98 %, FGSM ≈ 90 %, PGD-20 ≈ 90 % at 16/255). About 8 s of CPU.
    """
    from sa_mdrad_jax.attacks.pgd import pgd
    from sa_mdrad_jax.data import load_split

    xtr, ytr = load_split("digits", "train", image_size=8)
    xte, yte = load_split("digits", "test", image_size=8)
    xtr, xte = jnp.asarray(xtr, jnp.float32) / 255, jnp.asarray(xte, jnp.float32) / 255
    ytr, yte = jnp.asarray(ytr, jnp.int32), jnp.asarray(yte, jnp.int32)
    if adversarial:
        mu, sd = jnp.float32(0.5), jnp.float32(1.0)
    else:
        mu, sd = xtr.mean(0), xtr.std(0) + 0.01
    d, h, c = xtr[0].size, 64, 10
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params = {"w1": jax.random.normal(k1, (d, h)) / np.sqrt(d), "b1": jnp.zeros(h),
              "w2": jax.random.normal(k2, (h, c)) / np.sqrt(h), "b2": jnp.zeros(c)}
    opt = optax.adam(1e-2)
    ce = lambda p, x, y: optax.softmax_cross_entropy_with_integer_labels(_mlp(p, x, mu, sd), y)

    def step(i, carry):
        p, s = carry
        x, y = xtr, ytr
        if adversarial:
            key = jax.random.fold_in(jax.random.PRNGKey(1), i)
            idx = jax.random.choice(jax.random.fold_in(key, 1), len(xtr), (256,), replace=False)
            x, y = xtr[idx], ytr[idx]
            x = pgd(lambda z: ce(p, z, y), x, key, eps=ADV_EPS, step_size=2.5 * ADV_EPS / 5, steps=5)
        u, s = opt.update(jax.grad(lambda p: ce(p, x, y).mean())(p), s, p)
        return optax.apply_updates(p, u), s

    params, _ = jax.jit(lambda p: jax.lax.fori_loop(0, 300, step, (p, opt.init(p))))(params)
    params = jax.block_until_ready(params)   # train here, not on the first call of logits_fn
    return DigitsModel(functools.partial(_mlp, params, mu=mu, sd=sd), xte, yte)
