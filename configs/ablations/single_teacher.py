"""SA-MDRAD ablation: One teacher only (WRN-34-10): CAW degenerates to w = 1, fusion to that teacher.

  sa-mdrad distill --config=configs/ablations/single_teacher.py:cifar10,resnet18 --workdir=runs/cifar10/ablation_single_teacher

Everything else is `configs/sa_mdrad.py` with the same '<dataset>,<student>' argument.
"""
import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "sa_mdrad_config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sa_mdrad.py"))
base = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(base)


def get_config(arg: str = "cifar10,resnet18"):
    c = base.get_config(arg)
    for name in list(c.teachers):
        if name != "wrn34_10":
            del c.teachers[name]
    return c
