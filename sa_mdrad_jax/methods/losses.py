"""The methods' losses; they live in `sa_mdrad_jax/losses.py`, the one home of every loss."""
from sa_mdrad_jax.losses import (ce, cross_entropy, kl_batchmean, kl_per_example, mean_teacher_probs,  # noqa: F401
                                 softmax_target, teacher_target)
