"""SA-MDRAD's validation choice on the TEST split, beside every method of the converged digits grid.

  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_chosen.py

The configuration is the one `grid_presets.chosen_defaults` picks from the committed finalists
(experiments/results/sa_mdrad_finalists). It runs on the converged digits protocol with the converged
grid's evaluation (clean, FGSM, PGD-20, CW∞, standard AutoAttack on all 360 test digits), 5 seeds.
Seeds 0-2 are the sweep's own runs of that label (their best-validation checkpoints; only the test
evaluation is new) and seeds 3-4 train here. Every method of the converged grid is borrowed: their committed test
results are copied from experiments/results/digits_converged, never re-trained, and the report's
paired differences to PGD-AT are over the same seeds.
"""
from sa_mdrad_jax.grid_presets import sa_mdrad_chosen_grid


def get_grid():
    return sa_mdrad_chosen_grid()
