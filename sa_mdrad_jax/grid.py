"""Experiment grids: methods × students × datasets × seeds, each run in its own workdir.

A grid file is a Python module with `get_grid()` returning a dict (see experiments/grids/):

  name, root, results          the grid's name, where run workdirs go, where tables/plots go
  datasets, students, seeds    the axes
  methods                      labels: 'natural' (no method block), a registered method name, or
                               'name+term' to switch a composable term on (e.g. 'adaad+igdm')
  base_config(method, dataset, student) -> ConfigDict
                               the full training config of one run before the seed is set (a
                               callable, or a dict method -> 'configs/x.py:{dataset},{student}')
  overrides                    dotted keys set on every student run ({'train.epochs': 4})
  teachers                     {dataset: {name: {'config': ConfigDict | None, 'workdir': str}}}:
                               prerequisites trained once (seed of their config) before the
                               students, in order; 'workdir' '' = `<root>/<dataset>/teachers/<name>`.
                               A student config's `teachers.<name>.workdir` is filled from here.
  evaluation                   {'attacks', 'n_points', 'eps', 'batch_size', 'seed', 'curve_eps'} and optionally
                               'checkpoint': 'final' (default) or 'best' (the run's best checkpoint by its
                               validation metric, `checkpoint.best_metric`), and 'split': 'test' (default)
                               or 'validation' (the runs' own validation split: for choices, e.g. a sweep),
                               and 'attack_points' {attack: n}: those attacks on the first n points only
                               (e.g. {'autoattack': 1000} of n_points 10000)
  label_overrides              (optional) {method label: {dotted key: value}} for one label only (e.g.
                               'adaad+igdm' follows the IGDM scripts where they differ from AdaAD's)
  evaluation_dir               (optional) the runs' subdirectory for this evaluation ('evaluation' for the
                               test split, 'evaluation_<split>' for another)
  sweep                        (optional) {'base': label, 'defaults': {option: value}}: the labels are
                               'base@option=value', one option changed each; the report adds a table and
                               a plot per option (grid_report.option_sweep_table)
  teacher_snapshots            (optional) the directory of the teachers' weight snapshots (default
                               `<results>/teachers`): a grid sharing another grid's teachers names its
  evaluate_teachers            (optional) {evaluation key: value} overriding `evaluation` for the teachers
                               (e.g. {'attacks': ('clean', 'pgd20')}; {} = the students' evaluation): each
                               teacher's checkpoint that students load is evaluated after the students,
                               collected to `<results>/teachers/<dataset>_<name>_evaluation.json` and
                               tabulated with them (what the students distil from)
  reference                    (optional) the label every other is paired with in the report ('pgd_at')
  borrowed                     (optional) {label: results directory of the grid that owns its runs}: those
                               runs are never trained or evaluated here; their committed evaluations and
                               curves (same evaluation settings, config and teachers' weights) are copied
                               from that directory (e.g. the PGD-AT runs another test-split grid pairs with)
  workdir_names                (optional) {label: directory name} for labels whose runs live elsewhere
                               than `<root>/<dataset>/<student>/<label>` (e.g. a method whose defaults
                               changed: its new runs get a new directory, the finished ones stay)
  compare_with                 (optional) [{'results': dir, 'title': str, 'labels': (theirs, ours)}, optionally
                               'methods': (...)]: tables.md also compares these runs (of those methods) with
                               the same runs of that results directory
  claims                       (optional, default True) False leaves the papers' claims out of the report
                               (a test-split grid whose labels are not the methods the claims name)

`run_grid` trains every run (skipping finished ones, resuming unfinished ones — the loop resumes
from the workdir's checkpoints), evaluates each finished run once (`<workdir>/evaluation/`,
skipped when its evaluation.json matches the grid's evaluation settings and the run's final step),
then copies the evaluation JSONs and metrics into `results` and writes the tables and plots
(sa_mdrad_jax.grid_report).

Resuming on another machine. Each trained teacher's weights (the checkpoint its students load) are
also written to `<results>/teachers/<dataset>_<name>.msgpack` with its config's fingerprint, and each
collected evaluation records a fingerprint of the run's config and of its teachers' weights. With
`reuse_results`, a machine without the workdirs restores the teachers from those snapshots (the
same weights, not a re-training that float rounding on another CPU would change) and keeps every
run whose committed evaluation matches the grid's evaluation settings and that fingerprint.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import time
from typing import Callable

import ml_collections
import numpy as np

from sa_mdrad_jax import config as config_lib, paths, workdir_lock

DONE_FILE = "grid_done.json"   # written after a run's training returned: the config it finished with
EVAL_DIR = "evaluation"


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run of the grid (a student, or a teacher prerequisite when `seed` is None)."""
    dataset: str
    student: str
    method: str          # the label: 'natural', 'rslad', 'adaad+igdm', ...
    seed: int | None
    workdir: str

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.student}/{self.method}/seed{self.seed}"

    @property
    def file_stem(self) -> str:
        return f"{self.dataset}_{self.student}_{self.method}_seed{self.seed}"


