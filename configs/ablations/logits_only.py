"""SA-MDRAD ablation: no feature term (beta = 0): no connectors, KL on logits only.

  sa-mdrad distill --config=configs/ablations/logits_only.py:cifar10,resnet18 --workdir=runs/ablation_logits_only
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("logits_only", arg)
