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

# The CLI's persistent compilation cache (default under $XDG_CACHE_HOME) would go to a fresh directory
# per test worker, never the user's. The suite runs with JAX's persistent cache switched off, in-process
# and in the CLI subprocesses (through the environment): loading a serialized CPU executable is native
# code that has crashed processes upstream, and a CI worker died once in native code with it on
# (CI, 2026-12-07; not reproduced in the full runs here). One test switches it on to check that the CLI writes
# the cache and that a second run loads its programs from it
# (test_cli.py::test_persistent_compilation_cache_is_written_and_reused).
import tempfile  # noqa: E402

os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sa_mdrad_tests_cache_")
os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"

# Native crash reports. A fatal signal in an xdist worker (XLA's LOG(FATAL), a segfault) kills it
# with its reason printed by native code to file descriptor 2; under fd-level capture that text
# goes to the test's capture file, which dies with the worker, and faulthandler's dump of every
# thread buries whatever is left. So each worker writes its fd 2 to a file of its own (setup.cfg
# runs the suite with `--capture=sys`: Python-level output is still captured per test, native
# output goes to that file), and the controller prints the lines around any "Fatal Python error"
# at the end of the run (`pytest_terminal_summary` below), where a CI log's tail shows them.
STDERR_DIR_ENV = "SA_MDRAD_TEST_STDERR_DIR"
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker is None:
    os.environ[STDERR_DIR_ENV] = tempfile.mkdtemp(prefix="sa_mdrad_worker_stderr_")
elif os.environ.get(STDERR_DIR_ENV):
    _fd = os.open(os.path.join(os.environ[STDERR_DIR_ENV], f"{_worker}.stderr"),
                  os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(_fd, 2)
    os.close(_fd)

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


def pytest_collection_modifyitems(config, items):
    """The `slow` end-to-end tests first (stable otherwise): with `-n 2` a two-minute test that
    starts last leaves one worker idle while it runs; started first, the short tests fill around it."""
    del config
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def crash_excerpt(text: str, before: int = 12, after: int = 12) -> list[str] | None:
    """The lines around the first "Fatal Python error" of a worker's stderr (the native message
    comes just before it), without faulthandler's one-line list of extension modules; None if the
    worker did not die of a fatal signal."""
    lines = text.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error")), None)
    if at is None:
        return None
    return [line[:300] for line in lines[max(0, at - before): at + after]
            if not line.startswith("Extension modules")]


@pytest.hookimpl(trylast=True)   # after the durations, just before the short summary
def pytest_terminal_summary(terminalreporter):
    """In the controller of an xdist run: the native crash report of every worker that died."""
    directory = os.environ.get(STDERR_DIR_ENV)
    if _worker is not None or not directory or not os.path.isdir(directory):
        return
    crashed = False
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        with open(path, errors="replace") as f:
            excerpt = crash_excerpt(f.read())
        if excerpt is not None:
            crashed = True
            terminalreporter.write_sep("=", f"native crash of worker {name.split('.')[0]} (all of its stderr: {path})")
            for line in excerpt:
                terminalreporter.write_line(line)
    if not crashed:
        import shutil
        shutil.rmtree(directory, ignore_errors=True)
