"""Test-session setup: 8 simulated CPU devices and fast compiles.

The device count must be set before JAX initialises its backend, so this runs first.
"""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# Subprocesses started by tests (CLI runs, multi-process runs) inherit this through the environment.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "true")

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests run tiny models for a few steps: compile time dominates, so trade run-time speed for it.
jax.config.update("jax_disable_most_optimizations", True)


@pytest.fixture(scope="session")
def digits_natural():
    """The shared naturally trained digits MLP (util.digits_mlp), trained once per session."""
    from util import digits_mlp
    return digits_mlp(adversarial=False)


@pytest.fixture(scope="session")
def digits_adversarial():
    """The shared PGD-AT digits MLP (util.digits_mlp, ε = util.ADV_EPS), trained once per session."""
    from util import digits_mlp
    return digits_mlp(adversarial=True)
