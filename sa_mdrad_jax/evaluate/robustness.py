"""Robust accuracy of a checkpoint under the named attacks: JSON record, Markdown table, ε-curve PNG.

Evaluation runs in float32 with the highest matmul/convolution precision, model in eval mode,
whatever dtype the model trained in (evaluation.md). A point counts as robust under an attack if
the attack's returned x' (any-iterate: the first misclassified iterate when there is one) is
still classified correctly; clean-misclassified points are never robust.
"""
from __future__ import annotations

import functools
import json
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from sa_mdrad_jax import attacks, checkpoints, data, models, paths
from sa_mdrad_jax import config as config_lib
from sa_mdrad_jax.config import ConfigError, check_number
from sa_mdrad_jax.evaluate.batching import map_batched

DEFAULT_ATTACKS = ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack")
CURVE_EPS = tuple(e / 255 for e in (0, 1, 2, 4, 8, 16))


_batched = map_batched   # fn(xb, yb, i) over fixed-size batches (the last wraps around: one compile)


@functools.cache
def _eval_apply(model):
    """One stable `(variables, x) -> logits` per (hashable, comparable) Flax model: eval mode."""
    def logits(variables, x):
        return model.apply(variables, x, train=False)[0]
    return logits


def model_logits(model, variables) -> jax.tree_util.Partial:
    """`x -> logits` of `model` with `variables`, as a pytree: the compiled attacks take it as an
    argument, so every checkpoint of one architecture shares them (within a process)."""
    return jax.tree_util.Partial(_eval_apply(model), jax.device_put(jax.device_get(variables)))


@functools.partial(jax.jit, static_argnames=("attack",))
def _correct_after(logits_fn, x, y, key, eps, *, attack):
    """[B] bool: is each point still classified correctly after `attack` (None: the clean image)?

    `eps` is traced: one compilation per attack serves every radius (the ε curve)."""
    if attack is not None:
        x = attack(logits_fn, x, y, key, eps=eps)
    return jnp.argmax(logits_fn(x), -1) == y


def robust_accuracy(logits_fn, attack, x, y, key, *, eps: float, batch_size: int) -> float:
    """Accuracy under a named-style attack(logits_fn, x, y, key, *, eps) (None: clean accuracy)."""
    logits_fn = attacks.as_partial(logits_fn)
    eps = jnp.float32(eps)
    return float(np.mean(_batched(lambda xb, yb, i: _correct_after(logits_fn, xb, yb, jax.random.fold_in(key, i),
                                                                   eps, attack=attack),
                                  x, y, batch_size)))


SPECIAL_ATTACKS = ("clean", "autoattack")   # evaluated here, not through the attack registry


def resolve_attack(name: str):
    """The registered attack a name or spec string ('pgd:steps=50,restarts=2') denotes, looked up now."""
    try:
        return attacks.resolve(name)
    except attacks.AttackSpecError as e:
        raise ConfigError(f"{e} (also accepted: {', '.join(SPECIAL_ATTACKS)})") from None


def check_attack_names(attack_names, what: str = "attacks") -> None:
    """Raises ConfigError, before any work, naming every attack name or spec that cannot be resolved."""
    config_lib.check_attack_names(attack_names, what, extra=SPECIAL_ATTACKS)


def check_attack_points(attack_points, attack_names, what: str = "attack_points") -> dict[str, int]:
    """{attack: n} with every attack among `attack_names` and every n a positive int; else ConfigError."""
    attack_points = dict(attack_points or {})
    unknown = [a for a in attack_points if a not in attack_names]
    if unknown:
        raise ConfigError(f"{what} names {unknown}, which are not evaluated; accepted: some of {list(attack_names)}.")
    for name, n in attack_points.items():
        check_number(n, f"{what}[{name!r}]", integer=True, accepted="a positive number of points")
    return attack_points


def evaluate_model(model, variables, x: np.ndarray, y: np.ndarray, *, attack_names=DEFAULT_ATTACKS,
                   eps: float = 8 / 255, batch_size: int = 200, seed: int = 0, curve_eps=CURVE_EPS,
                   attack_points=None) -> dict:
    """{'accuracy': {name: acc}, 'autoattack': report, 'curve': {eps: acc under pgd20}, 'seconds': ...}.

    Attacks are compiled once per architecture and batch size in a process (`model_logits`), for
    every ε (traced). `attack_names` are registered attacks or spec strings (attacks/registry.py),
    'clean' and 'autoattack'. `attack_points` {name: n} evaluates those attacks on the first n
    points only (e.g. AutoAttack on 1,000 of 10,000); the record's 'attack_points' says which.
    """
    check_attack_names(attack_names)   # all of them before the first one runs
    attack_points = check_attack_points(attack_points, attack_names)
    logits_fn = model_logits(model, variables)
    key = jax.random.PRNGKey(seed)
    result = {"accuracy": {}, "seconds": {}, "eps": eps, "n_points": int(len(x)), "seed": seed}
    if attack_points:
        result["attack_points"] = {name: min(int(n), len(x)) for name, n in attack_points.items()}
    with jax.default_matmul_precision("highest"):
        for k, name in enumerate(attack_names):
            t0 = time.perf_counter()
            n = attack_points.get(name, len(x))
            xa, ya = x[:n], y[:n]
            if name == "clean":
                acc = robust_accuracy(logits_fn, None, xa, ya, key, eps=0.0, batch_size=batch_size)
            elif name == "autoattack":
                _, report = attacks.autoattack(logits_fn, jnp.asarray(xa), jnp.asarray(ya),
                                               jax.random.fold_in(key, k), eps=eps, batch_size=batch_size)
                result["autoattack"] = report
                acc = float(report["robust_accuracy"])
            else:
                acc = robust_accuracy(logits_fn, resolve_attack(name), xa, ya, jax.random.fold_in(key, k), eps=eps,
                                      batch_size=batch_size)
            result["accuracy"][name] = acc
            result["seconds"][name] = time.perf_counter() - t0
        if curve_eps:
            result["curve"] = {f"{e:.6f}": robust_accuracy(logits_fn, attacks.pgd20, x, y, jax.random.fold_in(key, 99),
                                                           eps=e, batch_size=batch_size) if e > 0 else
                               result["accuracy"].get("clean") for e in curve_eps}
    return result


