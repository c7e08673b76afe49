"""Host-driven APGD / APGD-T / FAB-T (attacks/host_loop.py): the same adversarial examples as the
in-graph loops, early stop only when it cannot change the result, and the loop-mode switch."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax.attacks import apgd, fab, host_loop
from sa_mdrad_jax.attacks.autoattack import autoattack, default_registry

EPS = 8 / 255


@pytest.fixture(scope="module")
def points(digits_natural):
    """48 test points of the shared natural digits MLP: at ε = 8/255 some, not all, break."""
    return digits_natural.logits_fn, jnp.asarray(digits_natural.x_test[:48]), jnp.asarray(digits_natural.y_test[:48])


# (in-graph attack, host-driven attack, small budget exercising restarts / several targets)
PAIRS = {
    "apgd_ce": (apgd.apgd_ce, apgd.apgd_ce_host, dict(n_iter=12, restarts=2)),
    "apgd_t": (apgd.apgd_t, apgd.apgd_t_host, dict(n_iter=12, n_target_classes=3)),
    "fab_t": (fab.fab_t, fab.fab_t_host, dict(n_iter=8, n_target_classes=2, n_restarts=2)),
}


@pytest.mark.parametrize("name", list(PAIRS))
def test_host_driven_attack_equals_the_in_graph_loop(points, name):
    logits_fn, x, y = points
    in_graph, host, budget = PAIRS[name]
    key = jax.random.PRNGKey(7)
    expected = np.asarray(jax.jit(lambda x, y: in_graph(logits_fn, x, y, key, eps=EPS, **budget))(x, y))
    got = np.asarray(host(logits_fn, x, y, key, eps=EPS, **budget))
    np.testing.assert_array_equal(got, expected)
    broken = np.argmax(np.asarray(logits_fn(jnp.asarray(got))), -1) != np.asarray(y)
    assert 0 < broken.mean() < 1, "the comparison should cover broken and unbroken points"


def test_apgd_run_stops_once_all_points_are_broken_with_the_same_examples(points):
    """On points APGD breaks within a few iterations the host loop stops early; x_adv and broken
    are still exactly the full in-graph run's (a broken point keeps its first misclassified iterate)."""
    logits_fn, x, y = points
    key = jax.random.PRNGKey(0)
    kw = dict(eps=EPS, n_iter=30, loss_fn=apgd.cross_entropy)
    full = jax.jit(lambda x, y: apgd.apgd_run(logits_fn, x, y, key, **kw))(x, y)
    weak = np.flatnonzero(np.asarray(full.broken))[:16]
    calls = []
    iterate = apgd._iterate_jit
    counting = lambda *a, **k: calls.append(1) or iterate(*a, **k)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(apgd, "_iterate_jit", counting)
        host = apgd.apgd_run_host(logits_fn, x[weak], y[weak], key, **kw)
    sub = jax.jit(lambda x, y: apgd.apgd_run(logits_fn, x, y, key, **kw))(x[weak], y[weak])
    assert bool(jnp.all(host.broken)) and len(calls) < kw["n_iter"]
    np.testing.assert_array_equal(np.asarray(host.x_adv), np.asarray(sub.x_adv))


def test_host_fori_loop_matches_lax_fori_loop_and_stops_before_an_iteration():
    body = lambda k, s: s * 3 + k
    assert host_loop.host_fori_loop(2, 7, body, 1) == int(jax.lax.fori_loop(2, 7, body, 1))
    seen = []
    out = host_loop.host_fori_loop(0, 10, lambda k, s: seen.append(int(k)) or s + 1, 0, stop=lambda s: s >= 4)
    assert out == 4 and seen == [0, 1, 2, 3]


def test_autoattack_driver_runs_host_driven_attacks_outside_jit(points):
    """The driver calls a host-driven attack (also behind functools.partial) directly and gets the
    same examples and report as the in-graph registry."""
    logits_fn, x, y = points
    small = {name: (functools.partial(pair[0], **{**pair[2], "n_iter": 4}),
                    functools.partial(pair[1], **{**pair[2], "n_iter": 4})) for name, pair in PAIRS.items()}
    assert all(host_loop.is_host_driven(h) and not host_loop.is_host_driven(d) for d, h in small.values())
    results = {}
    for i, mode in enumerate(("device", "host")):
        registry = {name: fns[i] for name, fns in small.items()}
        results[mode] = autoattack(logits_fn, x, y, jax.random.PRNGKey(1), eps=EPS, attacks=tuple(small),
                                   registry=registry)
    np.testing.assert_array_equal(np.asarray(results["host"][0]), np.asarray(results["device"][0]))
    for field in ("robust_accuracy", "robust_accuracy_after", "n_attacked"):
        assert results["host"][1][field] == results["device"][1][field]


def test_loop_mode_resolution(monkeypatch):
    monkeypatch.delenv(host_loop.ENV, raising=False)
    assert host_loop.resolve_loop() == ("host" if jax.default_backend() == "cpu" else "device")
    monkeypatch.setenv(host_loop.ENV, "device")
    assert host_loop.resolve_loop() == "device" and host_loop.resolve_loop("host") == "host"
    assert not any(host_loop.is_host_driven(a) for a in default_registry().values())
    assert all(host_loop.is_host_driven(default_registry("host")[n]) for n in ("apgd_ce", "apgd_t", "fab_t"))
    monkeypatch.setenv(host_loop.ENV, "fast")
    with pytest.raises(ValueError, match="Unknown attack loop 'fast'.*auto, host, device"):
        host_loop.resolve_loop()
