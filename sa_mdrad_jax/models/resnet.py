"""CIFAR ResNets (He et al. 2016) in the layout of kuangliu/pytorch-cifar.

3x3 stride-1 stem conv (64 channels) + BN + ReLU, no max-pool, four stages of BasicBlocks or
Bottlenecks with planes (64, 128, 256, 512) and strides (1, 2, 2, 2); a 1x1 conv + BN projection
shortcut wherever the stride or channel count changes; global average pool; linear classifier.
`stem_stride=2` (a model-spec option) makes the stem conv stride 2: every feature map is halved,
about a quarter of the compute, for inputs larger than CIFAR's relative to the model (28×28
Fashion-MNIST on a CPU budget; experiments/grids/fashion_mnist.py).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from sa_mdrad_jax.models.common import Classifier, batch_norm, conv, model_kwargs, register


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN + shortcut, ReLU."""

    planes: int
    stride: int = 1
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    expansion = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        cin = x.shape[-1]
        out = conv(self.planes, 3, in_features=cin, stride=self.stride, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(bn("bn1")(out))
        out = conv(self.planes, 3, in_features=self.planes, dtype=self.dtype, name="conv2")(out)
        out = bn("bn2")(out)
        shortcut = x
        if self.stride != 1 or cin != self.planes:
            shortcut = conv(self.planes, 1, in_features=cin, stride=self.stride, dtype=self.dtype,
                            name="shortcut_conv")(x)
            shortcut = bn("shortcut_bn")(shortcut)
        return nn.relu(out + shortcut)


class Bottleneck(nn.Module):
    """conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1(4x)-BN + shortcut, ReLU."""

    planes: int
    stride: int = 1
    dtype: Any = "float32"
    bn_axis_name: str | None = None

    expansion = 4

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = lambda name: batch_norm(train, dtype=self.dtype, axis_name=self.bn_axis_name, name=name)
        cin, cout = x.shape[-1], self.expansion * self.planes
        out = conv(self.planes, 1, in_features=cin, dtype=self.dtype, name="conv1")(x)
        out = nn.relu(bn("bn1")(out))
        out = conv(self.planes, 3, in_features=self.planes, stride=self.stride, dtype=self.dtype,
                   name="conv2")(out)
        out = nn.relu(bn("bn2")(out))
        out = conv(cout, 1, in_features=self.planes, dtype=self.dtype, name="conv3")(out)
        out = bn("bn3")(out)
        shortcut = x
        if self.stride != 1 or cin != cout:
            shortcut = conv(cout, 1, in_features=cin, stride=self.stride, dtype=self.dtype,
                            name="shortcut_conv")(x)
            shortcut = bn("shortcut_bn")(shortcut)
        return nn.relu(out + shortcut)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Classifier):
    """feats: stage1..stage4 = outputs of layer1..layer4; final = stage4 (post-ReLU)."""

    block: str = "basic"
    num_blocks: tuple[int, ...] = (2, 2, 2, 2)
    stage_planes: tuple[int, ...] = (64, 128, 256, 512)
    stem_channels: int = 64
    stem_stride: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        block_cls = _BLOCKS[self.block]
        dt = self.compute_dtype
        x = self.prepare_input(x)
        out = conv(self.ch(self.stem_channels), 3, in_features=x.shape[-1], stride=self.stem_stride, dtype=dt,
                   name="conv1")(x)
        out = nn.relu(self.bn(train, "bn1")(out))
        feats = {}
        for s, (n, planes) in enumerate(zip(self.num_blocks, self.stage_planes)):
            for b in range(n):
                stride = (1 if s == 0 else 2) if b == 0 else 1
                out = block_cls(self.ch(planes), stride, dtype=dt, bn_axis_name=self.bn_axis_name,
                                name=f"layer{s + 1}_{b}")(out, train)
            feats[f"stage{s + 1}"] = out
        feats["final"] = out
        return self.head(out), feats


def _resnet(block, num_blocks, stage_planes=(64, 128, 256, 512), stem_channels=64):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None, stem_stride: int = 1) -> ResNet:
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 (CIFAR-style stem) or 2 (halves the input, e.g. 28×28 → 14×14 "
                             f"feature maps), got {stem_stride!r}.")
        return ResNet(block=block, num_blocks=tuple(num_blocks), stage_planes=tuple(stage_planes),
                      stem_channels=stem_channels, stem_stride=stem_stride,
                      **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


resnet18 = register("resnet18")(_resnet("basic", (2, 2, 2, 2)))
resnet34 = register("resnet34")(_resnet("basic", (3, 4, 6, 3)))
resnet50 = register("resnet50")(_resnet("bottleneck", (3, 4, 6, 3)))
#: One narrow BasicBlock per stage (planes 8/16/32/64, times `width`): for fast tests.
resnet_tiny = register("resnet_tiny")(_resnet("basic", (1, 1, 1, 1), (8, 16, 32, 64), 8))
