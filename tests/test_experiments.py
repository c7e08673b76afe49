"""Experiment grids: run expansion, skip/resume decisions, evaluation reuse, tables; per-method FLOPs."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from sa_mdrad_jax import config as config_lib, flops, grid, grid_report
from sa_mdrad_jax.methods import make_method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = {"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack"), "n_points": 50, "eps": 8 / 255,
        "batch_size": 50, "seed": 0, "curve_eps": (0.0, 4 / 255, 8 / 255)}


def _tiny_grid(tmp_path) -> dict:
    def base_config(method, dataset, student):
        c = config_lib.distill_config(method) if method != "natural" else config_lib.base_config()
        c.dataset.name, c.model.name = dataset, student
        if method != "natural":
            c.teachers.t = config_lib.teacher_entry("resnet_tiny")
        return c
    return {"name": "t", "root": str(tmp_path / "runs"), "results": str(tmp_path / "results"),
            "datasets": ("digits",), "students": ("resnet_tiny",), "methods": ("natural", "pgd_at", "adaad+igdm"),
            "seeds": (0, 1), "base_config": base_config, "overrides": {"train.epochs": 2, "method.steps": 3},
            "teachers": {"digits": {"t": {"config": config_lib.base_config(), "workdir": ""}}}, "evaluation": EVAL}


def test_expand_and_run_config(tmp_path):
    g = _tiny_grid(tmp_path)
    runs = grid.expand(g)
    assert [r.name for r in runs[:3]] == ["digits/resnet_tiny/natural/seed0", "digits/resnet_tiny/pgd_at/seed0",
                                          "digits/resnet_tiny/adaad+igdm/seed0"]
    assert len({r.workdir for r in runs}) == 6
    natural, igdm = grid.run_config(g, runs[3]), grid.run_config(g, runs[-1])
    assert "method" not in natural and natural.seed == 1 and natural.train.epochs == 2  # method.* skipped
    assert igdm.method.name == "adaad" and igdm.method.igdm.enabled and igdm.method.steps == 3
    assert igdm.teachers.t.workdir == os.path.join(g["root"], "digits", "teachers", "t")
    g["overrides"] = {"train.epochz": 1}
    with pytest.raises(config_lib.ConfigError, match="epochs"):
        grid.run_config(g, runs[0])


def test_train_skips_finished_and_hands_unfinished_runs_to_the_loop(tmp_path):
    calls = []

    def fake_train(config, workdir):
        calls.append((workdir, config.train.epochs))
        os.makedirs(workdir, exist_ok=True)
        return {"test_accuracy": 0.5, "step": 10 * config.train.epochs}

    g = _tiny_grid(tmp_path)
    g["methods"] = ("pgd_at",)
    evals = []
    fake_eval = lambda workdir, **kw: evals.append(workdir) or {}  # noqa: E731
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=lambda m: None, report=False)
    assert len(calls) == 3 and len(evals) == 2          # the teacher, then two seeds
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=lambda m: None, report=False)
    assert len(calls) == 3                              # all finished with the same config: skipped
    # A changed config (more epochs) is not finished: the loop gets the workdir again (it resumes).
    g["overrides"] = {**g["overrides"], "train.epochs": 3}
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=lambda m: None, report=False, only="seed1")
    assert calls[3:] == [(os.path.join(g["root"], "digits", "resnet_tiny", "pgd_at", "seed1"), 3)]
    # Finished with other method settings (a changed default, say): refused, not resumed, untouched.
    longer = dict(g["overrides"])
    g["overrides"] = {**longer, "method.eps": 0.1}
    run1 = grid.expand(g)[1]
    marker = open(os.path.join(run1.workdir, grid.DONE_FILE)).read()
    with pytest.raises(config_lib.ConfigError, match=r"other settings \(method.eps differ"):
        grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=lambda m: None, report=False, only="seed1")
    assert len(calls) == 4 and open(os.path.join(run1.workdir, grid.DONE_FILE)).read() == marker
    assert grid.changed_settings(run1.workdir, grid.run_config(g, run1)) == ["method.eps"]
    g["overrides"] = longer
    moved = {**g, "teachers": {"digits": {"t": {"config": None, "workdir": str(tmp_path / "elsewhere")}}}}
    assert grid.changed_settings(run1.workdir, grid.run_config(moved, run1)) == []   # teacher paths: machine-local
    # A workdir with checkpoints but no done-marker (interrupted) is trained (resumed), not skipped.
    run = grid.expand(g)[0]
    os.remove(os.path.join(run.workdir, grid.DONE_FILE))
    assert grid.train_run(run.workdir, grid.run_config(g, run), fake_train, log=lambda m: None)


def test_reuse_results_keeps_committed_runs_of_the_same_settings_and_config(tmp_path):
    """A grid resumed on a machine without its workdirs: committed results stand for their runs."""
    calls = []

    def fake_train(config, workdir):
        calls.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        return {"step": 20}

    def fake_eval(workdir, *, out_dir, **kw):
        rec = _record({a: 0.5 for a in kw["attack_names"]})
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
            json.dump(rec, f)
        return rec

    g = _tiny_grid(tmp_path)
    g["methods"], g["evaluation"] = ("pgd_at",), {**EVAL, "n_points": 50}
    quiet = lambda m: None  # noqa: E731
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=quiet)
    assert len(calls) == 3                                   # the teacher and two seeds
    stems = [r.file_stem for r in grid.expand(g)]
    recorded = {}
    for stem in stems:
        with open(os.path.join(g["results"], "evaluations", stem + ".json")) as f:
            recorded[stem] = json.load(f)["run"]["config_sha"]
    assert recorded[stems[0]] != recorded[stems[1]]          # the seed is part of the config
    teacher_metrics = os.path.join(grid.teacher_workdir(g, "digits", "t"), "metrics.jsonl")
    assert not os.path.exists(os.path.join(g["results"], "teachers"))   # the fake teacher wrote no metrics
    with open(teacher_metrics, "w") as f:
        f.write('{"step": 1}\n')
    grid.write_report(g)
    with open(os.path.join(g["results"], "teachers", "digits_t.jsonl")) as f:
        assert f.read() == '{"step": 1}\n'                  # the teacher's curve goes with the results
    import shutil
    shutil.rmtree(g["root"])                                 # a new machine: the workdirs are gone
    calls.clear()
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=quiet, reuse_results=True)
    # Both kept; the teacher (a fake one: no weights to snapshot) is trained again first.
    assert calls == [grid.teacher_workdir(g, "digits", "t")]
    grid.run_grid(g, train_fn=fake_train, evaluate_fn=fake_eval, log=quiet)
    assert len(calls) == 3 and calls[1:] == [r.workdir for r in grid.expand(g)]   # without the flag: every run
    shutil.rmtree(g["root"])
    calls.clear()
    # Another config (more epochs) or other evaluation settings: the committed result does not stand.
    g2 = {**g, "overrides": {**g["overrides"], "train.epochs": 3}}
    grid.run_grid(g2, train_fn=fake_train, evaluate_fn=fake_eval, log=quiet, reuse_results=True, only="seed1")
    assert calls == [grid.teacher_workdir(g, "digits", "t"), grid.expand(g)[1].workdir]
    calls.clear()
    g3 = {**g, "evaluation": {**g["evaluation"], "n_points": 40}}
    grid.run_grid(g3, train_fn=fake_train, evaluate_fn=fake_eval, log=quiet, reuse_results=True, only="seed0",
                  report=False)
    assert calls == [grid.expand(g)[0].workdir]              # the teacher finished above; seed0 again
    # A record collected before fingerprints existed is taken on its evaluation settings alone.
    run = grid.expand(g)[1]
    assert grid.committed_result(g, run, grid.run_config(g, run)) is None   # collected from g2's 3 epochs
    path = os.path.join(g["results"], "evaluations", run.file_stem + ".json")
    with open(path) as f:
        record = json.load(f)
    del record["run"]["config_sha"]
    with open(path, "w") as f:
        json.dump(record, f)
    assert grid.committed_result(g, run, grid.run_config(g, run)) is not None



def test_committed_results_stand_over_a_rerun_and_borrowed_runs_are_never_trained(tmp_path):
    """Under reuse_results a committed result is kept even where another grid trained the same run
    again into the shared workdir; a borrowed label's runs come from their owner's results only."""
    calls = []

    def fake_train(config, workdir):
        calls.append(workdir)
        os.makedirs(workdir, exist_ok=True)
        return {"step": 20}

    def eval_with(value):
        def fake_eval(workdir, *, out_dir, **kw):
            rec = _record({a: value for a in kw["attack_names"]})
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
                json.dump(rec, f)
            return rec
        return fake_eval

    quiet = lambda m: None  # noqa: E731
    owner = _tiny_grid(tmp_path)
    owner["methods"], owner["evaluation"] = ("pgd_at",), {**EVAL, "n_points": 50}
    grid.run_grid(owner, train_fn=fake_train, evaluate_fn=eval_with(0.5), log=quiet)
    committed = {r.file_stem: open(os.path.join(owner["results"], "evaluations", r.file_stem + ".json")).read()
                 for r in grid.expand(owner)}
    # Another grid shares the runs' workdirs and re-trains one (its workdir was gone): the owner, resumed
    # with reuse_results, keeps and does not overwrite its committed result.
    import shutil
    run0 = grid.expand(owner)[0]
    shutil.rmtree(run0.workdir)
    grid.train_run(run0.workdir, grid.run_config(owner, run0), fake_train, quiet)
    grid.evaluate_run(run0.workdir, owner["evaluation"], eval_with(0.9), quiet)
    calls.clear()
    grid.run_grid(owner, train_fn=fake_train, evaluate_fn=eval_with(0.9), log=quiet, reuse_results=True)
    assert calls == []
    for stem, text in committed.items():
        assert open(os.path.join(owner["results"], "evaluations", stem + ".json")).read() == text
    # A borrowing grid: its own label trains, the borrowed one is copied from the owner's results.
    borrower = {**owner, "root": str(tmp_path / "borrower_runs"), "results": str(tmp_path / "borrower"),
                "methods": ("pgd_at", "natural"), "borrowed": {"pgd_at": owner["results"]}}
    calls.clear()
    grid.run_grid(borrower, train_fn=fake_train, evaluate_fn=eval_with(0.7), log=quiet)
    assert sorted(calls) == sorted([grid.teacher_workdir(borrower, "digits", "t")] +
                                   [r.workdir for r in grid.expand(borrower) if r.method == "natural"])
    for stem, text in committed.items():
        assert open(os.path.join(borrower["results"], "evaluations", stem + ".json")).read() == text
    # Other evaluation settings than the owner's committed ones: refused, naming the owner, nothing trained.
    calls.clear()
    other = {**borrower, "evaluation": {**borrower["evaluation"], "n_points": 40}}
    with pytest.raises(config_lib.ConfigError, match="borrowed from the grid whose results are"):
        grid.run_grid(other, train_fn=fake_train, evaluate_fn=eval_with(0.7), log=quiet)
    assert calls == []

def test_teacher_snapshot_restores_the_same_weights_and_results_follow_their_teachers(tmp_path):
    """On a new machine the teachers come back bit for bit from the results directory (a re-training
    there would differ by float rounding); a result distilled from other teacher weights is not kept."""
    from sa_mdrad_jax import checkpoints
    from sa_mdrad_jax.train import loop
    from util import tiny_config
    g = _tiny_grid(tmp_path)
    config = tiny_config(**{"train.max_steps": 2, "checkpoint.best_metric": "val_accuracy", "dataset.validation_size": 100})
    workdir = grid.teacher_workdir(g, "digits", "t")
    assert not grid.snapshot_teacher(g, "digits", "t", workdir, config)        # nothing trained yet
    loop.train(config, workdir)
    grid.mark_finished(workdir, config, {"step": 2})
    assert grid.snapshot_teacher(g, "digits", "t", workdir, config)
    fingerprint = grid.teacher_fingerprint(workdir)
    _, trained, _ = checkpoints.load_variables(workdir, best=True)
    trained_step = grid.selected_step(workdir, {"checkpoint": "best"})
    assert trained_step > 0
    import shutil
    shutil.rmtree(workdir)                                                       # the new machine
    other = tiny_config(**{"train.max_steps": 3})
    assert not grid.restore_teacher(g, "digits", "t", workdir, other, log=lambda m: None)
    assert not os.path.exists(workdir)                                           # another config: trained anew
    assert grid.restore_teacher(g, "digits", "t", workdir, config, log=lambda m: None)
    assert grid.teacher_fingerprint(workdir) == fingerprint and grid.is_finished(workdir, config)
    # The same checkpoint step as the original, selected as the best: its evaluation matches a committed one.
    assert grid.selected_step(workdir, {"checkpoint": "best"}) == trained_step
    _, restored, _ = checkpoints.load_variables(workdir, best=True)
    import jax
    assert jax.tree.all(jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), trained, restored))
    assert not grid.restore_teacher(g, "digits", "t", workdir, config, log=lambda m: None)   # already there

    # A collected result records its teachers' weights: other weights under the same config do not match.
    run = grid.Run("digits", "resnet_tiny", "pgd_at", 0, str(tmp_path / "student"))
    student = grid.run_config(g, run)
    os.makedirs(os.path.join(run.workdir, grid.EVAL_DIR))
    grid.mark_finished(run.workdir, student, {"step": 20})
    with open(os.path.join(run.workdir, grid.EVAL_DIR, "evaluation.json"), "w") as f:
        json.dump(_record({a: 0.5 for a in EVAL["attacks"]}), f)
    grid.collect([run], g["results"])
    assert grid.committed_result(g, run, student) is not None
    assert grid.committed_result(g, run, student, {workdir: "0" * 16}) is None
    # Another --root (machine-local teacher paths) with the same teacher weights: still the same run.
    moved = grid.run_config({**g, "root": str(tmp_path / "elsewhere")}, run)
    assert moved.teachers.t.workdir != student.teachers.t.workdir
    assert grid.committed_result(g, run, moved, {moved.teachers.t.workdir: fingerprint}) is not None
    # Collected from another directory, where the config's (relative) teacher paths name nothing:
    # refused, rather than recording a fingerprint without the teachers.
    shutil.rmtree(workdir)
    with pytest.raises(FileNotFoundError, match="do not exist here"):
        grid.collect([run], g["results"])


def _record(accuracy: dict, step=20, **kw) -> dict:
    return {"accuracy": accuracy, "n_points": 50, "eps": 8 / 255, "seed": 0, "step": step,
            "curve": {f"{e:.6f}": 0.5 for e in EVAL["curve_eps"]}, **kw}


def test_evaluation_is_reused_only_when_it_matches(tmp_path):
    workdir = str(tmp_path / "run")
    os.makedirs(os.path.join(workdir, grid.EVAL_DIR))
    grid.mark_finished(workdir, ml_collections.ConfigDict({"a": 1}), {"step": 20})
    calls = []

    def fake_eval(workdir, **kw):
        calls.append(kw)
        return {}

    stored = _record({a: 0.5 for a in EVAL["attacks"]})
    with open(os.path.join(workdir, grid.EVAL_DIR, "evaluation.json"), "w") as f:
        json.dump(stored, f)
    assert grid.evaluate_run(workdir, EVAL, fake_eval, log=lambda m: None) == stored and not calls
    for changed in ({"n_points": 100}, {"eps": 4 / 255}, {"attacks": ("clean", "pgd20")},
                    {"curve_eps": (0.0, 8 / 255)}, {"attack_points": {"pgd20": 10}}):
        grid.evaluate_run(workdir, {**EVAL, **changed}, fake_eval, log=lambda m: None)
    assert [c["n_points"] for c in calls] == [100, 50, 50, 50, 50]
    assert calls[-1]["attack_points"] == {"pgd20": 10} and "attack_points" not in calls[0]
    grid.mark_finished(workdir, ml_collections.ConfigDict({"a": 1}), {"step": 30})   # trained further
    grid.evaluate_run(workdir, EVAL, fake_eval, log=lambda m: None)
    assert len(calls) == 6


def test_a_second_evaluation_dir_keeps_both_evaluations(tmp_path):
    """digits_autoattack.py evaluates the digits grid's runs again: into its own directory."""
    workdir = str(tmp_path / "run")
    os.makedirs(workdir)
    grid.mark_finished(workdir, ml_collections.ConfigDict({"a": 1}), {"step": 20})
    calls = []

    def fake_eval(workdir, *, out_dir, **kw):
        calls.append(out_dir)
        rec = _record({a: 0.5 for a in kw["attack_names"]})
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
            json.dump(rec, f)
        return rec

    other = {**EVAL, "attacks": ("clean", "autoattack")}
    for _ in range(2):   # the second round reads both back: no new evaluation
        grid.evaluate_run(workdir, EVAL, fake_eval, log=lambda m: None)
        grid.evaluate_run(workdir, other, fake_eval, log=lambda m: None, eval_dir="evaluation_autoattack")
    assert calls == [os.path.join(workdir, "evaluation"), os.path.join(workdir, "evaluation_autoattack")]
    run = grid.Run("digits", "resnet_tiny", "pgd_at", 0, workdir)
    grid.collect([run], str(tmp_path / "results"), "evaluation_autoattack")
    with open(tmp_path / "results" / "evaluations" / f"{run.file_stem}.json") as f:
        assert list(json.load(f)["accuracy"]) == ["clean", "autoattack"]



