"""Compact PyTorch CIFAR definitions with the parameter names of the common references (tests only).

Our own code, written for the interop tests: each class reproduces the layer names and forward
pass of the definition widely used for CIFAR checkpoints — kuangliu/pytorch-cifar for ResNet,
PreActResNet, MobileNetV2, VGG and DenseNet (plus the final `bn` that Rice et al. 2020 add to
PreActResNet-18), TRADES / RobustBench for WideResNet. Channel counts are arguments, so the tests
can build the narrow versions that our `width` multiplier gives. Every head averages globally
(`adaptive_avg_pool2d`), which is what the references' fixed pools (`avg_pool2d(out, 4)`, 8 for the
WRN, a flatten of the 1x1 map for VGG) compute on 32x32 inputs, and also works on smaller ones.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=bias)


def _pool_linear(linear: nn.Linear, out: torch.Tensor) -> torch.Tensor:
    return linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


# ---- ResNet (kuangliu) ----------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3), nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(_conv(cin, planes, 1, stride), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        cout = self.expansion * planes
        self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, cout, 1), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, planes=(64, 128, 256, 512), stem=64, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, stem, 3), nn.BatchNorm2d(stem)
        cin = stem
        for s, (n, p) in enumerate(zip(num_blocks, planes)):
            blocks = []
            for b in range(n):
                blocks.append(block(cin, p, (1 if s == 0 else 2) if b == 0 else 1))
                cin = p * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(num_blocks)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        return _pool_linear(self.linear, out)


# ---- PreActResNet (kuangliu; `final_bn` as in Rice et al. 2020) ------------------------------

class PreActBlock(nn.Module):
    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, planes, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(planes), _conv(planes, planes, 3)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(_conv(cin, planes, 1, stride))

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNet(nn.Module):
    def __init__(self, num_blocks, planes=(64, 128, 256, 512), stem=64, num_classes=10, final_bn=False):
        super().__init__()
        self.conv1 = _conv(3, stem, 3)
        cin = stem
        for s, (n, p) in enumerate(zip(num_blocks, planes)):
            blocks = []
            for b in range(n):
                blocks.append(PreActBlock(cin, p, (1 if s == 0 else 2) if b == 0 else 1))
                cin = p
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.num_stages = len(num_blocks)
        if final_bn:
            self.bn = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for s in range(self.num_stages):
            out = getattr(self, f"layer{s + 1}")(out)
        if hasattr(self, "bn"):
            out = F.relu(self.bn(out))
        return _pool_linear(self.linear, out)


# ---- WideResNet (TRADES / RobustBench) -------------------------------------------------------

class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv(cout, cout, 3)
        self.equal_in_out = cin == cout
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride=stride, padding=0, bias=False)

    def forward(self, x):
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(*[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """`channels` = (stem, group1, group2, group3), (16, 16k, 32k, 64k) in the reference.
    `sub_block1=True` adds TRADES' unused extra group (built, never called)."""

    def __init__(self, depth, channels, num_classes=10, sub_block1=False):
        super().__init__()
        n = (depth - 4) // 6
        self.conv1 = _conv(3, channels[0], 3)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        if sub_block1:
            self.sub_block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return _pool_linear(self.fc, F.relu(self.bn1(out)))


# ---- MobileNetV2 (kuangliu) ------------------------------------------------------------------

class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        planes = expansion * cin
        self.stride = stride
        self.conv1, self.bn1 = _conv(cin, planes, 1), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv(planes, planes, 3, stride, groups=planes), nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = _conv(planes, cout, 1), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(_conv(cin, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(nn.Module):
    """`cfg` rows: (expansion, out_channels, num_blocks, stride)."""

    def __init__(self, cfg, stem=32, last=1280, num_classes=10):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, stem, 3), nn.BatchNorm2d(stem)
        blocks, cin = [], stem
        for expansion, cout, n, stride in cfg:
            for b in range(n):
                blocks.append(InvertedResidual(cin, cout, expansion, stride if b == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.conv2, self.bn2 = _conv(cin, last, 1), nn.BatchNorm2d(last)
        self.linear = nn.Linear(last, num_classes)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return _pool_linear(self.linear, F.relu(self.bn2(self.conv2(out))))


# ---- VGG (kuangliu) --------------------------------------------------------------------------

class VGG(nn.Module):
    def __init__(self, cfg, num_classes=10):
        super().__init__()
        layers, cin = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [_conv(cin, v, 3, bias=True), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                cin = v
        layers.append(nn.AvgPool2d(1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return _pool_linear(self.classifier, self.features(x))


# ---- DenseNet (kuangliu) ---------------------------------------------------------------------

class DenseLayer(nn.Module):
    def __init__(self, cin, growth):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv(cin, 4 * growth, 1)
        self.bn2, self.conv2 = nn.BatchNorm2d(4 * growth), _conv(4 * growth, growth, 3)

    def forward(self, x):
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(cin), _conv(cin, cout, 1)

    def forward(self, x):
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    def __init__(self, num_blocks=(6, 12, 24, 16), growth=32, reduction=0.5, num_classes=10):
        super().__init__()
        c = 2 * growth
        self.conv1 = _conv(3, c, 3)
        self.num_stages = len(num_blocks)
        for s, n in enumerate(num_blocks):
            setattr(self, f"dense{s + 1}", nn.Sequential(*[DenseLayer(c + i * growth, growth) for i in range(n)]))
            c += n * growth
            if s < len(num_blocks) - 1:
                out = int(math.floor(c * reduction))
                setattr(self, f"trans{s + 1}", Transition(c, out))
                c = out
        self.bn = nn.BatchNorm2d(c)
        self.linear = nn.Linear(c, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for s in range(self.num_stages):
            out = getattr(self, f"dense{s + 1}")(out)
            if s < self.num_stages - 1:
                out = getattr(self, f"trans{s + 1}")(out)
        return _pool_linear(self.linear, F.relu(self.bn(out)))


# ---- helpers ---------------------------------------------------------------------------------

@torch.no_grad()
def randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BatchNorm affine parameters and running statistics included
    (so that a mis-mapped mean/var or scale/bias would change the logits); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
            module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
            module.running_mean.copy_(0.2 * torch.randn(module.running_mean.shape, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=gen))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            if module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
    return net.eval()
