"""PGD-AT, TRADES, RSLAD, AdaAD and SA-MDRAD on Fashion-MNIST at ε = 0.1, sized to a 2-core CPU.

  python experiments/run_grid.py --grid=experiments/grids/fashion_mnist.py

What each run is (sa_mdrad_jax/grid_presets.py: fashion_mnist_grid, built by the same
`converged_grid` as the digits grid):

* data: the official Fashion-MNIST idx files at 28×28 (grey repeated to 3 channels, normalised with
  the training split's mean 0.2860 / std 0.3530); 1,000 training images held out as a stratified
  validation split (fixed seed); a stratified 20,000 of the other 59,000 train (dataset.train_size);
  random crop after 2-pixel padding and horizontal flips. The test split is read only by the final
  evaluation.
* models: every network halves the input in its stem (`stem_stride=2`: 28×28 → 14×14 feature
  maps), a third of the cost of each gradient (measured: input gradient 0.37 vs 1.15 ms per image
  for the student) — what AutoAttack on 1,000 points of five students needs on this CPU.
  Student resnet_tiny (78 k parameters). Robust teacher of RSLAD and AdaAD: resnet_tiny ×2
  (309 k), PGD-AT, its best validation-PGD-20 checkpoint. SA-MDRAD's heterogeneous natural
  teachers: resnet_tiny ×2 (ResNet) and vgg_tiny ×4 (VGG, 95 k), best validation-accuracy
  checkpoints. PGD-AT, TRADES and the natural reference train alone.
* attack: PGD-10 of 2.5·ε/10 = 0.025 at ε = 0.1 (TRADES its own 0.007/0.031·ε steps and
  reference BN order).
* schedule: each paper's piecewise schedule scaled to 10 epochs (teachers 10), SGD momentum 0.9,
  batch 128, LR 0.1 (as the papers at CIFAR); selection every epoch on validation PGD-20 (500
  points) and clean accuracy (1,000 points).
* evaluation (test split, once, best validation checkpoint): clean, FGSM, PGD-20 and CW∞-30 on all
  10,000 test images, standard AutoAttack on the first 1,000; one seed (the budget: AutoAttack
  alone is ≈ 25 min of one core per robust student). The teachers' checkpoints that students load
  get clean, FGSM, PGD-20 and CW∞-30 on the same 10,000 images after the students (`evaluate_teachers`;
  no AutoAttack: on the ×2 robust teacher it would cost about four students' worth).

Sizing, measured before choosing (one core each, the other busy, 2026-12-03 19:28 UTC, 2,560-image
probe of this grid, steady-state img/s): natural student 2,059, PGD-AT 215, TRADES 178, RSLAD 180,
AdaAD 58, SA-MDRAD 126; teachers: natural resnet_tiny ×2 658, vgg_tiny ×4 267, PGD-AT resnet_tiny ×2
78. At 20,000 images × 10 epochs: teachers ≈ 1.0 core-hour, students ≈ 2.3, evaluation ≈ 2.3
(AutoAttack dominating) — ≈ 5.6 core-hours, about 3 hours with two runners.
"""
from sa_mdrad_jax.grid_presets import fashion_mnist_grid


def get_grid():
    return fashion_mnist_grid()
