"""DenseNet-121 (Huang et al. 2017) for CIFAR as in kuangliu/pytorch-cifar.

3x3 stem conv to 2 * growth channels, four dense blocks of (6, 12, 24, 16) bottleneck layers
(BN-ReLU-conv1x1 to 4 * growth, BN-ReLU-conv3x3 to growth, concatenated [new, input]), transitions
(BN-ReLU-conv1x1 to floor(reduction * channels), 2x2 average pool) between blocks, final BN-ReLU,
global average pool, linear classifier.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sa_mdrad_jax.models.common import Classifier, batch_norm, conv, model_kwargs, register


class DenseLayer(nn.Module):
    growth: int
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        out = nn.relu(bn("bn1")(x))
        out = conv(4 * self.growth, 1, in_features=x.shape[-1], dtype=self.dtype, name="conv1")(out)
        out = nn.relu(bn("bn2")(out))
        out = conv(self.growth, 3, in_features=4 * self.growth, dtype=self.dtype, name="conv2")(out)
        return jnp.concatenate([out, x], axis=-1)


class Transition(nn.Module):
    out_planes: int
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out = batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name="bn")(x)
        out = conv(self.out_planes, 1, in_features=x.shape[-1], dtype=self.dtype, name="conv")(nn.relu(out))
        return nn.avg_pool(out, (2, 2), strides=(2, 2))


class DenseNet(Classifier):
    """feats: stageK = output of dense block K (before its transition); final = relu(bn(dense4))."""

    num_blocks: tuple[int, ...] = (6, 12, 24, 16)
    growth_rate: int = 32
    reduction: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        dt = self.compute_dtype
        growth = self.ch(self.growth_rate)
        x = self.prepare_input(x)
        out = conv(2 * growth, 3, in_features=x.shape[-1], dtype=dt, name="conv1")(x)
        feats = {}
        for s, n in enumerate(self.num_blocks):
            for b in range(n):
                out = DenseLayer(growth, dtype=dt, bn_axis_name=self.bn_axis_name,
                                 name=f"dense{s + 1}_{b}")(out, train)
            feats[f"stage{s + 1}"] = out
            if s < len(self.num_blocks) - 1:
                out_planes = max(1, int(math.floor(out.shape[-1] * self.reduction)))
                out = Transition(out_planes, dtype=dt, bn_axis_name=self.bn_axis_name,
                                 name=f"trans{s + 1}")(out, train)
        out = nn.relu(self.bn(train, "bn")(out))
        feats["final"] = out
        return self.head(out, name="linear"), feats


def _densenet(num_blocks, growth_rate=32, reduction=0.5):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None) -> DenseNet:
        return DenseNet(num_blocks=tuple(num_blocks), growth_rate=growth_rate, reduction=reduction,
                        **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


densenet121 = register("densenet121")(_densenet((6, 12, 24, 16)))
#: One layer per dense block, growth 8.
densenet_tiny = register("densenet_tiny")(_densenet((1, 1, 1, 1), growth_rate=8))
