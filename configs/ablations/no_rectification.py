"""SA-MDRAD ablation: Rect switched off: teachers' wrong predictions are distilled as they are.

  sa-mdrad distill --config=configs/ablations/no_rectification.py:cifar10,resnet18 --workdir=runs/ablation_no_rectification
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("no_rectification", arg)
