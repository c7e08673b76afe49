"""The training loop: data on devices, one jitted step, evaluation, checkpoints, resume.

Re-running the same command with the same workdir resumes from the latest checkpoint. Random
draws depend only on (seed, step, epoch), so a resumed run reproduces an uninterrupted one
exactly. SIGTERM (preemption) saves a checkpoint at the current step before exiting.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from sa_mdrad_jax import checkpoints, config as config_lib, data, distributed, models, paths, workdir_lock
from sa_mdrad_jax.methods import make_method, natural_loss
from sa_mdrad_jax.train import distill_step, input as input_lib, schedules, step as step_lib, writers
from sa_mdrad_jax.train.state import TrainState, create_train_state


SPLIT_NAMES = {"val": "validation", "test": "test"}


class NonFiniteLossError(FloatingPointError):
    pass


class DivergenceError(NonFiniteLossError):
    """The weights or the loss left the sane range (train.max_param_abs / train.max_loss): not saved."""


@dataclasses.dataclass
class Setup:
    """Everything derived from the config before the first step."""
    mesh: jax.sharding.Mesh
    info: data.DatasetInfo
    train_split: input_lib.DeviceSplit
    eval_split: input_lib.DeviceSplit   # per-epoch evaluation and selection: 'validation' if there is one, else 'test'
    eval_name: str                      # its metric prefix: 'val' or 'test'
    test_split: input_lib.DeviceSplit
    per_device_batch: int
    eval_per_device_batch: int
    steps_per_epoch: int
    model_config: dict
    image_shape: tuple


def model_config_of(config, num_classes: int) -> dict:
    """The keyword arguments of `models.get_model` for `config.model` (primitives only); fields
    beyond name/width/dtype/normalize are the architecture's own options (e.g. `stem_stride`)."""
    normalize = config.model.normalize or None
    if isinstance(normalize, (list, tuple)):
        normalize = tuple(tuple(v) for v in normalize)
    options = {k: v for k, v in config.model.items() if k not in config_lib.MODEL_FIELDS}
    return {"name": config.model.name, "num_classes": num_classes, "width": float(config.model.width),
            "dtype": config.model.dtype, "normalize": normalize, **options}


def training_devices(num_devices: int) -> list:
    """`train.num_devices`: 0 = every device of every process; N > 0 = the first N local devices."""
    if num_devices == 0:
        return jax.devices()
    if num_devices < 0 or num_devices > jax.local_device_count() or jax.process_count() > 1:
        raise config_lib.ConfigError(
            f"train.num_devices={num_devices}: accepted are 0 (all {jax.device_count()} devices) or 1.."
            f"{jax.local_device_count()} (this process's devices, single-process runs only; "
            f"{jax.process_count()} processes here).")
    return jax.local_devices()[:num_devices]


