"""Model zoo: CIFAR-style Flax Linen classifiers (3x3 stride-1 stem, no max-pool), NHWC inputs in [0, 1].

    model = get_model("resnet18", num_classes=10, width=1.0, dtype="float32",
                      normalize="cifar10", bn_axis_name=None)
    variables = model.init(key, x, train=False)              # {'params', 'batch_stats'}
    logits, feats = model.apply(variables, x, train=False)   # float32 logits; feats["final"] NHWC
    (logits, feats), upd = model.apply(variables, x, train=True, mutable=["batch_stats"])

`feats` maps "stage1", "stage2", ... (one per resolution stage / block group of the family) and
"final" (the feature map fed to global average pooling) to NHWC arrays in the compute dtype.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np

from sa_mdrad_jax.models.common import (DTYPES, MODELS, NORMALIZATION, Classifier, register,
                                        resolve_dtype, resolve_normalize, scale_channels)
# Importing the families fills MODELS.
from sa_mdrad_jax.models import densenet, mobilenetv2, preact_resnet, resnet, vgg, wide_resnet  # noqa: F401,E402

__all__ = ["MODELS", "NORMALIZATION", "DTYPES", "Classifier", "available_models", "count_params",
           "get_model", "register", "resolve_dtype", "resolve_normalize", "scale_channels"]


def available_models() -> list[str]:
    """Sorted names of the registered models."""
    return sorted(MODELS)


def get_model(name: str, *, num_classes: int, width: float = 1.0, dtype: Any = "float32",
              normalize: Any = None, bn_axis_name: str | None = None, **kwargs: Any) -> nn.Module:
    """Builds the registered model `name`; extra keyword arguments go to its constructor
    (e.g. `depth=` and `widen_factor=` for "wide_resnet")."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Valid names: {', '.join(available_models())}.")
    return MODELS[name](num_classes=num_classes, width=width, dtype=dtype, normalize=normalize,
                        bn_axis_name=bn_axis_name, **kwargs)


def count_params(variables_or_params: Any) -> int:
    """Number of scalars in the 'params' collection (or in a bare params tree).

    Matches PyTorch's `sum(p.numel() for p in model.parameters())`: BN scale/bias are counted, the
    running statistics ('batch_stats') are not. Works on arrays and on `jax.eval_shape` outputs.
    """
    tree = variables_or_params
    if hasattr(tree, "keys") and "params" in tree:
        tree = tree["params"]
    return int(sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree)))
