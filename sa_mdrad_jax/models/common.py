"""Shared building blocks of the model zoo.

Everything here is a plain function or a small Flax module so that every family builds its layers
the same way:

* the registry (`MODELS`, `register`), filled in by the family modules at import time;
* `resolve_dtype` / `resolve_normalize`: validation of the string / tuple options of `get_model`;
* `conv` / `batch_norm` / `dense`: layer factories with PyTorch-default initialisation, float32
  parameters, float32 BatchNorm statistics and the PyTorch BatchNorm momentum/epsilon;
* `Classifier`: the base class holding the options common to every model, plus input
  normalisation (done inside the model, so attacks work in [0, 1] pixel space) and the
  global-average-pool + linear head that always returns float32 logits.

Module attributes are primitives or (nested) tuples only, so that models are hashable and can be
static arguments to `jax.jit`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

#: name -> constructor(num_classes=..., width=..., dtype=..., normalize=..., bn_axis_name=..., **kw)
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a model constructor to `MODELS` under `name`."""

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"Model {name!r} is already registered.")
        MODELS[name] = fn
        return fn

    return deco


# --------------------------------------------------------------------------------------------
# Options: dtype, normalisation, width
# --------------------------------------------------------------------------------------------

DTYPES: dict[str, Any] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

#: Per-channel (mean, std) of the training images, in [0, 1] pixel units.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # Computed over the 50k CIFAR-10 training images (population std).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    # Computed over the 50k CIFAR-100 training images.
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Tiny-ImageNet-200 training set (100k images), as commonly quoted.
    "tiny_imagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    # Digit data sets (MNIST/SVHN-style, replicated to 3 channels): simple symmetric scaling to [-1, 1].
    "digits": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # Computed over the 60k Fashion-MNIST training images (train-images-idx3-ubyte, grey repeated to
    # 3 channels), pixels /255, population std; exact: 0.286041, 0.353024. Recomputed by
    # data.fashion_mnist.train_statistics in tests/test_fashion_mnist.py when the files are present.
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
}


def resolve_dtype(dtype: Any) -> Any:
    """'float32' / 'bfloat16' (or the corresponding jnp dtype) -> jnp dtype; ValueError otherwise."""
    key = dtype
    if not isinstance(dtype, str):
        try:
            key = jnp.dtype(dtype).name
        except TypeError:
            key = repr(dtype)
    if key not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}. Valid choices: {', '.join(sorted(DTYPES))}.")
    return DTYPES[key]


def dtype_name(dtype: Any) -> str:
    """Canonical string name ('float32' / 'bfloat16') of a dtype option."""
    return jnp.dtype(resolve_dtype(dtype)).name


