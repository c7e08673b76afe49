"""The research-extension path (README, "Adding a method / an attack"): a method defined in this file
is registered and trained through the CLI `distill` path and as a grid cell; an attack defined here
is registered and run by `evaluate --attacks=<spec>`; nothing else in the project changes. Also: no
list of method or attack names is kept outside the registries."""
from __future__ import annotations

import ast
import functools
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import attacks, cli, config as config_lib, grid
from sa_mdrad_jax.attacks import pgd_attack
from sa_mdrad_jax.methods import Method, Outputs, losses, register, unregister
from sa_mdrad_jax.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "rslad_sharp_test"


# --- the new method: RSLAD with sharpened teacher targets plus ce_weight·CE on x' (one "file") -----
def make_rslad_sharp(config, teacher_names=None) -> Method:
    del teacher_names
    tau, sharpen, ce_weight, kl_scale = config.tau, config.sharpen, config.ce_weight, config.kl_scale

    def outer(out: Outputs):
        p = losses.teacher_target(out.t_nat, tau / sharpen)          # σ(T(x)·sharpen/τ): sharper than RSLAD's
        kl_adv = kl_scale * losses.kl_batchmean(p, out.s_adv, tau)
        kl_nat = kl_scale * losses.kl_batchmean(p, out.s_nat, tau)
        ce_adv = jnp.mean(losses.ce(out.s_adv, out.y))
        return kl_adv + kl_nat + ce_weight * ce_adv, {"kl_adv": kl_adv, "kl_nat": kl_nat, "ce_adv": ce_adv}

    return Method(name=NAME, outer_loss=outer,
                  inner_loss=lambda c: losses.kl_per_example(losses.teacher_target(c.t_nat, tau), c.s, tau),
                  inner_refs=("t_nat",), attack_init=config.attack_init, teacher_views=("nat",),
                  student_views=("adv", "nat"))


DEFAULTS = dict(attack_init="normal", tau=1.0, sharpen=2.0, ce_weight=0.5, kl_scale=1.0)


@pytest.fixture(scope="module")
def registered():
    register(NAME, defaults=DEFAULTS, teachers="robust", replace=True)(make_rslad_sharp)
    yield NAME
    unregister(NAME)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """configs/teacher_digits.py for two steps: a teacher checkpoint in seconds."""
    workdir = str(tmp_path_factory.mktemp("teacher"))
    c = config_lib.load_config_file(os.path.join(ROOT, "configs/teacher_digits.py"))
    c.train.update(max_steps=2, num_devices=1)
    c.log.progress = False
    c.checkpoint.async_save = False
    loop.train(c, workdir, quiet=True)
    return workdir


def student_config(teacher_dir: str) -> config_lib.ml_collections.ConfigDict:
    c = config_lib.distill_config(NAME)
    c.dataset.update(name="digits", image_size=8, crop_pad=1, flip=False)
    c.model.update(name="resnet_tiny", normalize="digits")
    c.train.update(epochs=1, batch_size=32, max_steps=1, num_devices=1)
    c.optim.update(lr=0.05, schedule="cosine", boundaries=())
    c.method.update(steps=1, eps=16 / 255, step_size=16 / 255)
    c.eval.update(robust_points=0, batch_size=360)
    c.log.update(progress=False, tensorboard=False)
    c.checkpoint.async_save = False
    c.teachers.robust = config_lib.teacher_entry("resnet_tiny", teacher_dir, normalize="digits")
    return c


def _train_rows(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "train"]


def test_registered_defaults_are_its_config_block_and_options_are_checked(registered):
    block = config_lib.method_config(registered)
    assert {k: block[k] for k in DEFAULTS} == DEFAULTS and not block.igdm.enabled
    c = student_config("unused")
    c.method.sharpn = 3.0                               # a typo of an option
    with pytest.raises(config_lib.ConfigError, match=r"no option\(s\) 'sharpn'.*Valid keys: .*sharpen"):
        config_lib.validate(c)
    c = student_config("unused")
    del c.method["ce_weight"]                           # an option the method reads is missing
    with pytest.raises(config_lib.ConfigError, match=r"needs option 'ce_weight'.*Valid keys: .*ce_weight"):
        config_lib.validate(c)


