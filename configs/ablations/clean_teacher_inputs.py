"""SA-MDRAD ablation: teachers see clean inputs only (teacher_input_adv = 'clean').

  sa-mdrad distill --config=configs/ablations/clean_teacher_inputs.py:cifar10,resnet18 --workdir=runs/ablation_clean_teacher_inputs
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("clean_teacher_inputs", arg)
