"""IGDM added to a base method (default AdaAD, the paper's headline pairing), in the base paper's
setting (sa_mdrad_jax/methods/recipes.py has the sources).

  sa-mdrad distill --config=configs/igdm.py:cifar10,resnet18 --workdir=runs/igdm_c10_r18 \\
      --config.teachers.<key>.workdir=<teacher checkpoint workdir>
  Arguments: cifar10|cifar100 , resnet18|mobilenetv2   — or  digits  (the quickstart's teachers);
  a third field picks the base method: adaad (default) | rslad | ard | iad | mtard, e.g. :cifar100,resnet18,rslad.
"""
from sa_mdrad_jax.methods.recipes import paper_config


def get_config(arg: str = "cifar10,resnet18"):
    return paper_config("igdm", arg)
