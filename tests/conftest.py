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
# The tests compile far more than they run: keep the PGD loops rolled (one body to compile) instead of
# the CPU default of unrolling them (`attacks.pgd.resolve_unroll`; the unroll changes speed and float
# rounding only, which tests/test_distill_step.py and test_experiments.py check with both forms).
os.environ.setdefault("SA_MDRAD_PGD_UNROLL", "rolled")

# The CLI's persistent compilation cache (default under $XDG_CACHE_HOME) goes to a fresh directory
# per test session: CLI runs of one session share their compilations, and no run starts from the
# user's (or an earlier session's) warm cache. Each pytest-xdist worker process imports this file,
# so each gets its own directory; subprocesses inherit their worker's.
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sa_mdrad_tests_cache_")

import jax  # noqa: E402
import pytest  # noqa: E402

# Tests run tiny models for a few steps: compile time dominates, so trade run-time speed for it.
jax.config.update("jax_disable_most_optimizations", True)
# In-process tests compile the same tiny programs again and again (every loop.train call builds its
# step functions anew): they share the session's persistent cache with the CLI runs (programs that
# compile in over a second, JAX's default threshold). In-memory jit caches, which the compile-once
# tests count, are unaffected.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(os.environ["XDG_CACHE_HOME"], "sa_mdrad_jax", "jax_cache"))


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


def pytest_collection_modifyitems(config, items):
    """The `slow` end-to-end tests first (stable otherwise): with `-n 2` a two-minute test that
    starts last leaves one worker idle while it runs; started first, the short tests fill around it."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
