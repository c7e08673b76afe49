"""The jitted, data-parallel train and eval steps.

Both are `jax.shard_map`s over the `'data'` mesh axis inside one `jax.jit`: the state is
replicated, the batch is split along its first axis, gradients are averaged with `pmean`, and
batch-norm statistics are either synchronised inside the model (`bn_axis_name='data'`, the
global-batch statistics a single device would compute) or averaged after the step.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from sa_mdrad_jax.data import augment as augment_lib
from sa_mdrad_jax.train import input as input_lib
from sa_mdrad_jax.train.state import TrainState

DATA = input_lib.DATA_AXIS

# loss_fn(params, batch_stats, images in [0,1], labels, key) -> (loss, (logits, new_batch_stats))
LossFn = Callable[..., tuple[jax.Array, tuple[jax.Array, dict]]]


def step_key(state: TrainState) -> jax.Array:
    return jax.random.fold_in(state.key, state.step)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, mesh, *, augment: bool = True,
                    pad: int = 4, flip: bool = True, sync_bn: bool = True):
    """Returns `train_step(state, batch, key) -> (state, metrics)`, pure and jit-compatible.

    `batch` holds uint8 images and int32 labels sharded P('data'). Random crop/flip parameters
    are drawn for the whole global batch from `key` and split with it, so the step computes the
    same thing on 1 device as on N. Metrics are global sums: loss·n, correct, n.
    """
    def local_step(state, images, labels, aug, key):
        x = augment_lib.augment(images, aug, pad=pad) if augment else augment_lib.to_float(images)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        # Differentiate w.r.t. a device-varying copy of the replicated parameters, so the gradient
        # is this device's own; the cross-device mean is then explicit (otherwise shard_map's
        # transpose of the implicit broadcast would already sum the gradients over devices).
        local_params = jax.lax.pcast(state.params, DATA, to="varying")
        (loss, (logits, batch_stats)), grads = grad_fn(local_params, state.batch_stats, x, labels, key)
        grads = jax.lax.pmean(grads, DATA)
        if not sync_bn:
            batch_stats = jax.lax.pmean(batch_stats, DATA)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        n = jnp.asarray(labels.shape[0], jnp.float32)
        metrics = {
            "loss_sum": jax.lax.psum(loss * n, DATA),
            "correct": jax.lax.psum(jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.float32), DATA),
            "count": jax.lax.psum(n, DATA),
        }
        state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
        return state, metrics

    sharded = jax.shard_map(
        local_step, mesh=mesh,
        in_specs=(P(), P(DATA), P(DATA), P(DATA), P()),
        out_specs=(P(), P()))

    def train_step(state: TrainState, batch: dict, key: jax.Array):
        aug = augment_lib.sample_augment_params(key, batch["label"].shape[0], pad=pad)
        if not flip:
            aug["flips"] = jnp.zeros_like(aug["flips"])
        return sharded(state, batch["image"], batch["label"], aug, key)

    return train_step


def make_eval_step(model, mesh):
    """Returns `eval_step(variables, batch) -> metrics` (global sums over unmasked examples)."""
    def local(variables, images, labels, mask):
        logits, _ = model.apply(variables, augment_lib.to_float(images), train=False)
        weight = mask.astype(jnp.float32)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {
            "loss_sum": jax.lax.psum(jnp.sum(loss * weight), DATA),
            "correct": jax.lax.psum(jnp.sum((jnp.argmax(logits, -1) == labels) * weight), DATA),
            "count": jax.lax.psum(jnp.sum(weight), DATA),
        }

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA), P(DATA), P(DATA)), out_specs=P())

    def eval_step(variables, batch):
        return sharded(variables, batch["image"], batch["label"], batch["mask"])

    return eval_step


def make_robust_eval_step(model, mesh, attack):
    """Returns `robust_step(variables, batch, key, eps) -> metrics`: accuracy under `attack` at `eps`.

    `attack(logits_fn, x, y, key, *, eps) -> x_adv` is a named attack of `sa_mdrad_jax.attacks`
    (e.g. pgd20), run per device on its shard in eval mode (running BN statistics). The model
    should be the float32 build: evaluation runs in float32 whatever the training dtype. `eps` is
    traced, so one compilation serves every radius.
    """
    def local(variables, images, labels, mask, key, eps):
        key = jax.random.fold_in(key, jax.lax.axis_index(DATA))
        logits_fn = lambda z: model.apply(variables, z, train=False)[0]
        x_adv = attack(logits_fn, augment_lib.to_float(images), labels, key, eps=eps)
        weight = mask.astype(jnp.float32)
        right = (jnp.argmax(logits_fn(x_adv), -1) == labels).astype(jnp.float32)
        return {"correct": jax.lax.psum(jnp.sum(right * weight), DATA),
                "count": jax.lax.psum(jnp.sum(weight), DATA)}

    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA), P(DATA), P(DATA), P(), P()),
                            out_specs=P())

    def robust_step(variables, batch, key, eps):
        with jax.default_matmul_precision("highest"):
            return sharded(variables, batch["image"], batch["label"], batch["mask"], key,
                           jnp.asarray(eps, jnp.float32))

    return robust_step


def compiled_robust_eval(model, mesh, attack, *, per_device_batch: int):
    """`robust_on(variables, split, index, key, eps)`: the robust step on one evaluation batch, jitted."""
    robust_step = make_robust_eval_step(model, mesh, attack)

    @jax.jit
    def robust_on(variables, split, index, key, eps):
        batch = input_lib.eval_batch(split, index, mesh=mesh, per_device_batch=per_device_batch)
        return robust_step(variables, batch, key, eps)

    return robust_on


def robust_evaluate_split(robust_on, variables, split: input_lib.DeviceSplit, per_device_batch: int,
                          n_points: int, key: jax.Array, eps: float) -> dict:
    """Robust accuracy over the first ⌈n_points / global batch⌉ evaluation batches of `split`.

    A fixed held-out subset (the same batches every epoch) keeps the curve comparable over epochs.
    """
    n_devices = split.images.shape[0] // split.per_device
    n_batches = min(split.per_device // per_device_batch, -(-n_points // (per_device_batch * n_devices)))
    total = None
    for i in range(n_batches):
        m = robust_on(variables, split, i, jax.random.fold_in(key, i), jnp.float32(eps))
        total = m if total is None else jax.tree.map(jnp.add, total, m)
    total = jax.device_get(total)
    return {"robust_accuracy": float(total["correct"] / total["count"]), "robust_count": int(total["count"])}


# XLA options for programs that run once (parameter initialisation): LLVM's optimisation passes
# cost ~5× the compile time of a ResNet's init (its random initialisers), and buy nothing there.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def run_once(fn, *args, **jit_kwargs):
    """`jax.jit(fn, **jit_kwargs)(*args)`, compiled with `RUN_ONCE_COMPILER_OPTIONS`."""
    return jax.jit(fn, **jit_kwargs).lower(*args).compile(compiler_options=RUN_ONCE_COMPILER_OPTIONS)(*args)


def make_mesh(devices=None):
    """A 1-D mesh named 'data' over `devices` (default: every device of every process)."""
    import numpy as np
    devices = jax.devices() if devices is None else devices
    return jax.sharding.Mesh(np.asarray(devices), (DATA,))


def compiled_epoch_fns(train_step, eval_step, mesh, *, per_device_batch: int, eval_per_device_batch: int):
    """The loop's two jitted functions: gather-and-train one batch; evaluate one batch."""
    @functools.partial(jax.jit, donate_argnums=(0,))
    def train_on(state, split, order, index, *step_args):
        batch = input_lib.gather_batch(split, order, index, mesh=mesh, per_device_batch=per_device_batch)
        return train_step(state, batch, step_key(state), *step_args)

    @jax.jit
    def eval_on(variables, split, index):
        batch = input_lib.eval_batch(split, index, mesh=mesh, per_device_batch=eval_per_device_batch)
        return eval_step(variables, batch)

    return train_on, eval_on


def evaluate_split(eval_on, variables, split: input_lib.DeviceSplit, per_device_batch: int) -> dict:
    """Clean metrics over every unmasked example of `split`."""
    total = None
    for i in range(split.per_device // per_device_batch):
        m = eval_on(variables, split, i)
        total = m if total is None else jax.tree.map(jnp.add, total, m)
    total = jax.device_get(total)
    return {"loss": float(total["loss_sum"] / total["count"]),
            "accuracy": float(total["correct"] / total["count"]), "count": int(total["count"])}
