"""Standard (natural) training of a CIFAR-10 teacher.

  sa-mdrad train --config=configs/teacher_cifar10.py --config.model.name=wrn34_10 --workdir=runs/t_wrn
"""
from sa_mdrad_jax.config import base_config


def get_config(model: str = "resnet18"):
    c = base_config()
    c.dataset.name = "cifar10"
    c.model.name = model
    c.model.normalize = "cifar10"
    c.train.epochs = 200
    c.optim.update(lr=0.1, weight_decay=5e-4, schedule="piecewise", boundaries=(100, 150))
    return c
