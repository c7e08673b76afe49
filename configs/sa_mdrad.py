"""SA-MDRAD on CIFAR-10 / CIFAR-100 / Tiny-ImageNet with a ResNet-18 or MobileNetV2 student
(sa_mdrad_jax/methods/sa_mdrad_recipes.py has the setting and its sources).

  for t in wrn34_10 resnet50 vgg16_bn; do
    sa-mdrad train --config=configs/teacher_cifar10.py:$t --workdir=runs/cifar10/teachers/$t
  done
  sa-mdrad distill --config=configs/sa_mdrad.py:cifar10,resnet18 --workdir=runs/cifar10/sa_mdrad_resnet18
"""
from sa_mdrad_jax.methods.sa_mdrad_recipes import sa_mdrad_config


def get_config(arg: str = "cifar10,resnet18"):
    return sa_mdrad_config(arg)