@pytest.fixture(scope="module")
def grid_cell(registered, teacher, tmp_path_factory):
    """A one-cell grid of the new method whose training runs `sa-mdrad distill` (the CLI path, in this
    process) with the cell's config: one step."""
    tmp = tmp_path_factory.mktemp("grid")
    config_file = tmp / "rslad_sharp.py"
    config_file.write_text("import sys\nsys.path.insert(0, %r)\nfrom test_extension import student_config\n\n\n"
                           "def get_config():\n    return student_config('')\n" % os.path.dirname(__file__))
    trained, evaluated = [], []

    def distill_via_cli(config, workdir):
        cli.run(["sa-mdrad", "distill", f"--config={config_file}", f"--workdir={workdir}",
                 f"--config.seed={config.seed}", f"--config.method.sharpen={config.method.sharpen}",
                 f"--config.teachers.robust.workdir={config.teachers.robust.workdir}"])
        trained.append((workdir, config))
        return {}

    def evaluate_fn(workdir, **kwargs):
        evaluated.append((workdir, kwargs["attack_names"]))
        return {"accuracy": {"clean": 1.0}}

    g = {"name": "extension", "root": str(tmp / "runs"), "results": str(tmp / "results"),
         "datasets": ("digits",), "students": ("resnet_tiny",), "methods": (NAME,), "seeds": (3,),
         "base_config": lambda method, dataset, student: student_config(""), "overrides": {"method.sharpen": 3.0},
         "teachers": {"digits": {"robust": {"config": None, "workdir": teacher}}},
         "evaluation": {"attacks": ("clean", "pgd:steps=2"), "n_points": 8, "eps": 8 / 255, "batch_size": 8,
                        "seed": 0, "curve_eps": ()}}
    (run,) = grid.run_grid(g, train_fn=distill_via_cli, evaluate_fn=evaluate_fn, log=lambda *_: None, report=False)
    return run, trained, evaluated


def test_a_method_defined_here_distills_through_the_cli_as_a_grid_cell(grid_cell, teacher):
    run, trained, evaluated = grid_cell
    assert run.method == NAME and [w for w, _ in trained] == [run.workdir]
    assert evaluated == [(run.workdir, ("clean", "pgd:steps=2"))]
    with open(os.path.join(run.workdir, "config.json")) as f:
        resolved = json.load(f)
    # The CLI trained exactly the grid cell's config (seed, override, teacher workdir filled in).
    assert resolved == json.loads(json.dumps(trained[0][1].to_dict(), sort_keys=True, default=str))
    assert resolved["seed"] == 3 and resolved["method"]["sharpen"] == 3.0
    assert resolved["teachers"]["robust"]["workdir"] == teacher
    (row,) = _train_rows(run.workdir)
    assert row["step"] == 1
    # The logged loss is this file's loss: KL(adv) + KL(nat) + 0.5·CE(adv) of its own terms.
    np.testing.assert_allclose(row["loss"], row["kl_adv"] + row["kl_nat"] + 0.5 * row["ce_adv"], rtol=1e-5)
    assert row["ce_adv"] > 0 and row["kl_adv"] > 0


# --- the new attack: PGD on the CW margin with restarts, options settable from a spec ------------------
def pgd_cw_restarts(logits_fn, x, y, key, *, eps=8 / 255, steps=50, restarts=2):
    return pgd_attack(logits_fn, x, y, key, eps=eps, step_size=2.5 * eps / steps, steps=steps, loss="cw",
                      restarts=restarts)


def _check(*, steps, restarts):
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps and restarts must be >= 1, got {steps}, {restarts}.")


