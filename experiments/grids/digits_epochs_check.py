"""Is 40 epochs enough? The converged digits protocol at 60 epochs (every schedule scaled to 60),
seed 0, for the methods whose validation PGD-20 still rose over the last 10 of 40 epochs (by more
than 1.5 points, read from the committed 40-epoch metrics: TRADES, ARD, IAD, RSLAD, MTARD, SA-MDRAD;
AdaAD's +1.1 stays below), distilling from the same 40-epoch teachers; scored on the validation
split only.

  python experiments/run_grid.py --grid=experiments/grids/digits_epochs_check.py

Compare each method's best validation PGD-20 here with its 40-epoch run
(experiments/results/digits_converged/metrics/*_seed0.jsonl): the epoch count of the converged grid
goes up if a longer run is clearly better (more than the ~2-point spread of a plateau; one validation
digit is 0.35 points).
"""
from sa_mdrad_jax.grid_presets import digits_epochs_check_grid


def get_grid():
    return digits_epochs_check_grid()
