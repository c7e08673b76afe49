"""PyTorch state dicts -> zoo variables and Orbax teacher workdirs.

    model_cfg, variables = import_torch("trades_wrn34.pt", "workdir/teachers/trades",
                                        model="wrn34_10", num_classes=10)

Files are read without running any pickled code: `.safetensors` (a JSON header and raw buffers),
or PyTorch files through `torch.load(weights_only=True)`, which only rebuilds tensors and plain
containers and refuses any other pickled object (that refusal is reported, never bypassed).

BatchNorm statistics. PyTorch's BatchNorm2d keeps `running_var` as a moving average of the
*unbiased* batch variance (n / (n - 1) times the batch's biased variance; torch.nn.BatchNorm2d
docs), Flax's `nn.BatchNorm` keeps `var` as a moving average of the *biased* one. In eval mode both
compute  y = (x - mean) / sqrt(var + eps) * weight + bias  with the stored value as it is (eps =
1e-5 on both sides), so `running_var` is copied to `var` unchanged: eval logits agree, and export
followed by import is exact. Rescaling by (n - 1) / n would instead change the teacher's outputs.
The two conventions only differ in how *further training* updates the statistics.

Input normalisation. PyTorch CIFAR code usually normalises in the data pipeline; our models do it
inside (`normalize`), so pass the mean/std the checkpoint was trained with (none for TRADES /
RobustBench WideResNets, which take [0, 1] pixels; kuangliu's scripts use mean (0.4914, 0.4822,
0.4465), std (0.2023, 0.1994, 0.2010), which is not our "cifar10" entry).
"""
from __future__ import annotations

import io
import pickle
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
from flax import traverse_util

from sa_mdrad_jax import checkpoints, models, paths
from sa_mdrad_jax.interop import torch_layout

#: Keys under which training scripts commonly wrap the state dict in a checkpoint dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")


class TorchCheckpointError(ValueError):
    """A PyTorch checkpoint that cannot be read or used; nothing was written."""


class TorchMismatchError(TorchCheckpointError, checkpoints.CheckpointMismatchError):
    """The state dict's keys or shapes do not fit the requested model; nothing was written."""


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------

def read_state_dict(path: str) -> dict[str, np.ndarray]:
    """{name: host array} from a `.safetensors` file or a PyTorch file (weights only).

    Wrapping dicts (`{'state_dict': ..., 'epoch': ...}`, `{'model': ...}`, `{'net': ...}`) are
    unwrapped and `module.` prefixes (DataParallel / DistributedDataParallel) stripped.
    """
    if not paths.isfile(path):
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load
        try:
            raw = load(paths.read_bytes(path))
        except Exception as e:  # safetensors raises its own SafetensorError on corrupt headers
            raise TorchCheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    else:
        raw = _torch_load(path)
    return strip_module_prefix(unwrap_state_dict(raw, path))


