"""Every method on digits in its paper's setting, until validation PGD-20 has plateaued; 5 seeds.

  python experiments/run_grid.py --grid=experiments/grids/digits_converged.py

What each run is (sa_mdrad_jax/grid_presets.py: digits_converged_grid):

* data: scikit-learn digits at their native 8×8; 287 of the 1,437 training digits held out as a
  stratified validation split (fixed seed); the 360 test digits are read only by the final evaluation.
* student: resnet_tiny (8-16-32-64 channels) for every method.
* teachers, as in the papers: ARD, IAD, RSLAD, AdaAD and AdaAD+IGDM distil from one adversarially
  trained teacher larger than the student (PGD-AT ResNet-18 ×0.25, trained by this grid with the
  same attack and schedule, its best validation-PGD-20 checkpoint); MTARD from that robust teacher
  (on x′) and the natural ResNet-18 ×0.25 (on x); SA-MDRAD from its two heterogeneous natural
  teachers (ResNet-18 ×0.25, WRN-16-4 ×0.25, best validation-accuracy checkpoints); PGD-AT,
  TRADES and natural training alone.
* attack: PGD-10 of 2.5·ε/10 at ε = 32/255 (digits' pixels move in steps of 16/255; at 8/255
  natural models stay robust); TRADES its own 0.007/0.031·ε steps and its reference BN order.
* schedule: each paper's piecewise schedule scaled to the run (decays at the same fractions of
  training, the paper's weight decay; SA-MDRAD the RSLAD/MTARD schedule of its config), SGD
  momentum 0.9, batch 64, LR 0.05 (0.1 at batch 128, scaled linearly). IAD's introspection starts
  at 60/200 of the run; IGDM's ramp spans the run (e_ref = epochs) and AdaAD+IGDM uses the IGDM
  scripts' weight decay 2e-4 and batchmean KL.
* epochs: 60 for every student (every schedule scaled to 60), 40 for the teachers. The 40-epoch
  grid (experiments/results/digits_converged_40) left six methods still rising over their last 10
  epochs; the 60-epoch check (experiments/grids/digits_epochs_check.py,
  experiments/results/digits_converged_60) found ARD, IAD, MTARD and RSLAD 2.8–5.6 validation PGD-20 points better at 60
  and the checked methods flat over epochs 41–60; each run's plateau at 60 is checked again on its
  own curve (the "Convergence" table of tables.md: each seed's validation PGD-20 over epochs 51–60
  minus 41–50). The
  teachers' validation curves were flat by 40 (natural: clean 98.3 → 98.6 %, robust: PGD-20
  84.1 → 85.3 % from epochs 21–30 to 31–40), so they are not retrained. The teachers every run now
  distils from were re-trained from the same configs on a second machine (the first one's were lost;
  experiments/results/digits_converged_machine1) and are as flat: natural ResNet-18 ×0.25 clean
  97.3 → 97.2 %, WRN-16-4 ×0.25 98.6 → 98.7 %, robust PGD-20 88.0 → 88.3 %. Their weights are
  committed (experiments/results/digits_converged/teachers/*.msgpack; `--reuse_results` restores them).
* selection: every epoch, clean and PGD-20 accuracy on the whole validation split; the checkpoint
  with the best validation PGD-20 accuracy is kept (with the last) and evaluated.
* evaluation (test split, once): clean, FGSM, PGD-20, CW∞-30 and standard AutoAttack on all 360
  test digits; mean ± std over 5 seeds and the paired difference to PGD-AT. The three teachers'
  checkpoints that the students load get the same evaluation, after the students (what a distilled
  student can reach; `evaluate_teachers`).
"""
from sa_mdrad_jax.grid_presets import digits_converged_grid


def get_grid():
    return digits_converged_grid()
