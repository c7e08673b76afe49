"""Orbax checkpoints of train states, with the metadata that says what model they hold.

Layout of a workdir:  `<workdir>/checkpoints/<step>/{state, meta}`. `meta` is JSON: the model
config (name, width, num_classes, normalize), dataset, method and loop position. The manager keeps
the last `keep` checkpoints plus the best one by a chosen metric; saves are asynchronous and, on
several hosts, coordinated by Orbax (every process calls save; each writes its shards).
"""
from __future__ import annotations

import functools
import re
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from sa_mdrad_jax import paths

MODEL_KEYS = ("name", "width", "num_classes", "normalize")
NOT_SIGNATURE = ("dtype", "bn_axis_name")   # how a model computes, not what it is


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fit the requested model; nothing was modified."""


class CheckpointCorruptError(ValueError):
    """A checkpoint step whose files are missing or damaged (Orbax/TensorStore could not read it)."""

    def __init__(self, message: str, step: int | None = None, summary: str = ""):
        super().__init__(message)
        self.step = step
        self.summary = summary or message   # the first sentence, without the way out


# What Orbax / TensorStore say when a step's files are missing or damaged (as opposed to a step
# that reads fine but holds another model): TensorStore status codes, Orbax's missing-item errors.
_READ_ERROR_MARKERS = ("OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND", "DATA_LOSS", "Error reading",
                       "Error opening", "Unknown key:", "was not found in the checkpoint",
                       "Metadata file (named", "Truncated", "Encountered error while reading")


def _chain(exc: BaseException) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def is_read_error(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says that checkpoint files could not be read."""
    return any(isinstance(e, FileNotFoundError) or any(m in str(e) for m in _READ_ERROR_MARKERS)
               for e in _chain(exc))


def _first_failing_item(exc: BaseException) -> str:
    """The array or item Orbax failed on, e.g. 'params.conv1.kernel' or 'item state', for the message."""
    text = " ".join(str(e) for e in _chain(exc))
    for pattern, fmt in ((r'Error reading "([^"/]+)/', "array {}"),
                         (r"Unknown key: (\w+)", "item {} missing"),
                         (r'Item "(\w+)" was not found', "item {} missing"),
                         (r"named (_\w+)\) does not exist at (\S+?)\.?$", "{} missing")):
        found = re.search(pattern, text, flags=re.M)
        if found:
            return fmt.format(found.group(1))
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def checkpoint_dir(workdir: str) -> str:
    return paths.join(paths.absolute(workdir), "checkpoints")