def test_evaluations_of_another_split_live_in_their_own_directory():
    """A validation grid and a test grid sharing a run (the teacher candidates' winner is the
    strong-teacher grid's teacher) keep their records apart unless a grid names its directory."""
    assert grid.evaluation_dir({"evaluation": {**EVAL, "split": "test"}}) == grid.EVAL_DIR
    assert grid.evaluation_dir({"evaluation": EVAL}) == grid.EVAL_DIR
    assert grid.evaluation_dir({"evaluation": {**EVAL, "split": "validation"}}) == "evaluation_validation"
    assert grid.evaluation_dir({"evaluation": {**EVAL, "split": "validation"},
                                "evaluation_dir": "evaluation_validation_autoattack"}) == "evaluation_validation_autoattack"
    from sa_mdrad_jax import grid_presets
    assert grid.evaluation_dir(grid_presets.digits_teacher_candidates_grid()) == "evaluation_validation"
    assert grid.evaluation_dir(grid_presets.digits_strong_teacher_grid(candidate="pgd_at")) == grid.EVAL_DIR

def test_teachers_are_evaluated_on_the_checkpoint_students_load_and_reported(tmp_path, monkeypatch):
    g = _tiny_grid(tmp_path)
    workdir = grid.teacher_workdir(g, "digits", "t")
    os.makedirs(workdir)
    # The step students load: the teacher's best checkpoint (selected_step with checkpoint 'best').
    monkeypatch.setattr(grid, "selected_step", lambda wd, ev: 7 if ev.get("checkpoint") == "best" else 9)
    calls = []

    def fake_eval(workdir, *, out_dir, **kw):
        calls.append(kw)
        rec = _record({a: 0.25 for a in kw["attack_names"]}, step=kw["step"], selection=kw["selection"],
                      model={"name": "resnet_tiny", "width": 1.0})
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "evaluation.json"), "w") as f:
            json.dump(rec, f)
        return rec

    quiet = lambda m: None  # noqa: E731
    grid.evaluate_teachers(g, fake_eval, quiet)
    assert calls == []                                      # the grid does not ask for it
    g["evaluate_teachers"] = {"attacks": ("clean", "pgd20")}
    grid.evaluate_teachers(g, fake_eval, quiet)
    step = 7
    assert len(calls) == 1 and calls[0]["step"] == step and calls[0]["selection"] == "best"
    assert calls[0]["attack_names"] == ("clean", "pgd20") and calls[0]["n_points"] == EVAL["n_points"]
    grid.evaluate_teachers(g, fake_eval, quiet)
    assert len(calls) == 1                                  # evaluated once
    with open(os.path.join(workdir, grid.EVAL_DIR, "evaluation.json")) as f:
        local = json.load(f)
    local["checkpoint"] = workdir
    with open(os.path.join(workdir, grid.EVAL_DIR, "evaluation.json"), "w") as f:
        json.dump(local, f)
    grid.collect_teachers(g)
    with open(grid.teacher_evaluation_path(g, "digits", "t")) as f:
        assert "checkpoint" not in json.load(f)             # no machine-local path in the results
    table = grid_report.teacher_table(g["results"])
    assert table.splitlines()[-1] == f"| digits_t | resnet_tiny ×1 | {step} | 25.00 | 25.00 |"
    assert "| teacher | model | step | Clean | PGD-20 |" in table
    # A grid sharing the teacher with other evaluation settings (a validation-only check) does not
    # publish the evaluation it finds in the teacher's workdir.
    other = {**g, "results": str(tmp_path / "validation_only"), "evaluate_teachers": None}
    grid.collect_teachers(other)
    assert not os.path.exists(grid.teacher_evaluation_path(other, "digits", "t"))
    other["evaluate_teachers"] = {"attacks": ("clean",)}
    grid.collect_teachers(other)
    assert not os.path.exists(grid.teacher_evaluation_path(other, "digits", "t"))
    # A new machine (the evaluation gone from the workdir): the committed one of the same step is kept.
    import shutil
    shutil.rmtree(os.path.join(workdir, grid.EVAL_DIR))
    grid.evaluate_teachers(g, fake_eval, quiet, reuse_results=True)
    assert len(calls) == 1 and os.path.exists(os.path.join(workdir, grid.EVAL_DIR, "evaluation.json"))
    shutil.rmtree(os.path.join(workdir, grid.EVAL_DIR))
    g["evaluate_teachers"] = {"attacks": ("clean",)}        # other settings: evaluated again
    grid.evaluate_teachers(g, fake_eval, quiet, reuse_results=True)
    assert len(calls) == 2 and calls[1]["attack_names"] == ("clean",)
    assert grid_report.teacher_table(str(tmp_path / "nothing")) is None


