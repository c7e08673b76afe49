"""Every method on digits with 3 seeds, small enough for a 2-core CPU (sa_mdrad_jax/grid_presets.py).

  python experiments/run_grid.py --grid=experiments/grids/digits.py

Shrunk from the paper protocol: 8×8 digits (1,797 scans), a resnet_tiny student (8-16-32-64
channels), teachers ResNet-18 / WRN-16-4 at width 0.25 (6 epochs; the robust teacher is a PGD-AT
ResNet-18 ×0.25), students 4 epochs of batch 64, PGD-3 training attack, ε = 32/255 (digits pixels
move in steps of 16/255: 8/255 does not separate the methods), per-epoch PGD-20 on 200 test points,
final evaluation on the first 200 test points.
"""
from sa_mdrad_jax.grid_presets import digits_grid


def get_grid():
    return digits_grid()
