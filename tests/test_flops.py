"""Analytic FLOP counts equal the published per-model figures (performance.md)."""
import jax
import jax.numpy as jnp
import pytest

from sa_mdrad_jax import flops, models


@pytest.mark.parametrize("name, gmac", [("resnet18", 0.555), ("mobilenetv2", 0.091), ("wrn34_10", 6.66),
                                        ("wrn28_10", 5.24)])
def test_forward_macs_match_reference_figures(name, gmac):
    model = models.get_model(name, num_classes=10)
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
    assert flops.forward_flops(model, variables, (32, 32, 3)) / 2e9 == pytest.approx(gmac, abs=0.005)


def test_counts_grouped_convolutions_and_loops():
    x = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 1, 4), jnp.float32)  # depthwise: 1 input channel per group
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=4,
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    assert flops.count_flops(conv, x, w) == 2 * 8 * 8 * 4 * 9
    looped = lambda x, w: jax.lax.fori_loop(0, 3, lambda i, y: conv(y, w), x)
    # A fori_loop body is counted once per trace (the caller multiplies by the trip count).
    assert flops.count_flops(looped, x, w) == 2 * 8 * 8 * 4 * 9
