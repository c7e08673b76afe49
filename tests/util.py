"""Shared helpers for the training tests: a tiny digits config and CLI subprocess runs."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

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
