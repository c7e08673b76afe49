"""Where each Flax variable of the model zoo lives in the common PyTorch CIFAR definitions.

Our families follow the PyTorch CIFAR references layer for layer (same layers, same order, same
shapes); only the names and the array layouts differ. This module derives, from a model's own
variable tree, the list of `Entry`s `(torch key, Flax collection and path, layout)`, so that import
and export are the same table read in two directions.

Naming (PyTorch key <- Flax path):

  ResNet-18/34/50, PreAct-ResNet-18 (kuangliu/pytorch-cifar; Rice et al. 2020 for the final `bn`)
      conv1, bn1, layer{s}.{b}.{conv1,bn1,conv2,bn2,conv3,bn3}   <- layer{s}_{b}/...
      layer{s}.{b}.shortcut.0 / .1                                  <- shortcut_conv / shortcut_bn
      bn (preact_resnet18_bn only), linear                          <- bn, fc
  WideResNet (TRADES / RobustBench)
      conv1, block{g}.layer.{b}.{bn1,conv1,bn2,conv2,convShortcut}  <- block{g}_{b}/..., shortcut_conv
      bn1, fc
  MobileNetV2 (kuangliu)
      conv1, bn1, layers.{i}.{conv1..3,bn1..3,shortcut.0,shortcut.1}, conv2, bn2, linear
  VGG (kuangliu)
      features.{k} for the k-th entry of the nn.Sequential (conv, BN, ReLU per number, one MaxPool
      per 'M'), classifier                                          <- conv{i}, bn{i}, classifier
  DenseNet (kuangliu)
      conv1, dense{s}.{b}.{bn1,conv1,bn2,conv2}, trans{s}.{bn,conv}, bn, linear

Layouts: Conv2d weight OIHW <-> Flax kernel HWIO (depthwise: (C, 1, kh, kw) <-> (kh, kw, 1, C));
Linear weight (out, in) <-> kernel (in, out); BN weight/bias <-> scale/bias; running_mean /
running_var <-> batch_stats mean / var, copied unchanged (see `torch_import` for why that is exact
in eval mode); `num_batches_tracked` has no Flax counterpart.
"""
from __future__ import annotations

import functools
import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from sa_mdrad_jax.models.densenet import DenseNet
from sa_mdrad_jax.models.mobilenetv2 import MobileNetV2
from sa_mdrad_jax.models.preact_resnet import PreActResNet
from sa_mdrad_jax.models.resnet import ResNet
from sa_mdrad_jax.models.vgg import VGG
from sa_mdrad_jax.models.wide_resnet import WideResNet

#: Layout kinds of an Entry.
CONV, LINEAR, VECTOR, COUNTER = "conv", "linear", "vector", "counter"


class Entry(NamedTuple):
    """One tensor of the PyTorch state dict and the Flax variable it corresponds to."""
    torch_key: str
    collection: str          # 'params' or 'batch_stats' ('' for num_batches_tracked)
    path: tuple[str, ...]    # path inside the collection
    kind: str                # CONV | LINEAR | VECTOR | COUNTER
    flax_shape: tuple[int, ...]

    @property
    def torch_shape(self) -> tuple[int, ...]:
        return torch_shape(self.kind, self.flax_shape)


