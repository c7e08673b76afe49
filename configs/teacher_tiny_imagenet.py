"""Standard (natural) training of a Tiny-ImageNet (64x64, 200 classes) teacher.

Prepare the data once: sa-mdrad prepare --dataset=tiny_imagenet --data_dir=... [--manual_dir=...]
"""
from sa_mdrad_jax.config import base_config


def get_config(model: str = "resnet18"):
    c = base_config()
    c.dataset.name = "tiny_imagenet"
    c.model.name = model
    c.model.normalize = "tiny_imagenet"
    c.train.epochs = 200
    c.optim.update(lr=0.1, weight_decay=5e-4, schedule="cosine", boundaries=())
    return c
