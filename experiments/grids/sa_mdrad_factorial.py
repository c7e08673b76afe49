"""The SA-MDRAD options that mattered most in the one-at-a-time sweep, combined: every combination of
the 3 options whose best value raised validation PGD-20 most above the defaults (each at the default
or that value, 2^3 labels; the all-default and single-option labels are the sweep's own runs), on the
converged digits protocol, 3 seeds, scored on the VALIDATION split. The options are read from the
committed sweep results (experiments/results/sa_mdrad_sweep), so run the sweep first:

  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_sweep.py
  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_factorial.py

Labels are 'sa_mdrad@<option>=<value>,<option>=<value>'.
"""
from sa_mdrad_jax.grid_presets import sa_mdrad_factorial_grid


def get_grid():
    return sa_mdrad_factorial_grid()
