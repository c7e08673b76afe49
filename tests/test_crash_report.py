"""The suite's own crash report: a test worker killed by native code leaves its reason in the run's summary."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import STDERR_DIR_ENV, crash_excerpt
from util import ROOT

DUMP = """some earlier native warning
F0000 00:00:1 rendezvous.cc:1] Termination timeout for `all-reduce` of 40 seconds exceeded.
Fatal Python error: Aborted

Current thread 0x00007f (most recent call first):
  <no Python frame>
Extension modules: numpy.core._multiarray_umath, jaxlib.utils (total: 2)
"""


def test_excerpt_keeps_the_native_reason_and_drops_the_module_list():
    excerpt = crash_excerpt(DUMP)
    assert excerpt[1].endswith("Termination timeout for `all-reduce` of 40 seconds exceeded.")
    assert excerpt[2] == "Fatal Python error: Aborted"
    assert not any(line.startswith("Extension modules") for line in excerpt)
    assert crash_excerpt(DUMP, before=1)[0].startswith("F0000")
    assert crash_excerpt("an ordinary warning\nanother\n") is None


def test_a_worker_killed_in_native_code_is_reported_with_its_reason(tmp_path):
    shutil.copy(os.path.join(ROOT, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --capture=sys\n")
    (tmp_path / "test_dies.py").write_text(
        "import os\n\n"
        "def test_dies_in_native_code():\n"
        "    os.write(2, b'F0000 fake.cc:7] Check failed: the reason of this crash\\n')\n"
        "    os.abort()\n\n"
        "def test_passes():\n"
        "    assert True\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", STDERR_DIR_ENV,
                                                            "PYTEST_CURRENT_TEST", "PYTEST_ADDOPTS")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-q", "-p", "no:cacheprovider",
                           "-c", str(tmp_path / "pytest.ini"), "--rootdir", str(tmp_path), str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "1 failed, 1 passed" in out
    assert "crashed while running 'test_dies.py::test_dies_in_native_code'" in out
    tail = out.splitlines()[-25:]                      # where a CI log's tail shows it
    report = next(i for i, line in enumerate(tail) if "native crash of worker gw" in line)
    assert "Check failed: the reason of this crash" in tail[report + 1]
    assert tail[report + 2] == "Fatal Python error: Aborted"
    kept = tail[report].split("all of its stderr: ")[1].rstrip(") =")   # the crashed worker's whole stderr
    assert "Check failed: the reason of this crash" in open(kept).read()
    shutil.rmtree(os.path.dirname(kept))
