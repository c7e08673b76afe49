"""VGG-16 with BatchNorm for CIFAR as in kuangliu/pytorch-cifar.

Each number in `cfg` is a 3x3 conv (with bias) + BN + ReLU, each 'M' a 2x2 stride-2 max-pool;
after the five pools a 32x32 input is 1x1x512, followed by Linear(512, num_classes). (Here the
head is a global average pool + linear, identical on 32x32 inputs and valid for other sizes.)
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

from sa_mdrad_jax.models.common import Classifier, conv, model_kwargs, register

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG(Classifier):
    """feats: stageK = output of the K-th max-pool; final = the last layer's output (fed to pooling)."""

    cfg: tuple[Any, ...] = VGG16_CFG

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        dt = self.compute_dtype
        out = self.prepare_input(x)
        feats = {}
        conv_idx = 0
        for v in self.cfg:
            if v == "M":
                out = nn.max_pool(out, (2, 2), strides=(2, 2))
                feats[f"stage{len(feats) + 1}"] = out
            else:
                out = conv(self.ch(int(v)), 3, in_features=out.shape[-1], use_bias=True, dtype=dt,
                           name=f"conv{conv_idx}")(out)
                out = nn.relu(self.bn(train, f"bn{conv_idx}")(out))
                conv_idx += 1
        feats["final"] = out
        return self.head(out, name="classifier"), feats


def _vgg(cfg):
    def make(num_classes: int = 10, width: float = 1.0, dtype: Any = "float32", normalize: Any = None,
             bn_axis_name: str | None = None) -> VGG:
        return VGG(cfg=tuple(cfg), **model_kwargs(num_classes, width, dtype, normalize, bn_axis_name))
    return make


vgg16_bn = register("vgg16_bn")(_vgg(VGG16_CFG))
#: One narrow conv per stage, three stages.
vgg_tiny = register("vgg_tiny")(_vgg((8, "M", 16, "M", 32, "M")))
