"""Standard (natural) training of a CIFAR-100 teacher.

  sa-mdrad train --config=configs/teacher_cifar100.py:wrn34_10 --workdir=runs/c100_wrn
"""
from sa_mdrad_jax.config import base_config


def get_config(model: str = "resnet18"):
    c = base_config()
    c.dataset.name = "cifar100"
    c.model.name = model
    c.model.normalize = "cifar100"
    c.train.epochs = 200
    c.optim.update(lr=0.1, weight_decay=5e-4, schedule="piecewise", boundaries=(100, 150))
    return c
