"""Pre-activation ResNet-18 (He et al. 2016, "Identity mappings") as in kuangliu/pytorch-cifar.

3x3 stride-1 stem conv (no BN after it), four stages of two PreActBlocks
(BN-ReLU-conv3x3-BN-ReLU-conv3x3; a bias-free 1x1 conv shortcut, applied to the pre-activated
input, where stride or channels change), global average pool, linear classifier.

The kuangliu definition (and the 11,171,146-parameter count) has no BN-ReLU after the last stage.
Many adversarial-training code bases (e.g. Rice et al. 2020) add one; `final_bn=True` gives that
variant (registered as `preact_resnet18_bn`, 11,172,170 parameters), whose `feats["final"]` is
then taken after the final BN-ReLU.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from sa_mdrad_jax.models.common import Classifier, batch_norm, conv, model_kwargs, register


class PreActBlock(nn.Module):
    planes: int
    stride: int = 1
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        cin = x.shape[-1]
        out = nn.relu(bn("bn1")(x))
        shortcut = x
        if self.stride != 1 or cin != self.planes:
            shortcut = conv(self.planes, 1, in_features=cin, stride=self.stride, dtype=self.dtype,
                            name="shortcut_conv")(out)
        out = conv(self.planes, 3, in_features=cin, stride=self.stride, dtype=self.dtype, name="conv1")(out)
        out = nn.relu(bn("bn2")(out))
        out = conv(self.planes, 3, in_features=self.planes, dtype=self.dtype, name="conv2")(out)
        return out + shortcut


class PreActResNet(Classifier):
    """feats: stage1..stage4 = outputs of layer1..layer4; final = stage4 (or its BN-ReLU if final_bn)."""

    num_blocks: tuple[int, ...] = (2, 2, 2, 2)
    stage_planes: tuple[int, ...] = (64, 128, 256, 512)
    stem_channels: int = 64
    final_bn: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        dt = self.compute_dtype
        x = self.prepare_input(x)
        out = conv(self.ch(self.stem_channels), 3, in_features=x.shape[-1], dtype=dt, name="conv1")(x)
        feats = {}
        for s, (n, planes) in enumerate(zip(self.num_blocks, self.stage_planes)):
            for b in range(n):
                stride = (1 if s == 0 else 2) if b == 0 else 1
                out = PreActBlock(self.ch(planes), stride, dtype=dt, bn_axis_name=self.bn_axis_name,
                                  name=f"layer{s + 1}_{b}")(out, train)
            feats[f"stage{s + 1}"] = out
        if self.final_bn:
            out = nn.relu(self.bn(train, "bn")(out))
        feats["final"] = out
        return self.head(out), feats


def _preact(num_blocks, stage_planes=(64, 128, 256, 512), stem_channels=64, final_bn=False):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None) -> PreActResNet:
        return PreActResNet(num_blocks=tuple(num_blocks), stage_planes=tuple(stage_planes),
                            stem_channels=stem_channels, final_bn=final_bn,
                            **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


preact_resnet18 = register("preact_resnet18")(_preact((2, 2, 2, 2)))
preact_resnet18_bn = register("preact_resnet18_bn")(_preact((2, 2, 2, 2), final_bn=True))
#: One narrow PreActBlock per stage (planes 8/16/32/64, times `width`); no final BN, like preact_resnet18.
preact_resnet_tiny = register("preact_resnet_tiny")(_preact((1, 1, 1, 1), (8, 16, 32, 64), 8))