def _write_results(results, accs_by_method: dict, with_metrics=True, split=None):
    os.makedirs(os.path.join(results, "evaluations"))
    os.makedirs(os.path.join(results, "metrics"))
    for method, per_seed in accs_by_method.items():
        for seed, acc in enumerate(per_seed):
            stem = f"digits_resnet_tiny_{method}_seed{seed}"
            rec = _record(acc, run={"dataset": "digits", "student": "resnet_tiny", "method": method,
                                    "seed": seed, "stem": stem})
            if split:
                rec["split"] = split
            with open(os.path.join(results, "evaluations", stem + ".json"), "w") as f:
                json.dump(rec, f)
            if with_metrics:
                lines = [{"step": 5 * e, "kind": "train", "loss": 1.0, "accuracy": 0.5, "lr": 0.1, "img_per_s": 9.0,
                          "w_adv_0": 0.1 * e, "kl_adv": 1.0 / e} for e in (1, 2)]
                lines += [{"step": 5 * e, "kind": "eval", "epoch": e, "test_accuracy": 0.4 + 0.1 * e,
                           "test_robust_accuracy": 0.1 * e} for e in (1, 2)]
                with open(os.path.join(results, "metrics", stem + ".jsonl"), "w") as f:
                    f.write("\n".join(json.dumps(x) for x in lines) + "\n")


def test_table_is_mean_and_sample_std_over_seeds_in_paper_layout(tmp_path):
    results = str(tmp_path / "results")
    sa = [{"clean": 0.90, "fgsm": 0.60, "pgd20": 0.50, "cw_inf_30": 0.45, "autoattack": 0.40},
          {"clean": 0.80, "fgsm": 0.62, "pgd20": 0.52, "cw_inf_30": 0.47, "autoattack": 0.44},
          {"clean": 0.85, "fgsm": 0.64, "pgd20": 0.48, "cw_inf_30": 0.43, "autoattack": 0.42}]
    pgd = [{"clean": 0.70, "fgsm": 0.40, "pgd20": 0.30, "cw_inf_30": 0.25, "autoattack": 0.20}]
    _write_results(results, {"sa_mdrad": sa, "pgd_at": pgd})
    text = grid_report.write_report(results, title="T", methods=["pgd_at", "sa_mdrad"])
    lines = [l for l in text.splitlines() if l.startswith("|")]
    assert lines[0] == "| method | Clean | FGSM | PGD-20 | CW∞ | AutoAttack | seeds |"
    assert lines[1] == "|---|---|---|---|---|---|---|"
    # Rows in the grid's method order; one seed shows the mean alone.
    assert lines[2] == "| pgd_at | 70.00 | 40.00 | 30.00 | 25.00 | 20.00 | 1 |"
    clean = [r["clean"] for r in sa]
    assert np.std(clean, ddof=1) == pytest.approx(0.05)
    assert lines[3] == "| sa_mdrad | 85.00 ± 5.00 | 62.00 ± 2.00 | 50.00 ± 2.00 | 45.00 ± 2.00 | 42.00 ± 2.00 | 3 |"
    with open(os.path.join(results, "summary.json")) as f:
        summary = json.load(f)["groups"][0]["methods"]["sa_mdrad"]["autoattack"]
    assert summary["mean"] == pytest.approx(0.42) and summary["std"] == pytest.approx(0.02) and summary["n"] == 3
    for png in ("eps", "training", "sa_mdrad_diagnostics"):
        assert os.path.getsize(os.path.join(results, f"digits_resnet_tiny_{png}.png")) > 1000
    # The convergence table follows, a row per method (2-epoch curves: too short to judge).
    assert "| sa_mdrad | 2 | – | –, –, – | –, –, – | – |" in text.split("Convergence")[1]