def model_signature(model_config) -> dict:
    """The fields that decide what a model is, as plain JSON values: name, width, classes,
    normalisation and any architecture option beyond them (e.g. `stem_stride`, which changes the
    computation but not one parameter shape)."""
    sig = {k: model_config[k] for k in MODEL_KEYS if k in model_config}
    sig.update({k: v for k, v in model_config.items() if k not in MODEL_KEYS and k not in NOT_SIGNATURE})
    if isinstance(sig.get("normalize"), (list, tuple)):
        sig["normalize"] = [list(v) for v in sig["normalize"]]
    return sig


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int = 3, best_metric: str | None = None,
                 best_mode: str = "max", async_save: bool = True, read_only: bool = False):
        preserve = [policies.LatestN(n=keep)]
        if best_metric:
            preserve.append(policies.BestN(
                get_metric_fn=lambda m: m[best_metric], reverse=(best_mode == "min"), n=1,
                keep_checkpoints_without_metrics=False))
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policies.AnyPreservationPolicy(preserve),
            enable_async_checkpointing=async_save, read_only=read_only, create=not read_only)
        self.directory = checkpoint_dir(workdir)
        self.best_metric = best_metric
        self.best_mode = best_mode
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, item_handlers=handlers, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self, metric: str | None = None, mode: str | None = None) -> int | None:
        """The kept step with the best `metric` (default: the manager's), from the saved metadata."""
        scored = []
        for step in self.manager.all_steps():
            meta = self.read_meta(step)
            name = metric or self.best_metric or meta.get("best_metric")
            sign = 1 if (mode or meta.get("best_mode", self.best_mode)) == "max" else -1
            value = meta.get("metrics", {}).get(name) if name else None
            if value is not None:
                scored.append((sign * value, step))
        return max(scored)[1] if scored else None

    def corrupt_error(self, step: int, exc: BaseException) -> CheckpointCorruptError:
        """'checkpoint step N in DIR is incomplete or corrupt (first failing item)', with the way out."""
        others = sorted((s for s in self.manager.all_steps() if s != step), reverse=True)
        hint = (f" Other steps there: {others}; to use the newest of them, move {self.directory}/{step} "
                "out of that directory (resuming training does this itself)." if others else
                " There is no other step in it.")
        summary = f"Checkpoint step {step} in {self.directory} is incomplete or corrupt ({_first_failing_item(exc)})."
        return CheckpointCorruptError(summary + hint, step, summary)

    def _restore(self, step: int, args):
        try:
            return self.manager.restore(step, args=args)
        except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise bare Exception on bad files
            if is_read_error(e):
                raise self.corrupt_error(step, e) from None
            raise

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        restored = self._restore(step, ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(restored["meta"])

    def check_model(self, model_config, step: int | None = None, meta: dict | None = None) -> dict:
        """Raises CheckpointMismatchError if the checkpoint holds another model; returns meta."""
        meta = self.read_meta(step) if meta is None else meta
        want, have = model_signature(model_config), meta.get("model", {})
        diff = {k: (have.get(k), want[k]) for k in want if have.get(k) != want[k]}
        if diff:
            details = "; ".join(f"{k}: checkpoint has {h!r}, config asks {w!r}" for k, (h, w) in diff.items())
            raise CheckpointMismatchError(
                f"The checkpoint in {self.directory} (step {meta.get('step')}) holds a different model "
                f"({details}). Use another --workdir, or point the config at the model it holds. "
                "Nothing was changed on disk.")
        return meta

    def save(self, step: int, state, meta: dict, metrics: dict | None = None, force: bool = False) -> None:
        if metrics is not None:
            meta = {**meta, "metrics": metrics}
        meta = {"best_metric": self.best_metric, "best_mode": self.best_mode, **meta}
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        meta=ocp.args.JsonSave(meta)),
                          metrics=metrics, force=force)

    def restore(self, abstract_state, step: int | None = None):
        """Restores the state of `step` (default latest) into the shardings of `abstract_state`."""
        step = self.latest_step() if step is None else step
        try:
            restored = self._restore(step, ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
        except CheckpointCorruptError:
            raise
        except (ValueError, KeyError, TypeError) as e:
            raise CheckpointMismatchError(
                f"The checkpoint in {self.directory} (step {step}) does not fit the model being "
                f"restored: {e}. Nothing was changed on disk.") from e
        return restored["state"]

    def restore_raw(self, step: int | None = None) -> dict[str, Any]:
        """The saved state as a tree of host arrays, without a target structure."""
        step = self.latest_step() if step is None else step
        # Restore onto one local device whatever topology saved it (e.g. a teacher trained on 8
        # GPUs, loaded on a laptop): give Orbax a target with the stored shapes and that sharding.
        try:
            stored = self.manager.item_metadata(step)["state"]
            if stored is None:
                raise KeyError("Unknown key: state")
        except Exception as e:  # noqa: BLE001
            if is_read_error(e) or isinstance(e, KeyError):
                raise self.corrupt_error(step, e) from None
            raise
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), stored)
        restored = self._restore(step, ocp.args.Composite(state=ocp.args.StandardRestore(target)))
        return restored["state"]

    def restore_intact(self, abstract_state, check_meta=None, log=print):
        """(state, meta, step) of the newest step that restores completely.

        Newer steps that cannot be read (`CheckpointCorruptError`) are moved aside to
        `<workdir>/corrupt_checkpoints/<step>` (never deleted: the user decides) once an older
        step has restored, and `log` says so. `check_meta(meta)` may raise (e.g. another model):
        that stops the search and nothing is moved. If no step restores, nothing is moved either.
        """
        bad = []
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                meta = self.read_meta(step)
                if check_meta is not None:
                    check_meta(meta)
                state = self.restore(abstract_state, step)
            except CheckpointCorruptError as e:
                bad.append((step, e))
                continue
            for bad_step, error in bad:
                moved = self.move_aside(bad_step)
                log(f"warning: {error.summary} Resuming from step {step}, the newest "
                    f"intact one; moved step {bad_step} to {moved} (delete it once you no longer need it).")
            return state, meta, step
        raise CheckpointCorruptError(
            f"No checkpoint step in {self.directory} restores completely: "
            + " ".join(e.summary for _, e in bad)
            + " Nothing was moved or deleted; move the workdir aside to start afresh.", bad[0][0] if bad else None)

    def move_aside(self, step: int) -> str:
        """Moves step `step` out of the checkpoint directory (process 0); returns where to."""
        target = paths.join(paths.parent(self.directory), "corrupt_checkpoints", str(step))
        if paths.exists(target):
            target += time.strftime("-%Y%m%d-%H%M%S")
        if jax.process_index() == 0:
            paths.rename(paths.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices(f"sa_mdrad_move_aside_{step}")
        self.manager.reload()
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()


def load_variables(workdir: str, step: int | None = None, *, best: bool = False):
    """(model config dict, {'params', 'batch_stats'}) of a trained model, e.g. a teacher.

    Checks that the stored arrays have exactly the shapes of the model named in the metadata.
    """
    from sa_mdrad_jax import models
    ckpt = Checkpointer(workdir, read_only=True, async_save=False, best_metric=None)
    if ckpt.latest_step() is None:
        raise FileNotFoundError(f"No checkpoint in {ckpt.directory}: train the model first "
                                "(sa-mdrad train --config=... --workdir=...).")
    if best:
        step = ckpt.best_step()
    meta = ckpt.read_meta(step)
    raw = ckpt.restore_raw(step if step is not None else ckpt.latest_step())
    variables = {"params": raw["params"], "batch_stats": raw["batch_stats"]}
    model_cfg = meta["model"]
    model = models.get_model(**model_cfg)
    image_shape = tuple(meta["image_shape"])
    expected = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, *image_shape), "float32"))
    check_shapes(expected, variables, where=ckpt.directory)
    ckpt.close()
    return model_cfg, variables, meta