def test_an_attack_defined_here_runs_through_evaluate_specs(grid_cell, tmp_path, monkeypatch, capsys):
    distilled = grid_cell[0].workdir
    from sa_mdrad_jax.evaluate import robustness
    attacks.register_attack("pgd_cw_test", pgd_cw_restarts, check=_check, replace=True)
    try:
        monkeypatch.setattr(robustness, "evaluate_checkpoint",
                            functools.partial(robustness.evaluate_checkpoint, curve_eps=()))
        out = tmp_path / "eval"
        spec = "pgd_cw_test:steps=3,restarts=2"
        cli.run(["sa-mdrad", "evaluate", f"--workdir={distilled}", f"--attacks=clean,{spec}",
                 "--n_points=16", "--batch_size=16", f"--out_dir={out}"])
        acc = json.loads((out / "evaluation.json").read_text())["accuracy"]
        assert list(acc) == ["clean", spec] and acc[spec] <= acc["clean"]
        assert attacks.resolve(spec) is attacks.resolve("pgd_cw_test: restarts=2, steps=3")   # one compile per spec
        for bad, expected in [("pgd_cw_test:stepz=3", "Valid options: steps (default 50), restarts (default 2)"),
                              ("pgd_cw_test:restarts=0", "steps and restarts must be >= 1"),
                              ("pgd:loss=hinge", "Valid: ce, cw, dlr")]:
            with pytest.raises(SystemExit) as exc:
                cli.run(["sa-mdrad", "evaluate", f"--workdir={distilled}", f"--attacks=clean,{bad}",
                         f"--out_dir={tmp_path / 'bad'}"])
            assert exc.value.code == 1 and expected in capsys.readouterr().err
            assert not (tmp_path / "bad").exists()
    finally:
        attacks.unregister_attack("pgd_cw_test")
    with pytest.raises(config_lib.ConfigError, match="Unknown attack 'pgd_cw_test'"):
        robustness.check_attack_names(["pgd_cw_test"])      # read at call time: gone once unregistered


def test_robust_attack_config_accepts_specs_and_rejects_bad_ones():
    c = config_lib.distill_config("pgd_at")
    c.eval.robust_attack = "pgd:steps=5,restarts=2"
    config_lib.validate(c)
    c.eval.robust_attack = "pgd:steps=5,restart=2"
    with pytest.raises(config_lib.ConfigError, match="eval.robust_attack: Attack 'pgd' has no option 'restart'"):
        config_lib.validate(c)


def _literals_with_names(names: set[str], kinds: tuple) -> list[str]:
    """'path:line' of every literal of `kinds` in the library and experiment scripts whose string
    elements (or dict keys) are two or more of `names` and nothing else (a record such as a claim
    ('trades', 'pgd_at', 'autoattack') mixes in other strings and is not a list of names)."""
    found = []
    for top in ("sa_mdrad_jax", "experiments"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in (f for f in files if f.endswith(".py")):
                path = os.path.join(dirpath, f)
                with open(path) as fh:
                    tree = ast.parse(fh.read())
                for node in ast.walk(tree):
                    if not isinstance(node, kinds):
                        continue
                    items = node.keys if isinstance(node, ast.Dict) else node.elts
                    strings = {i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)}
                    held = {s for s in strings if s.split("+")[0] in names}
                    if len(held) >= 2 and held == strings - {"natural"}:
                        found.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {sorted(held)}")
    return found


def test_no_list_of_method_or_attack_names_outside_the_registries():
    """A new method or attack is one registration: no second list of methods (a tuple, list, set or
    dict of two or more registered method names) and no copy of the attack registry (a dict keyed by
    attack names) exists anywhere else. Tuples of attack names that select an evaluation protocol
    (the grids' columns, the sanity checks' S7/S8 comparisons) are settings, not registries."""
    from sa_mdrad_jax.methods import METHODS
    assert "pgd_at" in METHODS and "pgd20" in attacks.NAMED   # the check below looks for real names
    methods = _literals_with_names(set(METHODS), (ast.Tuple, ast.List, ast.Set, ast.Dict))
    assert not methods, "lists of method names outside the registry:\n" + "\n".join(methods)
    # Not registries: AutoAttack's fixed four-attack ensemble (standard, and at a sanity-check budget)
    # and the S7 check's result record.
    protocol = ("sa_mdrad_jax/attacks/autoattack.py", "sa_mdrad_jax/evaluate/sanity.py")
    attack_maps = [f for f in _literals_with_names(set(attacks.NAMED), (ast.Dict,)) if not f.startswith(protocol)]
    assert not attack_maps, "copies of the attack registry:\n" + "\n".join(attack_maps)
    # and the registry is read at call time: an attack registered now is seen by every reader.
    from sa_mdrad_jax.evaluate import robustness
    attacks.register_attack("late_attack_test", attacks.NAMED["fgsm"])
    try:
        c = config_lib.distill_config("pgd_at")
        c.eval.robust_attack = "late_attack_test"
        config_lib.validate(c)
        robustness.check_attack_names(["clean", "late_attack_test"])
        assert attacks.resolve("late_attack_test") is attacks.NAMED["fgsm"]
    finally:
        attacks.unregister_attack("late_attack_test")