def prepare(config: ml_collections.ConfigDict) -> Setup:
    """Loads this process's data shards onto the mesh and derives batch geometry."""
    mesh = step_lib.make_mesh(training_devices(config.train.num_devices))
    n_dev = mesh.devices.size
    if config.train.batch_size % n_dev:
        raise config_lib.ConfigError(
            f"train.batch_size={config.train.batch_size} must be divisible by the {n_dev} devices.")
    ds = config.dataset
    info = data.dataset_info(ds.name, ds.image_size or None)
    load = functools.partial(data.load_split, ds.name, data_dir=ds.data_dir or None,
                             image_size=ds.image_size or None, process_index=jax.process_index(),
                             process_count=jax.process_count(), validation_size=ds.validation_size)
    train_load = functools.partial(load, train_size=ds.get("train_size", 0))
    per_device_batch = config.train.batch_size // n_dev
    eval_per_device_batch = max(1, -(-config.eval.batch_size // n_dev))
    train_split = input_lib.put_split(mesh, *train_load("train"), drop_remainder=True)
    put_eval = functools.partial(input_lib.put_split, mesh, drop_remainder=False, multiple_of=eval_per_device_batch)
    test_split = put_eval(*load("test"))
    if ds.validation_size > 0:
        eval_split, eval_name = put_eval(*load("validation")), "val"
    else:
        eval_split, eval_name = test_split, "test"
    steps_per_epoch = train_split.per_device // per_device_batch
    if steps_per_epoch == 0:
        raise config_lib.ConfigError(
            f"train.batch_size={config.train.batch_size} is larger than the training split "
            f"({train_split.per_device * n_dev} examples on {n_dev} devices).")
    image_shape = (info.image_size, info.image_size, 3)
    return Setup(mesh, info, train_split, eval_split, eval_name, test_split, per_device_batch, eval_per_device_batch,
                 steps_per_epoch, model_config_of(config, info.num_classes), image_shape)


def _initial_state(model, tx, image_shape, seed, connectors=(), method=None):
    state = create_train_state(model, tx, image_shape, seed)
    extra = {}
    if connectors:
        conn = distill_step.init_connectors(jax.random.PRNGKey(seed + 1), connectors,
                                            distill_step.feature_shapes(model, image_shape))
        extra.update(connectors=conn, connector_opt_state=tx.init(conn["params"]))
    if method is not None and method.init_state is not None:
        extra["method"] = method.init_state()   # e.g. MTARD's balance weights: checkpointed with the rest
    return state.replace(extra=extra) if extra else state


def load_teachers(config, setup: Setup):
    """(teacher modules, their variables): each restored from its own workdir, frozen, eval mode.

    A missing checkpoint or one of another architecture than the config names is an error.
    """
    teacher_models, teacher_vars = [], []
    for name, teacher in config.teachers.items():
        if not teacher.workdir:
            raise config_lib.ConfigError(f"teachers.{name}.workdir is empty: point it at the teacher's training workdir.")
        try:
            # Its best checkpoint by its own validation metric when it kept one, else its latest.
            model_cfg, variables, meta = checkpoints.load_variables(teacher.workdir, best=True)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"Teacher {name!r}: {e}") from e
        except checkpoints.CheckpointCorruptError as e:
            raise checkpoints.CheckpointCorruptError(f"Teacher {name!r}: {e}", e.step, e.summary) from None
        want = checkpoints.model_signature({**model_config_of(
            ml_collections.ConfigDict({"model": teacher.model}), setup.info.num_classes)})
        have = checkpoints.model_signature(model_cfg)
        if want != have:
            raise checkpoints.CheckpointMismatchError(
                f"Teacher {name!r}: the checkpoint in {teacher.workdir} holds {have}, the config names {want}.")
        if tuple(meta["image_shape"]) != tuple(setup.image_shape):
            raise checkpoints.CheckpointMismatchError(
                f"Teacher {name!r} was trained on {meta['image_shape']} images, the student on {list(setup.image_shape)}.")
        teacher_models.append(models.get_model(**model_cfg))
        teacher_vars.append(variables)
    return tuple(teacher_models), tuple(teacher_vars)


STARTUP_SIGTERM_MESSAGE = ("SIGTERM before training started: nothing to save; exiting "
                           "(re-run the same command to start).")


class _Preemption:
    """Remembers a SIGTERM so the loop can checkpoint at a step boundary and exit.

    Before the loop runs (`running()`), there is nothing to save: a SIGTERM then exits at once
    (143) with a message, releasing the workdir lock on the way out.
    """

    def __init__(self):
        self.requested = False
        self.started = False
        self._previous = None

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def _handle(self, signum, frame):
        if not self.started:
            print(STARTUP_SIGTERM_MESSAGE, file=sys.stderr, flush=True)
            raise SystemExit(143)
        self.requested = True

    @contextlib.contextmanager
    def running(self):
        # From here on a SIGTERM is only remembered: the loop checkpoints at the next step, and
        # after the loop (final save, evaluation) the run is finishing anyway.
        self.started = True
        yield self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(config: ml_collections.ConfigDict, workdir: str, *, quiet: bool = False) -> dict:
    """Trains `config.model` on `config.dataset`; returns the last epoch's evaluation metrics.

    Every epoch is evaluated on the validation split when `dataset.validation_size > 0` (metrics
    `val_*`, the only ones checkpoint selection may use) and on the test split otherwise
    (`test_*`, for monitoring). With a validation split the test split is read once, at the end:
    the returned `test_accuracy` is the final model's clean test accuracy.

    The config is validated and the workdir locked (`workdir_lock`, process 0) before anything
    is loaded, compiled or written: a second run on the same workdir is refused.
    """
    distributed.maybe_initialize(config.distributed)
    config_lib.validate(config)
    with _Preemption() as preemption, workdir_lock.hold(workdir, enabled=jax.process_index() == 0,
                                                          broadcast=_process0_says):
        return _train(config, workdir, preemption, quiet=quiet)


def _train(config: ml_collections.ConfigDict, workdir: str, preemption: _Preemption, *, quiet: bool) -> dict:
    setup = prepare(config)
    mesh = setup.mesh
    sync_bn = config.train.sync_bn
    model = models.get_model(**setup.model_config, bn_axis_name=step_lib.DATA if sync_bn else None)
    epochs = config.train.epochs
    total_steps = epochs * setup.steps_per_epoch
    if config.train.max_steps > 0:
        total_steps = min(total_steps, config.train.max_steps)
    schedule = schedules.make_schedule(config.optim, setup.steps_per_epoch, epochs)
    tx = schedules.make_optimizer(config.optim, schedule)

    replicated = NamedSharding(mesh, P())
    method = make_method(config.method, tuple(config.teachers.keys())) if "method" in config else None
    teacher_models, teacher_vars, connectors = (), (), ()
    if method is not None:
        teacher_models, teacher_vars = load_teachers(config, setup)
        teacher_vars = jax.device_put(teacher_vars, replicated)
        if method.connectors:
            connectors = distill_step.make_connectors(
                distill_step.feature_shapes(model, setup.image_shape),
                [distill_step.feature_shapes(t, setup.image_shape) for t in teacher_models], stages=method.feature_stages,
                axis_name=step_lib.DATA if sync_bn else None)
    init_state = functools.partial(_initial_state, model, tx, setup.image_shape, config.seed, connectors, method)
    abstract = jax.eval_shape(init_state)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), abstract)

    ckpt = checkpoints.Checkpointer(
        workdir, keep=config.checkpoint.keep, best_metric=config.checkpoint.best_metric or None,
        best_mode=config.checkpoint.best_mode, async_save=config.checkpoint.async_save)
    meta = {"model": checkpoints.model_signature(setup.model_config), "dataset": config.dataset.name,
            "image_shape": list(setup.image_shape),
            "method": config.method.name if "method" in config else "natural",
            "steps_per_epoch": setup.steps_per_epoch}
    if ckpt.latest_step() is not None:
        def check_meta(stored):
            ckpt.check_model(setup.model_config, meta=stored)
            _check_method(stored, meta["method"], workdir)
        state, _, _ = ckpt.restore_intact(abstract, check_meta, log=_warn)
    else:
        state = step_lib.run_once(init_state, out_shardings=replicated)
        if config.train.get("init_from"):
            state = _init_from(state, config.train.init_from, setup, replicated)
    if jax.process_index() == 0:
        _keep_previous_config(config, workdir, ckpt.latest_step())
        config_lib.write_resolved(config, workdir)

    aug = dict(augment=config.dataset.augment, pad=config.dataset.crop_pad, flip=config.dataset.flip, sync_bn=sync_bn)
    if method is None:
        train_step = step_lib.make_train_step(functools.partial(natural_loss, model), tx, mesh, **aug)
    else:
        train_step = distill_step.make_distill_step(
            method, model, teacher_models, tx, mesh, eps=config.method.eps, step_size=config.method.step_size,
            steps=config.method.steps, connectors=connectors, **aug)
    eval_step = step_lib.make_eval_step(model, mesh)
    train_on, eval_on = step_lib.compiled_epoch_fns(
        train_step, eval_step, mesh, per_device_batch=setup.per_device_batch,
        eval_per_device_batch=setup.eval_per_device_batch)
    robust_eval = _robust_evaluator(config, setup)

    def step_args(epoch):
        if method is None:
            return ()
        return (teacher_vars, distill_step.epoch_context(config, epoch))  # epoch, feature warm-up, LR decays

    writer = writers.MetricWriter(workdir, tensorboard=config.log.tensorboard)
    step = int(jax.device_get(state.step))
    progress = writers.Progress(total_steps, step, desc=f"{config.model.name}",
                                enabled=config.log.progress and not quiet)
    test_metrics = {}
    prefix = setup.eval_name
    log_every = max(1, config.log.every_steps)
    with preemption.running():
        for epoch in range(step // setup.steps_per_epoch, -(-total_steps // setup.steps_per_epoch)):
            epoch_args = step_args(epoch)  # built once per epoch, not per step
            order = input_lib.epoch_order(state.key, jnp.int32(epoch), mesh=mesh,
                                          per_device=setup.train_split.per_device)
            window, window_start, t0 = None, step, time.perf_counter()
            epoch_loss = [0.0, 0.0, None]   # loss sum, count, first step whose window exceeded max_loss
            end = min(setup.steps_per_epoch, total_steps - epoch * setup.steps_per_epoch)
            for i in range(step - epoch * setup.steps_per_epoch, end):
                state, m = train_on(state, setup.train_split, order, i, *epoch_args)
                window = m if window is None else jax.tree.map(jnp.add, window, m)
                step += 1
                progress.update()
                if step % log_every == 0 or i == end - 1:
                    host_window = jax.device_get(window)
                    _track_loss(epoch_loss, host_window, step, config)
                    stats = _summarise(host_window, step, schedule,
                                       (step - window_start), time.perf_counter() - t0,
                                       config.train.batch_size, ckpt)
                    writer.write(step, "train", stats)
                    progress.show(loss=stats["loss"], acc=stats["accuracy"], img_s=round(stats["img_per_s"]))
                    window, window_start, t0 = None, step, time.perf_counter()
                if preemption.requested:
                    _check_sane(config, state, step, epoch_loss, ckpt)
                    ckpt.save(step, state, {**meta, "step": step, "preempted": True}, force=True)
                    ckpt.wait()
                    progress.write(f"SIGTERM: saved checkpoint at step {step}; re-run to resume.")
                    raise SystemExit(143)
            test_metrics = {f"{prefix}_{k}": v for k, v in
                            step_lib.evaluate_split(eval_on, state.variables, setup.eval_split,
                                     setup.eval_per_device_batch).items() if k != "count"}
            test_metrics["epoch"] = epoch + 1
            if robust_eval is not None and ((epoch + 1) % config.eval.robust_every_epochs == 0
                                            or step == total_steps):
                test_metrics.update({f"{prefix}_{k}": v for k, v in robust_eval(state.variables, epoch).items()})
            writer.write(step, "eval", test_metrics)   # keys val_* or test_* name the split
            robust_note = (f", {config.eval.robust_attack} accuracy {test_metrics[f'{prefix}_robust_accuracy']:.4f}"
                           if f"{prefix}_robust_accuracy" in test_metrics else "")
            progress.write(f"epoch {epoch + 1}/{epochs}: {SPLIT_NAMES[prefix]} accuracy "
                           f"{test_metrics[f'{prefix}_accuracy']:.4f}{robust_note}")
            if (epoch + 1) % config.checkpoint.every_epochs == 0 or step == total_steps:
                _check_sane(config, state, step, epoch_loss, ckpt)
                ckpt.save(step, state, {**meta, "step": step}, metrics=test_metrics)
    ckpt.wait()
    progress.close()
    writer.close()
    if not test_metrics or prefix != "test":  # already finished, or the test split's one reading
        test_metrics.update({f"test_{k}": v for k, v in
                             step_lib.evaluate_split(eval_on, state.variables, setup.test_split,
                                      setup.eval_per_device_batch).items() if k != "count"})
    ckpt.close()
    return {**test_metrics, "step": step}


def _init_from(state: TrainState, workdir: str, setup: Setup, sharding) -> TrainState:
    """The fresh state with params and BN statistics of the checkpoint in `workdir` (same model).

    Only a fresh run starts from it: a resumed run restores its own checkpoint instead.
    """
    model_cfg, variables, _ = checkpoints.load_variables(workdir)
    want, have = checkpoints.model_signature(setup.model_config), checkpoints.model_signature(model_cfg)
    if want != have:
        raise checkpoints.CheckpointMismatchError(
            f"train.init_from={workdir!r} holds {have}, but this run trains {want}.")
    variables = jax.device_put(variables, sharding)
    return state.replace(params=variables["params"], batch_stats=variables["batch_stats"])


def _process0_says(flag: bool) -> bool | None:
    """Process 0's `flag` on every process (None on a single process: nothing to agree on)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _keep_previous_config(config, workdir: str, step: int | None) -> None:
    """Resuming with other settings than the run was trained with so far (other than
    `config.RESUMABLE_CHANGES`): says which, and keeps the previous config as
    `config.step<N>.json` before config.json is overwritten — the run's history is not lost."""
    path = paths.join(workdir, "config.json")
    if step is None or not paths.exists(path):
        return
    text = paths.read_text(path)
    changed = config_lib.changed_keys(json.loads(text), config)
    if changed:
        kept = paths.join(workdir, f"config.step{step}.json")
        paths.write_text(kept, text)
        _warn(f"Resuming {workdir} at step {step} with other settings than it was trained with so far: "
              f"{', '.join(changed)}. Steps up to {step} used the previous config, kept as {kept}.")


def _check_method(stored: dict, method: str, workdir: str) -> None:
    """A workdir resumes only with the method it was trained with (the states differ in shape)."""
    have = stored.get("method")
    if have is not None and have != method:
        raise checkpoints.CheckpointMismatchError(
            f"The checkpoint in {workdir} (step {stored.get('step')}) was trained with method {have!r}, but this "
            f"config runs {method!r}; a run cannot change its method midway. Use a new --workdir, and to start "
            f"from its weights set --config.train.init_from={workdir}. Nothing was changed on disk.")


@jax.jit
def _weights_health(params, batch_stats):
    """(max |parameter|, whether every parameter and BN statistic is finite)."""
    leaves = jax.tree.leaves(params)
    max_abs = jnp.max(jnp.stack([jnp.max(jnp.abs(x)).astype(jnp.float32) for x in leaves]))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves((params, batch_stats))]))
    return max_abs, finite


