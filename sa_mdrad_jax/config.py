"""Loading, overriding and validating ml_collections configs.

A config file is a Python module with `get_config(arg: str | None = None)` returning a
`ml_collections.ConfigDict` of primitives and names. On the command line it is selected with
`--config=configs/x.py[:arg]` and any field is overridden with `--config.a.b=value`, exactly as
with `ml_collections.config_flags`; this module adds the checks that flag parsing does not do
clearly (an unknown key lists the valid keys at that level) and the semantic checks (names of
models, datasets, schedules resolve through their registries).
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
from typing import Iterable, Sequence

import ml_collections


class ConfigError(ValueError):
    """A config or override that cannot be used; the message says what is accepted."""


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path[:arg]` by calling the module's `get_config([arg])`."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):   # local-only: a Python module, imported from a local file
        raise ConfigError(f"Config file {path!r} does not exist.")
    module_spec = importlib.util.spec_from_file_location("_sa_mdrad_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"Config file {path!r} defines no get_config().")
    return module.get_config(arg) if arg else module.get_config()


def flat_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """All leaf keys as dotted paths."""
    keys = []
    for name, value in config.items():
        path = f"{prefix}{name}"
        if isinstance(value, ml_collections.ConfigDict):
            keys.extend(flat_keys(value, path + "."))
        else:
            keys.append(path)
    return keys


def check_key(config: ml_collections.ConfigDict, dotted: str) -> None:
    """Raises ConfigError naming the valid keys if `dotted` is not a field of `config`."""
    node, walked = config, []
    for part in dotted.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(walked) or "<top level>"
            valid = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            raise ConfigError(
                f"Unknown config key {dotted!r}: {where!r} has no field {part!r}. "
                f"Valid keys there: {', '.join(valid) or '(none: it is a value)'}."
            )
        node = node[part]
        walked.append(part)


def check_override_args(config: ml_collections.ConfigDict, argv: Iterable[str],
                        flag: str = "config") -> None:
    """Checks every `--config.a.b=v` in argv names an existing field (before flag parsing)."""
    prefix = f"--{flag}."
    for arg in argv:
        if arg.startswith(prefix):
            check_key(config, arg[len(prefix):].split("=", 1)[0])


def _require_choice(value: str, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"Unknown {what} {value!r}. Valid choices: {', '.join(sorted(choices))}.")


def check_number(value, what: str, *, low: float | None = 0, low_open: bool = True, high: float | None = None,
                 integer: bool = False, accepted: str = "") -> None:
    """Raises ConfigError unless `value` is a finite number (an integer if `integer`) in the range:
    > low (or >= low when not `low_open`), <= high. `accepted` words the range for the message."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        if not accepted:
            kind = "an integer" if integer else "a finite number"
            bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
            accepted = kind + bound + ("" if high is None else f" and <= {high:g}")
        raise ConfigError(f"{what} must be {accepted}; got {value!r}.")


def check_attack_names(names: Sequence[str], what: str, *, extra: Sequence[str] = ("clean", "autoattack")) -> None:
    """Raises ConfigError naming every unknown attack in `names` (all checked up front, used or not)."""
    from sa_mdrad_jax import attacks
    if isinstance(names, str):
        names = (names,)
    valid = list(extra) + sorted(attacks.NAMED)
    if not names:
        raise ConfigError(f"{what}: no attack given. Valid: {', '.join(valid)} (or a spec such as "
                          "'pgd:steps=50,restarts=2,loss=cw').")
    problems = []
    for name in names:
        if name in extra:
            continue
        try:   # a registered attack or a spec string, looked up in the registry now
            attacks.resolve(name)
        except attacks.AttackSpecError as e:
            problems.append(str(e))
    if problems:
        also = f" (also accepted: {', '.join(extra)})" if extra else ""
        raise ConfigError(f"{what}: " + "; ".join(problems) + also)