def _torch_load(path: str) -> Any:
    try:
        import torch
    except ImportError as e:
        raise ImportError("Reading PyTorch .pt/.pth files needs the optional torch extra "
                          "(pip install 'sa_mdrad_jax[torch]'); without it, convert the file to "
                          ".safetensors (safetensors.torch.save_file) and pass that.") from e
    try:
        return torch.load(io.BytesIO(paths.read_bytes(path)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch words it "Unsupported global: GLOBAL mod.name ..." or "unsupported GLOBAL mod.name whose
        # module mod is blocked" (e.g. posix.system), depending on the global.
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" (it pickles {found.group(1)})" if found else ""
        raise TorchCheckpointError(
            f"Refusing to load {path}: it contains pickled objects other than tensors and plain "
            f"containers{what}, and unpickling those can run arbitrary code. Accepted: a state dict of "
            "tensors (optionally inside a dict with plain values such as epoch numbers), saved with "
            "torch.save(model.state_dict(), path), or a .safetensors file.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise TorchCheckpointError(f"{path} is not a readable PyTorch file: {e}") from e


def _is_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__.startswith("torch")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":  # numpy has no bfloat16; the upcast is exact
        value = value.float()
    return value.numpy()


def unwrap_state_dict(obj: Any, where: str = "the checkpoint") -> dict[str, np.ndarray]:
    """The dict of tensors inside `obj`, descending through WRAPPER_KEYS."""
    while True:
        if not isinstance(obj, Mapping):
            raise TorchCheckpointError(f"{where} holds a {type(obj).__name__}, not a state dict "
                                       "(a dict of parameter name -> tensor).")
        if obj and all(_is_tensor(v) for v in obj.values()):
            return {str(k): _to_numpy(v) for k, v in obj.items()}
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            others = sorted(str(k) for k, v in obj.items() if not _is_tensor(v))
            raise TorchCheckpointError(
                f"{where} is not a state dict: entries {others[:10]} are not tensors, and there is no "
                f"wrapped state dict under any of {list(WRAPPER_KEYS)}.")
        obj = inner


def strip_module_prefix(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Removes the `module.` prefix(es) that (Distributed)DataParallel adds to every key."""
    out = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith("module."):
            name = name[len("module."):]
        if name in out:
            raise TorchCheckpointError(f"Keys {key!r} and {name!r} collide once 'module.' is stripped.")
        out[name] = value
    return out


# --------------------------------------------------------------------------------------------
# Converting
# --------------------------------------------------------------------------------------------

def _describe(model) -> str:
    name = getattr(model, "name", None) or type(model).__name__
    return f"{name} (width {model.width}, {model.num_classes} classes)"


def variables_from_state_dict(model, state_dict: Mapping[str, np.ndarray],
                              image_shape: tuple[int, ...] = (32, 32, 3)) -> dict:
    """{'params', 'batch_stats'} of `model` (float32 host arrays) from a PyTorch state dict.

    Every tensor of the model must be present with its exact shape and nothing else may be: the
    error lists the missing keys, the unexpected keys and the wrong shapes together.
    `num_batches_tracked` and modules the reference never calls (`ignored_prefixes`) are skipped.
    """
    entries = [e for e in torch_layout.layout(model, image_shape=image_shape) if e.kind != torch_layout.COUNTER]
    by_key = {e.torch_key: e for e in entries}
    bn_modules = {e.torch_key.rsplit(".", 1)[0] for e in entries if e.collection == "batch_stats"}
    skip = torch_layout.ignored_prefixes(model)
    given = {k: v for k, v in state_dict.items()
             if not k.startswith(skip)
             and not (k.endswith(".num_batches_tracked") and k.rsplit(".", 1)[0] in bn_modules)}
    problem = checkpoints.describe_mismatch({k: e.torch_shape for k, e in by_key.items()},
                                            {k: np.shape(v) for k, v in given.items()}, actual_name="file",
                                            expected_name="model")
    if problem:
        wrong = {k: (tuple(np.shape(given[k])), by_key[k].torch_shape) for k in set(by_key) & set(given)
                 if tuple(np.shape(given[k])) != by_key[k].torch_shape}
        hint = _class_count_hint(entries, wrong, model.num_classes)
        raise TorchMismatchError(
            f"The state dict does not fit {_describe(model)}: {problem}.{hint} Check the "
            "model name, width and num_classes. Nothing was written.")
    flat = {}
    for e in entries:
        value = np.asarray(given[e.torch_key])
        if not np.issubdtype(value.dtype, np.floating):
            raise TorchMismatchError(f"{e.torch_key} has dtype {value.dtype}; a float tensor is expected. "
                                     "Nothing was written.")
        flat[(e.collection, *e.path)] = torch_layout.from_torch(e.kind, value.astype(np.float32))
    return traverse_util.unflatten_dict(flat)


def _class_count_hint(entries, wrong, num_classes: int) -> str:
    """' The file's classifier has K classes ...' when the head differs only in its output size."""
    head = next((e for e in entries if e.kind == torch_layout.LINEAR), None)
    if head is None or head.torch_key not in wrong:
        return ""
    file_shape, model_shape = wrong[head.torch_key]
    if len(file_shape) == 2 and file_shape[1] == model_shape[1]:
        return f" The file's classifier has {file_shape[0]} classes, num_classes is {num_classes}."
    return ""


# --------------------------------------------------------------------------------------------
# Import command
# --------------------------------------------------------------------------------------------

def parse_normalize(text: str | None) -> Any:
    """Command-line spelling of `normalize`: '' or 'none' -> None; a name of
    models.NORMALIZATION (kept as the name); or 'm1,m2,m3/s1,s2,s3' -> ((m...), (s...))."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    text = text.strip()
    if "/" in text:
        try:
            mean, std = (tuple(float(v) for v in part.split(",")) for part in text.split("/"))
        except ValueError as e:
            raise ValueError(f"normalize {text!r}: expected 'm1,m2,m3/s1,s2,s3' with numbers.") from e
        normalize = (mean, std)
    else:
        normalize = text
    models.resolve_normalize(normalize)  # validates: known name, matching lengths, std > 0
    return normalize


def import_torch(checkpoint: str, workdir: str, *, model: str, num_classes: int, width: float = 1.0,
                 normalize: Any = None, image_size: int = 32, channels: int = 3,
                 dataset: str | None = None) -> tuple[dict, dict]:
    """Converts a PyTorch checkpoint into a new Orbax workdir of the zoo model `model`.

    The workdir then loads with `checkpoints.load_variables` like a trained one, so a distillation
    config can name it as a teacher (`config.teacher_entry(model, workdir, width=..., normalize=...)`).
    `image_size` / `dataset` are recorded as the teacher's training images (the distillation loop
    checks the image shape; `evaluate` reads the dataset). Returns (model config, variables).
    Nothing is written unless the whole state dict fits; an existing checkpoint is never replaced.
    """
    model_cfg = {"name": model, "num_classes": int(num_classes), "width": float(width),
                 "normalize": normalize}
    net = models.get_model(**model_cfg)  # validates the name, width, classes and normalize
    if checkpoints.has_checkpoint(workdir):
        raise checkpoints.CheckpointMismatchError(
            f"{checkpoints.checkpoint_dir(workdir)} already holds a checkpoint; import into a new workdir.")
    image_shape = (int(image_size), int(image_size), int(channels))
    variables = variables_from_state_dict(net, read_state_dict(checkpoint), image_shape)
    checkpoints.save_variables(workdir, model_cfg, variables, image_shape=image_shape, meta={
        "dataset": dataset, "method": "imported_torch", "source": paths.absolute(checkpoint)})
    return model_cfg, variables
