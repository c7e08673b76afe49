"""The offline quickstart: teachers, a PGD-AT and an SA-MDRAD student, and their robustness, on real digits.

Digits (scikit-learn's 1,797 real 8×8 scans, made RGB) need no download, so the whole pipeline —
device-side data, the sharded jitted steps, Orbax checkpoints, restore, the attack suite — runs on
any laptop in minutes:

  1. two heterogeneous teachers (ResNet-18 and WRN-16-4 families) are trained naturally, each with
     the same loop a user runs for CIFAR, into `<workdir>/teachers/<name>`;
  2. two students of one architecture are trained from them with the same seed, into
     `<workdir>/students/<method>`: PGD-AT (the baseline, which ignores the teachers) and SA-MDRAD;
  3. all four checkpoints are restored and attacked (clean, FGSM, PGD-20, standard AutoAttack) at
     the config's ε on the first `robustness.n_points` test images;
  4. one Markdown table is printed and written to `<workdir>/results.md`, the rows to `results.json`.

Re-running the command resumes/reuses every finished checkpoint (each training run resumes).
"""
from __future__ import annotations

import json
import os
import platform
import time

import jax
import ml_collections
import numpy as np

from sa_mdrad_jax import checkpoints, config as config_lib, data, models, paths, workdir_lock
from sa_mdrad_jax.evaluate import robustness
from sa_mdrad_jax.train import loop



def default_methods() -> tuple[str, ...]:
    """The quickstart's students: the methods registered with `quickstart=True` (PGD-AT, SA-MDRAD)."""
    from sa_mdrad_jax.methods import method_names
    return method_names(quickstart=True)


