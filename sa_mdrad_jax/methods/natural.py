"""Natural (standard) training: cross-entropy on clean inputs. Used to pre-train teachers."""
from __future__ import annotations

import jax

from sa_mdrad_jax.losses import cross_entropy


def natural_loss(model, params, batch_stats, images: jax.Array, labels: jax.Array, key: jax.Array):
    """Mean cross-entropy of the model in train mode; returns (loss, (logits, new_batch_stats))."""
    del key
    (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, mutable=["batch_stats"])
    loss = cross_entropy(logits, labels).mean()
    return loss, (logits, updates["batch_stats"])
