"""Wide ResNets (Zagoruyko & Komodakis 2016) as defined in TRADES / RobustBench.

3x3 stem conv to 16 channels, three groups `block1..block3` of (depth - 4) / 6 pre-activation
BasicBlocks with 16k, 32k, 64k channels and strides 1, 2, 2 (bias-free convs; a bias-free 1x1 conv
shortcut where channels change), final BN-ReLU, global average pool, linear `fc`.

Like the reference, a channel-changing block applies its first BN-ReLU to the input and feeds the
activated input to both the conv path and the shortcut; an identity block keeps the raw input on
the shortcut. Dropout (dropRate) is 0 in the reference and omitted here.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from sa_mdrad_jax.models.common import Classifier, batch_norm, conv, model_kwargs, register


class WideBasicBlock(nn.Module):
    planes: int
    stride: int = 1
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        cin = x.shape[-1]
        # The reference shortcut condition is "channels differ"; stride != 1 with equal channels only
        # happens at extreme width multipliers and also needs the projection to match shapes.
        equal_in_out = cin == self.planes and self.stride == 1
        act = nn.relu(bn("bn1")(x))
        out = conv(self.planes, 3, in_features=cin, stride=self.stride, dtype=self.dtype, name="conv1")(act)
        out = nn.relu(bn("bn2")(out))
        out = conv(self.planes, 3, in_features=self.planes, dtype=self.dtype, name="conv2")(out)
        if equal_in_out:
            shortcut = x
        else:
            shortcut = conv(self.planes, 1, in_features=cin, stride=self.stride, dtype=self.dtype,
                            name="shortcut_conv")(act)
        return out + shortcut


class WideResNet(Classifier):
    """feats: stage1..stage3 = outputs of block1..block3; final = relu(bn1(block3 output))."""

    depth: int = 34
    widen_factor: int = 10

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        if (self.depth - 4) % 6 != 0 or self.depth < 10:
            raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {self.depth}.")
        n = (self.depth - 4) // 6
        k = self.widen_factor
        channels = (16 * k, 32 * k, 64 * k)
        dt = self.compute_dtype
        x = self.prepare_input(x)
        out = conv(self.ch(16), 3, in_features=x.shape[-1], dtype=dt, name="conv1")(x)
        feats = {}
        for g, (c, stride) in enumerate(zip(channels, (1, 2, 2))):
            for b in range(n):
                out = WideBasicBlock(self.ch(c), stride if b == 0 else 1, dtype=dt,
                                     bn_axis_name=self.bn_axis_name, name=f"block{g + 1}_{b}")(out, train)
            feats[f"stage{g + 1}"] = out
        out = nn.relu(self.bn(train, "bn1")(out))
        feats["final"] = out
        return self.head(out, name="fc"), feats


def _wrn_default(depth, widen_factor):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None) -> WideResNet:
        return WideResNet(depth=depth, widen_factor=widen_factor,
                          **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


@register("wide_resnet")
def wide_resnet(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
                bn_axis_name: str | None = None, *, depth: int = 28, widen_factor: int = 10) -> WideResNet:
    """Generic WRN-depth-widen_factor (depth = 6n + 4)."""
    depth, widen_factor = int(depth), int(widen_factor)
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}.")
    if widen_factor < 1:
        raise ValueError(f"widen_factor must be >= 1, got {widen_factor}.")
    return _wrn_default(depth, widen_factor)(num_classes, width, dtype, normalize, bn_axis_name)


wrn34_10 = register("wrn34_10")(_wrn_default(34, 10))
wrn28_10 = register("wrn28_10")(_wrn_default(28, 10))
wrn16_4 = register("wrn16_4")(_wrn_default(16, 4))
#: WRN-10-1: one block per group, 16/16/32/64 channels.
wrn_tiny = register("wrn_tiny")(_wrn_default(10, 1))
