"""pgd_at — the paper's training setting (its Recipe and sources: sa_mdrad_jax/methods/pgd_at.py).

  sa-mdrad distill --config=configs/pgd_at.py:cifar10,resnet18 --workdir=runs/pgd_at_c10_r18   (no teachers)
  Arguments: cifar10|cifar100 , resnet18|mobilenetv2   — or  digits  (the quickstart's teachers).
"""
from sa_mdrad_jax.methods.recipes import paper_config


def get_config(arg: str = "cifar10,resnet18"):
    return paper_config("pgd_at", arg)
