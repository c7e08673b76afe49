"""Paper table: every method on Tiny-ImageNet (64×64) with a ResNet-18 student, 3 seeds.

  python experiments/run_grid.py --grid=experiments/grids/tiny_imagenet_resnet18.py
"""
from sa_mdrad_jax.grid_presets import paper_grid


def get_grid():
    return paper_grid("tiny_imagenet", "resnet18")
