"""MobileNetV2 (Sandler et al. 2018) for CIFAR as in kuangliu/pytorch-cifar.

3x3 stride-1 stem conv (32 channels) + BN + ReLU, inverted-residual blocks from `cfg` rows
(expansion, out_channels, num_blocks, stride) — stride 1 for the first two CIFAR rows —, 1x1 conv2
to 1280 channels + BN + ReLU, global average pool, linear classifier.

Block: 1x1 expand-BN-ReLU, 3x3 depthwise (stride)-BN-ReLU, 1x1 project-BN (linear bottleneck).
Like kuangliu's version, stride-1 blocks always add a shortcut: the identity when channels match,
otherwise a 1x1 conv + BN projection; stride-2 blocks have none. ReLU (not ReLU6), as there.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from sa_mdrad_jax.models.common import Classifier, batch_norm, conv, model_kwargs, register

CIFAR_CFG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    expansion: int
    out_planes: int
    stride: int = 1
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        cin = x.shape[-1]
        planes = self.expansion * cin
        out = conv(planes, 1, in_features=cin, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(bn("bn1")(out))
        out = conv(planes, 3, in_features=planes, stride=self.stride, groups=planes, dtype=self.dtype,
                   name="conv2")(out)
        out = nn.relu(bn("bn2")(out))
        out = conv(self.out_planes, 1, in_features=planes, dtype=self.dtype, name="conv3")(out)
        out = bn("bn3")(out)
        if self.stride == 1:
            shortcut = x
            if cin != self.out_planes:
                shortcut = conv(self.out_planes, 1, in_features=cin, dtype=self.dtype,
                                name="shortcut_conv")(x)
                shortcut = bn("shortcut_bn")(shortcut)
            out = out + shortcut
        return out


class MobileNetV2(Classifier):
    """feats: stageK = output at the end of the K-th spatial resolution (i.e. just before each
    stride-2 block, and after the last block); final = conv2-BN-ReLU output (1280 x width channels)."""

    cfg: tuple[tuple[int, int, int, int], ...] = CIFAR_CFG
    stem_channels: int = 32
    last_channels: int = 1280

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        dt = self.compute_dtype
        x = self.prepare_input(x)
        out = conv(self.ch(self.stem_channels), 3, in_features=x.shape[-1], dtype=dt, name="conv1")(x)
        out = nn.relu(self.bn(train, "bn1")(out))
        feats = {}
        idx = 0
        for expansion, out_planes, num_blocks, stride in self.cfg:
            for b in range(num_blocks):
                s = stride if b == 0 else 1
                if s != 1:
                    feats[f"stage{len(feats) + 1}"] = out
                out = InvertedResidual(expansion, self.ch(out_planes), s, dtype=dt,
                                       bn_axis_name=self.bn_axis_name, name=f"layers_{idx}")(out, train)
                idx += 1
        feats[f"stage{len(feats) + 1}"] = out
        out = conv(self.ch(self.last_channels), 1, in_features=out.shape[-1], dtype=dt, name="conv2")(out)
        out = nn.relu(self.bn(train, "bn2")(out))
        feats["final"] = out
        return self.head(out, name="linear"), feats


def _mobilenetv2(cfg, stem_channels=32, last_channels=1280):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None) -> MobileNetV2:
        return MobileNetV2(cfg=tuple(tuple(r) for r in cfg), stem_channels=stem_channels,
                           last_channels=last_channels,
                           **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


mobilenetv2 = register("mobilenetv2")(_mobilenetv2(CIFAR_CFG))
#: Narrow, 4 blocks: projection and identity shortcuts at full resolution, then two stride-2 blocks.
mobilenetv2_tiny = register("mobilenetv2_tiny")(_mobilenetv2(
    ((1, 8, 1, 1), (2, 12, 2, 1), (2, 16, 1, 2), (2, 24, 1, 2)), 8, 64))