def get_config() -> ml_collections.ConfigDict:
    c = config_lib.base_config()
    # Digits at their native 8×8: a 1-pixel shift, and no mirror (a mirrored digit is another glyph).
    c.dataset.update(name="digits", image_size=8, crop_pad=1, flip=False)
    c.train.update(epochs=4, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.checkpoint.keep = 1
    c.log.every_steps = 20
    del c["model"]
    # Two heterogeneous teachers (ResNet-18 and WRN-16-4 families), narrowed to fit a 2-core CPU.
    c.teachers = ml_collections.ConfigDict({
        "resnet18": ml_collections.ConfigDict(dict(
            model=dict(name="resnet18", width=0.25, dtype="float32", normalize="digits"))),
        "wrn16": ml_collections.ConfigDict(dict(
            model=dict(name="wrn16_4", width=0.25, dtype="float32", normalize="digits"))),
    })
    # The L∞ threat model of both the students' training attack and the evaluation. Digits pixels take
    # 17 grey levels (steps of 16/255); 8/255 moves no pixel by half a level and leaves natural
    # digits models largely robust, so it cannot separate them from adversarially trained ones.
    c.eps = 32 / 255
    # Students: one (smaller) architecture for both methods, same seed, PGD-K training attack with
    # step 2.5·ε/K (Madry et al.'s rule), other method options at their methods.md defaults.
    c.student = ml_collections.ConfigDict(dict(
        model=dict(name="resnet_tiny", width=1.0, dtype="float32", normalize="digits"),
        methods=default_methods(),
        epochs=6,
        pgd_steps=3,
        lr=0.05,
    ))
    c.robustness = ml_collections.ConfigDict(dict(
        attacks=("clean", "fgsm", "pgd20", "autoattack"),   # autoattack: the standard version, in full
        n_points=64,       # the first n test images (AutoAttack's cost is what limits this)
        batch_size=64,
        seed=0,
    ))
    return c


def _copy(node: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(node.to_dict())


def _shared(config: ml_collections.ConfigDict, into: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Copies the fields every training run of the quickstart shares (data, schedule, logging)."""
    into.seed = config.seed
    for field in ("dataset", "train", "optim", "eval", "checkpoint", "log", "distributed"):
        into[field] = _copy(config[field])
    return into


def teacher_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The natural-training config of one teacher: the shared settings plus its model."""
    c = _shared(config, config_lib.base_config())
    c.model = _copy(config.teachers[name].model)
    return c


def student_config(config: ml_collections.ConfigDict, method: str,
                   teacher_workdirs: dict[str, str]) -> ml_collections.ConfigDict:
    """The distillation config (`config.distill_config(method)`) of one student of the quickstart."""
    c = _shared(config, config_lib.distill_config(method))
    c.model = _copy(config.student.model)
    c.train.epochs = config.student.epochs
    c.optim.lr = config.student.lr
    steps = int(config.student.pgd_steps)
    c.method.update(eps=float(config.eps), steps=steps, step_size=2.5 * float(config.eps) / steps)
    for name, teacher in config.teachers.items():
        spec = teacher.model.to_dict()
        c.teachers[name] = config_lib.teacher_entry(spec.pop("name"), teacher_workdirs[name], **spec)
    return c


def _check(config: ml_collections.ConfigDict) -> None:
    from sa_mdrad_jax.methods import METHODS
    unknown = [m for m in config.student.methods if m not in METHODS]
    if unknown:
        raise config_lib.ConfigError(f"student.methods has {unknown}; valid (registered methods): "
                                     f"{', '.join(METHODS)}.")
    if not 0 < config.eps <= 1:
        raise config_lib.ConfigError(f"eps must be in (0, 1] (pixels are in [0, 1]), got {config.eps}.")
    if config.robustness.n_points <= 0:
        raise config_lib.ConfigError(f"robustness.n_points must be positive, got {config.robustness.n_points}.")
    config_lib.check_attack_names(tuple(config.robustness.attacks), "robustness.attacks")
    config_lib.check_number(config.robustness.batch_size, "robustness.batch_size", integer=True,
                            accepted="a positive integer")
    config_lib.check_number(config.student.epochs, "student.epochs", integer=True, accepted="a positive integer")
    config_lib.check_number(config.student.lr, "student.lr", low_open=False, accepted="a finite number >= 0")
    config_lib.check_number(config.student.pgd_steps, "student.pgd_steps", integer=True,
                            accepted="a positive integer")


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Robust accuracies of the checkpoint in `workdir` on the first n test points (float32)."""
    model_cfg, variables, meta = checkpoints.load_variables(workdir)
    model = models.get_model(**{**model_cfg, "dtype": "float32"})
    r = config.robustness
    x, y = data.load_split(config.dataset.name, "test", data_dir=config.dataset.data_dir or None,
                           image_size=meta["image_shape"][0])
    x, y = x[:r.n_points].astype(np.float32) / 255.0, y[:r.n_points]
    result = robustness.evaluate_model(model, variables, x, y, attack_names=tuple(r.attacks), eps=float(config.eps),
                                       batch_size=r.batch_size, seed=r.seed, curve_eps=())
    return {"model": f"{model_cfg['name']} (width {model_cfg['width']:g})", "method": meta["method"],
            "step": meta["step"], "train_seed": int(config.seed), **result}


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Trains the teachers and students, evaluates all of them; returns the table's rows.

    The quickstart's own workdir is locked for the whole command, each run's too (by the loop).
    """
    _check(config)
    with workdir_lock.hold(workdir):
        return _run(config, workdir)


def _run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    t0, c0 = time.perf_counter(), time.process_time()
    runs = []   # (role, name, workdir)
    teacher_dirs = {}
    for name in config.teachers:
        teacher_dirs[name] = paths.join(workdir, "teachers", name)
        loop.train(teacher_config(config, name), teacher_dirs[name])
        runs.append(("teacher", name, teacher_dirs[name]))
    for method in config.student.methods:
        sdir = paths.join(workdir, "students", method)
        loop.train(student_config(config, method, teacher_dirs), sdir)
        runs.append(("student", method, sdir))
    train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = []
    for role, name, rdir in runs:
        row = {"role": role, "name": name, "workdir": rdir, **evaluate(config, rdir)}
        rows.append(row)
        print(f"evaluated {role} {name}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["accuracy"].items())
              + f" ({sum(row['seconds'].values()):.0f} s)", flush=True)
    table = format_table(rows)
    record = {"rows": rows, "table": table, "train_seconds": train_seconds, "train_cpu_seconds": train_cpu,
              "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
              "load_average_1min_at_end": os.getloadavg()[0], "device": jax.devices()[0].device_kind,
              "host": platform.node(), "config": config.to_dict()}
    write_results(record, workdir)
    print(table, flush=True)
    print(f"({time.perf_counter() - t0:.0f} s; wrote {paths.join(workdir, 'results.md')} and results.json)",
          flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    """One Markdown table: a row per model, a column per attack (robust accuracy, %)."""
    names = list(rows[0]["accuracy"])
    lines = ["| model | method | " + " | ".join(names) + " | n points | eps | train seed | attack seed |",
             "|---|---|" + "---|" * len(names) + "---|---|---|---|"]
    for r in rows:
        label = f"{r['role']} {r['model']}"
        lines.append(f"| {label} | {r['method']} | " + " | ".join(f"{100 * r['accuracy'][n]:.1f}" for n in names)
                     + f" | {r['n_points']} | {r['eps'] * 255:.0f}/255 | {r['train_seed']} | {r['seed']} |")
    return "\n".join(lines)


def write_results(record: dict, workdir: str) -> None:
    paths.write_text(paths.join(workdir, "results.json"), json.dumps(record, indent=2, default=float))
    paths.write_text(paths.join(workdir, "results.md"),
                     f"Robust accuracy (%) on the first {record['rows'][0]['n_points']} digits test images "
                     f"(L∞, ε = {record['rows'][0]['eps'] * 255:.0f}/255; AutoAttack = standard version):\n\n"
                     + record["table"] + "\n")
