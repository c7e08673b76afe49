"""PyTorch interop: checkpoints of the common CIFAR definitions in, zoo models out as safetensors.

The torch tests build our own PyTorch definitions (tests/torch_models.py) with random weights and
BatchNorm statistics, convert them, and compare eval-mode logits; they are skipped when the
optional torch extra is absent. The digits and mismatch tests need no torch.
"""
from __future__ import annotations

import functools
import os
import types

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from sa_mdrad_jax import checkpoints, cli, config as config_lib, interop, models, quickstart
from sa_mdrad_jax.models.vgg import VGG16_CFG
from util import ROOT, assert_trees_equal


@functools.lru_cache(maxsize=None)
def _jitted_logits(model):
    return jax.jit(lambda variables, x: model.apply(variables, x, train=False)[0])


def _logits(model, variables, x):
    return np.asarray(_jitted_logits(model)(variables, x))


def _families():
    """id -> (zoo name, width, normalize, builder of the matching PyTorch model, image size).

    Widths are chosen so our `width` multiplier gives the channel counts passed to the PyTorch
    definition; mobilenetv2 / densenet use their registered one-block-per-stage variants (same
    classes and naming as the full models, a fraction of the CPU time).
    """
    import torch_models as tm
    return {
        "resnet18": ("resnet18", 0.125, "cifar10",
                     lambda: tm.ResNet(tm.BasicBlock, (2, 2, 2, 2), (8, 16, 32, 64), 8), 16),
        "resnet50": ("resnet50", 0.0625, None,
                     lambda: tm.ResNet(tm.Bottleneck, (3, 4, 6, 3), (4, 8, 16, 32), 4), 16),
        "preact_resnet18": ("preact_resnet18", 0.125, None,
                            lambda: tm.PreActResNet((2, 2, 2, 2), (8, 16, 32, 64), 8), 16),
        "preact_resnet18_bn": ("preact_resnet18_bn", 0.125, None,
                               lambda: tm.PreActResNet((2, 2, 2, 2), (8, 16, 32, 64), 8, final_bn=True), 16),
        "wrn16_4": ("wrn16_4", 0.25, None, lambda: tm.WideResNet(16, (4, 16, 32, 64)), 16),
        "mobilenetv2_tiny": ("mobilenetv2_tiny", 1.0, None, lambda: tm.MobileNetV2(
            ((1, 8, 1, 1), (2, 12, 2, 1), (2, 16, 1, 2), (2, 24, 1, 2)), 8, 64), 16),
        "vgg16_bn": ("vgg16_bn", 0.125, None,
                     lambda: tm.VGG([v if v == "M" else v // 8 for v in VGG16_CFG]), 32),
        "densenet_tiny": ("densenet_tiny", 1.0, None, lambda: tm.DenseNet((1, 1, 1, 1), growth=8), 16),
    }


FAMILY_IDS = ("resnet18", "resnet50", "preact_resnet18", "preact_resnet18_bn", "wrn16_4",
              "mobilenetv2_tiny", "vgg16_bn", "densenet_tiny")


@pytest.mark.torch
@pytest.mark.parametrize("family", FAMILY_IDS)
def test_pytorch_model_converts_to_the_same_logits_and_exports_back_exactly(family, tmp_path):
    torch = pytest.importorskip("torch", reason="needs the optional torch extra")
    from safetensors.torch import load_file as torch_load_file
    import torch_models as tm
    name, width, normalize, build, size = _families()[family]
    net = tm.randomize(build(), seed=FAMILY_IDS.index(family))
    original = {k: v.clone() for k, v in net.state_dict().items()}
    x = np.random.default_rng(0).uniform(size=(2, size, size, 3)).astype(np.float32)
    x_torch = x
    if normalize:  # PyTorch code normalises in its data pipeline; our model does it inside
        mean, std = models.NORMALIZATION[normalize]
        x_torch = ((x - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x_torch).permute(0, 3, 1, 2)).numpy()

    # Saved as training scripts do: DataParallel `module.` prefixes inside a wrapping dict.
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 7, "best_acc": 0.5, "state_dict": {f"module.{k}": v for k, v in original.items()}}, path)
    model = models.get_model(name, num_classes=10, width=width, normalize=normalize)
    variables = interop.variables_from_state_dict(model, interop.read_state_dict(str(path)), (size, size, 3))
    np.testing.assert_allclose(_logits(model, variables, x), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())

    out = tmp_path / "exported.safetensors"
    interop.save_safetensors(interop.state_dict_from_variables(model, variables, (size, size, 3)), str(out))
    exported = torch_load_file(str(out))
    assert sorted(exported) == sorted(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype and torch.equal(exported[key], value), key
    build().load_state_dict(exported, strict=True)


@pytest.mark.torch
def test_trades_unused_sub_block1_is_skipped(tmp_path):
    """TRADES' WideResNet saves a `sub_block1` its forward pass never calls; import ignores it."""
    torch = pytest.importorskip("torch", reason="needs the optional torch extra")
    import torch_models as tm
    net = tm.randomize(tm.WideResNet(10, (16, 16, 32, 64), sub_block1=True), seed=1)
    assert any(k.startswith("sub_block1.") for k in net.state_dict())
    x = np.random.default_rng(1).uniform(size=(2, 8, 8, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    model = models.get_model("wrn_tiny", num_classes=10)
    variables = interop.variables_from_state_dict(model, interop.unwrap_state_dict(net.state_dict()), (8, 8, 3))
    np.testing.assert_allclose(_logits(model, variables, x), expected, rtol=1e-4,
                               atol=1e-4 * np.abs(expected).max())


@pytest.mark.torch
def test_pickled_objects_other_than_tensors_are_refused(tmp_path):
    torch = pytest.importorskip("torch", reason="needs the optional torch extra")
    marker = tmp_path / "pwned"

    class Payload:  # unpickling this would create `marker`
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"linear.weight": torch.zeros(10, 4)}, "extra": Payload()}, path)
    workdir = tmp_path / "imported"
    with pytest.raises(interop.TorchCheckpointError, match="pickled objects other than tensors"):
        interop.import_torch(str(path), str(workdir), model="resnet_tiny", num_classes=10)
    assert not marker.exists()
    assert not workdir.exists()


def test_normalize_spellings_and_state_dict_wrappers():
    assert interop.parse_normalize("") is None and interop.parse_normalize("none") is None
    assert interop.parse_normalize("cifar10") == "cifar10"
    assert interop.parse_normalize("0.5,0.4,0.3/0.2,0.25,0.3") == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    with pytest.raises(ValueError, match="same non-zero length"):
        interop.parse_normalize("0.5,0.5/0.2")
    weights = {"conv1.weight": np.ones((2, 3, 3, 3), np.float32)}
    assert interop.unwrap_state_dict({"net": weights, "epoch": 3}) == weights
    with pytest.raises(interop.TorchCheckpointError, match=r"entries \['epoch', 'weights'\] are not tensors"):
        interop.unwrap_state_dict({"weights": weights, "epoch": 3})
    assert list(interop.strip_module_prefix({"module.conv1.weight": weights["conv1.weight"]})) == ["conv1.weight"]


def _tiny_state_dict():
    model = models.get_model("resnet_tiny", num_classes=10)
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32),
                             jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32)))
    return interop.state_dict_from_variables(model, variables, (8, 8, 3))