def torch_shape(kind: str, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if kind == CONV:
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if kind == LINEAR:
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def to_torch(kind: str, array: Any) -> np.ndarray:
    """Flax layout -> PyTorch layout (C-contiguous, as safetensors needs)."""
    array = np.asarray(array)
    if kind == CONV:
        array = array.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    elif kind == LINEAR:
        array = array.T                      # (in, out) -> (out, in)
    return np.ascontiguousarray(array)


def from_torch(kind: str, array: np.ndarray) -> np.ndarray:
    """PyTorch layout -> Flax layout."""
    if kind == CONV:
        array = array.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    elif kind == LINEAR:
        array = array.T
    return np.ascontiguousarray(array)


# --------------------------------------------------------------------------------------------
# Module names, per family
# --------------------------------------------------------------------------------------------

def _sub(pattern: str, repl: str) -> Callable[[str], str | None]:
    regex = re.compile(pattern)

    def rename(name: str) -> str | None:
        return regex.sub(repl, name) if regex.fullmatch(name) else None

    return rename


def _renamer(rules: tuple[Callable[[str], str | None], ...],
             fixed: dict[str, str]) -> Callable[[str], str]:
    """Renames one Flax module name: an exact entry of `fixed`, else the first matching rule."""

    def rename(name: str) -> str:
        if name in fixed:
            return fixed[name]
        for rule in rules:
            out = rule(name)
            if out is not None:
                return out
        return name  # conv1, bn1, conv2, trans1, ... are spelled the same in both

    return rename


_SEQUENTIAL = _sub(r"(layer\d+|dense\d+|layers)_(\d+)", r"\1.\2")
_SHORTCUT = {"shortcut_conv": "shortcut.0", "shortcut_bn": "shortcut.1"}


def _vgg_renamer(cfg: tuple[Any, ...]) -> Callable[[str], str]:
    """conv{i} / bn{i} -> features.{k} / features.{k+1}: positions in kuangliu's nn.Sequential,
    where each number adds (Conv2d, BatchNorm2d, ReLU) and each 'M' one MaxPool2d."""
    fixed, pos, i = {}, 0, 0
    for v in cfg:
        if v == "M":
            pos += 1
        else:
            fixed[f"conv{i}"], fixed[f"bn{i}"] = f"features.{pos}", f"features.{pos + 1}"
            pos, i = pos + 3, i + 1
    return _renamer((), fixed)


def module_renamer(model) -> Callable[[str], str]:
    """The Flax-module-name -> PyTorch-module-name function of `model`'s family."""
    if isinstance(model, (ResNet, PreActResNet)):
        return _renamer((_SEQUENTIAL,), {**_SHORTCUT, "fc": "linear"})
    if isinstance(model, WideResNet):
        return _renamer((_sub(r"(block\d+)_(\d+)", r"\1.layer.\2"),), {"shortcut_conv": "convShortcut"})
    if isinstance(model, (MobileNetV2, DenseNet)):
        return _renamer((_SEQUENTIAL,), _SHORTCUT)
    if isinstance(model, VGG):
        return _vgg_renamer(model.cfg)
    raise ValueError(f"No PyTorch naming is defined for {type(model).__name__}. Supported families: "
                     "ResNet, PreActResNet, WideResNet, MobileNetV2, VGG, DenseNet.")


def ignored_prefixes(model) -> tuple[str, ...]:
    """State-dict prefixes that belong to modules the reference defines but never calls.

    TRADES' WideResNet (and RobustBench's with `sub_block1=True`) builds a `sub_block1` that its
    forward pass skips; its weights are in those checkpoints but play no part in the logits.
    """
    return ("sub_block1.",) if isinstance(model, WideResNet) else ()


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

_LEAF = {("params", "bias"): "bias", ("params", "scale"): "weight", ("params", "kernel"): "weight",
         ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


def abstract_variables(model, image_shape: tuple[int, ...] = (32, 32, 3)):
    """Shapes of `model`'s variables, without allocating them."""
    return jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))


def layout(model, variables_or_shapes=None, image_shape: tuple[int, ...] = (32, 32, 3)) -> tuple[Entry, ...]:
    """Every PyTorch state-dict entry of `model`, with the Flax variable it maps to.

    `variables_or_shapes` (arrays or ShapeDtypeStructs, {'params', 'batch_stats'}) defaults to the
    model's own abstract variables.
    """
    if variables_or_shapes is None:
        return _model_layout(model, tuple(image_shape))
    return _layout(model, variables_or_shapes)


@functools.lru_cache(maxsize=64)
def _model_layout(model, image_shape: tuple[int, ...]) -> tuple[Entry, ...]:
    # Models are hashable dataclasses of primitives: import and export of one model share the
    # (tracing) cost of its abstract initialisation.
    return _layout(model, abstract_variables(model, image_shape))


def _layout(model, tree) -> tuple[Entry, ...]:
    rename = module_renamer(model)
    entries, bn_modules = [], []
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(dict(tree.get(collection, {}))).items():
            *modules, name = path
            prefix = ".".join(rename(m) for m in modules)
            shape = tuple(leaf.shape)
            if (collection, name) not in _LEAF:
                raise ValueError(f"Variable {collection}/{'/'.join(path)} has no PyTorch counterpart.")
            kind = VECTOR
            if name == "kernel":
                kind = {4: CONV, 2: LINEAR}.get(len(shape))
                if kind is None:
                    raise ValueError(f"Kernel {'/'.join(path)} of rank {len(shape)} has no PyTorch layout.")
            entries.append(Entry(f"{prefix}.{_LEAF[collection, name]}", collection, tuple(path), kind, shape))
            if collection == "batch_stats" and name == "mean":
                bn_modules.append(prefix)
    entries += [Entry(f"{p}.num_batches_tracked", "", (), COUNTER, ()) for p in bn_modules]
    keys = [e.torch_key for e in entries]
    if len(set(keys)) != len(keys):  # a renaming bug, never the user's fault
        raise AssertionError(f"Two Flax variables map to the same PyTorch key in {type(model).__name__}.")
    return tuple(entries)