def load_grid(path: str) -> dict:
    """Calls `get_grid()` of the grid file at `path`; fills the optional fields' defaults."""
    spec = importlib.util.spec_from_file_location("_sa_mdrad_grid", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    grid = dict(module.get_grid())
    grid.setdefault("overrides", {})
    grid.setdefault("teachers", {})
    grid.setdefault("evaluation", {})
    grid["evaluation"] = {"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack"), "n_points": 1000,
                          "eps": 8 / 255, "batch_size": 200, "seed": 0,
                          "curve_eps": tuple(e / 255 for e in (0, 2, 4, 8, 16)), **grid["evaluation"]}
    missing = [k for k in ("name", "root", "results", "datasets", "students", "methods", "seeds", "base_config")
               if k not in grid]
    if missing:
        raise config_lib.ConfigError(f"Grid file {path} lacks {', '.join(missing)} (see sa_mdrad_jax/grid.py).")
    # Checked before the first run trains, not when the first evaluation reaches them.
    config_lib.check_attack_names(tuple(grid["evaluation"]["attacks"]), f"Grid file {path}: evaluation.attacks")
    config_lib.check_number(grid["evaluation"]["n_points"], f"Grid file {path}: evaluation.n_points", integer=True,
                            accepted="a positive number of test points")
    if grid["evaluation"].get("attack_points"):
        from sa_mdrad_jax.evaluate.robustness import check_attack_points
        check_attack_points(grid["evaluation"]["attack_points"], tuple(grid["evaluation"]["attacks"]),
                            f"Grid file {path}: evaluation.attack_points")
    return grid


def split_label(label: str) -> tuple[str, tuple[str, ...]]:
    """'adaad+igdm' -> ('adaad', ('igdm',))."""
    name, *terms = label.split("+")
    return name, tuple(terms)


def expand(grid: dict) -> list[Run]:
    """The student runs in the order they are trained: seed-major (every method's first seed
    before any second seed, so an interrupted grid still has a complete table), then dataset,
    student, method."""
    dirs = grid.get("workdir_names") or {}
    return [Run(d, s, m, int(seed), paths.join(grid["root"], d, s, dirs.get(m, m), f"seed{seed}"))
            for seed in grid["seeds"] for d in grid["datasets"] for s in grid["students"] for m in grid["methods"]]


def teacher_workdir(grid: dict, dataset: str, name: str) -> str:
    spec = grid["teachers"].get(dataset, {}).get(name, {})
    return spec.get("workdir") or paths.join(grid["root"], dataset, "teachers", name)


def set_dotted(config: ml_collections.ConfigDict, dotted: str, value) -> None:
    """`config.a.b = value` for 'a.b', checking the key exists (a typo names the valid keys)."""
    config_lib.check_key(config, dotted)
    *parents, leaf = dotted.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value


def fill_teacher_workdirs(grid: dict, dataset: str, config: ml_collections.ConfigDict) -> None:
    """Points every `teachers.<name>.workdir` of `config` at the grid's teacher of that name."""
    for name in config.get("teachers", {}):
        if name in grid["teachers"].get(dataset, {}):
            config.teachers[name].workdir = teacher_workdir(grid, dataset, name)


