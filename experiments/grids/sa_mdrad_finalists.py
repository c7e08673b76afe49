"""AutoAttack for the SA-MDRAD finalists on the VALIDATION split: the 3 best configurations by
validation PGD-20 over the sweep and the factorial (read from their committed results), the defaults
and PGD-AT, each run's best-validation checkpoint (the runs are the sweep's and factorial's own; only
the evaluation is new, in each workdir's evaluation_validation_autoattack/). The test split is not read.

  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_finalists.py

The new defaults are then read from these results by `grid_presets.chosen_defaults` (rule fixed
before the finalists ran): the best mean validation AutoAttack among the finalists whose mean
validation clean accuracy is not below PGD-AT's, keeping rectification and adaptive fusion on.
"""
from sa_mdrad_jax.grid_presets import sa_mdrad_finalists_grid


def get_grid():
    return sa_mdrad_finalists_grid()
