"""Data placed on the devices once; batches are gathered inside jitted code.

A split lives on the mesh as a uint8 array sharded along its first axis over the `'data'` axis:
device d holds its own contiguous block of `per_device` examples, loaded only by the process that
owns that device. Each epoch every device draws a permutation of its block from
`fold_in(fold_in(key, epoch), device)`; step i takes rows [i·b, (i+1)·b) of it. Gathering is
local to each device: no communication and no host round trip inside an epoch.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


class DeviceSplit(NamedTuple):
    images: jax.Array   # uint8 [D*m, H, W, C], sharded P('data')
    labels: jax.Array   # int32 [D*m]
    mask: jax.Array     # bool [D*m]; False marks padding (evaluation splits only)
    per_device: int     # m: examples held by each device


def _process_agree(value: int, reduce) -> int:
    if jax.process_count() == 1:
        return value
    return int(reduce(multihost_utils.process_allgather(np.asarray(value))))


def put_split(mesh, images: np.ndarray, labels: np.ndarray, *, drop_remainder: bool,
              multiple_of: int = 1) -> DeviceSplit:
    """Places this process's shard of a split on its devices of `mesh`.

    drop_remainder=True (training): every device gets the same number m of real examples and the
    few that do not fit are dropped. False (evaluation): the shard is padded with masked
    examples to m, a multiple of `multiple_of`, so that every example is counted exactly once.
    """
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    n = len(images)
    if drop_remainder:
        per_device = _process_agree(n // local_devices, np.min)
    else:
        per_device = _process_agree(-(-n // local_devices), np.max)
        per_device = -(-per_device // multiple_of) * multiple_of
    total = per_device * local_devices
    if per_device == 0:
        raise ValueError(f"{n} examples cannot be spread over {local_devices} devices.")
    mask = np.arange(total) < n
    keep = min(n, total)
    pad = total - keep
    images = np.concatenate([images[:keep], np.zeros((pad, *images.shape[1:]), np.uint8)])
    labels = np.concatenate([labels[:keep], np.zeros((pad,), np.int32)]).astype(np.int32)
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    put = functools.partial(jax.make_array_from_process_local_data, sharding)
    return DeviceSplit(put(images), put(labels), put(mask), per_device)


@functools.partial(jax.jit, static_argnames=("mesh", "per_device"))
def epoch_order(key: jax.Array, epoch: jax.Array, *, mesh, per_device: int) -> jax.Array:
    """int32 [D*m] sharded P('data'): each device's own permutation of its block for `epoch`."""
    def local(key, epoch):
        device = jax.lax.axis_index(DATA_AXIS)
        key = jax.random.fold_in(jax.random.fold_in(key, epoch), device)
        return jax.random.permutation(key, per_device).astype(jnp.int32)
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P()), out_specs=P(DATA_AXIS),
                         check_vma=False)(key, epoch)


def gather_batch(split: DeviceSplit, order: jax.Array, index: jax.Array, *, mesh,
                 per_device_batch: int) -> dict:
    """The `index`-th batch of the epoch ({'image', 'label'}, sharded P('data')); jittable."""
    def local(images, labels, order):
        rows = jax.lax.dynamic_slice_in_dim(order, index * per_device_batch, per_device_batch)
        return {"image": images[rows], "label": labels[rows]}
    spec = P(DATA_AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(
        split.images, split.labels, order)


def eval_batch(split: DeviceSplit, index: jax.Array, *, mesh, per_device_batch: int) -> dict:
    """The `index`-th contiguous evaluation batch, with its padding mask; jittable."""
    def local(images, labels, mask):
        take = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=index * per_device_batch,
                                 slice_size=per_device_batch)
        return {"image": take(images), "label": take(labels), "mask": take(mask)}
    spec = P(DATA_AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec)(
        split.images, split.labels, split.mask)