def _track_loss(epoch_loss: list, window: dict, step: int, config) -> None:
    """Adds a logged window to the epoch's loss; remembers the first step whose window broke max_loss."""
    epoch_loss[0] += float(window["loss_sum"])
    epoch_loss[1] += float(window["count"])
    bound, mean = config.train.get("max_loss", 0), float(window["loss_sum"] / window["count"])
    if epoch_loss[2] is None and bound and math.isfinite(mean) and mean > bound:
        epoch_loss[2] = step


def _check_sane(config, state, step: int, epoch_loss: list, ckpt: checkpoints.Checkpointer) -> None:
    """The divergence guard before a save: raises DivergenceError (and saves nothing) when the epoch's
    training loss or the weights are non-finite or beyond train.max_loss / train.max_param_abs."""
    max_loss, max_abs_bound = config.train.get("max_loss", 0), config.train.get("max_param_abs", 0)
    max_abs, finite = (v.item() for v in jax.device_get(_weights_health(state.params, state.batch_stats)))
    problems = []
    loss = epoch_loss[0] / epoch_loss[1] if epoch_loss[1] else None
    if loss is not None and (not math.isfinite(loss) or (max_loss and loss > max_loss)):
        problems.append(f"the epoch's mean training loss is {loss:.4g} (train.max_loss={max_loss:g})")
    if not finite or not math.isfinite(max_abs) or (max_abs_bound and max_abs > max_abs_bound):
        problems.append(f"the largest |parameter| is {max_abs:.4g}"
                        + ("" if finite else " and some weights are not finite")
                        + f" (train.max_param_abs={max_abs_bound:g})")
    if not problems:
        return
    ckpt.wait()
    first = f" (the loss first exceeded train.max_loss at step {epoch_loss[2]})" if epoch_loss[2] else ""
    safe = ckpt.latest_step()
    where = (f"The last sane checkpoint, step {safe} in {ckpt.directory}, is kept; lower optim.lr or check the "
             "data, then re-run the same command to resume from it." if safe is not None else
             "No checkpoint was saved before it; lower optim.lr or check the data and start again.")
    raise DivergenceError(f"Training diverged by step {step}{first}: {'; '.join(problems)}. No checkpoint of "
                          f"these weights was saved. {where}")