def _base(grid: dict, method: str, dataset: str, student: str) -> ml_collections.ConfigDict:
    base = grid["base_config"]
    if isinstance(base, dict):
        base = base[method]
    if isinstance(base, str):
        return config_lib.load_config_file(base.format(dataset=dataset, student=student, method=method))
    return base(method, dataset, student)


def run_config(grid: dict, run: Run) -> ml_collections.ConfigDict:
    """The full training config of a student run: base config, terms, overrides, seed, teachers."""
    name, terms = split_label(run.method)
    c = _base(grid, name, run.dataset, run.student)
    for term in terms:
        if "method" not in c or term not in c.method:
            raise config_lib.ConfigError(f"Method label {run.method!r}: {name!r} has no composable term {term!r}.")
        c.method[term].enabled = True
    for key, value in grid["overrides"].items():
        if key.startswith("method.") and "method" not in c:
            continue   # method options do not apply to natural training
        set_dotted(c, key, value)
    for key, value in grid.get("label_overrides", {}).get(run.method, {}).items():
        set_dotted(c, key, value)
    c.seed = run.seed
    fill_teacher_workdirs(grid, run.dataset, c)
    return c


def _config_json(config: ml_collections.ConfigDict) -> dict:
    """The config as plain JSON values (tuples become lists), for comparing with a stored one."""
    return json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str))


def config_fingerprint(config_json: dict, teachers: dict | None = None) -> str:
    """A short hash of what a result was trained with: the run's config as JSON values
    (`_config_json`) and, for a distillation run, its teachers' weight fingerprints {name: hash}.
    The teachers' workdir paths are left out (they depend on the grid's root, i.e. on the machine;
    the weights stand for the teachers), so a grid resumed under another --root keeps its runs."""
    portable = json.loads(json.dumps(config_json))
    for entry in (portable.get("teachers") or {}).values():
        if isinstance(entry, dict):
            entry.pop("workdir", None)
    what = {"config": portable, "teachers": teachers} if teachers else portable
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]