def validate_numbers(config: ml_collections.ConfigDict) -> None:
    """Range checks of every numeric field a run reads (so a typo such as epochs=0 or lr=nan
    stops before anything is written, instead of training nothing or diverging at step 20)."""
    t, o = config.train, config.optim
    check_number(t.epochs, "train.epochs", integer=True, accepted="a positive integer")
    check_number(t.batch_size, "train.batch_size", integer=True, accepted="a positive integer")
    check_number(t.max_steps, "train.max_steps", integer=True, low_open=False,
                 accepted="an integer >= 0 (0 = no limit)")
    check_number(t.num_devices, "train.num_devices", integer=True, low_open=False,
                 accepted="an integer >= 0 (0 = every device)")
    for name in ("max_param_abs", "max_loss"):
        if name in t:
            check_number(t[name], f"train.{name}", low_open=False,
                         accepted="a finite number >= 0 (0 = no bound)")
    # 0 is accepted: it freezes the weights (e.g. to recompute BN statistics from init_from's).
    check_number(o.lr, "optim.lr", low_open=False, accepted="a finite number >= 0")
    check_number(o.momentum, "optim.momentum", low_open=False, high=1.0)
    check_number(o.weight_decay, "optim.weight_decay", low_open=False)
    check_number(o.decay, "optim.decay", accepted="a finite number > 0")
    check_number(o.warmup_epochs, "optim.warmup_epochs", low_open=False)
    for b in tuple(o.boundaries or ()):
        check_number(b, "optim.boundaries (each)", low_open=False)
    e = config.eval
    check_number(e.batch_size, "eval.batch_size", integer=True, accepted="a positive integer")
    check_number(e.robust_points, "eval.robust_points", integer=True, low_open=False,
                 accepted="an integer >= 0 (0 = no robust evaluation)")
    check_number(e.robust_every_epochs, "eval.robust_every_epochs", integer=True, accepted="a positive integer")
    check_number(e.robust_eps, "eval.robust_eps", low_open=False, high=1.0,
                 accepted="a finite number in [0, 1] (0 = the method's ε)")
    c = config.checkpoint
    check_number(c.keep, "checkpoint.keep", integer=True, accepted="a positive integer")
    check_number(c.every_epochs, "checkpoint.every_epochs", integer=True, accepted="a positive integer")
    check_number(config.log.every_steps, "log.every_steps", integer=True, low_open=False)
    if "method" in config:
        m = config.method
        if "eps" in m:   # every method block has its training attack (method_config)
            check_number(m.eps, "method.eps", high=1.0, accepted="a finite number in (0, 1] (pixels are in [0, 1])")
            check_number(m.step_size, "method.step_size", accepted="a finite number > 0")
            check_number(m.steps, "method.steps", integer=True, accepted="a positive integer")


MODEL_FIELDS = ("name", "width", "dtype", "normalize")   # every model block; other fields: the architecture's options


def _check_model_options(model_config) -> None:
    """Fields of a model block beyond MODEL_FIELDS must be options of that architecture."""
    import inspect

    from sa_mdrad_jax import models
    standard = MODEL_FIELDS + ("num_classes", "bn_axis_name")
    accepted = [p for p in inspect.signature(models.MODELS[model_config.name]).parameters if p not in standard]
    unknown = [k for k in model_config.keys() if k not in standard and k not in accepted]
    if unknown:
        raise ConfigError(f"Model {model_config.name!r} has no option {', '.join(map(repr, unknown))}; its options "
                          f"beyond name/width/dtype/normalize: {', '.join(accepted) or 'none'}.")


def validate(config: ml_collections.ConfigDict) -> None:
    """Semantic checks of a training config; raises ConfigError with the accepted values."""
    # Imported here so `config` stays importable without pulling in JAX models.
    from sa_mdrad_jax import data, models
    from sa_mdrad_jax.train import schedules

    _require_choice(config.dataset.name, list(data.DATASETS), "dataset")
    if "model" not in config:
        raise ConfigError("This config has no 'model' field, so it cannot train a single model "
                          "(a config with 'teachers' only is run by `sa-mdrad quickstart`).")
    model_configs = [config.model] if "model" in config else []
    model_configs += [t.model for t in dict(config.get("teachers", {})).values()]
    for model_config in model_configs:
        _require_choice(model_config.name, models.available_models(), "model")
        _require_choice(model_config.dtype, ("float32", "bfloat16"), "dtype")
        _check_model_options(model_config)
    if "model" in config and config.model.normalize:
        from sa_mdrad_jax.models import common
        if isinstance(config.model.normalize, str):
            _require_choice(config.model.normalize, list(common.NORMALIZATION), "normalization")
    if "method" in config:
        from sa_mdrad_jax.methods import METHODS, make_method
        _require_choice(config.method.name, list(METHODS), "method")
        names = tuple(config.teachers.keys()) if "teachers" in config else ()
        try:  # the method's own option checks (unknown option values list the valid ones)
            method = make_method(config.method, names)
        except ValueError as e:
            raise ConfigError(f"method: {e}") from e
        if method.uses_teachers and not names:
            raise ConfigError(f"Method {config.method.name!r} distils from teachers: the config needs a non-empty "
                              "'teachers' block (name -> {model: {...}, workdir: <the teacher's training workdir>}).")
    _require_choice(config.optim.schedule, list(schedules.SCHEDULES), "lr schedule")
    validate_numbers(config)
    # Checked whether or not robust_points > 0 switches it on: a typo should not wait for that.
    check_attack_names(config.eval.robust_attack, "eval.robust_attack", extra=())
    _validate_selection(config)
    if config.checkpoint.best_metric.startswith("val_robust") and (
            config.eval.robust_points <= 0 or config.checkpoint.every_epochs % config.eval.robust_every_epochs):
        raise ConfigError(f"checkpoint.best_metric={config.checkpoint.best_metric!r} needs eval.robust_points > 0 "
                          "and eval.robust_every_epochs dividing checkpoint.every_epochs (every checkpoint "
                          "must carry the metric).")
    if config.checkpoint.best_mode not in ("max", "min"):
        raise ConfigError(f"checkpoint.best_mode must be 'max' or 'min', got {config.checkpoint.best_mode!r}.")