def test_claims_checklist_puts_each_grid_in_a_column(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _write_results(a, {"pgd_at": [{"autoattack": 0.50}, {"autoattack": 0.52}, {"autoattack": 0.54}],
                       "trades": [{"autoattack": 0.55}, {"autoattack": 0.58}, {"autoattack": 0.57}]}, with_metrics=False)
    _write_results(b, {"pgd_at": [{"autoattack": 0.60}], "trades": [{"autoattack": 0.50}]}, with_metrics=False)
    table = grid_report.claims_checklist([("A", grid_report.load_records(a)), ("B", grid_report.load_records(b))])
    lines = table.splitlines()
    assert lines[0] == "| claim | source | comparison | A | B |"
    row = next(l for l in lines if "trades − pgd_at, AutoAttack" in l).split(" | ")
    # A: differences +5, +6, +3 points over 3 paired seeds; B: one seed, -10 ± binomial error on 50 points.
    assert row[3].startswith("+4.67 ± 0.88 [") and row[3].endswith("3 seeds: **holds**")
    assert row[4] == "-10.00 ± 9.90 [-29.40, +9.40], 1 seed: **inconclusive** |"
    assert next(l for l in lines if "ard − pgd_at, AutoAttack" in l).endswith("| not run | not run |")
    assert len(lines) == 2 + sum(len(c) for _, _, c in grid_report.CLAIMS)


def test_claims_script_writes_the_table_and_refuses_an_empty_directory(tmp_path):
    a = str(tmp_path / "a")
    _write_results(a, {"pgd_at": [{"clean": 0.5}], "ard": [{"clean": 0.6}]}, with_metrics=False)
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "experiments", "claims.py")
    out = tmp_path / "claims.md"
    proc = subprocess.run([sys.executable, script, f"--results={a}", "--names=digits", f"--out={out}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_text().splitlines()[0] == "| claim | source | comparison | digits |"
    assert "ard − pgd_at, Clean | +10.00 ± " in out.read_text()
    os.makedirs(tmp_path / "empty")
    proc = subprocess.run([sys.executable, script, f"--results={tmp_path / 'empty'}"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "no evaluations under" in proc.stderr
    proc = subprocess.run([sys.executable, script, f"--results={a},{a}", "--names=x"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "1 names for 2 results directories" in proc.stderr


def test_diagnostics_are_read_per_epoch_without_the_standard_fields():
    run = [{"step": 10, "kind": "train", "loss": 1.0, "accuracy": 0.5, "lr": 0.1, "img_per_s": 3.0, "w_adv_0": 0.2},
           {"step": 20, "kind": "train", "loss": 1.0, "accuracy": 0.5, "lr": 0.1, "img_per_s": 3.0, "w_adv_0": 0.4},
           {"step": 20, "kind": "eval", "epoch": 1, "test_accuracy": 0.9}]
    assert grid_report.diagnostic_series(run) == {"w_adv_0": {0.5: 0.2, 1.0: 0.4}}


def _method(name, **options):
    c = config_lib.method_config(name)
    for term, value in options.items():
        c[term].enabled = value
    return make_method(c, ("robust", "natural") if name == "mtard" else None)


F, T1, T2, K = 3.0, 11.0, 17.0, 10


@pytest.mark.parametrize("name, teachers, expected", [
    ("pgd_at", (), K * 2 * F + 3 * F),                                  # 23F
    ("trades", (), K * 2 * F + F + 2 * 3 * F),                          # clean reference, two views
    ("rslad", (T1,), K * 2 * F + T1 + 2 * 3 * F),                       # 26F + T (T(x) reused)
    ("ard", (T1,), K * 2 * F + 2 * 3 * F + T1),
    ("iad", (T1,), K * 2 * F + 2 * 3 * F + 2 * T1),
    ("mtard", (T1, T2), K * 2 * F + 2 * 3 * F + T1 + T2),               # robust on x', natural on x
    # AdaAD: teacher forward + input-gradient in every attack step. performance.md's
    # 10·(2F+2T) + 3F + 2T is the paper's α = 1 step; this implementation also runs the student
    # on x for the (1−α)-weighted clean term, one more 3F.
    ("adaad", (T1,), K * (2 * F + 2 * T1) + 2 * 3 * F + 2 * T1),
    ("sa_mdrad", (T1, T2), K * 2 * F + 2 * 3 * F + 2 * (T1 + T2)),       # 10·2F + 2·3F + 2·ΣT_k
])
def test_method_step_flops(name, teachers, expected):
    assert flops.method_step_flops(_method(name), F, teachers, K) == pytest.approx(expected)


def test_method_step_flops_natural_and_igdm_views():
    assert flops.method_step_flops(None, F) == 3 * F
    plain = flops.method_step_flops(_method("adaad"), F, (T1,), K)
    # IGDM adds the student on x ± δ (2 · 3F) and the teacher on both (2T).
    assert flops.method_step_flops(_method("adaad", igdm=True), F, (T1,), K) == pytest.approx(plain + 6 * F + 2 * T1)
    single_view = make_method(config_lib.method_config("adaad"))
    import dataclasses
    paper = dataclasses.replace(single_view, student_views=("adv",))
    assert flops.method_step_flops(paper, F, (T1,), K) == pytest.approx(K * (2 * F + 2 * T1) + 3 * F + 2 * T1)


def test_pgd_unroll_gives_the_same_iterates_and_removes_the_loop():
    import jax
    import jax.numpy as jnp
    from sa_mdrad_jax.attacks.pgd import loop_unroll as unrolled_pgd, pgd_with_carry
    w = jax.random.normal(jax.random.PRNGKey(0), (12, 3))
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 12))
    loss = lambda z, c: (jnp.sum(jnp.tanh(z @ w) ** 2, -1), c)  # noqa: E731

    def attack(x):
        return pgd_with_carry(loss, x, x + 0.01, (), eps=0.1, step_size=0.03, steps=4)[0]

    with unrolled_pgd("rolled"):
        rolled = jax.make_jaxpr(attack)(x)
        rolled_out = jax.jit(attack)(x)
    with unrolled_pgd(True):
        unrolled = jax.make_jaxpr(attack)(x)
        unrolled_out = jax.jit(attack)(x)
        np.testing.assert_allclose(unrolled_out, attack(x))
    def loop_unroll(jaxpr):
        (eqn,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("scan", "while")]
        return eqn.params.get("unroll", 1)
    assert loop_unroll(rolled) in (1, False) and loop_unroll(unrolled) in (4, True)
    np.testing.assert_array_equal(unrolled_out, rolled_out)   # compiled: bit for bit
    np.testing.assert_allclose(jax.core.eval_jaxpr(unrolled.jaxpr, unrolled.consts, x)[0],
                               jax.core.eval_jaxpr(rolled.jaxpr, rolled.consts, x)[0], rtol=1e-6)


def test_pgd_unroll_default_is_full_on_cpu_for_short_loops_and_env_overrides(monkeypatch):
    import importlib

    import jax
    pgd = importlib.import_module("sa_mdrad_jax.attacks.pgd")   # the package exports the function `pgd`
    monkeypatch.delenv(pgd.UNROLL_ENV, raising=False)
    cpu = jax.default_backend() == "cpu"
    assert pgd.resolve_unroll(None, 10) is (True if cpu else 1)
    assert pgd.resolve_unroll(None, pgd.AUTO_UNROLL_MAX_STEPS + 1) == 1    # long loops (APGD, CW-30) stay rolled
    assert pgd.resolve_unroll(3, 10) == 3 and pgd.resolve_unroll(True, 50) is True
    for value, want in (("rolled", 1), ("unrolled", True), ("4", 4)):
        monkeypatch.setenv(pgd.UNROLL_ENV, value)
        assert pgd.resolve_unroll(None, 10) == want and pgd.resolve_unroll("auto", 10) is (True if cpu else 1)
    monkeypatch.setenv(pgd.UNROLL_ENV, "fast")
    with pytest.raises(ValueError, match="SA_MDRAD_PGD_UNROLL='fast'.*'auto', 'rolled', 'unrolled'"):
        pgd.resolve_unroll(None, 10)


def test_checkpoints_of_one_architecture_share_compiled_attacks():
    """The parameters are an argument of the compiled attacks, not constants: a second model of the
    same architecture reuses every program (and gets its own, different, answers)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import importlib
    from sa_mdrad_jax.evaluate import robustness

    class Linear(nn.Module):   # the zoo's interface: apply(variables, x, train=) -> (logits, features)
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(10)(x.reshape(x.shape[0], -1) - 0.5), {}

    model = Linear()
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (12, 8, 8, 3)))
    y = np.arange(12) % 10
    kw = dict(attack_names=("clean", "fgsm", "autoattack"), eps=32 / 255, batch_size=12, curve_eps=())
    modules = [robustness] + [importlib.import_module(f"sa_mdrad_jax.attacks.{m}")
                              for m in ("autoattack", "apgd", "fab", "square")]

    def cache_sizes():   # every jitted function of those modules (AutoAttack's host-driven pieces too)
        return {f"{m.__name__}.{k}": f._cache_size() for m in modules for k, f in vars(m).items()
                if hasattr(f, "_cache_size")}

    records = []
    for seed in (1, 2):
        variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3)), train=False)
        sizes = cache_sizes()
        records.append(robustness.evaluate_model(model, variables, x, y, **kw))
    # the second model compiled nothing new
    assert cache_sizes() == sizes and sum(sizes.values()) > 5
    assert records[0]["accuracy"] != records[1]["accuracy"] or records[0]["autoattack"] != records[1]["autoattack"]
    # and what it computed is its own model's: same as a closure over its parameters
    closure = jax.jit(lambda z: model.apply(variables, z, train=False)[0])
    assert records[1]["accuracy"]["clean"] == float(np.mean(np.argmax(closure(x), -1) == y))


def test_attack_points_evaluates_an_attack_on_the_first_points_only():
    """AutoAttack on 1,000 of 10,000 points: an attack in `attack_points` sees only the first n."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    from sa_mdrad_jax.config import ConfigError
    from sa_mdrad_jax.evaluate import robustness

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            return nn.Dense(10)(x.reshape(x.shape[0], -1) - 0.5), {}

    model = Linear()
    x = np.asarray(jax.random.uniform(jax.random.PRNGKey(0), (20, 4, 4, 3)))
    variables = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 4, 4, 3)))
    y = np.array(jnp.argmax(model.apply(variables, jnp.asarray(x))[0], -1))   # clean accuracy 1
    y[5:] = (y[5:] + 1) % 10                                                       # 0 beyond the first 5
    kw = dict(eps=8 / 255, batch_size=20, curve_eps=())
    some = robustness.evaluate_model(model, variables, x, y, attack_names=("clean", "fgsm"),
                                     attack_points={"fgsm": 5}, **kw)
    alone = robustness.evaluate_model(model, variables, x[:5], y[:5], attack_names=("fgsm",), **kw)
    assert some["accuracy"]["clean"] == 0.25 and some["n_points"] == 20 and some["attack_points"] == {"fgsm": 5}
    assert some["accuracy"]["fgsm"] == alone["accuracy"]["fgsm"] > 0.25
    with pytest.raises(ConfigError, match=r"attack_points names \['pgd20'\], which are not evaluated"):
        robustness.evaluate_model(model, variables, x, y, attack_names=("clean",), attack_points={"pgd20": 5}, **kw)


def test_runners_share_a_grid_through_lock_files(tmp_path):
    workdir = str(tmp_path / "run")
    assert grid.acquire(workdir)
    assert grid.acquire(workdir)          # re-entrant for its owner
    with open(os.path.join(workdir, grid.LOCK_FILE), "w") as f:
        f.write("1")                      # held by another live process (init)
    assert not grid.acquire(workdir)
    with open(os.path.join(workdir, grid.LOCK_FILE), "w") as f:
        f.write("999999999")              # its runner is gone: taken over
    assert grid.acquire(workdir)
    grid.release(workdir)
    assert not os.path.exists(os.path.join(workdir, grid.LOCK_FILE))


def _seed_record(method, seed, **acc):
    return {"run": {"dataset": "digits", "student": "s", "method": method, "seed": seed}, "accuracy": acc}


def test_comparison_table_pairs_the_same_runs_of_two_results_directories(tmp_path):
    for d, records in {"a": [_seed_record("pgd_at", 0, clean=0.9, pgd20=0.5), _seed_record("rslad", 0, clean=0.8, pgd20=0.6),
                             _seed_record("trades", 0, clean=0.7, pgd20=0.7)],
                       "b": [_seed_record("rslad", 0, clean=0.8, pgd20=0.55), _seed_record("pgd_at", 0, clean=0.95, pgd20=0.5),
                             _seed_record("pgd_at", 1, clean=0.9, pgd20=0.5)]}.items():
        os.makedirs(tmp_path / d / "evaluations")
        for i, r in enumerate(records):
            (tmp_path / d / "evaluations" / f"{i}.json").write_text(json.dumps({**r, "step": 10 + i}))
    table = grid_report.comparison_table(str(tmp_path / "a"), str(tmp_path / "b"), ("x", "y"), ["pgd_at", "rslad"])
    rows = table.splitlines()
    assert rows[0] == "| method (seed) | selected step, x / y | clean | pgd20 |"
    assert rows[2:] == ["| pgd_at (0) | 10 / 11 | 90.00 / 95.00 (+5.00) | 50.00 / 50.00 (+0.00) |",
                        "| rslad (0) | 11 / 10 | 80.00 / 80.00 (+0.00) | 60.00 / 55.00 (-5.00) |"]
    only = grid_report.comparison_table(str(tmp_path / "a"), str(tmp_path / "b"), ("x", "y"), only=("rslad",))
    assert only.splitlines()[2:] == rows[3:]     # a comparison limited to some methods


def test_paired_differences_and_claim_verdicts():
    from sa_mdrad_jax import grid_report
    # rslad beats pgd_at by 5 points on every seed (noise ±1); ard loses by 5; adaad ties up to noise.
    noise = [0.01, -0.01, 0.0, 0.005, -0.005]
    recs = []
    for s, e in enumerate(noise):
        base = 0.4 + 0.02 * s   # seeds differ a lot; pairing removes it
        recs += [_seed_record("pgd_at", s, autoattack=base), _seed_record("rslad", s, autoattack=base + 0.05 + e),
                 _seed_record("ard", s, autoattack=base - 0.05 + e), _seed_record("adaad", s, autoattack=base + e)]
    p = grid_report.paired(recs, "rslad", "pgd_at", "autoattack")
    assert p["n"] == 5 and p["diff"] == pytest.approx(0.05) and p["se"] == pytest.approx(np.std(noise, ddof=1) / 5 ** 0.5)
    assert grid_report.verdict(p) == "holds"
    assert grid_report.verdict(grid_report.paired(recs, "ard", "pgd_at", "autoattack")) == "does not hold"
    assert grid_report.verdict(grid_report.paired(recs, "adaad", "pgd_at", "autoattack")) == "inconclusive"
    assert grid_report.verdict(grid_report.paired(recs, "sa_mdrad", "pgd_at", "autoattack")) == "not run"
    # One seed (the Fashion-MNIST grid): the interval is the test-sampling error of the two
    # accuracies, on the points the attack saw (AutoAttack on 1,000 of 10,000).
    one_recs = [{**r, "n_points": 10000, "attack_points": {"autoattack": 1000}} for r in recs[:4]]
    one = grid_report.paired(one_recs, "rslad", "pgd_at", "autoattack")
    assert one["n"] == 1 and one["diff"] == pytest.approx(0.06)
    assert one["se"] == pytest.approx(np.sqrt(0.46 * 0.54 / 1000 + 0.40 * 0.60 / 1000))
    assert grid_report.verdict(one) == "holds for this run (1 seed; test-sampling error only)"
    tie = grid_report.paired(one_recs, "adaad", "pgd_at", "autoattack")
    assert grid_report.verdict(tie) == "inconclusive for this run (1 seed; test-sampling error only)"
    perfect = [_seed_record(m, 0, autoattack=1.0) | {"n_points": 10} for m in ("rslad", "pgd_at")]
    assert grid_report.verdict(grid_report.paired(perfect, "rslad", "pgd_at", "autoattack")) == "inconclusive (1 seed)"
    table = grid_report.claims_table(recs)
    assert "| rslad − ard, AutoAttack | +10.00 ± " in table and "| holds |" in table
    assert "rslad − pgd_at, AutoAttack | +5.00 ± 0.35" in table


def test_best_checkpoint_evaluation_reads_the_best_validation_step(tmp_path):
    """evaluation checkpoint='best': the step with the best validation metric is evaluated, and a stored
    evaluation of another step or of the final checkpoint is not reused."""
    import jax.numpy as jnp
    from sa_mdrad_jax import checkpoints
    workdir = str(tmp_path / "run")
    ckpt = checkpoints.Checkpointer(workdir, keep=1, best_metric="val_robust_accuracy", async_save=False)
    for step, acc in {10: 0.2, 20: 0.5, 30: 0.3}.items():
        ckpt.save(step, {"w": jnp.zeros(2)}, {"step": step}, metrics={"val_robust_accuracy": acc})
    ckpt.close()
    grid.mark_finished(workdir, ml_collections.ConfigDict({"a": 1}), {"step": 30})
    calls = []

    def fake_eval(workdir, **kw):
        calls.append(kw)
        return _record({a: 0.5 for a in EVAL["attacks"]}, step=kw.get("step", 30), selection=kw.get("selection", "final"))

    best = {**EVAL, "checkpoint": "best"}
    grid.evaluate_run(workdir, best, fake_eval, log=lambda m: None)
    assert calls[-1]["step"] == 20 and calls[-1]["selection"] == "best"
    os.makedirs(os.path.join(workdir, grid.EVAL_DIR))
    with open(os.path.join(workdir, grid.EVAL_DIR, "evaluation.json"), "w") as f:
        json.dump(_record({a: 0.5 for a in EVAL["attacks"]}, step=20, selection="best"), f)
    grid.evaluate_run(workdir, best, fake_eval, log=lambda m: None)
    assert len(calls) == 1                                   # reused: same step, same selection
    grid.evaluate_run(workdir, EVAL, fake_eval, log=lambda m: None)
    assert len(calls) == 2 and "step" not in calls[-1]       # the final checkpoint is another evaluation


def test_sa_mdrad_sweep_varies_one_option_at_a_time_and_shares_the_default_runs():
    from sa_mdrad_jax import grid_presets
    sweep = grid.load_grid("experiments/grids/sa_mdrad_sweep.py")
    converged = grid.load_grid("experiments/grids/digits_converged.py")
    default = grid_presets.SWEEP_BASE
    runs = {r.method: r for r in grid.expand(sweep) if r.seed == 0}
    base = grid._config_json(grid.run_config(sweep, runs["sa_mdrad"]))
    # PGD-AT: the converged grid's config, in its own directories (the converged grid's first PGD-AT
    # seeds survive only as committed test results; a second run must not land in its workdirs).
    pgd_at = [r for r in grid.expand(converged) if r.method == "pgd_at" and r.seed == 0][0]
    assert runs.pop("pgd_at").workdir == pgd_at.workdir.replace("/pgd_at/", "/pgd_at_sweep/")
    assert grid._config_json(grid.run_config(sweep, grid.expand(sweep)[-1])) == grid._config_json(
        grid.run_config(converged, [r for r in grid.expand(converged) if r.method == "pgd_at" and r.seed == 2][0]))
    for label, run in runs.items():
        changed = grid_presets.sweep_overrides(label)
        config = grid.run_config(sweep, run)
        config_lib.validate(config)
        diff = {k for k, v in grid._config_json(config)["method"].items() if v != base["method"][k]}
        assert diff == set(changed) and all(changed[k] != default[k] for k in changed if k != "lambda_nat"), label
    assert len(runs) == 1 + sum(len(v) - 1 for v in grid_presets.SA_MDRAD_SWEEP.values())
    # The converged grid's SA-MDRAD is the sweep's run of the chosen option (the defaults moved to it).
    same = [r for r in grid.expand(converged) if r.method == "sa_mdrad" and r.seed == 0][0]
    chosen = runs[grid_presets.chosen_defaults()["label"]]
    assert same.workdir == chosen.workdir and grid._config_json(grid.run_config(converged, same)) == \
        grid._config_json(grid.run_config(sweep, chosen))
    assert sweep["evaluation"]["split"] == "validation" and sweep["evaluation_dir"] != grid.EVAL_DIR
    # The teachers are evaluated on test by the converged grid, never by the validation sweep.
    assert grid.teacher_evaluation(sweep) is None
    assert grid.teacher_evaluation(converged) == {**converged["evaluation"], "checkpoint": "best"}
    # Same teachers on any machine: the sweep restores the converged grid's snapshots, not its own.
    assert grid.teacher_snapshot_path(sweep, "digits", "robust") == grid.teacher_snapshot_path(converged, "digits",
                                                                                                "robust")
    with pytest.raises(config_lib.ConfigError, match="takes"):
        grid_presets.sweep_overrides("sa_mdrad@tau=3")


def test_sweep_is_pinned_to_the_defaults_it_varied_from(monkeypatch):
    """The committed sweep must reproduce after its result changes the SA-MDRAD defaults."""
    from sa_mdrad_jax import grid_presets
    before = grid_presets.sa_mdrad_sweep_grid()
    runs = {r.method: r for r in grid.expand(before) if r.seed == 0}
    configs = {m: grid._config_json(grid.run_config(before, r))["method"] for m, r in runs.items() if m != "pgd_at"}
    assert {k: configs["sa_mdrad"][k] for k in grid_presets.SWEEP_BASE} == pytest.approx(grid_presets.SWEEP_BASE)
    original = config_lib.method_config

    def new_defaults(name):
        c = original(name)
        if name == "sa_mdrad":
            c.update(tau=2.0, gamma=1.0, rectify="soft")
        return c

    monkeypatch.setattr(config_lib, "method_config", new_defaults)
    converged = grid_presets.digits_converged_grid()
    sa = next(r for r in grid.expand(converged) if r.method == "sa_mdrad")
    assert grid.run_config(converged, sa).method.tau == 2.0          # the grids do see the new defaults
    # New defaults' runs go to a new directory (workdir_names); the sweep keeps the original ones.
    monkeypatch.setattr(grid_presets, "digits_converged_grid",
                        lambda *a, **k: {**converged, "workdir_names": {"sa_mdrad": "sa_mdrad_v2"}})
    moved = next(r for r in grid.expand(grid_presets.digits_converged_grid()) if r.method == "sa_mdrad")
    parent, _, seed_dir = sa.workdir.rsplit("/", 2)
    assert moved.workdir == f"{parent}/sa_mdrad_v2/{seed_dir}" and moved.file_stem == sa.file_stem
    assert {r.workdir for r in grid.expand(grid_presets.sa_mdrad_sweep_grid())} == \
        {r.workdir for r in grid.expand(before)}
    after = grid_presets.sa_mdrad_sweep_grid()
    assert after["methods"] == before["methods"] and after["sweep"] == before["sweep"]
    for m, r in runs.items():
        if m != "pgd_at":
            assert grid._config_json(grid.run_config(after, r))["method"] == configs[m], m


def test_ablation_grid_removes_one_component_each_from_the_converged_sa_mdrad_run():
    from sa_mdrad_jax.methods.sa_mdrad_recipes import ABLATIONS
    g = grid.load_grid("experiments/grids/sa_mdrad_ablations.py")
    converged = grid.load_grid("experiments/grids/digits_converged.py")
    same = next(r for r in grid.expand(converged) if r.method == "sa_mdrad" and r.seed == 0)
    runs = {r.method: r for r in grid.expand(g) if r.seed == 0}
    assert runs["sa_mdrad"].workdir == same.workdir and g["borrowed"] == {"sa_mdrad": converged["results"]}
    base = grid._config_json(grid.run_config(converged, same))
    assert grid._config_json(grid.run_config(g, runs["sa_mdrad"])) == base
    assert set(runs) == {"sa_mdrad"} | {f"sa_mdrad~{n}" for n in ABLATIONS}
    changed = {}
    for label, run in runs.items():
        c = grid._config_json(grid.run_config(g, run))
        changed[label] = {k: v for k, v in c["method"].items() if v != base["method"][k]}
        assert {k: v for k, v in c.items() if k not in ("method", "teachers")} == \
            {k: v for k, v in base.items() if k not in ("method", "teachers")}, label
    assert changed["sa_mdrad~no_rectification"] == {"rectify": "none"}
    assert changed["sa_mdrad~logits_only"] == {"beta": 0.0}
    assert changed["sa_mdrad~clean_teacher_inputs"] == {"teacher_input_adv": "clean"}
    one = grid.run_config(g, runs["sa_mdrad~single_teacher"])
    assert list(one.teachers) == ["wrn16"] and changed["sa_mdrad~single_teacher"] == {}
    assert g["evaluation"] == converged["evaluation"] and g["reference"] == "sa_mdrad"
    assert grid.teacher_evaluation(g) is None and g["results"] != converged["results"]


def test_report_pairs_with_the_grids_reference(tmp_path):
    results = str(tmp_path / "results")
    _write_results(results, {"sa_mdrad": [{"clean": 0.9}, {"clean": 0.8}],
                             "sa_mdrad~logits_only": [{"clean": 0.85}, {"clean": 0.70}]}, with_metrics=False)
    text = grid_report.write_report(results, reference="sa_mdrad")
    assert "Paired difference to sa_mdrad" in text
    assert "| sa_mdrad~logits_only | -7.50 ± 2.50 | 2 |" in text


def test_option_sweep_report_rows_paired_differences_throughput_and_plot(tmp_path):
    results = str(tmp_path / "results")
    val = lambda clean, pgd: {"clean": clean, "pgd20": pgd}  # noqa: E731
    _write_results(results, {"sa_mdrad": [val(0.90, 0.50), val(0.92, 0.54)],
                             "sa_mdrad@tau=2": [val(0.91, 0.55), val(0.93, 0.57)],
                             "sa_mdrad@gamma=1": [val(0.80, 0.40)],
                             "pgd_at": [val(0.95, 0.60), val(0.95, 0.62)]}, split="validation")
    # Throughput: the first train record (compilation) is left out of the median.
    stem = os.path.join(results, "metrics", "digits_resnet_tiny_sa_mdrad@tau=2_seed0.jsonl")
    with open(stem, "w") as f:
        for rate in (1.0, 100.0, 120.0, 110.0):
            f.write(json.dumps({"step": 1, "kind": "train", "img_per_s": rate}) + "\n")
    sweep = {"base": "sa_mdrad", "defaults": {"tau": 4.0, "gamma": 0.0, "beta": 1.0}}
    text = grid_report.write_report(results, title="S", sweep=sweep)
    rows = [l for l in text.split("One option at a time")[1].splitlines() if l.startswith("| ")]
    assert rows[0].startswith("| option | value | Clean | PGD-20 | PGD-20 − default")
    body = [r.split(" | ") for r in rows[1:]]
    assert [(r[0].strip("| "), r[1]) for r in body] == [("tau", "4 (default)"), ("tau", "2"),
                                                        ("gamma", "0 (default)"), ("gamma", "1"),
                                                        ("beta", "1 (default)")]
    assert body[1][2] == "92.00 ± 1.41" and body[1][3] == "56.00 ± 1.41"
    assert body[1][4] == "+4.00 ± 1.00"        # paired over seeds 0, 1: +5 and +3 points
    assert body[1][5] == "105" and body[1][6] == "2 |"   # median of 100, 120, 110 (seed 0) and 9 (seed 1)
    assert body[0][4] == "–" and body[3][5:] == ["9", "1 |"]
    assert os.path.exists(os.path.join(results, "option_sweep.png"))
    assert "The papers' claims" not in text and "Convergence" not in text and "Paired difference to PGD-AT" in text
    # A validation grid that is not a sweep (factorial, finalists, teacher candidates) has no claims
    # table either: claims are read on the test split; the same runs as test results have one.
    assert "The papers' claims" not in grid_report.write_report(results, title="S")
    test_results = str(tmp_path / "test_results")
    _write_results(test_results, {"sa_mdrad": [val(0.90, 0.50)], "pgd_at": [val(0.95, 0.60)]}, split="test")
    assert "The papers' claims" in grid_report.write_report(test_results, title="S")


def _write_sweep(results, means: dict, split="validation"):
    """Validation records of labels {label: (clean, pgd20[, autoattack]) per seed}."""
    os.makedirs(os.path.join(results, "evaluations"))
    for label, seeds in means.items():
        for seed, values in enumerate(seeds):
            stem = f"digits_resnet_tiny_{label}_seed{seed}"
            rec = {"accuracy": dict(zip(("clean", "pgd20", "autoattack"), values)), "split": split, "n_points": 287,
                   "run": {"dataset": "digits", "student": "resnet_tiny", "method": label, "seed": seed, "stem": stem}}
            with open(os.path.join(results, "evaluations", stem + ".json"), "w") as f:
                json.dump(rec, f)


def test_factorial_and_finalists_are_chosen_from_the_validation_sweep_only(tmp_path):
    from sa_mdrad_jax import grid_presets
    sweep = str(tmp_path / "sweep")
    _write_sweep(sweep, {"sa_mdrad": [(0.9, 0.50), (0.9, 0.52)],
                         "sa_mdrad@tau=2": [(0.9, 0.60), (0.9, 0.62)],      # tau: +10
                         "sa_mdrad@tau=8": [(0.9, 0.55), (0.9, 0.55)],
                         "sa_mdrad@gamma=1": [(0.9, 0.58), (0.9, 0.58)],    # gamma: +7
                         "sa_mdrad@lambda_adv=1": [(0.9, 0.53), (0.9, 0.53)],   # lambda: +2
                         "sa_mdrad@beta=0": [(0.9, 0.40), (0.9, 0.40)],     # beta: only worse
                         "pgd_at": [(0.95, 0.70), (0.95, 0.70)]})           # not an SA-MDRAD option
    assert [r[0] for r in grid_presets.sweep_ranking(sweep)][:3] == ["sa_mdrad@tau=2", "sa_mdrad@gamma=1",
                                                                       "sa_mdrad@tau=8"]
    assert grid_presets.strongest_options(sweep, k=2) == {"tau": 2.0, "gamma": 1.0}
    assert grid_presets.strongest_options(sweep, k=5) == {"tau": 2.0, "gamma": 1.0, "lambda_adv": 1.0}
    factorial = grid_presets.sa_mdrad_factorial_grid(k=2, sweep_results=sweep)
    assert set(factorial["methods"]) == {"sa_mdrad", "sa_mdrad@tau=2", "sa_mdrad@gamma=1", "sa_mdrad@gamma=1,tau=2",
                                         "pgd_at"}
    both = [r for r in grid.expand(factorial) if r.method == "sa_mdrad@gamma=1,tau=2"][0]
    c = grid.run_config(factorial, both)
    assert (c.method.tau, c.method.gamma) == (2.0, 1.0)
    # The single-option labels are the sweep's runs: same workdir and config.
    full_sweep = grid_presets.sa_mdrad_sweep_grid()
    one = [r for r in grid.expand(factorial) if r.method == "sa_mdrad@tau=2" and r.seed == 1][0]
    same = [r for r in grid.expand(full_sweep) if r.method == "sa_mdrad@tau=2" and r.seed == 1][0]
    assert one.workdir == same.workdir
    assert grid._config_json(grid.run_config(factorial, one)) == grid._config_json(grid.run_config(full_sweep, same))
    # Finalists: the best over sweep and factorial (when it ran), plus the defaults and PGD-AT.
    fact = str(tmp_path / "factorial")
    _write_sweep(fact, {"sa_mdrad@gamma=1,tau=2": [(0.9, 0.65), (0.9, 0.65)]})
    finalists = grid_presets.sa_mdrad_finalists_grid(k=2, sweep_results=sweep, factorial_results=fact)
    assert finalists["methods"] == ("sa_mdrad", "sa_mdrad@gamma=1,tau=2", "sa_mdrad@tau=2", "pgd_at")
    assert finalists["evaluation"]["split"] == "validation" and "autoattack" in finalists["evaluation"]["attacks"]
    assert finalists["evaluation_dir"] not in (grid.EVAL_DIR, full_sweep["evaluation_dir"])
    # Selection refuses anything but validation results, and says what to run when there are none.
    test_split = str(tmp_path / "test_split")
    _write_sweep(test_split, {"sa_mdrad": [(0.9, 0.5)]}, split="test")
    with pytest.raises(config_lib.ConfigError, match="validation"):
        grid_presets.sweep_ranking(test_split)
    with pytest.raises(config_lib.ConfigError, match="sa_mdrad_sweep.py"):
        grid_presets.sweep_ranking(str(tmp_path / "none"))



def test_defaults_are_the_best_finalist_by_validation_autoattack_that_keeps_clean_accuracy_and_components(tmp_path):
    from sa_mdrad_jax import grid_presets
    fin = str(tmp_path / "finalists")
    _write_sweep(fin, {"sa_mdrad": [(0.95, 0.50, 0.40), (0.95, 0.50, 0.40)],
                       "sa_mdrad@tau=2": [(0.90, 0.70, 0.70), (0.92, 0.70, 0.70)],       # best, but clean < PGD-AT
                       "sa_mdrad@rectify=none": [(0.96, 0.66, 0.62), (0.96, 0.60, 0.60)],  # 2nd: rectification off
                       "sa_mdrad@gamma=1": [(0.97, 0.55, 0.5), (0.95, 0.61, 0.5)],
                       "sa_mdrad@gamma=0.5": [(0.97, 0.57, 0.5), (0.95, 0.58, 0.5)],   # same AA: PGD-20 decides
                       "pgd_at": [(0.96, 0.60, 0.55), (0.94, 0.62, 0.55)]})
    chosen = grid_presets.chosen_defaults(fin)
    assert chosen["label"] == "sa_mdrad@gamma=1" and chosen["better_variant"] == "sa_mdrad@rectify=none"
    assert chosen["options"] == {**grid_presets.SWEEP_BASE, "gamma": 1.0}
    assert chosen["bar"] == pytest.approx(0.95) and chosen["table"]["sa_mdrad@tau=2"]["autoattack"] == pytest.approx(0.70)
    assert chosen["table"]["sa_mdrad@gamma=1"]["seeds"] == [0, 1]
    # Clean accuracy is compared over the seeds both have: PGD-AT's seed 1 alone sets the bar for a
    # one-seed finalist.
    one = str(tmp_path / "one_seed")
    _write_sweep(one, {"sa_mdrad@tau=2": [(0.93, 0.7, 0.7)], "sa_mdrad": [(0.93, 0.5, 0.4)],
                       "pgd_at": [(0.92, 0.6, 0.5), (0.99, 0.6, 0.5)]})
    assert grid_presets.chosen_defaults(one)["label"] == "sa_mdrad@tau=2"
    # No eligible finalist, or PGD-AT missing: an error that says why, never a silent pick.
    low = str(tmp_path / "low")
    _write_sweep(low, {"sa_mdrad": [(0.80, 0.5, 0.4)], "pgd_at": [(0.95, 0.6, 0.5)]})
    with pytest.raises(config_lib.ConfigError, match="clean"):
        grid_presets.chosen_defaults(low)
    no_ref = str(tmp_path / "no_ref")
    _write_sweep(no_ref, {"sa_mdrad": [(0.80, 0.5, 0.4)]})
    with pytest.raises(config_lib.ConfigError, match="PGD-AT"):
        grid_presets.chosen_defaults(no_ref)
    test_split = str(tmp_path / "test_split")
    _write_sweep(test_split, {"sa_mdrad": [(0.9, 0.5, 0.4)], "pgd_at": [(0.9, 0.5, 0.4)]}, split="test")
    with pytest.raises(config_lib.ConfigError, match="validation"):
        grid_presets.chosen_defaults(test_split)



def test_chosen_configuration_is_tested_in_the_sweep_runs_beside_the_borrowed_converged_methods(tmp_path):
    from sa_mdrad_jax import grid_presets
    fin = str(tmp_path / "finalists")
    _write_sweep(fin, {"sa_mdrad": [(0.95, 0.50, 0.40)], "sa_mdrad@tau=2": [(0.96, 0.70, 0.70)],
                       "pgd_at": [(0.95, 0.60, 0.55)]})
    chosen = grid_presets.sa_mdrad_chosen_grid(finalists_results=fin)
    converged, sweep = grid_presets.digits_converged_grid(), grid_presets.sa_mdrad_sweep_grid()
    others = tuple(m for m in converged["methods"] if m != "sa_mdrad")
    first_guess = grid_presets.first_guess_label()
    assert first_guess == "sa_mdrad@gamma=0"             # the library default differs from it in gamma only
    assert chosen["methods"] == ("sa_mdrad@tau=2", first_guess) + others
    assert chosen["borrowed"] == {m: converged["results"] for m in others} and chosen["claims"] is False
    # The first guess is the sweep's base: the same runs (directory and config) under a label of its own.
    for mine, theirs in zip(sorted((r for r in grid.expand(chosen) if r.method == first_guess), key=lambda r: r.seed),
                            sorted((r for r in grid.expand(sweep) if r.method == "sa_mdrad"), key=lambda r: r.seed)):
        assert mine.workdir == theirs.workdir
        assert grid._config_json(grid.run_config(chosen, mine)) == grid._config_json(grid.run_config(sweep, theirs))
    assert chosen["evaluation"] == converged["evaluation"] and grid.evaluation_dir(chosen) == grid.EVAL_DIR
    assert chosen["seeds"] == (0, 1, 2, 3, 4) and chosen["results"] not in (converged["results"], sweep["results"])
    # Seeds 0-2 are the sweep's runs: the same directory and config, evaluated again on another split.
    mine = {r.seed: r for r in grid.expand(chosen) if r.method == "sa_mdrad@tau=2"}
    theirs = {r.seed: r for r in grid.expand(sweep) if r.method == "sa_mdrad@tau=2"}
    assert sorted(theirs) == [0, 1, 2] and sorted(mine) == [0, 1, 2, 3, 4]
    for seed in theirs:
        assert mine[seed].workdir == theirs[seed].workdir
        assert grid._config_json(grid.run_config(chosen, mine[seed])) == grid._config_json(grid.run_config(sweep, theirs[seed]))
    assert grid.run_config(chosen, mine[3]).method.tau == 2.0
    assert grid.evaluation_dir(sweep) != grid.evaluation_dir(chosen)

def test_sa_mdrad_defaults_are_the_committed_validation_choice_in_every_config():
    """The library's SA-MDRAD defaults are what `chosen_defaults` picks from the committed finalists
    (validation split), and every SA-MDRAD config — the CIFAR/Tiny-ImageNet recipes, the digits and
    quickstart student, the converged grid — carries them; each ablation differs in its own options only."""
    from sa_mdrad_jax import grid_presets, quickstart
    from sa_mdrad_jax.config import method_config
    from sa_mdrad_jax.methods.sa_mdrad_recipes import ABLATIONS, ablation_config, sa_mdrad_config
    chosen = grid_presets.chosen_defaults()["options"]
    assert chosen["gamma"] == 1.0 and chosen != grid_presets.SWEEP_BASE    # the committed choice moved a default
    pick = lambda c: {k: c[k] for k in chosen}   # noqa: E731
    assert pick(method_config("sa_mdrad")) == pytest.approx(chosen)
    qs = quickstart.get_config()
    configs = {"quickstart student": quickstart.student_config(qs, "sa_mdrad", {n: "t" for n in qs.teachers}),
               "configs/sa_mdrad_digits.py": config_lib.load_config_file("configs/sa_mdrad_digits.py")}
    for arg in ("cifar10,resnet18", "cifar100,mobilenetv2", "tiny_imagenet,resnet18"):
        configs[f"configs/sa_mdrad.py:{arg}"] = sa_mdrad_config(arg)
    converged = grid_presets.digits_converged_grid()
    run = next(r for r in grid.expand(converged) if r.method == "sa_mdrad")
    configs["digits_converged grid"] = grid.run_config(converged, run)
    for name, c in configs.items():
        assert pick(c.method) == pytest.approx(chosen), name
    for name in ABLATIONS:
        changed = {k for k, v in pick(ablation_config(name).method).items() if v != pytest.approx(chosen[k])}
        assert changed <= {"rectify", "weighting", "beta", "kl_scale", "teacher_input_adv"}, (name, changed)


def test_converged_sa_mdrad_runs_are_the_chosen_configurations_runs():
    """After the switch the converged grid's 'sa_mdrad' is the validation choice's runs: seeds 0-2 the
    sweep's (same directory, same config), 3-4 the chosen grid's; the sweep keeps the first guess."""
    from sa_mdrad_jax import grid_presets
    converged, sweep = grid_presets.digits_converged_grid(), grid_presets.sa_mdrad_sweep_grid()
    chosen = grid_presets.sa_mdrad_chosen_grid()
    label = grid_presets.chosen_defaults()["label"]
    ours = {r.seed: r for r in grid.expand(converged) if r.method == "sa_mdrad"}
    for other in (sweep, chosen):
        for r in grid.expand(other):
            if r.method == label:
                assert ours[r.seed].workdir == r.workdir, r.name
                assert grid._config_json(grid.run_config(converged, ours[r.seed])) == \
                    grid._config_json(grid.run_config(other, r)), r.name
    base = next(r for r in grid.expand(sweep) if r.method == "sa_mdrad" and r.seed == 0)
    assert base.workdir != ours[0].workdir and grid.run_config(sweep, base).method.gamma == 0.0


def test_strong_teacher_is_chosen_on_validation_and_replaces_only_the_robust_teacher(tmp_path):
    from sa_mdrad_jax import grid_presets
    candidates = grid_presets.digits_teacher_candidates_grid()
    # The candidates: the robust teacher's architecture and recipe family, trained alone, longer,
    # scored on validation only.
    robust = grid_presets.digits_converged_grid()["teachers"]["digits"]["robust"]["config"]
    configs = {r.method: grid.run_config(candidates, r) for r in grid.expand(candidates)}
    assert set(configs) == {"pgd_at", "trades"} and not candidates["teachers"]["digits"]
    for c in configs.values():
        assert c.model.to_dict() == robust.model.to_dict() and c.train.epochs == 60 and not c.teachers
        assert c.method.eps == robust.method.eps and c.checkpoint.best_metric == "val_robust_accuracy"
    assert candidates["evaluation"]["split"] == "validation"
    # The winner: highest validation PGD-20; only validation results are read.
    results = str(tmp_path / "candidates")
    _write_sweep(results, {"pgd_at": [(0.98, 0.90)], "trades": [(0.97, 0.93)]})
    assert grid_presets.strongest_teacher(results) == "trades"
    _write_sweep(str(tmp_path / "test_split"), {"trades": [(0.9, 0.5)]}, split="test")
    with pytest.raises(config_lib.ConfigError, match="validation"):
        grid_presets.strongest_teacher(str(tmp_path / "test_split"))
    with pytest.raises(config_lib.ConfigError, match="digits_teacher_candidates.py"):
        grid_presets.strongest_teacher(str(tmp_path / "none"))
    # The distillation grid: the winner's run (its workdir and exact config) is the robust teacher,
    # every other setting is the converged grid's, and PGD-AT is the converged grid's own runs.
    strong, converged = grid_presets.digits_strong_teacher_grid(candidate="trades"), grid_presets.digits_converged_grid()
    winner = next(r for r in grid.expand(candidates) if r.method == "trades")
    assert strong["teachers"]["digits"]["robust"]["workdir"] == winner.workdir
    assert grid._config_json(strong["teachers"]["digits"]["robust"]["config"]) == grid._config_json(configs["trades"])
    assert set(strong["teachers"]["digits"]) == {"robust", "resnet18"}    # MTARD's natural teacher stays
    same = {(r.method, r.seed): r for r in grid.expand(converged)}
    for run in grid.expand(strong):
        theirs = same[(run.method, run.seed)]
        ours_cfg, their_cfg = grid.run_config(strong, run), grid.run_config(converged, theirs)
        if run.method == "pgd_at":      # borrowed: the converged grid's committed test results
            assert strong["borrowed"] == {"pgd_at": converged["results"]}
            assert grid._config_json(ours_cfg) == grid._config_json(their_cfg)
            continue
        assert run.workdir != theirs.workdir
        assert ours_cfg.teachers.robust.workdir == winner.workdir
        ours_cfg.teachers.robust.workdir = their_cfg.teachers.robust.workdir
        assert grid._config_json(ours_cfg) == grid._config_json(their_cfg)
    assert strong["reference"] == "pgd_at" and strong["seeds"] == (0, 1, 2)

def test_fashion_mnist_grid_runs_each_method_in_its_setting_with_stride_two_models():
    g = grid.load_grid("experiments/grids/fashion_mnist.py")
    assert g["evaluation"]["n_points"] == 10000 and g["evaluation"]["attack_points"] == {"autoattack": 1000}
    teacher_eval = grid.teacher_evaluation(g)       # all 10,000 test images, no AutoAttack
    assert teacher_eval["n_points"] == 10000 and "autoattack" not in teacher_eval["attacks"]
    assert teacher_eval["attack_points"] == {} and teacher_eval["checkpoint"] == "best"
    teachers = g["teachers"]["fashion_mnist"]
    assert {n: t["config"].model.to_dict().get("stem_stride", 1) for n, t in teachers.items()} == \
        {"resnet": 2, "vgg": 1, "robust": 2}
    distils_from, configs, dirs = {}, {}, {}
    for run in grid.expand(g):
        c = grid.run_config(g, run)
        config_lib.validate(c)
        assert c.model.stem_stride == 2 and c.dataset.train_size == 20000 and c.dataset.validation_size == 1000
        assert abs(c.method.eps - 0.1) < 1e-9 if "method" in c else run.method == "natural"
        distils_from[run.method] = sorted(c.get("teachers", {}).keys())
        configs[run.method], dirs[run.method] = grid._config_json(c), run.workdir.split("/")[-2]
    assert distils_from == {"natural": [], "pgd_at": [], "trades": [], "rslad": ["robust"], "adaad": ["robust"],
                            "sa_mdrad": ["resnet", "vgg"], "sa_mdrad@gamma=0": ["resnet", "vgg"]}
    # SA-MDRAD at its defaults (new directory) beside its first guess (the runs made before they changed):
    # the two configs differ in the moved default only.
    assert dirs["sa_mdrad"] == "sa_mdrad@gamma=1" and dirs["sa_mdrad@gamma=0"] == "sa_mdrad"
    assert {k: v for k, v in configs["sa_mdrad"]["method"].items() if configs["sa_mdrad@gamma=0"]["method"][k] != v} \
        == {"gamma": 1.0}
    assert {k: v for k, v in configs["sa_mdrad"].items() if k != "method"} == \
        {k: v for k, v in configs["sa_mdrad@gamma=0"].items() if k != "method"}


def test_fashion_mnist_seeds_grid_extends_the_one_seed_runs_of_three_students():
    """Seed 0 of the seeds grid is the one-seed grid's run (same config, same directory); the
    teachers are that grid's (its snapshots), and only the ones SA-MDRAD needs."""
    from sa_mdrad_jax import grid_presets
    one = grid.load_grid("experiments/grids/fashion_mnist.py")
    seeds = grid.load_grid("experiments/grids/fashion_mnist_seeds.py")
    assert seeds["seeds"] == (0, 1, 2) and set(seeds["methods"]) == {"pgd_at", "trades", "sa_mdrad"}
    assert seeds["root"] == one["root"] and seeds["results"] != one["results"]
    assert grid.teacher_snapshot_dir(seeds) == grid.teacher_snapshot_dir(one)
    assert set(seeds["teachers"]["fashion_mnist"]) == {"resnet", "vgg"}      # no robust teacher to train
    assert grid.teacher_evaluation(seeds) is None
    runs_one = {(r.method, r.seed): r for r in grid.expand(one)}
    for run in grid.expand(seeds):
        c = grid.run_config(seeds, run)
        if run.seed == 0:
            twin = runs_one[(run.method, 0)]
            assert run.workdir == twin.workdir
            assert grid._config_json(c) == grid._config_json(grid.run_config(one, twin))
    sa = next(r for r in grid.expand(seeds) if r.method == "sa_mdrad")
    assert sa.workdir.split("/")[-2] == grid_presets.defaults_label()
    with pytest.raises(ValueError, match="not in its set"):
        grid_presets.fashion_mnist_grid(methods=("sa_mdrad", "no_such_method"))


def test_late_gain_compares_the_last_window_with_the_one_before():
    from sa_mdrad_jax import grid_report
    curve = [0.5] * 40 + [0.8] * 10 + [0.83] * 10          # 60 epochs: window 10
    assert abs(grid_report.late_gain(curve) - 0.03) < 1e-12
    assert grid_report.late_gain(curve, window=5) == 0.0            # epochs 51-55 vs 56-60
    assert abs(grid_report.late_gain(curve, window=20) - (0.815 - 0.5)) < 1e-12
    assert abs(grid_report.late_gain([0.1, 0.2, 0.3, 0.4, 0.5, 0.9]) - (0.6 - 0.2)) < 1e-12   # window 3
    assert grid_report.late_gain([0.1] * 5) is None                 # shorter than two windows


def test_plateau_table_flags_a_seed_still_rising_and_names_the_selected_epoch():
    from sa_mdrad_jax import grid_report

    def run(robust, best_epoch, clean=0.9):
        evals = [{"step": 10 * e, "kind": "eval", "epoch": float(e), "val_accuracy": clean,
                  "val_robust_accuracy": v} for e, v in enumerate(robust, start=1)]
        return {"step": 10 * best_epoch}, evals + [{"step": 3, "kind": "train", "loss": 1.0}]

    flat, rising = [0.5] * 30 + [0.8] * 30, [0.5] * 40 + [0.8] * 10 + [0.85] * 10
    runs = {"pgd_at": [run(flat, 55), run(flat, 60)], "rslad": [run(flat, 52), run(rising, 58)],
            "ard": [run([0.5] * 5, 5)]}
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in grid_report.plateau_table(runs).splitlines()[2:]}
    assert rows["pgd_at"][1:] == ["60", "0.00 ± 0.00", "+0.00, +0.00", "55, 60", "yes |"]
    assert rows["rslad"][3:] == ["+0.00, +5.00", "52, 58", "no |"]
    assert rows["ard"][3:] == ["–", "5", "– |"]                     # 5 epochs: too short to judge
    assert "yes" in grid_report.plateau_table({"rslad": runs["rslad"]}, min_gain=0.06)
    test_split = {"m": [({"step": 20}, [{"step": 20, "kind": "eval", "epoch": 2.0, "test_accuracy": 0.5,
                                          "test_robust_accuracy": 0.2}])]}
    assert grid_report.plateau_table(test_split).splitlines()[2] == "| m | 1 | – | – | 2 | – |"


