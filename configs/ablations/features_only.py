"""SA-MDRAD ablation: no logit KL (kl_scale = 0): the student learns from the feature term and the
hard-label term γ·CE(s_adv, y) only (γ = 1 by default).

  sa-mdrad distill --config=configs/ablations/features_only.py:cifar10,resnet18 --workdir=runs/ablation_features_only
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import ablation_config


def get_config(arg: str = "cifar10,resnet18"):
    return ablation_config("features_only", arg)
