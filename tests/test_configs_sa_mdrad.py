"""The SA-MDRAD experiment configs and their ablations load, validate and change what they say."""
from __future__ import annotations

import os

import pytest

from sa_mdrad_jax import config as config_lib
from sa_mdrad_jax.methods import make_method
from util import ROOT

CONFIGS = os.path.join(ROOT, "configs")
ARGS = [f"{d},{s}" for d in ("cifar10", "cifar100", "tiny_imagenet") for s in ("resnet18", "mobilenetv2")]
ABLATIONS = {
    "no_rectification": {"method.rectify": "none"},
    "uniform_weights": {"method.weighting": "uniform"},
    "logits_only": {"method.beta": 0.0},
    "features_only": {"method.kl_scale": 0.0},
    "clean_teacher_inputs": {"method.teacher_input_adv": "clean"},
    "single_teacher": {},  # checked below: only the WRN-34-10 teacher is left
}




def _leaves(config, prefix=""):
    out = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if hasattr(value, "items"):
            out.update(_leaves(value, key + "."))
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("arg", ARGS)
def test_sa_mdrad_config_builds_the_paper_setup(arg):
    dataset, student = arg.split(",")
    c = config_lib.load_config_file(os.path.join(CONFIGS, "sa_mdrad.py") + f":{arg}")
    config_lib.validate(c)
    method = make_method(c.method)
    assert method.name == "sa_mdrad" and method.connectors  # features on by default
    assert (c.dataset.name, c.model.name, c.model.normalize) == (dataset, student, dataset)
    assert sorted(t.model.name for t in c.teachers.values()) == ["resnet50", "vgg16_bn", "wrn34_10"]
    assert all(t.workdir == f"runs/{dataset}/teachers/{t.model.name}" for t in c.teachers.values())
    assert (c.method.eps, c.method.step_size, c.method.steps) == (8 / 255, 2 / 255, 10)
    assert c.train.epochs == (200 if dataset == "tiny_imagenet" else 300)
    assert tuple(c.optim.boundaries) == ((100, 150) if dataset == "tiny_imagenet" else (215, 260, 285))
    assert c.checkpoint.best_metric == "val_robust_accuracy" and c.eval.robust_points > 0
    assert c.dataset.validation_size == 1000   # selection on a held-out part of the training split


def test_unknown_dataset_or_student_is_refused_with_the_choices():
    with pytest.raises(config_lib.ConfigError, match="cifar100.*mobilenetv2"):
        config_lib.load_config_file(os.path.join(CONFIGS, "sa_mdrad.py") + ":svhn,resnet18")


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_changes_only_its_option_group(name):
    base = config_lib.load_config_file(os.path.join(CONFIGS, "sa_mdrad.py") + ":cifar100,mobilenetv2")
    c = config_lib.load_config_file(os.path.join(CONFIGS, "ablations", f"{name}.py") + ":cifar100,mobilenetv2")
    config_lib.validate(c)
    make_method(c.method)
    a, b = _leaves(base), _leaves(c)
    changed = {k: b[k] for k in b if k in a and a[k] != b[k]}
    if name == "single_teacher":
        assert list(c.teachers) == ["wrn34_10"] and changed == {}
        assert set(a) - set(b) == {k for k in a if k.startswith(("teachers.resnet50", "teachers.vgg16_bn"))}
    else:
        assert changed == ABLATIONS[name] and set(a) == set(b)
