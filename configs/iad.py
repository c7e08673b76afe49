"""iad — the paper's training setting (its Recipe and sources: sa_mdrad_jax/methods/iad.py).

  sa-mdrad distill --config=configs/iad.py:cifar10,resnet18 --workdir=runs/iad_c10_r18 \\
      --config.teachers.<key>.workdir=<teacher checkpoint workdir>
  Arguments: cifar10|cifar100 , resnet18|mobilenetv2   — or  digits  (the quickstart's teachers).
"""
from sa_mdrad_jax.methods.recipes import paper_config


def get_config(arg: str = "cifar10,resnet18"):
    return paper_config("iad", arg)