def _robust_evaluator(config, setup: Setup):
    """`fn(variables, epoch) -> {'robust_accuracy', 'robust_count'}`, or None when switched off.

    The named attack (pgd20 by default) runs on a fixed subset of the evaluation split (validation
    when there is one, else test),
    data-parallel like the training step, on the float32 build of the model (evaluation.md).
    """
    if config.eval.robust_points <= 0:
        return None
    from sa_mdrad_jax import attacks
    eps = config.eval.robust_eps or (config.method.eps if "method" in config else 8 / 255)
    model = models.get_model(**{**setup.model_config, "dtype": "float32"})
    robust_on = step_lib.compiled_robust_eval(model, setup.mesh, attacks.resolve(config.eval.robust_attack),
                                              per_device_batch=setup.eval_per_device_batch)

    def evaluate(variables, epoch):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed + 2), epoch)
        return step_lib.robust_evaluate_split(robust_on, variables, setup.eval_split, setup.eval_per_device_batch,
                                              config.eval.robust_points, key, float(eps))

    return evaluate


def _summarise(window: dict, step: int, schedule, n_steps: int, seconds: float, batch_size: int,
               ckpt: checkpoints.Checkpointer) -> dict:
    loss = float(window["loss_sum"] / window["count"])
    if not math.isfinite(loss):
        ckpt.wait()
        last = ckpt.latest_step()
        where = (f"The last checkpoint (step {last}) in {ckpt.directory} is intact; lower optim.lr or check the "
                 "data, then re-run the same command to resume from it." if last is not None else
                 "No checkpoint was saved before it; lower optim.lr or check the data and start again.")
        raise NonFiniteLossError(f"The training loss became {loss} by step {step}. {where}")
    count = window["count"]
    stats = {"loss": loss, "accuracy": float(window["correct"] / count),
             "lr": float(schedule(step - 1)), "img_per_s": n_steps * batch_size / max(seconds, 1e-9)}
    for name, value in window.items():   # method terms and SA-MDRAD diagnostics (methods.md §2)
        value = np.asarray(value)
        if name in ("loss_sum", "correct", "count"):
            continue
        base = name[:-4] if name.endswith("_sum") else name
        base = {"correct_nat": "accuracy_nat"}.get(base, base)
        if value.ndim == 0:
            stats[base] = float(value / count)
        else:  # per teacher
            for k, v in enumerate(value):
                stats[f"{base}_t{k}"] = float(v / count)
    return stats