def test_still_rising_picks_the_methods_whose_last_epochs_gained(tmp_path):
    from sa_mdrad_jax import grid_presets
    (tmp_path / "metrics").mkdir()
    curves = {"pgd_at": [0.5] * 20 + [0.80] * 10 + [0.805] * 10,       # flat: +0.5 point
              "rslad": [0.5] * 20 + [0.78] * 10 + [0.82] * 10,         # +4 points
              "adaad+igdm": [0.5] * 20 + [0.70] * 10 + [0.72] * 10,    # +2 points
              "ard": [0.7] * 15}                                       # too short to judge
    for label, curve in curves.items():
        lines = [json.dumps({"step": i, "kind": "eval", "val_robust_accuracy": v}) for i, v in enumerate(curve)]
        lines.append(json.dumps({"step": 99, "kind": "train", "loss": 1.0}))
        (tmp_path / "metrics" / f"digits_resnet_tiny_{label}_seed0.jsonl").write_text("\n".join(lines))
    (tmp_path / "metrics" / "digits_resnet_tiny_trades_seed1.jsonl").write_text(
        "\n".join(json.dumps({"step": i, "kind": "eval", "val_robust_accuracy": 0.1 * (i > 30)}) for i in range(40)))
    got = grid_presets.still_rising(str(tmp_path / "metrics"), "digits_resnet_tiny_")
    assert got == ("rslad", "adaad+igdm")   # registry order; seed 1 not read
    assert grid_presets.still_rising(str(tmp_path / "metrics"), "digits_resnet_tiny_", min_gain=0.03) == ("rslad",)