SELECTION_METRICS = ("val_accuracy", "val_robust_accuracy", "val_loss")


def _validate_selection(config: ml_collections.ConfigDict) -> None:
    """Checkpoint selection reads the validation split only (never the test split)."""
    size = config.dataset.get("validation_size", 0)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ConfigError(f"dataset.validation_size must be an int >= 0 (0 = no validation split), got {size!r}.")
    train_size = config.dataset.get("train_size", 0)
    if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 0:
        raise ConfigError(f"dataset.train_size must be an int >= 0 (0 = every training example), got {train_size!r}.")
    metric = config.checkpoint.best_metric
    if not metric:
        return
    if metric not in SELECTION_METRICS:
        hint = (" Selecting a checkpoint on the test split would make its test numbers optimistic: hold out a "
                "validation split (dataset.validation_size) and select on it." if metric.startswith("test_") else "")
        raise ConfigError(f"checkpoint.best_metric={metric!r} is not accepted; accepted are '' (latest only) or "
                          f"{', '.join(SELECTION_METRICS)}.{hint}")
    if size == 0:
        raise ConfigError(f"checkpoint.best_metric={metric!r} needs a validation split: set dataset.validation_size "
                          "> 0 (e.g. 1000 on CIFAR) or checkpoint.best_metric=''.")


# What a run may change and still continue in its workdir: a longer run, and settings that do not
# touch what is trained (logging, evaluation batch, checkpoint bookkeeping). Anything else — method
# options, model, data, optimiser, seed — changes what the weights are the result of.
RESUMABLE_CHANGES = ("train.epochs", "train.max_steps", "log.", "eval.batch_size", "checkpoint.async_save",
                     "checkpoint.keep")


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_keys(before: dict, config: ml_collections.ConfigDict) -> list[str]:
    """Dotted keys in which `config` differs from `before` (a stored config as JSON values), leaving
    out `RESUMABLE_CHANGES` and the teachers' workdir paths (machine-local)."""
    now = _flat(json.loads(json.dumps(config.to_dict(), sort_keys=True, default=str)))
    before = _flat(before)
    return sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k)
                  and not k.startswith(RESUMABLE_CHANGES)
                  and not (k.startswith("teachers.") and k.endswith(".workdir")))


def write_resolved(config: ml_collections.ConfigDict, workdir: str) -> str:
    """Writes the fully resolved config to `workdir/config.json`; returns the path."""
    from sa_mdrad_jax import paths
    path = paths.join(workdir, "config.json")
    paths.write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str))
    return path


