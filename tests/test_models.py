"""Tests of the model zoo (sa_mdrad_jax.models).

Full-size models are only traced with `jax.eval_shape` (nothing is materialised); the behavioural
tests run the one-block tiny variant of every family on small inputs.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from sa_mdrad_jax.models import (MODELS, NORMALIZATION, available_models, count_params, get_model)

KEY = jax.random.PRNGKey(0)

# Reference parameter counts, `sum(p.numel() for p in m.parameters())` of the PyTorch CIFAR
# definitions, counted with throwaway PyTorch (2.13) re-implementations:
#   kuangliu/pytorch-cifar: ResNet{18,34,50} (BasicBlock / Bottleneck, 1x1-conv+BN projection
#   shortcuts), PreActResNet18 (no BN after the last stage; with one: 11,172,170), MobileNetV2
#   (CIFAR cfg, stem stride 1, conv2 to 1280), VGG('VGG16') (conv with bias + BN, Linear(512, C)),
#   DenseNet121 (growth 32, reduction 0.5);
#   TRADES / RobustBench WideResNet (bias-free convs, 1x1 conv shortcut when channels change, final
#   BN, `fc` with bias), depth-widen 34-10, 28-10, 16-4 (and 10-1 = wrn_tiny).
# The forward passes (eval and train mode, width 1) were also cross-checked once against functional
# PyTorch versions of those definitions on ported weights: logits agree to ~1e-6. (The running
# variance differs slightly by design: PyTorch updates it with the unbiased batch variance.)
FULL_PARAM_COUNTS = [
    ("resnet18", 10, 11_173_962),
    ("resnet18", 100, 11_220_132),
    ("resnet34", 10, 21_282_122),
    ("resnet50", 10, 23_520_842),
    ("preact_resnet18", 10, 11_171_146),
    ("preact_resnet18_bn", 10, 11_172_170),
    ("wrn34_10", 10, 46_160_474),
    ("wrn28_10", 10, 36_479_194),
    ("wrn16_4", 10, 2_748_890),
    ("mobilenetv2", 10, 2_296_922),
    ("mobilenetv2", 100, 2_412_212),
    ("vgg16_bn", 10, 14_728_266),
    ("densenet121", 10, 6_956_298),
]

# Number of "stageK" feature keys of each family (full model, tiny model).
NUM_STAGES = {
    "resnet18": 4, "resnet34": 4, "resnet50": 4, "resnet_tiny": 4,
    "preact_resnet18": 4, "preact_resnet18_bn": 4, "preact_resnet_tiny": 4,
    "wrn34_10": 3, "wrn28_10": 3, "wrn16_4": 3, "wrn_tiny": 3, "wide_resnet": 3,
    "mobilenetv2": 4, "mobilenetv2_tiny": 3,
    "vgg16_bn": 5, "vgg_tiny": 3,
    "densenet121": 4, "densenet_tiny": 4,
}

TINY = ["resnet_tiny", "preact_resnet_tiny", "wrn_tiny", "mobilenetv2_tiny", "vgg_tiny", "densenet_tiny"]
REQUIRED = ["resnet18", "resnet34", "resnet50", "preact_resnet18", "wrn34_10", "wrn28_10", "wrn16_4",
            "mobilenetv2", "vgg16_bn", "densenet121", "wide_resnet"] + TINY

IMG = (4, 16, 16, 3)  # tiny models: small batch of 16x16 images


def _images(shape=IMG, seed=1):
    return jax.random.uniform(jax.random.PRNGKey(seed), shape, jnp.float32)


def _check_outputs(logits, feats, batch, num_classes, n_stages):
    assert logits.shape == (batch, num_classes)
    assert logits.dtype == jnp.float32
    assert set(feats) == {f"stage{i + 1}" for i in range(n_stages)} | {"final"}
    for k, v in feats.items():
        assert v.ndim == 4 and v.shape[0] == batch, (k, v.shape)
    return feats["final"]


def _random_variables(model, x, seed=0):
    """Variables of the model's structure filled with numpy random values.

    Compiling `model.init` (one PRNG program per parameter) costs several seconds per model on
    CPU, so the behavioural tests take shapes from `jax.eval_shape(model.init)` and fill them here;
    the real initialiser is exercised by `test_real_init`. BN scales are drawn around 1 so that
    they are not trivially 1.
    """
    shapes = jax.eval_shape(functools.partial(model.init, train=False), KEY, x)
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path[-1:])
        if "kernel" in name:
            bound = 1.0 / np.sqrt(np.prod(leaf.shape[:-1]))
            value = rng.uniform(-bound, bound, leaf.shape)
        elif "scale" in name:
            value = rng.uniform(0.5, 1.5, leaf.shape)
        elif "bias" in name:
            value = rng.uniform(-0.1, 0.1, leaf.shape)
        elif "mean" in name:  # batch_stats as after init
            value = np.zeros(leaf.shape)
        elif "var" in name:
            value = np.ones(leaf.shape)
        else:
            raise AssertionError(f"unexpected variable {path}")
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@functools.lru_cache(maxsize=None)
def _tiny(name, dtype="float32", normalize=None):
    """(model, variables, jitted eval apply, jitted train apply) of a tiny model; cached per worker."""
    model = get_model(name, num_classes=10, dtype=dtype, normalize=normalize)
    variables = _random_variables(model, _images())
    apply_eval = jax.jit(lambda v, x: model.apply(v, x, train=False))
    apply_train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    return model, variables, apply_eval, apply_train


# ------------------------------------------------------------------------------------------------
# Registry
# ------------------------------------------------------------------------------------------------


def test_registry_has_required_names():
    assert set(REQUIRED) <= set(MODELS)
    assert available_models() == sorted(MODELS)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        get_model("resnet19", num_classes=10)
    msg = str(err.value)
    assert "resnet19" in msg
    assert ", ".join(sorted(MODELS)) in msg


def test_unknown_dtype_and_normalize_raise():
    with pytest.raises(ValueError, match="bfloat16.*float32"):
        get_model("resnet_tiny", num_classes=10, dtype="float16")
    with pytest.raises(ValueError, match="cifar10.*cifar100.*digits.*tiny_imagenet"):
        get_model("resnet_tiny", num_classes=10, normalize="imagenet")
    with pytest.raises(ValueError):
        get_model("resnet_tiny", num_classes=10, normalize=((0.5, 0.5), (0.5, 0.5, 0.5)))


def test_models_are_hashable_and_accept_json_lists():
    # A config read back from JSON has lists; the model must still be hashable (static jit arg).
    a = get_model("vgg_tiny", num_classes=10, normalize=[[0.5, 0.4, 0.3], [0.2, 0.2, 0.2]])
    b = get_model("vgg_tiny", num_classes=10, normalize=((0.5, 0.4, 0.3), (0.2, 0.2, 0.2)))
    assert hash(a) == hash(b) and a == b
    c = get_model("vgg_tiny", num_classes=10, normalize="cifar10")
    assert c.normalize == NORMALIZATION["cifar10"]


# ------------------------------------------------------------------------------------------------
# Full-size models: abstract evaluation only
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,num_classes,expected", FULL_PARAM_COUNTS)
def test_full_model_param_count_and_shapes(name, num_classes, expected):
    model = get_model(name, num_classes=num_classes)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    (logits, feats), variables = jax.eval_shape(
        functools.partial(model.init_with_output, train=False), KEY, x)
    assert count_params(variables) == expected
    assert count_params(variables["params"]) == expected
    assert set(variables) == {"params", "batch_stats"}
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    final = _check_outputs(logits, feats, 2, num_classes, NUM_STAGES[name])
    assert final.shape[1] == final.shape[2] and final.shape[1] in (1, 4, 8)


def test_generic_wide_resnet_kwargs():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    count = lambda m: count_params(jax.eval_shape(m.init, KEY, x))
    assert count(get_model("wide_resnet", num_classes=10, depth=16, widen_factor=4)) == 2_748_890
    assert count(get_model("wide_resnet", num_classes=10, depth=10, widen_factor=1)) == 77_850
    with pytest.raises(ValueError, match="6n \\+ 4"):
        get_model("wide_resnet", num_classes=10, depth=11, widen_factor=1)


@pytest.mark.parametrize("name", ["resnet18", "vgg16_bn", "mobilenetv2"] + TINY)
def test_width_multiplier_shrinks_model(name):
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    counts = {}
    for width in (0.5, 1.0):
        model = get_model(name, num_classes=10, width=width)
        (logits, _), variables = jax.eval_shape(model.init_with_output, KEY, x)
        assert logits.shape == (1, 10)
        counts[width] = count_params(variables)
    assert counts[0.5] < counts[1.0]
    if name == "resnet18":  # all convs scale by 1/2 in both in and out channels: ~1/4 the params
        assert counts[0.5] < 0.3 * counts[1.0]


# ------------------------------------------------------------------------------------------------
# Tiny models: real forward passes
# ------------------------------------------------------------------------------------------------


def test_real_init():
    """The real initialiser: float32 params, BN scale 1 / bias 0, running stats 0 / 1, PyTorch
    uniform(+-1/sqrt(fan_in)) conv and linear weights and biases."""
    model = get_model("vgg_tiny", num_classes=10, dtype="bfloat16")
    variables = jax.jit(functools.partial(model.init, train=False))(KEY, _images())
    assert set(variables) == {"params", "batch_stats"}
    assert all(p.dtype == jnp.float32 for p in jax.tree_util.tree_leaves(variables))
    params = variables["params"]
    np.testing.assert_array_equal(np.asarray(params["bn0"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(params["bn0"]["bias"]), 0.0)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["bn0"]["mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["bn0"]["var"]), 1.0)
    for layer, fan_in in (("conv1", 3 * 3 * 8), ("classifier", 32)):
        for kind in ("kernel", "bias"):
            w = np.asarray(params[layer][kind])
            bound = 1.0 / np.sqrt(fan_in)
            assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound, (layer, kind)


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_train_and_eval(name):
    model, variables, apply_eval, apply_train = _tiny(name)
    x = _images()

    logits, feats = apply_eval(variables, x)
    final = _check_outputs(logits, feats, x.shape[0], 10, NUM_STAGES[name])
    head = {"wrn_tiny": "fc", "vgg_tiny": "classifier", "densenet_tiny": "linear",
            "mobilenetv2_tiny": "linear"}.get(name, "fc")
    assert final.shape[-1] == variables["params"][head]["kernel"].shape[0]  # final feeds the head
    assert np.all(np.isfinite(np.asarray(logits)))
    # Eval mode is deterministic.
    logits2, feats2 = apply_eval(variables, x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(logits2))
    np.testing.assert_array_equal(np.asarray(feats["final"]), np.asarray(feats2["final"]))

    # Train mode: batch statistics are used and the running statistics move.
    (train_logits, train_feats), updates = apply_train(variables, x)
    _check_outputs(train_logits, train_feats, x.shape[0], 10, NUM_STAGES[name])
    assert not np.allclose(np.asarray(train_logits), np.asarray(logits))
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(old)
    flat_old = jax.tree_util.tree_leaves_with_path(old)
    flat_new = jax.tree_util.tree_leaves(new)
    assert len(flat_new) > 0
    for (path, o), n in zip(flat_old, flat_new):
        assert n.dtype == jnp.float32
        # A BN whose input is a sum of BN outputs has an exactly zero batch mean (MobileNetV2), so
        # only the variances are required to move everywhere.
        if "var" in jax.tree_util.keystr(path):
            assert not np.allclose(np.asarray(o), np.asarray(n)), path
    assert any(not np.allclose(np.asarray(o), np.asarray(n))
               for (p, o), n in zip(flat_old, flat_new) if "mean" in jax.tree_util.keystr(p))


# bf16 handling lives in the shared conv/BN/head factories; these four cover every layer kind
# (projection/identity shortcuts, depthwise convs, concatenation, biased convs + max-pool).
@pytest.mark.parametrize("name", ["resnet_tiny", "mobilenetv2_tiny", "densenet_tiny", "vgg_tiny"])
def test_bfloat16_compute(name):
    _, variables, apply_fp32, _ = _tiny(name)
    model16, _, apply_bf16, _ = _tiny(name, "bfloat16")
    x = _images()
    # BN statistics stay float32 in bf16 mode (float32 params: see test_real_init).
    (_, _), upd = jax.eval_shape(
        lambda v, x: model16.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)
    assert all(s.dtype == jnp.float32 for s in jax.tree_util.tree_leaves(upd))

    ref, _ = apply_fp32(variables, x)
    out, feats = apply_bf16(variables, x)  # the same float32 variables, bf16 compute
    assert out.dtype == jnp.float32
    assert feats["final"].dtype == jnp.bfloat16
    # bf16 has an 8-bit mantissa; the observed error is ~0.3-0.5% of the logit scale, allow 2%.
    scale = float(np.max(np.abs(np.asarray(ref))))
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=0.02 * scale, rtol=0.02)
    assert not np.array_equal(np.asarray(out), np.asarray(ref))  # it really computed in bf16


def test_normalize_inside_model():
    mean, std = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)
    model_n, _, apply_n, _ = _tiny("resnet_tiny", "float32", (mean, std))
    _, variables, apply_plain, _ = _tiny("resnet_tiny")
    x = _images()
    x_norm = (x - jnp.asarray(mean)) / jnp.asarray(std)
    out, _ = apply_n(variables, x)
    ref, _ = apply_plain(variables, x_norm)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    # No parameters are added by normalisation.
    assert count_params(jax.eval_shape(model_n.init, KEY, x)) == count_params(variables)
    # A registered name resolves to its explicit tuple (so it is the same model).
    named = get_model("resnet_tiny", num_classes=10, normalize="cifar10")
    assert named == get_model("resnet_tiny", num_classes=10, normalize=NORMALIZATION["cifar10"])


def test_sync_batchnorm_under_shard_map():
    mesh = jax.make_mesh((2,), ("data",))
    model_sync = get_model("resnet_tiny", num_classes=10, bn_axis_name="data")
    _, variables, _, apply_train = _tiny("resnet_tiny")
    x = _images((8, 16, 16, 3), seed=3)

    def step(v, xb):
        (logits, _), upd = model_sync.apply(v, xb, train=True, mutable=["batch_stats"])
        return logits, upd["batch_stats"]

    sharded = jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P("data")),
                                    out_specs=(P("data"), P())))
    x_sharded = jax.device_put(x, jax.NamedSharding(mesh, P("data")))
    v_repl = jax.device_put(variables, jax.NamedSharding(mesh, P()))
    logits, stats = sharded(v_repl, x_sharded)
    (ref_logits, _), ref_upd = apply_train(variables, x)
    for a, b in zip(jax.tree_util.tree_leaves(stats), jax.tree_util.tree_leaves(ref_upd["batch_stats"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
    # With global-batch statistics, the per-shard train-mode logits match the full-batch ones.
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), atol=1e-4, rtol=1e-4)
    # Without synchronisation the per-shard statistics differ (the test above is not vacuous).
    local = jax.jit(jax.shard_map(
        lambda v, xb: get_model("resnet_tiny", num_classes=10).apply(
            v, xb, train=True, mutable=["batch_stats"])[1]["batch_stats"],
        mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))(v_repl, x_sharded)
    first = np.asarray(jax.tree_util.tree_leaves(local)[0])
    half = first.shape[0] // 2
    assert not np.allclose(first[:half], first[half:])


def test_stem_stride_halves_every_feature_map_and_is_part_of_the_model_identity():
    """`stem_stride=2` (Fashion-MNIST grid): same parameters, half the spatial size at every stage;
    the option reaches the training loop's model, the checkpoint signature and config validation."""
    from sa_mdrad_jax import checkpoints, config as config_lib
    from sa_mdrad_jax.train.loop import model_config_of

    x = jnp.zeros((1, 28, 28, 3))
    shapes = {}
    for stride in (1, 2):
        model = get_model("resnet_tiny", num_classes=10, stem_stride=stride)
        v = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
        _, feats = jax.eval_shape(lambda v: model.apply(v, x, train=False), v)
        shapes[stride] = ({k: f.shape[1] for k, f in feats.items()}, count_params(v))
    assert shapes[1][0]["stage1"] == 28 and shapes[2][0]["stage1"] == 14 and shapes[2][0]["final"] == 2
    assert shapes[1][1] == shapes[2][1]
    with pytest.raises(ValueError, match="stem_stride must be 1 .* or 2"):
        get_model("resnet_tiny", num_classes=10, stem_stride=3)

    cfg = config_lib.base_config()
    cfg.model.update(name="resnet_tiny", stem_stride=2)
    kwargs = model_config_of(cfg, 10)
    assert kwargs["stem_stride"] == 2
    assert checkpoints.model_signature(kwargs) != checkpoints.model_signature({**kwargs, "stem_stride": 1})
    assert checkpoints.model_signature({**kwargs, "dtype": "bfloat16"}) == checkpoints.model_signature(kwargs)
    config_lib.validate(cfg)
    cfg.model.name = "vgg_tiny"
    with pytest.raises(config_lib.ConfigError, match="'vgg_tiny' has no option 'stem_stride'"):
        config_lib.validate(cfg)