def resolve_normalize(normalize: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """None, a name in `NORMALIZATION`, or an explicit (mean, std) pair -> hashable tuple pair.

    Lists (e.g. read back from a JSON config) are accepted and converted to tuples of floats.
    """
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize not in NORMALIZATION:
            raise ValueError(f"Unknown normalize {normalize!r}. Valid choices: None, an explicit "
                             f"(mean, std) pair, or one of {', '.join(sorted(NORMALIZATION))}.")
        return NORMALIZATION[normalize]
    try:
        mean, std = normalize
        mean = tuple(float(m) for m in mean)
        std = tuple(float(s) for s in std)
    except (TypeError, ValueError) as err:
        raise ValueError(f"normalize must be None, one of {', '.join(sorted(NORMALIZATION))}, or a "
                         f"(mean, std) pair of per-channel tuples; got {normalize!r}.") from err
    if len(mean) != len(std) or not mean:
        raise ValueError(f"normalize mean and std must have the same non-zero length; got {normalize!r}.")
    if any(s <= 0 for s in std):
        raise ValueError(f"normalize std must be positive; got {std!r}.")
    return mean, std


def scale_channels(channels: int, width: float) -> int:
    """Channel count multiplied by `width`, rounded to the nearest int, at least 1."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}.")
    return max(1, int(round(channels * width)))


# --------------------------------------------------------------------------------------------
# Initialisers and layer factories
# --------------------------------------------------------------------------------------------

#: PyTorch's default Conv/Linear weight init: kaiming_uniform(a=sqrt(5)) == U(±1/sqrt(fan_in)).
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
    """PyTorch's default Conv/Linear bias init, U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(features: int, kernel: int, *, in_features: int, stride: int = 1, groups: int = 1,
         use_bias: bool = False, dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
    """A PyTorch-style Conv2d on NHWC inputs: symmetric `kernel // 2` zero padding.

    Explicit symmetric padding (not 'SAME') reproduces PyTorch exactly for strided 3x3 convs on
    even-sized inputs. `in_features` is only used for the PyTorch bias initialisation.
    """
    pad = kernel // 2
    return nn.Conv(
        features=features, kernel_size=(kernel, kernel), strides=(stride, stride),
        padding=((pad, pad), (pad, pad)), feature_group_count=groups, use_bias=use_bias,
        dtype=dtype, param_dtype=jnp.float32, kernel_init=torch_kernel_init,
        bias_init=torch_bias_init(kernel * kernel * in_features // groups), name=name)


def batch_norm(train: bool, *, dtype: Any = jnp.float32, axis_name: str | None = None,
               name: str | None = None) -> nn.BatchNorm:
    """BatchNorm with PyTorch defaults (momentum 0.1 == Flax 0.9, eps 1e-5), scale 1 / bias 0.

    Statistics are float32 (reductions forced to float32, running averages stored in float32);
    with `axis_name` the batch statistics are averaged over that mapped axis (global-batch BN).
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
        param_dtype=jnp.float32, axis_name=axis_name, force_float32_reductions=True,
        scale_init=nn.initializers.ones, bias_init=nn.initializers.zeros, name=name)


def dense(features: int, *, in_features: int, dtype: Any = jnp.float32,
          name: str | None = None) -> nn.Dense:
    """A PyTorch-initialised Linear layer with float32 parameters."""
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, kernel_init=torch_kernel_init,
                    bias_init=torch_bias_init(in_features), name=name)


# --------------------------------------------------------------------------------------------
# Base classifier
# --------------------------------------------------------------------------------------------


class Classifier(nn.Module):
    """Options shared by every model of the zoo; families subclass it and define `__call__`.

    `__call__(x, train=False)` takes NHWC float images in [0, 1] and returns
    `(logits float32 [B, num_classes], feats)` where `feats` maps `"stage1"`, `"stage2"`, ... and
    `"final"` (the map fed to global average pooling) to NHWC arrays.
    """

    num_classes: int = 10
    width: float = 1.0
    dtype: str = "float32"
    normalize: Any = None  # None, a NORMALIZATION name, or ((mean, ...), (std, ...)) tuples
    bn_axis_name: str | None = None

    # ---- helpers (called from the subclasses' compact __call__) ----
    @property
    def compute_dtype(self) -> Any:
        return resolve_dtype(self.dtype)

    def ch(self, channels: int) -> int:
        """Channel count scaled by the model's width multiplier."""
        return scale_channels(channels, self.width)

    def prepare_input(self, x: Array) -> Array:
        """Normalises [0, 1] images (in float32) and casts them to the compute dtype."""
        x = jnp.asarray(x, jnp.float32)
        norm = resolve_normalize(self.normalize)
        if norm is not None:
            mean, std = norm
            if x.shape[-1] != len(mean):
                raise ValueError(f"normalize has {len(mean)} channels but the input has {x.shape[-1]}.")
            x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
        return x.astype(self.compute_dtype)

    def bn(self, train: bool, name: str | None = None) -> nn.BatchNorm:
        return batch_norm(train, dtype=self.compute_dtype, axis_name=self.bn_axis_name, name=name)

    def head(self, x: Array, name: str = "fc") -> Array:
        """Global average pooling over H, W (in float32) + linear layer; float32 logits."""
        pooled = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        logits = dense(self.num_classes, in_features=x.shape[-1], dtype=self.compute_dtype,
                       name=name)(pooled)
        return logits.astype(jnp.float32)


def model_kwargs(num_classes: int, width: float, dtype: Any, normalize: Any,
                 bn_axis_name: str | None) -> dict[str, Any]:
    """Validated, hashable constructor arguments common to every model."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    scale_channels(1, width)  # validates width
    return dict(num_classes=num_classes, width=float(width), dtype=dtype_name(dtype),
                normalize=resolve_normalize(normalize), bn_axis_name=bn_axis_name)
