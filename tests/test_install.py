"""setup.cfg's ranges and constraints.txt's pins describe the same tested environment.

setup.cfg declares compatible ranges (so the package installs next to `jax[tpu]`, `jax[cuda12]` or an
existing research environment); constraints.txt pins the versions tested here exactly (CI and the README
install with `-c constraints.txt`). These tests keep the two in step: every requirement is pinned, every
range starts at its pin, and no exact pin leaks into install_requires. Static checks: no network, no pip.
"""
from __future__ import annotations

import configparser
import os

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(value: str) -> list[str]:
    """Requirement lines of a setup.cfg list value (configparser has already dropped comment lines)."""
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def read_setup_cfg(text: str) -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    """(install_requires, {extra: requirements}) of a setup.cfg's text."""
    parser = configparser.ConfigParser()
    parser.read_string(text)
    install = [Requirement(line) for line in _lines(parser["options"]["install_requires"])]
    extras = {name: [Requirement(line) for line in _lines(value)]
              for name, value in parser["options.extras_require"].items()}
    return install, extras


def read_constraints(text: str) -> dict[str, Version]:
    """{canonical name: pinned version} of a constraints file; every line must be one `name==version`."""
    pins: dict[str, Version] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version or req.extras or req.marker:
            raise ValueError(f"constraints line {number} {raw!r}: expected one exact pin `name==version`")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"constraints line {number} {raw!r}: {req.name} is pinned twice")
        pins[name] = Version(specs[0].version)
    return pins


def check(install: list[Requirement], extras: dict[str, list[Requirement]],
          pins: dict[str, Version]) -> list[str]:
    """Every way the ranges and the pins disagree, as readable messages (empty: they agree)."""
    problems = []
    for req in install:
        if any(spec.operator in ("==", "===") for spec in req.specifier):
            problems.append(f"install_requires {req}: exact pin (use a range; the pin goes to constraints.txt)")
    groups = [("install_requires", install)] + [(f"[{name}]", reqs) for name, reqs in extras.items()]
    for where, reqs in groups:
        for req in reqs:
            name = canonicalize_name(req.name)
            if name not in pins:
                problems.append(f"{where} {req}: {req.name} has no `==` pin in constraints.txt")
                continue
            lower = [Version(spec.version) for spec in req.specifier if spec.operator == ">="]
            if len(lower) != 1:
                problems.append(f"{where} {req}: needs one `>=` lower bound (the tested version)")
            elif lower[0] != pins[name]:
                problems.append(f"{where} {req}: lower bound {lower[0]} is not the tested pin {pins[name]}")
            if pins[name] not in req.specifier:
                problems.append(f"{where} {req}: the tested pin {pins[name]} is outside the range")
    return problems


def _read(name: str) -> str:
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def test_setup_cfg_ranges_start_at_the_constraints_pins():
    install, extras = read_setup_cfg(_read("setup.cfg"))
    pins = read_constraints(_read("constraints.txt"))
    assert install and {"test", "gcs", "tpu", "cuda12", "torch", "prepare"} <= set(extras)
    assert check(install, extras, pins) == []


def test_the_accelerator_extras_pin_the_same_jax_and_jaxlib():
    # jax[tpu] / jax[cuda12] require jaxlib == jax's own version: one pin serves CPU, CUDA and TPU.
    pins = read_constraints(_read("constraints.txt"))
    assert pins["jax"] == pins["jaxlib"]
    _, extras = read_setup_cfg(_read("setup.cfg"))
    assert [(r.name, r.extras) for r in extras["tpu"]] == [("jax", {"tpu"})]
    assert [(r.name, r.extras) for r in extras["cuda12"]] == [("jax", {"cuda12"})]


_CFG = """
[options]
install_requires =
    jax{jax}
    numpy>=2.4.6,<3
[options.extras_require]
test =
    pytest>=9.2.0
"""


@pytest.mark.parametrize("jax_spec, pins, expected", [
    (">=0.10.2", "jax==0.10.2\nnumpy==2.4.6\npytest==9.2.0\n", []),
    ("==0.10.2", "jax==0.10.2\nnumpy==2.4.6\npytest==9.2.0\n",
     ["exact pin", "needs one `>=` lower bound"]),
    (">=0.10.1", "jax==0.10.2\nnumpy==2.4.6\npytest==9.2.0\n", ["lower bound 0.10.1 is not the tested pin 0.10.2"]),
    ("", "jax==0.10.2\nnumpy==2.4.6\npytest==9.2.0\n", ["needs one `>=` lower bound"]),
    (">=0.10.2", "jax==0.10.2\nnumpy==2.4.6\n", ["pytest has no `==` pin"]),
    (">=0.10.2", "jax==0.10.2\nnumpy==3.0.0\npytest==9.2.0\n",
     ["lower bound 2.4.6 is not the tested pin 3.0.0", "pin 3.0.0 is outside the range"]),
])
def test_check_names_each_disagreement(jax_spec, pins, expected):
    problems = check(*read_setup_cfg(_CFG.format(jax=jax_spec)), read_constraints(pins))
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert fragment in problem


@pytest.mark.parametrize("line", ["jax>=0.10.2", "jax==0.10.*", "jax[tpu]==0.10.2", "jax==0.10.2\njax==0.10.2"])
def test_constraints_accept_only_one_exact_pin_per_name(line):
    with pytest.raises(ValueError, match="constraints line"):
        read_constraints(line)