def test_mismatched_state_dict_names_every_bad_key_and_writes_nothing(tmp_path):
    state = _tiny_state_dict()
    del state["layer2.0.shortcut.0.weight"]
    state["layer9.0.conv1.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    state["layer1.0.conv1.weight"] = np.zeros((4, 8, 3, 3), np.float32)
    path = tmp_path / "bad.safetensors"
    interop.save_safetensors(state, str(path))
    workdir = tmp_path / "imported"
    with pytest.raises(interop.TorchMismatchError) as err:
        interop.import_torch(str(path), str(workdir), model="resnet_tiny", num_classes=10, image_size=8)
    message = str(err.value)
    assert "missing keys ['layer2.0.shortcut.0.weight']" in message
    assert "unexpected keys ['layer9.0.conv1.weight']" in message
    assert "layer1.0.conv1.weight: file (4, 8, 3, 3) vs model (8, 8, 3, 3)" in message
    assert not workdir.exists()


def test_wrong_class_count_is_named(tmp_path):
    state = _tiny_state_dict()
    state["linear.weight"] = np.zeros((100, 64), np.float32)
    state["linear.bias"] = np.zeros((100,), np.float32)
    path = tmp_path / "cifar100.safetensors"
    interop.save_safetensors(state, str(path))
    with pytest.raises(interop.TorchMismatchError, match="classifier has 100 classes, num_classes is 10"):
        interop.import_torch(str(path), str(tmp_path / "w"), model="resnet_tiny", num_classes=10)
    assert not (tmp_path / "w").exists()


def test_quickstart_teachers_export_and_reimport_with_identical_logits(tmp_path):
    """Both digits teachers (trained one step by the real loop) -> export-torch -> import-torch:
    same variables, same logits, and the imported workdirs load as the distillation config's teachers."""
    from sa_mdrad_jax.train import loop
    config = quickstart.get_config()
    config.train.max_steps = 1
    config.dataset.image_size = 8
    config.log.update(progress=False, tensorboard=False)
    distill = config_lib.load_config_file(os.path.join(ROOT, "configs", "sa_mdrad_digits.py"))
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    for name in config.teachers:
        trained, imported = str(tmp_path / "trained" / name), str(tmp_path / "imported" / name)
        loop.train(quickstart.teacher_config(config, name), trained, quiet=True)
        out = str(tmp_path / f"{name}.safetensors")
        spec = config.teachers[name].model
        cli.run(["sa-mdrad", "export-torch", f"--workdir={trained}", f"--out={out}"])
        cli.run(["sa-mdrad", "import-torch", f"--checkpoint={out}", f"--model={spec.name}",
                 f"--width={spec.width}", f"--normalize={spec.normalize}", "--image_size=8",
                 "--dataset=digits", f"--workdir={imported}"])
        assert "running_var" in " ".join(load_file(out))
        cfg_a, vars_a, _ = checkpoints.load_variables(trained)
        cfg_b, vars_b, meta_b = checkpoints.load_variables(imported)
        assert checkpoints.model_signature(cfg_a) == checkpoints.model_signature(cfg_b)
        assert meta_b["image_shape"] == [8, 8, 3] and meta_b["dataset"] == "digits"
        assert_trees_equal(vars_a, vars_b)
        model = models.get_model(**cfg_a)
        np.testing.assert_array_equal(_logits(model, vars_b, x), _logits(model, vars_a, x))
        distill.teachers[name].workdir = imported
    # The README's recipe: the imported workdirs are the `teachers` of the digits distillation config.
    setup = types.SimpleNamespace(info=types.SimpleNamespace(num_classes=10), image_shape=(8, 8, 3))
    teacher_models, teacher_vars = loop.load_teachers(distill, setup)
    assert [m.width for m in teacher_models] == [0.25, 0.25]
    assert len(teacher_vars) == 2


def test_export_refuses_other_suffixes(tmp_path):
    with pytest.raises(ValueError, match=r"\.safetensors"):
        interop.export_torch(str(tmp_path), str(tmp_path / "model.pt"))
    assert not os.listdir(tmp_path)