def evaluate_checkpoint(workdir: str, *, attack_names=DEFAULT_ATTACKS, n_points: int = 1000, eps: float = 8 / 255,
                        batch_size: int = 200, seed: int = 0, data_dir: str | None = None, out_dir: str | None = None,
                        curve_eps=CURVE_EPS, step: int | None = None, selection: str = "final",
                        split: str = "test", attack_points=None, log=print) -> dict:
    """Evaluates a checkpoint of `workdir` (`step`, default the latest) on the first `n_points`
    points of `split` ('test', or 'validation': the run's own validation split, for choices made
    on it), the attacks named in `attack_points` on fewer; writes evaluation.{json,md,png} to `out_dir`. `selection` records how the step was
    chosen ('final', or 'best' by the run's validation metric).

    `n_points` above the split's size evaluates the whole split, and `log` says so.
    """
    t0 = time.perf_counter()
    check_number(n_points, "n_points", integer=True, accepted="a positive number of test points")
    check_number(batch_size, "batch_size", integer=True, accepted="a positive integer")
    check_number(eps, "eps", high=1.0, accepted="in (0, 1] (pixels are in [0, 1]; --eps_255 in (0, 255])")
    check_attack_names(attack_names)
    check_attack_points(attack_points, attack_names)
    model_cfg, variables, meta = checkpoints.load_variables(workdir, step)
    model = models.get_model(**{**model_cfg, "dtype": "float32"})
    image_size = meta["image_shape"][0]
    validation_size = 0
    if split == "validation":
        validation_size = json.loads(paths.read_text(paths.join(workdir, "config.json")))["dataset"].get(
            "validation_size", 0)
        if not validation_size:
            raise ConfigError(f"{workdir} was trained without a validation split (dataset.validation_size=0): "
                              "evaluate it on split='test'.")
    elif split != "test":
        raise ConfigError(f"Unknown evaluation split {split!r}; accepted: 'test', 'validation'.")
    x, y = data.load_split(meta["dataset"], split, data_dir=data_dir, validation_size=validation_size,
                           image_size=image_size if meta["dataset"] == "digits" else None)
    if n_points > len(x):
        log(f"note: n_points={n_points} is more than the {len(x)} {meta['dataset']} {split} points; "
            f"evaluating all {len(x)}.")
    x, y = x[:n_points].astype(np.float32) / 255.0, y[:n_points]
    result = evaluate_model(model, variables, x, y, attack_names=attack_names, eps=eps, batch_size=batch_size,
                            seed=seed, curve_eps=curve_eps, attack_points=attack_points)
    record = {"model": model_cfg, "checkpoint": paths.absolute(workdir), "step": meta.get("step"),
              "split": split, "selection": selection,
              "dataset": meta["dataset"], "method": meta.get("method"), **result,
              "attack_params": {"eps": eps, "named": "evaluation.md"},
              "wall_seconds": time.perf_counter() - t0, "device": jax.devices()[0].device_kind,
              "host": platform.node()}
    if out_dir:
        write_reports(record, out_dir)
    return record


def markdown_row_header(names) -> str:
    return "| model | " + " | ".join(names) + " |\n|---|" + "---|" * len(names)


def markdown_table(records: dict[str, dict], names=None) -> str:
    names = names or list(next(iter(records.values()))["accuracy"])
    lines = [markdown_row_header(names)]
    for label, rec in records.items():
        lines.append(f"| {label} | " + " | ".join(f"{100 * rec['accuracy'][n]:.2f}" for n in names) + " |")
    return "\n".join(lines)


def write_reports(record: dict, out_dir: str) -> None:
    paths.write_text(paths.join(out_dir, "evaluation.json"), json.dumps(record, indent=2, default=float))
    label = f"{record['model']['name']} (step {record['step']})"
    paths.write_text(paths.join(out_dir, "evaluation.md"),
                     f"Robust accuracy (%) at ε = {record['eps'] * 255:.0f}/255 on {record['n_points']} "
                     f"{record['dataset']} {record.get('split', 'test')} points, seed {record['seed']}:\n\n"
                     + markdown_table({label: record}) + "\n")
    if record.get("curve"):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        eps = [float(e) * 255 for e in record["curve"]]
        acc = [100 * v for v in record["curve"].values()]
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(eps, acc, marker="o")
        ax.set_xlabel("ε (/255)")
        ax.set_ylabel("accuracy under pgd20 (%)")
        ax.set_title(label)
        fig.tight_layout()
        paths.save_figure(fig, paths.join(out_dir, "robust_accuracy_vs_eps.png"), dpi=120)
        plt.close(fig)
