"""On-device augmentation: random crop after zero padding, and random horizontal flip.

The random draws are separate from their application: :func:`sample_augment_params`
returns plain arrays indexed by batch position, so a training step can draw them for
the whole global batch from one key and slice them per device before :func:`augment`.
Everything is jittable and vmappable (no Python loop over the batch).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def sample_augment_params(key: jax.Array, batch_size: int, pad: int = 4) -> dict[str, jax.Array]:
    """{'offsets': int32 [B, 2] (row, col) in [0, 2*pad], 'flips': bool [B]}."""
    k_off, k_flip = jax.random.split(key)
    offsets = jax.random.randint(k_off, (batch_size, 2), 0, 2 * pad + 1, dtype=jnp.int32)
    flips = jax.random.bernoulli(k_flip, 0.5, (batch_size,))
    return {"offsets": offsets, "flips": flips}


def to_float(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [0, 1]."""
    return jnp.asarray(images_uint8).astype(jnp.float32) / 255.0


def _augment_one(image: jax.Array, offset: jax.Array, flip: jax.Array, pad: int) -> jax.Array:
    h, w, c = image.shape
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    crop = lax.dynamic_slice(padded, (offset[0], offset[1], jnp.zeros((), offset.dtype)), (h, w, c))
    return jnp.where(flip, crop[:, ::-1, :], crop)


def augment(images_uint8: jax.Array, params: dict[str, jax.Array], pad: int = 4) -> jax.Array:
    """float32 [B, H, W, C] in [0, 1]: zero-pad by ``pad``, crop HxW at ``offsets``, flip where ``flips``.

    Offsets ``(pad, pad)`` with no flip is the identity; ``(0, 0)`` moves the content
    ``pad`` pixels down and right, filling the top/left border with zeros.
    """
    images = to_float(images_uint8)
    offsets = jnp.asarray(params["offsets"], jnp.int32)
    flips = jnp.asarray(params["flips"], jnp.bool_)
    return jax.vmap(functools.partial(_augment_one, pad=pad))(images, offsets, flips)
