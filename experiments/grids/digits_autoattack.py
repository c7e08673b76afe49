"""Seed 0 of every method of the digits grid, evaluated with standard AutoAttack (100 points).

  python experiments/run_grid.py --grid=experiments/grids/digits.py             # trains (3 seeds)
  python experiments/run_grid.py --grid=experiments/grids/digits_autoattack.py  # + AutoAttack, seed 0

Same runs, same teachers, same checkpoints as experiments/grids/digits.py (a run it finds
unfinished it trains exactly as that grid would); the evaluation lives in each run's
`evaluation_autoattack/` and the tables in experiments/results/digits_autoattack/.
"""
from sa_mdrad_jax.grid_presets import digits_autoattack_grid


def get_grid():
    return digits_autoattack_grid()
