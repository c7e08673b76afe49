"""SA-MDRAD's options (methods.md §2) varied one at a time from the default, on the converged digits
protocol (experiments/grids/digits_converged.py: same teachers, data, attack, schedule, epochs), 3 seeds,
scored on the VALIDATION split (clean and PGD-20 of each run's best-validation checkpoint); the test
split is not read.

  python experiments/run_grid.py --grid=experiments/grids/sa_mdrad_sweep.py

Labels are 'sa_mdrad@<option>=<value>' ('sa_mdrad' = the defaults). The SA-MDRAD default runs are the
digits_converged grid's own sa_mdrad runs (same root, same config): they are trained once. PGD-AT (the
clean-accuracy bar a new default must not fall below) trains in its own `pgd_at_sweep` directories:
the converged grid's PGD-AT seeds 0-1 were trained on an earlier machine and only their test results
survive, which a validation-split sweep cannot use.
"""
from sa_mdrad_jax.grid_presets import sa_mdrad_sweep_grid


def get_grid():
    return sa_mdrad_sweep_grid()
