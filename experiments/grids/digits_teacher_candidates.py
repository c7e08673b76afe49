"""Can digits have a robust teacher stronger than the student's own PGD-AT? Step 1 of 2.

  python experiments/run_grid.py --grid=experiments/grids/digits_teacher_candidates.py
  python experiments/run_grid.py --grid=experiments/grids/digits_strong_teacher.py

The converged digits grid's robust teacher (PGD-AT ResNet-18 ×0.25, 40 epochs; the teacher of ARD,
IAD, RSLAD, MTARD, AdaAD and AdaAD+IGDM) scores 77.8 % under AutoAttack on test, below the PGD-AT
resnet_tiny student (82.3 ± 0.9 %), and its best validation PGD-20 (89.9 %) is below the student's
(seed 0: 92.3 %). In the papers the robust teacher (TRADES WRN-34-10) is more robust than what the
student reaches alone. This grid trains candidate teachers of the same architecture on the converged
protocol for 60 epochs (the students' count), seed 0: PGD-AT (the same recipe, longer) and TRADES
(the papers' robust-teacher recipe). Each is scored on the validation split only (clean and PGD-20
of its best-validation checkpoint); the stronger by validation PGD-20 becomes the teacher of
experiments/grids/digits_strong_teacher.py, which re-distils every robust-teacher method from it and
evaluates on test (sa_mdrad_jax/grid_presets.py: digits_teacher_candidates_grid, strongest_teacher).
"""
from sa_mdrad_jax.grid_presets import digits_teacher_candidates_grid


def get_grid():
    return digits_teacher_candidates_grid()