def has_checkpoint(workdir: str) -> bool:
    """Whether `workdir` already holds a checkpoint directory with anything in it."""
    directory = checkpoint_dir(workdir)
    return bool(paths.listdir(directory))


def save_variables(workdir: str, model_config, variables, *, image_shape, meta: dict | None = None,
                   step: int = 0) -> None:
    """Writes `variables` ({'params', 'batch_stats'}) as the only checkpoint (step `step`, default 0)
    of a new workdir.

    For models that `loop.train` did not train (e.g. imported PyTorch teachers): the workdir then
    loads with `load_variables`, hence as a teacher, exactly like a trained one. The shapes are
    checked against the model first, and an existing checkpoint is never replaced; nothing is
    written on error. There is no optimizer state in it, so `train` cannot resume from it.
    """
    from sa_mdrad_jax import models
    if has_checkpoint(workdir):
        raise CheckpointMismatchError(f"{checkpoint_dir(workdir)} already holds a checkpoint; "
                                      "write into a new workdir.")
    model = models.get_model(**model_config)
    expected = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                              jax.ShapeDtypeStruct((1, *image_shape), "float32"))
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    check_shapes(expected, variables, where="the variables to save")
    ckpt = Checkpointer(workdir, keep=1, async_save=False)
    state = {"step": np.asarray(step, np.int32), **variables}
    ckpt.save(step, state, {**(meta or {}), "model": model_signature(model_config),
                            "image_shape": list(image_shape), "step": step}, force=True)
    ckpt.wait()
    ckpt.close()


def describe_mismatch(expected: dict, actual: dict, *, limit: int = 20, actual_name: str = "",
                      expected_name: str = "") -> str:
    """'' when the two {key: shape} maps agree, else 'missing keys [...]; unexpected keys [...];
    wrong shapes k: [actual_name] a vs [expected_name] e' (at most `limit` keys of each kind)."""
    def label(name, shape):
        return f"{name} {tuple(shape)}" if name else f"{tuple(shape)}"

    def listing(keys):
        keys = sorted(keys)
        return f"{keys[:limit]}" + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")

    missing = set(expected) - set(actual)
    extra = set(actual) - set(expected)
    wrong = sorted(k for k in set(expected) & set(actual) if tuple(expected[k]) != tuple(actual[k]))
    parts = []
    if missing:
        parts.append(f"missing keys {listing(missing)}")
    if extra:
        parts.append(f"unexpected keys {listing(extra)}")
    if wrong:
        parts.append("wrong shapes " + ", ".join(
            f"{k}: {label(actual_name, actual[k])} vs {label(expected_name, expected[k])}" for k in wrong[:limit]))
    return "; ".join(parts)


def check_shapes(expected, actual, where: str) -> None:
    """Raises CheckpointMismatchError naming the keys whose shapes or presence differ."""
    shapes = lambda tree: {jax.tree_util.keystr(k): v.shape for k, v in jax.tree_util.tree_leaves_with_path(tree)}  # noqa: E731
    problem = describe_mismatch(shapes(expected), shapes(actual), limit=5)
    if problem:
        raise CheckpointMismatchError(f"Checkpoint in {where} does not match the model: {problem}.")
