"""The path module: local semantics kept, and every file access of the library goes through it."""
from __future__ import annotations

import os
import re

import pytest

from sa_mdrad_jax import paths

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sa_mdrad_jax")
# Direct file-system calls that would bypass gs:// support (bare open(), not Image.open/ZipFile).
DIRECT_IO = re.compile(r"\bos\.path\.|(?<![\w.])open\(|\bos\.(makedirs|listdir|remove|rename|replace|utime|stat|"
                       r"scandir|walk|unlink|link|fdopen)\(|\bshutil\.|\bglob\.glob|\.savefig\(|\bnp\.(save|load)\(")


def test_no_direct_file_access_outside_the_path_module():
    offenders = []
    for root, _, files in os.walk(PACKAGE):
        for name in files:
            path = os.path.join(root, name)
            if not name.endswith(".py") or path == paths.__file__:
                continue
            with open(path) as f:
                for number, line in enumerate(f, 1):
                    code = line.split("#", 1)[0] if "# local-only" not in line else ""
                    if DIRECT_IO.search(code):
                        offenders.append(f"{os.path.relpath(path, PACKAGE)}:{number}: {line.strip()}")
    assert not offenders, "file access that bypasses sa_mdrad_jax.paths:\n" + "\n".join(offenders)


def test_the_scan_finds_what_it_looks_for():
    for line in ('with open(p) as f:', 'os.path.join(a, b)', 'os.makedirs(d, exist_ok=True)', 'fig.savefig(p)',
                 'shutil.copy(a, b)', 'os.replace(a, b)'):
        assert DIRECT_IO.search(line), line
    for line in ('Image.open(io.BytesIO(b))', 'paths.open_file(p)', 'reopen(x)', 'paths.join(a, b)'):
        assert not DIRECT_IO.search(line), line


def test_local_write_is_atomic_and_append_appends(tmp_path):
    p = str(tmp_path / "a" / "b.txt")
    paths.write_text(p, "one")
    assert paths.read_text(p) == "one" and os.listdir(tmp_path / "a") == ["b.txt"]   # no temporary left
    paths.append_text(p, "\ntwo")
    assert paths.read_text(p) == "one\ntwo"
    assert paths.signature(p)[0] == 7


def test_create_exclusive_refuses_an_existing_file(tmp_path):
    p = str(tmp_path / "lock")
    assert paths.create_exclusive(p, "first")
    assert not paths.create_exclusive(p, "second")
    assert paths.read_text(p) == "first"


def test_rename_moves_a_directory_tree_and_remove_reports_a_missing_file(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("x")
    paths.rename(str(src), str(tmp_path / "deep" / "dst"))
    assert (tmp_path / "deep" / "dst" / "sub" / "f").read_text() == "x" and not src.exists()
    with pytest.raises(FileNotFoundError):
        paths.remove(str(tmp_path / "nothing"))


def test_urls_stay_urls(tmp_path):
    assert paths.is_remote("gs://b/run") and not paths.is_remote(str(tmp_path)) and not paths.is_remote("run")
    assert paths.absolute("gs://b/run") == "gs://b/run"
    assert paths.absolute("run") == os.path.join(os.getcwd(), "run")
    assert paths.join("gs://b/run/", "checkpoints", "3") == "gs://b/run/checkpoints/3"
    assert paths.parent("gs://b/run/checkpoints") == "gs://b/run" and paths.name("gs://b/run/x.json") == "x.json"