def _tree_hash(tree) -> str:
    h = hashlib.sha256()
    for key in sorted(tree):
        value = tree[key]
        h.update(key.encode())
        if isinstance(value, dict):
            h.update(_tree_hash(value).encode())
        else:
            a = np.asarray(value)
            h.update(f"{a.dtype}{a.shape}".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def teacher_fingerprint(workdir: str) -> str | None:
    """A hash of the weights a student loads from the teacher in `workdir` (None: no checkpoint there)."""
    from sa_mdrad_jax import checkpoints
    if not checkpoints.has_checkpoint(workdir):
        return None
    _, variables, _ = checkpoints.load_variables(workdir, best=True)
    return _tree_hash(variables)[:16]


def teachers_fingerprints(config_json: dict, cache: dict | None = None) -> dict:
    """{teacher name: weight fingerprint} of the teachers a run's config names (those with a checkpoint)."""
    cache = {} if cache is None else cache
    out = {}
    for name, entry in sorted((config_json.get("teachers") or {}).items()):
        workdir = entry.get("workdir") if isinstance(entry, dict) else None
        if workdir:
            if workdir not in cache:
                cache[workdir] = teacher_fingerprint(workdir)
            if cache[workdir] is not None:
                out[name] = cache[workdir]
    return out


def is_finished(workdir: str, config: ml_collections.ConfigDict) -> bool:
    """Whether `workdir` finished training with exactly `config` (its done-marker matches)."""
    path = paths.join(workdir, DONE_FILE)
    if not paths.exists(path):
        return False
    done = json.loads(paths.read_text(path))
    return done.get("config") == _config_json(config)


def mark_finished(workdir: str, config: ml_collections.ConfigDict, result: dict) -> None:
    paths.write_text(paths.join(workdir, DONE_FILE),
                     json.dumps({"config": _config_json(config), "final": result}, indent=2, default=float))


def final_step(workdir: str) -> int | None:
    path = paths.join(workdir, DONE_FILE)
    if not paths.exists(path):
        return None
    return json.loads(paths.read_text(path))["final"].get("step")


def changed_settings(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
    """The dotted keys in which `config` differs from the one `workdir` finished training with
    (empty when it has not finished), leaving out those a run may change and still continue
    (`config.RESUMABLE_CHANGES`: more epochs, logging, ...) and the teachers' machine-local paths."""
    path = paths.join(workdir, DONE_FILE)
    if not paths.exists(path):
        return []
    return config_lib.changed_keys(json.loads(paths.read_text(path))["config"], config)


def train_run(workdir: str, config: ml_collections.ConfigDict, train_fn: Callable | None = None,
              log: Callable = print) -> bool:
    """Trains one run unless it already finished with this config; returns whether it trained.

    An unfinished workdir (no marker, or a marker of a config that differs only in
    `config.RESUMABLE_CHANGES`, e.g. more epochs now) is handed to the loop, which resumes from its latest
    checkpoint. A workdir that finished with other method, model, data or optimiser settings is
    refused (ConfigError, nothing touched): resuming it would report its old weights as the new run.
    """
    if is_finished(workdir, config):
        log(f"skip (finished): {workdir}")
        return False
    changed = changed_settings(workdir, config)
    if changed:
        shown = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise config_lib.ConfigError(
            f"{workdir} finished training with other settings ({shown} differ from this run's config); "
            "continuing it would keep the old weights under the new settings. Move or delete that workdir, "
            "or run the grid under another --root. Nothing was changed on disk.")
    if train_fn is None:
        from sa_mdrad_jax.train.loop import train as train_fn
    log(f"train: {workdir}")
    t0 = time.perf_counter()
    result = train_fn(config, workdir)
    mark_finished(workdir, config, {**result, "train_seconds": time.perf_counter() - t0})
    return True


def selected_step(workdir: str, evaluation: dict) -> int | None:
    """The checkpoint step an evaluation reads: the final one, or the best by the run's validation metric."""
    if evaluation.get("checkpoint", "final") == "final":
        return final_step(workdir)
    from sa_mdrad_jax import checkpoints
    ckpt = checkpoints.Checkpointer(workdir, read_only=True, async_save=False)
    try:
        step = ckpt.best_step()
    finally:
        ckpt.close()
    if step is None:
        raise config_lib.ConfigError(f"evaluation checkpoint='best' but {workdir} has no checkpoint with a best metric "
                                     "(its config needs checkpoint.best_metric, e.g. 'val_robust_accuracy').")
    return step


def evaluation_matches(record: dict, evaluation: dict, step: int | None) -> bool:
    """Whether an evaluation.json record was made with these settings on this checkpoint step."""
    if step is not None and record.get("step") != step:
        return False
    if record.get("selection", "final") != evaluation.get("checkpoint", "final"):
        return False
    if record.get("split", "test") != evaluation.get("split", "test"):
        return False
    want_curve = sorted(f"{e:.6f}" for e in evaluation["curve_eps"])
    return (list(record.get("accuracy", {})) == list(evaluation["attacks"])
            and record.get("n_points") == evaluation["n_points"]
            and record.get("attack_points", {}) == dict(evaluation.get("attack_points") or {})
            and abs(record.get("eps", -1) - evaluation["eps"]) < 1e-9
            and record.get("seed") == evaluation["seed"]
            and sorted(record.get("curve", {})) == want_curve)


def evaluate_run(workdir: str, evaluation: dict, evaluate_fn: Callable | None = None,
                 log: Callable = print, eval_dir: str = EVAL_DIR) -> dict:
    """The run's evaluation record: read from `<workdir>/<eval_dir>/evaluation.json` if it matches,
    else computed (and written there)."""
    path = paths.join(workdir, eval_dir, "evaluation.json")
    step = selected_step(workdir, evaluation)
    if paths.exists(path):
        record = json.loads(paths.read_text(path))
        if evaluation_matches(record, evaluation, step):
            log(f"skip (evaluated): {workdir}")
            return record
    if evaluate_fn is None:
        from sa_mdrad_jax.evaluate.robustness import evaluate_checkpoint as evaluate_fn
    log(f"evaluate: {workdir}")
    kwargs = {"step": step, "selection": "best"} if evaluation.get("checkpoint", "final") == "best" else {}
    if evaluation.get("split", "test") != "test":
        kwargs["split"] = evaluation["split"]
    if evaluation.get("attack_points"):
        kwargs["attack_points"] = dict(evaluation["attack_points"])
    return evaluate_fn(workdir, attack_names=tuple(evaluation["attacks"]), n_points=evaluation["n_points"],
                       eps=evaluation["eps"], batch_size=evaluation["batch_size"], seed=evaluation["seed"],
                       curve_eps=tuple(evaluation["curve_eps"]), out_dir=paths.join(workdir, eval_dir), **kwargs)


def evaluation_dir(grid: dict) -> str:
    """Where in each run's workdir this grid's evaluation lives: `evaluation_dir`, else 'evaluation'
    for the test split and 'evaluation_<split>' for another, so that two grids over the same runs
    with different evaluations keep both. A validation grid that shares a run with a test grid
    (the teacher candidates' winner is the strong-teacher grid's teacher) never finds the other's
    record in its place."""
    split = grid.get("evaluation", {}).get("split", "test")
    return grid.get("evaluation_dir", EVAL_DIR if split == "test" else f"{EVAL_DIR}_{split}")


def teacher_runs(grid: dict) -> list[tuple[str, str, str, ml_collections.ConfigDict]]:
    """(dataset, name, workdir, config) of every teacher to train (those with a config), in order."""
    out = []
    for dataset in grid["datasets"]:
        for name, spec in grid["teachers"].get(dataset, {}).items():
            if spec.get("config") is None:
                continue   # provided (e.g. imported from PyTorch): must already be there
            c = ml_collections.ConfigDict(spec["config"].to_dict())
            fill_teacher_workdirs(grid, dataset, c)   # e.g. a robust teacher trained with teachers listed
            out.append((dataset, name, teacher_workdir(grid, dataset, name), c))
    return out


def collect(runs: list[Run], results_dir: str, eval_dir: str = EVAL_DIR) -> None:
    """Copies each run's `<eval_dir>/evaluation.json` and metrics.jsonl into `results_dir` (flat, by run)."""
    for sub in ("evaluations", "metrics"):
        paths.makedirs(paths.join(results_dir, sub))
    cache = {}   # teacher workdir -> weight fingerprint
    for run in runs:
        ev = paths.join(run.workdir, eval_dir, "evaluation.json")
        if paths.exists(ev):
            record = json.loads(paths.read_text(ev))
            # The run's coordinates travel with the record, so the report needs nothing else.
            record["run"] = {"dataset": run.dataset, "student": run.student, "method": run.method,
                             "seed": run.seed, "stem": run.file_stem}
            done = paths.join(run.workdir, DONE_FILE)
            if paths.exists(done):   # a later session reuses this result only for the same config and teachers
                config_json = json.loads(paths.read_text(done))["config"]
                teachers = teachers_fingerprints(config_json, cache)
                missing = [entry["workdir"] for entry in (config_json.get("teachers") or {}).values()
                           if entry.get("workdir") and not paths.exists(entry["workdir"])]
                if missing:
                    raise FileNotFoundError(
                        f"Collecting {run.name}: the teacher workdirs its config names do not exist here: {missing}; "
                        "collect from the directory the grid ran in (relative teacher paths resolve against it).")
                record["run"]["config_sha"] = config_fingerprint(config_json, teachers)
            record.pop("checkpoint", None)   # an absolute path on the machine that ran it
            paths.write_text(paths.join(results_dir, "evaluations", run.file_stem + ".json"),
                             json.dumps(record, indent=2, default=float))
        metrics = paths.join(run.workdir, "metrics.jsonl")
        if paths.exists(ev) and paths.exists(metrics):   # finished, evaluated runs only
            paths.copy(metrics, paths.join(results_dir, "metrics", run.file_stem + ".jsonl"))


def committed_result(grid: dict, run: Run, config: ml_collections.ConfigDict,
                     teacher_cache: dict | None = None) -> dict | None:
    """The run's evaluation record in the grid's results directory if it can stand for the run:
    made with the grid's evaluation settings and, where it records one, the fingerprint of the
    run's config and teachers' weights (records collected before fingerprints existed are taken on
    their settings alone)."""
    path = paths.join(grid["results"], "evaluations", run.file_stem + ".json")
    if not paths.exists(path):
        return None
    record = json.loads(paths.read_text(path))
    if not evaluation_matches(record, grid["evaluation"], step=None):
        return None
    recorded = record.get("run", {}).get("config_sha")
    config_json = _config_json(config)
    if recorded is not None and recorded != config_fingerprint(config_json,
                                                               teachers_fingerprints(config_json, teacher_cache)):
        return None
    return record


def teacher_snapshot_dir(grid: dict) -> str:
    """Where the grid's teacher snapshots live: `teacher_snapshots`, default `<results>/teachers`."""
    return grid.get("teacher_snapshots") or paths.join(grid["results"], "teachers")


def teacher_snapshot_path(grid: dict, dataset: str, name: str) -> str:
    return paths.join(teacher_snapshot_dir(grid), f"{dataset}_{name}.msgpack")


def snapshot_teacher(grid: dict, dataset: str, name: str, workdir: str, config: ml_collections.ConfigDict) -> bool:
    """Writes the weights the students load from this teacher (its best checkpoint) to the results
    directory, with its config's fingerprint; False if the workdir holds no checkpoint."""
    from flax import serialization
    from sa_mdrad_jax import checkpoints
    if not checkpoints.has_checkpoint(workdir):
        return False
    _, variables, meta = checkpoints.load_variables(workdir, best=True)
    payload = {"config_sha": config_fingerprint(_config_json(config)), "meta_json": json.dumps(meta, default=float),
               "variables": {k: {"tree": v} for k, v in variables.items()}}
    paths.makedirs(teacher_snapshot_dir(grid))
    paths.write_bytes(teacher_snapshot_path(grid, dataset, name), serialization.msgpack_serialize(payload))
    return True


def restore_teacher(grid: dict, dataset: str, name: str, workdir: str, config: ml_collections.ConfigDict,
                    log: Callable = print) -> bool:
    """Writes the teacher's snapshot from the results directory into its (checkpoint-less) workdir,
    marked finished with `config`, when the snapshot was taken of a teacher trained with `config`."""
    from flax import serialization
    from sa_mdrad_jax import checkpoints
    path = teacher_snapshot_path(grid, dataset, name)
    if not paths.exists(path) or teacher_fingerprint(workdir) is not None:
        return False
    payload = serialization.msgpack_restore(paths.read_bytes(path))
    if payload["config_sha"] != config_fingerprint(_config_json(config)):
        log(f"teacher snapshot {path} is of another config: training the teacher")
        return False
    meta = json.loads(payload["meta_json"])
    variables = {k: v["tree"] for k, v in payload["variables"].items()}
    # At the step it was trained to, with its validation metrics: the restored workdir selects the
    # same checkpoint step as the original (an evaluation of it matches the committed one).
    checkpoints.save_variables(workdir, meta["model"], variables, image_shape=tuple(meta["image_shape"]),
                               meta={k: v for k, v in meta.items() if k not in ("model", "image_shape", "step")},
                               step=int(meta.get("step") or 0))
    mark_finished(workdir, config, {"step": meta.get("step"), "restored_from": path})
    log(f"teacher restored from {path}: {workdir}")
    return True


def teacher_evaluation(grid: dict) -> dict | None:
    """The evaluation settings of the grid's teachers (`evaluate_teachers` over `evaluation`, the
    checkpoint students load: 'best'), or None when the grid does not evaluate them."""
    if grid.get("evaluate_teachers") is None:
        return None
    return {**grid["evaluation"], **dict(grid["evaluate_teachers"]), "checkpoint": "best"}


def teacher_evaluation_path(grid: dict, dataset: str, name: str) -> str:
    return paths.join(grid["results"], "teachers", f"{dataset}_{name}_evaluation.json")


def evaluate_teachers(grid: dict, evaluate_fn: Callable | None = None, log: Callable = print,
                      reuse_results: bool = False) -> None:
    """Evaluates each trained teacher (`teacher_evaluation`) under its workdir's lock; with
    `reuse_results` a committed evaluation of the same checkpoint step and settings is copied in
    instead (the teacher restored from its snapshot carries the same weights)."""
    evaluation = teacher_evaluation(grid)
    if evaluation is None:
        return
    for dataset, name, workdir, _ in teacher_runs(grid):
        if not acquire(workdir):
            log(f"busy (another runner holds {workdir}): left to it")
            continue
        try:
            committed = teacher_evaluation_path(grid, dataset, name)
            target = paths.join(workdir, evaluation_dir(grid), "evaluation.json")
            if reuse_results and paths.exists(committed) and not paths.exists(target) and evaluation_matches(
                    json.loads(paths.read_text(committed)), evaluation, selected_step(workdir, evaluation)):
                paths.makedirs(paths.join(workdir, evaluation_dir(grid)))
                paths.copy(committed, target)
                log(f"kept (its result is in {grid['results']}): teacher {dataset}/{name}")
            evaluate_run(workdir, evaluation, evaluate_fn, log, evaluation_dir(grid))
        finally:
            release(workdir)


def collect_teachers(grid: dict) -> None:
    """Copies each trained teacher's metrics.jsonl into `<results>/teachers/<dataset>_<name>.jsonl`
    (its curves stay with the results, and a teacher re-trained on another machine can be compared),
    and its evaluation (`evaluate_teachers`) to `teacher_evaluation_path`."""
    for dataset in grid["datasets"]:
        for name in grid["teachers"].get(dataset, {}):
            workdir = teacher_workdir(grid, dataset, name)
            metrics = paths.join(workdir, "metrics.jsonl")
            if paths.exists(metrics):
                paths.makedirs(paths.join(grid["results"], "teachers"))
                paths.copy(metrics, paths.join(grid["results"], "teachers", f"{dataset}_{name}.jsonl"))
            record = paths.join(workdir, evaluation_dir(grid), "evaluation.json")
            evaluation = teacher_evaluation(grid)
            # Only an evaluation with the grid's teacher settings (a validation-only grid sharing the
            # teachers of a test-split grid must not publish their test numbers).
            if evaluation is not None and paths.exists(record) and evaluation_matches(
                    json.loads(paths.read_text(record)), evaluation, step=None):
                paths.makedirs(paths.join(grid["results"], "teachers"))
                published = json.loads(paths.read_text(record))
                published.pop("checkpoint", None)   # an absolute path on the machine that ran it
                paths.write_text(teacher_evaluation_path(grid, dataset, name),
                                 json.dumps(published, indent=2, default=float))


LOCK_FILE = workdir_lock.LOCK_FILE


def acquire(workdir: str) -> bool:
    """Claims a run for this process (several runners then share a grid's runs); False if another
    live runner holds it. The workdir lock of `sa_mdrad_jax.workdir_lock` (re-entrant, so the
    training loop, which locks its workdir too, runs under it; a dead holder's lock is taken over)."""
    return workdir_lock.try_acquire(workdir) is None


def release(workdir: str) -> None:
    workdir_lock.release(workdir)


def borrowed_result(grid: dict, run: Run, config: ml_collections.ConfigDict, cache: dict | None = None) -> dict:
    """The owner grid's committed evaluation of a borrowed run (`grid['borrowed']`), or a ConfigError
    that says which grid to run first."""
    owner = grid["borrowed"][run.method]
    record = committed_result({**grid, "results": owner}, run, config, cache)
    if record is None:
        raise config_lib.ConfigError(
            f"{run.name} is borrowed from the grid whose results are {owner}, which has no committed evaluation of "
            "it with this grid's evaluation settings, config and teachers: run that grid (with --reuse_results) "
            "first; borrowed runs are never trained here.")
    return record


def copy_borrowed(grid: dict, runs: list[Run]) -> None:
    """Copies the borrowed runs' committed evaluations and curves from their owner's results."""
    for run in runs:
        owner = grid.get("borrowed", {}).get(run.method)
        if owner is None:
            continue
        for sub, ext in (("evaluations", ".json"), ("metrics", ".jsonl")):
            source = paths.join(owner, sub, run.file_stem + ext)
            if paths.exists(source):
                paths.makedirs(paths.join(grid["results"], sub))
                paths.copy(source, paths.join(grid["results"], sub, run.file_stem + ext))


def write_report(grid: dict, runs: list[Run] | None = None, kept: frozenset = frozenset()) -> str:
    """Copies the evaluations and metrics of `runs` (default: every run of the grid that has them;
    `kept`: names of runs whose committed result stands, not copied over) into the results directory,
    the borrowed runs' from their owner's, and writes its tables and plots; returns the tables' Markdown."""
    from sa_mdrad_jax import grid_report
    runs = expand(grid) if runs is None else runs
    borrowed = grid.get("borrowed", {})
    collect([r for r in runs if r.method not in borrowed and r.name not in kept], grid["results"], evaluation_dir(grid))
    copy_borrowed(grid, runs)
    collect_teachers(grid)
    return grid_report.write_report(grid["results"], title=grid["name"], methods=list(grid["methods"]),
                                    evaluation=grid["evaluation"], compare_with=grid.get("compare_with", ()),
                                    sweep=grid.get("sweep"), reference=grid.get("reference", "pgd_at"),
                                    claims=grid.get("claims", True))


def run_grid(grid: dict, *, only: str = "", train_fn=None, evaluate_fn=None, log: Callable = print,
             report: bool = True, reuse_results: bool = False) -> list[Run]:
    """Teachers, then every student run (train, evaluate), then results (copies, tables, plots).

    `only` keeps the runs whose name ('dataset/student/method/seedN') contains it. `reuse_results`
    restores teachers from their snapshots in the results directory (`restore_teacher`) and keeps
    the runs whose evaluation is already there (`committed_result`).
    """
    t0 = time.perf_counter()
    for dataset, name, workdir, c in teacher_runs(grid):
        trained = False
        if not (reuse_results and restore_teacher(grid, dataset, name, workdir, c, log)):
            trained = train_run(workdir, c, train_fn, log)
        if trained or not paths.exists(teacher_snapshot_path(grid, dataset, name)):   # (re)trained: new weights
            snapshot_teacher(grid, dataset, name, workdir, c)
    runs = [r for r in expand(grid) if only in r.name]
    todo, cache, kept = [], {}, set()
    for run in runs:
        config = run_config(grid, run)
        if run.method in grid.get("borrowed", {}):
            borrowed_result(grid, run, config, cache)
            log(f"borrowed (its result is in {grid['borrowed'][run.method]}): {run.name}")
        elif reuse_results and committed_result(grid, run, config, cache):
            # The committed result stands even where a workdir of the same config finished here (e.g.
            # trained again by another grid that shares the run): a re-run would change a published number.
            kept.add(run.name)
            log(f"kept (its result is in {grid['results']}): {run.name}")
        else:
            todo.append(run)
    for run in todo:
        if not acquire(run.workdir):
            log(f"busy (another runner holds {run.workdir}): left to it")
            continue
        try:
            train_run(run.workdir, run_config(grid, run), train_fn, log)
            evaluate_run(run.workdir, grid["evaluation"], evaluate_fn, log, evaluation_dir(grid))
        finally:
            release(run.workdir)
        log(f"done: {run.name} ({time.perf_counter() - t0:.0f} s so far)")
    evaluate_teachers(grid, evaluate_fn, log, reuse_results)
    if report:
        write_report(grid, runs, frozenset(kept))
    log(f"grid {grid['name']}: {len(runs)} runs in {time.perf_counter() - t0:.0f} s")
    return runs
