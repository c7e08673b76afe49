"""SA-MDRAD ablation: No logit KL (kl_scale = 0): the student learns from the feature term only
(with the weights w^nat), plus nothing else (γ = 0).

  sa-mdrad distill --config=configs/ablations/features_only.py:cifar10,resnet18 --workdir=runs/cifar10/ablation_features_only

Everything else is `configs/sa_mdrad.py` with the same '<dataset>,<student>' argument.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "sa_mdrad_config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sa_mdrad.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config(arg: str = "cifar10,resnet18"):
    c = base.get_config(arg)
    c.method.kl_scale = 0.0
    return c
