"""Each baseline paper's training setting as a distillation config (`configs/<method>.py`).

    config = paper_config("rslad", "cifar100,mobilenetv2")

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
BASELINES = ("pgd_at", "trades", "ard", "iad", "rslad", "mtard", "adaad", "igdm")
IGDM_BASES = ("adaad", "rslad", "ard", "iad", "mtard")

# (epochs, LR-decay boundaries in 0-based epochs, weight decay); lr 0.1, SGD momentum 0.9, batch 128.
SCHEDULES = {
    # train_trades_cifar10.py: 76 epochs, lr ×0.1 from (1-based) epochs 75, 90, 100; wd 2e-4.
    "trades": (76, (74, 89, 99), 2e-4),
    # PGD-AT (Madry et al.) with the schedule of Rice et al. 2020: 200 epochs, ×0.1 at 100 and 150, wd 5e-4.
    "pgd_at": (200, (100, 150), 5e-4),
    # ARD / IAD: 200 epochs, one decay (0.1 -> 0.01) at epoch 100, wd 2e-4 (methods.md §3).
    "ard": (200, (100,), 2e-4),
    "iad": (200, (100,), 2e-4),
    # RSLAD / MTARD: 300 epochs, ×0.1 after epochs 215, 260, 285, wd 2e-4.
    "rslad": (300, (215, 260, 285), 2e-4),
    "mtard": (300, (215, 260, 285), 2e-4),
    # AdaAD official code: 200 epochs, ×0.1 after 100 and 150, wd 5e-4.
    "adaad": (200, (100, 150), 5e-4),
}


def _robust_teachers(method: str, dataset: str) -> dict:
    """{key: model kwargs} of the robust teacher(s) each paper distils from."""
    if method in ("ard", "iad"):
        # ARD / IAD: adversarially (PGD) trained WRN-34-10 teacher.
        return {"wrn34_10_at": dict(name="wrn34_10")}
    if method in ("rslad", "mtard"):
        # RSLAD / MTARD: TRADES-trained WRN-34-10 on CIFAR-10. On CIFAR-100 the papers use
        # WRN-70-16 (Gowal et al. 2020), which the zoo lacks: a robust WRN-34-10 stands in.
        return {"wrn34_10_trades" if dataset == "cifar10" else "wrn34_10_robust": dict(name="wrn34_10")}
    if method == "adaad":
        # AdaAD: robust WRN-34-20 (CIFAR-10) / WRN-34-10 (CIFAR-100) of Huang et al. 2021
        # (arXiv:2111.02331). The zoo's WRN-34-20 is wrn34_10 at width 2 (its stem has 32 channels,
        # the paper's 16), so importing the published WRN-34-20 weights needs a zoo entry of its own.
        if dataset == "cifar10":
            return {"wrn34_20_robust": dict(name="wrn34_10", width=2.0)}
        return {"wrn34_10_robust": dict(name="wrn34_10")}
    return {}


def _cifar(method: str, dataset: str, student: str, base: str | None) -> ml_collections.ConfigDict:
    recipe = base or method
    c = distill_config(recipe)
    num_classes = 10 if dataset == "cifar10" else 100
    epochs, boundaries, wd = SCHEDULES[recipe]
    c.dataset.update(name=dataset)
    c.model.update(name=student, normalize="")
    c.train.update(epochs=epochs, batch_size=128)
    c.optim.update(lr=0.1, momentum=0.9, weight_decay=wd, schedule="piecewise", boundaries=boundaries, decay=0.1)
    m = c.method
    if recipe == "trades":
        m.update(eps=0.031, step_size=0.007, steps=10)   # train_trades_cifar10.py
    if recipe in ("ard", "iad") or (recipe == "adaad" and dataset == "cifar10"):
        m.kl_scale = 1.0 / num_classes                   # the reference codes' nn.KLDivLoss() 'mean' reduction
    elif recipe == "adaad":
        m.kl_scale = 1.0                                 # AdaAD main.py l. 347-351: CIFAR-100 branch is batchmean
    for key, model in _robust_teachers(recipe, dataset).items():
        c.teachers[key] = teacher_entry(workdir="", **model)
    if recipe == "mtard":
        # MTARD: the robust teacher on x', a natural (standard) teacher on x. The official script
        # instantiates a WRN-34-10 for both; the natural one comes from the teacher command.
        robust = next(iter(c.teachers.keys()))
        c.teachers.wrn34_10_natural = teacher_entry("wrn34_10", "", normalize=dataset)
        m.update(robust_teacher=robust, natural_teacher="wrn34_10_natural")
    if recipe == "trades":
        m.bn_forwards = 3                                # train_trades_cifar10.py: S(x), S(x'), S(x) in train mode
    if method == "igdm":
        m.igdm.enabled = True                            # α = 20, β = γ = 1, E_ref = 200 (the reference)
        # The IGDM authors' scripts, read side by side with the base methods' (IGDM repository):
        # weight decay 2e-4 for every base (AdaAD's own code uses 5e-4) ...
        c.optim.weight_decay = 2e-4
        if recipe == "rslad":
            m.igdm.e_ref = 300.0                         # rslad_IGDM_cifar100.py l. 124: epoch/300 (its 300-epoch run)
            c.optim.boundaries = (210, 258, 285)         # ... and RSLAD+IGDM decays after 210/258/285 (RSLAD: 215/260/285)
        if recipe == "adaad":
            # ... and batchmean for both the AdaAD KL and the IGDM term on CIFAR-10 as on CIFAR-100
            # (AdaAD's own CIFAR-10 code uses 'mean', i.e. ×1/10): AdaAD+IGDM follows the IGDM code,
            # plain AdaAD its own (docs/parity.md).
            m.kl_scale = 1.0
    return c


def _digits(method: str, base: str | None) -> ml_collections.ConfigDict:
    """The digits setup of configs/sa_mdrad_digits.py, distilling from the quickstart's two standard
    teachers (digits has no robust teacher: the WRN-16-4 stands in where a paper has one)."""
    recipe = base or method
    c = distill_config(recipe)
    c.dataset.update(name="digits", image_size=16, crop_pad=2, flip=False)
    c.model.update(name="resnet18", width=0.25, normalize="digits")
    c.train.update(epochs=6, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.log.every_steps = 20
    if recipe == "iad":
        c.method.start_epoch = 2       # IAD's gate at 60 of 200 epochs, scaled to the 6-epoch run
    wrn = teacher_entry("wrn16_4", "workdir/quickstart/teachers/wrn16", width=0.25, normalize="digits")
    res = teacher_entry("resnet18", "workdir/quickstart/teachers/resnet18", width=0.25, normalize="digits")
    if recipe == "mtard":
        c.teachers.resnet18, c.teachers.wrn16 = res, wrn
        c.method.update(robust_teacher="wrn16", natural_teacher="resnet18")
    elif recipe not in ("pgd_at", "trades"):
        c.teachers.wrn16 = wrn
    if method == "igdm":
        c.method.igdm.enabled = True
    return c


def paper_config(method: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """The config of `method` ('igdm': IGDM added to a base method) for `arg` (see module doc)."""
    if method not in BASELINES:
        raise ConfigError(f"No paper recipe for {method!r}. Valid: {', '.join(BASELINES)}.")
    parts = [p.strip() for p in (arg or "cifar10,resnet18").split(",") if p.strip()]
    base = None
    if method == "igdm":
        base = parts.pop() if parts and parts[-1] in IGDM_BASES else "adaad"
    if parts == ["digits"]:
        return _digits(method, base)
    if len(parts) != 2 or parts[0] not in DATASETS or parts[1] not in STUDENTS:
        extra = f"[,{'|'.join(IGDM_BASES)}]" if method == "igdm" else ""
        raise ConfigError(f"Config argument {arg!r} for {method}: expected '<dataset>,<student>{extra}' with dataset "
                          f"{' | '.join(DATASETS)} and student {' | '.join(STUDENTS)}, or 'digits{extra}'.")
    return _cifar(method, parts[0], parts[1], base)
