"""The converged digits comparison of the robust-teacher methods, re-run with a stronger teacher.
Step 2 of 2 (run experiments/grids/digits_teacher_candidates.py first).

  python experiments/run_grid.py --grid=experiments/grids/digits_strong_teacher.py

ARD, IAD, RSLAD, MTARD, AdaAD and AdaAD+IGDM as in experiments/grids/digits_converged.py (student,
attack, schedules, 60 epochs, best validation checkpoint, the test evaluation incl. AutoAttack on all
360 test digits), except that the robust teacher is the strongest candidate of the candidates grid
by validation PGD-20 (MTARD's natural teacher is unchanged). Seeds 0–2, paired with the converged
grid's own PGD-AT runs of the same seeds (`borrowed`: their committed test evaluations are copied from
experiments/results/digits_converged; they are never trained here). The teacher's
test evaluation is tabulated with the students. Runs live in `<method>_strong_teacher` directories of
the converged grid's root; the teacher's weights are committed under
experiments/results/digits_strong_teacher/teachers (`--reuse_results` restores them).
"""
from sa_mdrad_jax.grid_presets import digits_strong_teacher_grid


def get_grid():
    return digits_strong_teacher_grid()
