"""SA-MDRAD's experiment settings and ablations as configs (`configs/sa_mdrad.py`, `configs/ablations/`).

    config = sa_mdrad_config("cifar100,mobilenetv2")
    config = ablation_config("no_rectification", "cifar10,resnet18")

The argument is `<dataset>,<student>`: dataset cifar10 | cifar100 | tiny_imagenet, student
resnet18 | mobilenetv2. Teachers are methods.md §2's default set of standard (non-robust)
heterogeneous networks — WRN-34-10, ResNet-50, VGG-16-BN — each trained first by the teacher
config of the same dataset into `runs/<dataset>/teachers/<model>` (or imported from PyTorch).
Schedule: the RSLAD/MTARD recipe, 300 epochs, lr 0.1 ×0.1 after 215, 260, 285, wd 2e-4, batch
128; Tiny-ImageNet (64×64) 200 epochs, ×0.1 after 100 and 150. ε = 8/255, PGD-10 of 2/255. The
best checkpoint is chosen by pgd20 accuracy on 1,000 images held out of the training split (never
on the test split). The method options are SA-MDRAD's library defaults (`sa_mdrad.DEFAULTS`:
methods.md §2's first guesses with γ = 1, the configuration chosen on the digits validation sweep;
docs/sa_mdrad_defaults.md).

Each ablation changes one option group of methods.md §2 and nothing else.
"""
from __future__ import annotations

import ml_collections

from sa_mdrad_jax.config import ConfigError, distill_config, teacher_entry

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
STUDENTS = ("resnet18", "mobilenetv2")
TEACHERS = ("wrn34_10", "resnet50", "vgg16_bn")


def sa_mdrad_config(arg: str = "cifar10,resnet18") -> ml_collections.ConfigDict:
    dataset, student = (arg.split(",") + [""])[:2]
    student = student or "resnet18"
    if dataset not in DATASETS or student not in STUDENTS:
        raise ConfigError(f"SA-MDRAD config argument {arg!r}: expected '<dataset>,<student>' with dataset in "
                          f"{', '.join(DATASETS)} and student in {', '.join(STUDENTS)}.")
    c = distill_config("sa_mdrad")
    c.dataset.name = dataset
    c.model.update(name=student, normalize=dataset)
    c.train.batch_size = 128
    if dataset == "tiny_imagenet":
        c.train.epochs = 200
        c.optim.update(lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="piecewise", boundaries=(100, 150))
    else:
        c.train.epochs = 300
        c.optim.update(lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="piecewise", boundaries=(215, 260, 285))
    c.dataset.validation_size = 1000   # held out of the training split: the best checkpoint is chosen on it
    c.eval.robust_points = 1000
    c.checkpoint.best_metric = "val_robust_accuracy"
    for t in TEACHERS:
        c.teachers[t] = teacher_entry(t, f"runs/{dataset}/teachers/{t}", normalize=dataset)
    return c


def _single_teacher(c):
    """Keeps the wide ResNet teacher (WRN-34-10 in the paper's set; on digits WRN-16-4), else the
    first one listed."""
    names = list(c.teachers)
    keep = next((n for n in names if c.teachers[n].model.name.startswith("wrn")), names[0])
    for name in names:
        if name != keep:
            del c.teachers[name]


ABLATIONS = {
    # Rect switched off: teachers' wrong predictions are distilled as they are.
    "no_rectification": lambda c: c.method.update(rectify="none"),
    # Every teacher weighted 1/K on every sample (no confidence-aware weighting).
    "uniform_weights": lambda c: c.method.update(weighting="uniform"),
    # No feature term (β = 0): no connectors, KL on logits only.
    "logits_only": lambda c: c.method.update(beta=0.0),
    # No logit KL (kl_scale = 0): the student learns from the feature term and
    # the hard-label term γ·CE(s_adv, y) only (γ = 1 by default).
    "features_only": lambda c: c.method.update(kl_scale=0.0),
    # One teacher (the WRN: WRN-34-10): CAW degenerates to w = 1 and the fusion to that teacher.
    "single_teacher": _single_teacher,
    # Teachers see clean inputs only: the adversarial branch's target is the fused clean target.
    "clean_teacher_inputs": lambda c: c.method.update(teacher_input_adv="clean"),
}


def ablation_config(name: str, arg: str = "cifar10,resnet18") -> ml_collections.ConfigDict:
    if name not in ABLATIONS:
        raise ConfigError(f"Unknown SA-MDRAD ablation {name!r}. Valid: {', '.join(ABLATIONS)}.")
    c = sa_mdrad_config(arg)
    ABLATIONS[name](c)
    return c
