"""SA-MDRAD ablation: one teacher (WRN-34-10) instead of three.

  sa-mdrad distill --config=configs/ablations/single_teacher.py:cifar10,resnet18 --workdir=runs/ablation_single_teacher
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("single_teacher", arg)
