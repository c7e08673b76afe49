"""Natural (standard) training: cross-entropy on clean inputs. Used to pre-train teachers."""
from __future__ import annotations

import jax
import optax


def natural_loss(model, params, batch_stats, images: jax.Array, labels: jax.Array, key: jax.Array):
    """Mean cross-entropy of the model in train mode; returns (loss, (logits, new_batch_stats))."""
    del key
    (logits, _), updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                       train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates["batch_stats"])
