"""Each baseline paper's training setting as a distillation config (`configs/<method>.py`).

    config = paper_config("rslad", "cifar100,mobilenetv2")

Each method's recipe is registered with it (`methods.register(name, recipe=Recipe(...))`, in the
method's own file); this module turns it into a config.

The argument is `<dataset>,<student>` with dataset cifar10 | cifar100 and student resnet18 |
mobilenetv2, or `digits` (the quickstart's digits setup and teachers). For `igdm` a third field
names the method IGDM is added to (default adaad, the paper's headline pairing):
`cifar100,resnet18,rslad`. Any other config (SA-MDRAD's included) adds IGDM or the TRADES KL
with `--config.method.igdm.enabled=True` / `--config.method.trades_kl.enabled=True`.

Schedules, weight decay, batch, τ, kl_scale and attack settings are the papers' / official
codes' (methods.md §3); the comments give the source. Where a paper distils from a robust
(adversarially trained) teacher, the teacher's key says so and its workdir is left empty: point
it at an imported checkpoint (`--config.teachers.<key>.workdir=...`). Robust teachers of the
reference codes take [0, 1] inputs without normalisation, so those entries have none; natural
teachers are trained by the project's teacher command (configs/teacher_cifar*.py normalise
inside the model). Students are normalisation-free, as in the reference codes.
"""
from __future__ import annotations

import ml_collections

from sa_mdrad_jax.config import ConfigError, distill_config, teacher_entry

DATASETS = ("cifar10", "cifar100")
STUDENTS = ("resnet18", "mobilenetv2")


def _registry():
    from sa_mdrad_jax.methods import base
    return base


def baselines() -> tuple[str, ...]:
    """The methods with a paper recipe (`register(..., recipe=Recipe(...))`), then the composable
    terms with one (IGDM: `paper_config('igdm', ...)` adds it to a base method)."""
    base = _registry()
    return tuple(n for n, s in base.SPECS.items() if s.recipe is not None) + tuple(base.TERM_RECIPES)


def term_bases(term: str) -> tuple[str, ...]:
    """The methods whose paper recipe pairs with `term` (IGDM: AdaAD, ARD, IAD, RSLAD, MTARD)."""
    return tuple(n for n, s in _registry().SPECS.items() if s.recipe is not None and term in s.recipe.terms)


def schedules() -> dict:
    """{method: (epochs, LR-decay boundaries in 0-based epochs, weight decay)} of the paper recipes;
    lr 0.1, SGD momentum 0.9, batch 128."""
    return {n: s.recipe.schedule for n, s in _registry().SPECS.items() if s.recipe is not None}


def __getattr__(name):   # the former module-level tuples, now read from the registry at access time
    if name == "BASELINES":
        return baselines()
    if name == "IGDM_BASES":
        return term_bases("igdm")
    if name == "SCHEDULES":
        return schedules()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cifar(method: str, dataset: str, student: str, base: str | None) -> ml_collections.ConfigDict:
    recipe = base or method
    spec = _registry().method_spec(recipe)
    c = distill_config(recipe)
    epochs, boundaries, wd = spec.recipe.schedule
    c.dataset.update(name=dataset)
    c.model.update(name=student, normalize="")
    c.train.update(epochs=epochs, batch_size=128)
    c.optim.update(lr=0.1, momentum=0.9, weight_decay=wd, schedule="piecewise", boundaries=boundaries, decay=0.1)
    if spec.recipe.cifar is not None:
        spec.recipe.cifar(c, dataset)
    robust = spec.recipe.robust_teachers(dataset) if spec.recipe.robust_teachers else {}
    for key, model in robust.items():
        c.teachers[key] = teacher_entry(workdir="", **model)
    if spec.teachers == "robust+natural":
        # The robust teacher on x', a natural (standard) teacher on x, from the teacher command
        # (MTARD's official script instantiates a WRN-34-10 for both).
        first = next(iter(c.teachers.keys()))
        c.teachers.wrn34_10_natural = teacher_entry("wrn34_10", "", normalize=dataset)
        c.method.update(robust_teacher=first, natural_teacher="wrn34_10_natural")
    if method != recipe:   # a composable term's paper recipe on top of the base's
        _registry().TERM_RECIPES[method].cifar(c, dataset)
        edit = spec.recipe.terms.get(method)
        if edit is not None:
            edit(c, dataset)
    return c


def _digits(method: str, base: str | None) -> ml_collections.ConfigDict:
    """The digits setup of configs/sa_mdrad_digits.py, distilling from the quickstart's two standard
    teachers (digits has no robust teacher: the WRN-16-4 stands in where a paper has one)."""
    recipe = base or method
    spec = _registry().method_spec(recipe)
    c = distill_config(recipe)
    c.dataset.update(name="digits", image_size=16, crop_pad=2, flip=False)
    c.model.update(name="resnet18", width=0.25, normalize="digits")
    c.train.update(epochs=6, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.log.every_steps = 20
    if spec.recipe.scale_epochs is not None:
        spec.recipe.scale_epochs(c, c.train.epochs)
    wrn = teacher_entry("wrn16_4", "workdir/quickstart/teachers/wrn16", width=0.25, normalize="digits")
    res = teacher_entry("resnet18", "workdir/quickstart/teachers/resnet18", width=0.25, normalize="digits")
    if spec.teachers == "robust+natural":
        c.teachers.resnet18, c.teachers.wrn16 = res, wrn
        c.method.update(robust_teacher="wrn16", natural_teacher="resnet18")
    elif spec.teachers != "none":
        c.teachers.wrn16 = wrn
    if method != recipe:
        _registry().TERM_RECIPES[method].digits(c)
    return c


def paper_config(method: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `method` (a term such as 'igdm': added to a base method) for `arg` (see module doc)."""
    valid = baselines()
    if method not in valid:
        raise ConfigError(f"No paper recipe for {method!r}. Valid: {', '.join(valid)}.")
    parts = [p.strip() for p in (arg or "cifar10,resnet18").split(",") if p.strip()]
    base = None
    term_recipe = _registry().TERM_RECIPES.get(method)
    bases = term_bases(method) if term_recipe else ()
    if term_recipe:
        base = parts.pop() if parts and parts[-1] in bases else term_recipe.default_base
    if parts == ["digits"]:
        return _digits(method, base)
    if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in STUDENTS:
        extra = f"[,{'|'.join(bases)}]" if term_recipe else ""
        raise ConfigError(f"Config argument {arg!r} for {method}: expected '<dataset>,<student>{extra}' with dataset "
                          f"{' | '.join(DATASETS)} and student {' | '.join(STUDENTS)}, or 'digits{extra}'.")
    return _cifar(method, parts[0], parts[1], base)
