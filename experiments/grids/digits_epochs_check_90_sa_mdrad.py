"""Is 60 epochs enough for SA-MDRAD at its defaults (gamma=1)? The converged digits protocol at 90
epochs (its step schedule scaled again), seeds 0 and 3, scored on the validation split only.

  python experiments/run_grid.py --grid=experiments/grids/digits_epochs_check_90_sa_mdrad.py

Why: in the converged grid's convergence table the default SA-MDRAD gained more than 1.5 validation
PGD-20 points over its last 10 of 60 epochs on seeds 0 (+2.2), 1 (+1.7) and 3 (+2.1). A longer run
tells whether the 60-epoch runs stopped early: compare each seed's best validation PGD-20 here with its
60-epoch run (experiments/results/digits_converged/metrics/digits_resnet_tiny_sa_mdrad_seed{0,3}.jsonl).
Seeds 0 and 3 are the two that rose most. Its own results directory (the TRADES check is
digits_epochs_check_90.py); the runs share that grid's root.
"""
from sa_mdrad_jax.grid_presets import digits_epochs_check_grid


def get_grid():
    grid = digits_epochs_check_grid(90, methods=("sa_mdrad",), seeds=(0, 3))
    grid.update(results="experiments/results/digits_converged_90_sa_mdrad",
                name="digits epochs check: SA-MDRAD (defaults), 90 epochs, seeds 0, 3, validation split")
    return grid
