"""The train state: everything a resumed run needs, as one pytree of arrays."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


class TrainState(flax.struct.PyTreeNode):
    """Student (or teacher-in-training) state.

    `key` is the run's base PRNG key (raw uint32[2]); every random draw of step `s` comes from
    `fold_in(key, s)`, so a resumed run draws exactly what an uninterrupted one would.
    `extra` holds method state (e.g. trainable connectors or loss-balance weights) so that it
    is checkpointed with the rest; the natural method leaves it empty.
    """
    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    key: jax.Array
    extra: Any = flax.struct.field(default_factory=dict)

    @property
    def variables(self):
        return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model, tx: optax.GradientTransformation, image_shape, seed: int) -> TrainState:
    """Initialises variables on a dummy batch of `image_shape` (H, W, C)."""
    key = jax.random.PRNGKey(seed)
    init_key, run_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        key=run_key,
    )
