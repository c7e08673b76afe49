"""Paper table: every method on cifar10 with a resnet18 student, 3 seeds (sa_mdrad_jax/grid_presets.py).

  python experiments/run_grid.py --grid=experiments/grids/cifar10_resnet18.py
"""
from sa_mdrad_jax.grid_presets import paper_grid


def get_grid():
    return paper_grid("cifar10", "resnet18")
