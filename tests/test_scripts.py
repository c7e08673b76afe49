"""Every script in experiments/ starts: `--help` answers (in a fresh process) with its own flags.

A broken entry point (a flag defined twice, an import error at module level) fails here. The
scripts keep their heavy imports (JAX models, torch) out of the path `--help` takes, so this stays
fast and needs none of the optional extras.
"""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")

# One flag each script must list in its help (its own, not a library's).
FLAG_IN_HELP = {
    "bench_step.py": "--models",
    "bench_suite.py": "--methods",
    "bench_autoattack.py": "--n_points",
    "bench_conv_kernels.py": "--width_div",
    "bench_official_torch.py": "--official",
    "parity_official_methods.py": "--official",
    "run_grid.py": "--grid",
    "claims.py": "--results",
    "bench_sa_mdrad_options.py": "--rounds",
    "device_check.sh": "--dry_run",
}


def _scripts() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(EXPERIMENTS, "*.py"))
                  + glob.glob(os.path.join(EXPERIMENTS, "*.sh")))


def test_every_script_is_covered():
    assert set(_scripts()) == set(FLAG_IN_HELP), "add the new script to FLAG_IN_HELP"


# Runs the script as __main__ with --help, then reports its exit code and the heavy modules it imported.
PROBE = """import runpy, sys
sys.argv = [sys.argv[1], '--help']
code = 0
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
    code = e.code
print('EXIT', code)
print('HEAVY', sorted(m for m in ('torch', 'flax', 'jax', 'sa_mdrad_jax.models') if m in sys.modules))
"""


@pytest.mark.parametrize("script", sorted(FLAG_IN_HELP))
def test_script_help_starts(script):
    path = os.path.join(EXPERIMENTS, script)
    if script.endswith(".sh"):
        proc = subprocess.run(["bash", path, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHON=sys.executable))
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
    else:
        proc = subprocess.run([sys.executable, "-c", PROBE, path], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        # absl's --help exits with 1, argparse's with 0; anything else is a failure to start.
        assert "EXIT 0" in out or "EXIT 1" in out, out[-3000:]
        assert "HEAVY []" in out, "--help imported heavy modules:\n" + out[-3000:]
    assert FLAG_IN_HELP[script] in out, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
