"""SA-MDRAD's ablations on the converged digits protocol, TEST split: each removes one component
from the current SA-MDRAD defaults (sa_mdrad_jax/methods/sa_mdrad_recipes.py: ABLATIONS, the same
functions as configs/ablations/) — no rectification, uniform teacher weights, logits only, features
only, one teacher (the WRN-16-4), clean teacher inputs — distilled from the converged grid's natural
teachers (its committed snapshots), 60 epochs, best-validation checkpoint, evaluated once on all 360
test digits (clean, FGSM, PGD-20, CW∞, standard AutoAttack), seeds 0–4 (the converged grid's five). The 'sa_mdrad' row is the
converged grid's own SA-MDRAD run, borrowed: its committed test evaluation is copied from
experiments/results/digits_converged (never trained here; run that grid first); the report pairs every
ablation with it over the same seeds.

  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_ablations.py

The defaults were settled first (experiments/grids/sa_mdrad_sweep.py and what follows it: γ = 1);
the ablations start from whatever the defaults are. Results: experiments/results/sa_mdrad_ablations/.
"""
from sa_mdrad_jax.grid_presets import sa_mdrad_ablation_grid


def get_grid():
    return sa_mdrad_ablation_grid()