def base_config() -> ml_collections.ConfigDict:
    """Every field a training run reads, with defaults; configs in `configs/` start from this."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.dataset = ml_collections.ConfigDict(dict(
        name="cifar10",
        data_dir="",        # '' = TFDS's default (~/tensorflow_datasets or $TFDS_DATA_DIR)
        image_size=0,       # 0 = the dataset's native size; digits are resized to this
        validation_size=0,  # > 0: hold out this many training examples (stratified, fixed seed) as the
                            # 'validation' split: per-epoch evaluation and checkpoint selection use it
        train_size=0,       # > 0: train on a stratified subset of this many of the remaining training examples
        augment=True,       # random crop after zero padding (+ flip), inside the jitted step
        crop_pad=4,         # zero padding before the random crop
        flip=True,          # random horizontal flip (off for digits: a mirrored digit is another glyph)
    ))
    c.model = ml_collections.ConfigDict(dict(
        name="resnet18",
        width=1.0,          # channel multiplier (1.0 = the reference architecture)
        dtype="float32",    # compute dtype: 'float32' | 'bfloat16' (params stay float32)
        normalize="",       # '' = none, or a dataset name whose mean/std the model applies inside
    ))
    c.train = ml_collections.ConfigDict(dict(
        epochs=200,
        batch_size=128,     # global batch, split over all devices
        num_devices=0,      # 0 = every device of every process; N > 0 = this process's first N (one process only)
        sync_bn=True,       # batch-norm statistics over the global batch
        max_steps=0,        # > 0: stop (and checkpoint) after this many steps in total
        max_param_abs=1e6,  # divergence guard: no checkpoint of weights with |w| above this (0 = no bound)
        max_loss=1e6,       # divergence guard: nor of an epoch whose mean training loss is above this (0 = no bound)
        init_from="",       # a workdir (trained or `sa-mdrad import-torch`ed) of the same model: start from its weights
    ))
    c.optim = ml_collections.ConfigDict(dict(
        lr=0.1, momentum=0.9, nesterov=False, weight_decay=5e-4,
        schedule="piecewise", boundaries=(100, 150), decay=0.1, warmup_epochs=0.0,
    ))
    c.eval = ml_collections.ConfigDict(dict(
        batch_size=500,
        robust_points=0,          # > 0: each per-epoch robust evaluation attacks about this many points of the
                                  # evaluation split (validation if dataset.validation_size > 0, else test)
        robust_attack="pgd20",    # a registered attack (sa_mdrad_jax.attacks.NAMED) or a spec 'pgd:steps=50,restarts=2'
        robust_eps=0.0,           # 0 = the method's training ε (8/255 for natural training)
        robust_every_epochs=1,
    ))
    c.checkpoint = ml_collections.ConfigDict(dict(
        # best_metric: '' = keep the last `keep` only; 'val_accuracy' / 'val_robust_accuracy' also keeps the best
        # by that validation metric (needs dataset.validation_size > 0; the test split is never used to select).
        keep=3, every_epochs=1, best_metric="", best_mode="max", async_save=True,
    ))
    c.log = ml_collections.ConfigDict(dict(every_steps=50, progress=True, tensorboard=True))
    c.distributed = ml_collections.ConfigDict(dict(
        initialize=False, coordinator_address="", num_processes=0, process_id=-1, local_device_ids="",
    ))
    return c


def composable_terms() -> dict:
    """The sub-blocks every method config carries: terms any method can add (methods.md §3), as
    registered (`methods.register_term(name, defaults=...)`), each off by default."""
    from sa_mdrad_jax.methods import base
    return {name: ml_collections.ConfigDict(dict(base.TERM_DEFAULTS[name])) for name in sorted(base.TERM_DEFAULTS)}


def method_config(name: str = "sa_mdrad") -> ml_collections.ConfigDict:
    """The `method` block of a distillation config: the defaults `name` registered with
    (`methods.register(name, defaults=...)`, methods.md §2-3).

    Every block has the attack (eps, step_size, steps) and the composable terms (`igdm`,
    `trades_kl`, off by default). KL terms are batchmean × an explicit kl_scale.
    """
    from sa_mdrad_jax.methods import base
    spec = base.method_spec(name)
    if spec.defaults is None:
        raise ConfigError(f"Method {name!r} was registered without defaults, so it has no default config block: "
                          f"register it with `defaults=dict(...)` (its options).")
    attack = dict(eps=8 / 255, step_size=2 / 255, steps=10)
    return ml_collections.ConfigDict(dict(name=name, **attack, **spec.defaults, **composable_terms()))


def teacher_entry(name: str, workdir: str = "", **model) -> ml_collections.ConfigDict:
    """One entry of a config's `teachers` block: the model it must be, and where it was trained."""
    spec = dict(name=name, width=1.0, dtype="float32", normalize="")
    spec.update(model)
    return ml_collections.ConfigDict(dict(model=spec, workdir=workdir))


def distill_config(method: str = "sa_mdrad") -> ml_collections.ConfigDict:
    """base_config() plus a `method` block and an (empty) `teachers` block."""
    c = base_config()
    c.method = method_config(method)
    c.teachers = ml_collections.ConfigDict()
    c.eval.robust_points = 1000   # robust accuracy (pgd20) on a held-out test subset every epoch
    return c
