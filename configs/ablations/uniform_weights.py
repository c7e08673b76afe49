"""SA-MDRAD ablation: every teacher weighted 1/K on every sample (no confidence-aware weights).

  sa-mdrad distill --config=configs/ablations/uniform_weights.py:cifar10,resnet18 --workdir=runs/ablation_uniform_weights
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("uniform_weights", arg)
