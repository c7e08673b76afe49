"""AutoAttack bookkeeping with injected attacks: who is attacked, from where, what is counted."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sa_mdrad_jax.attacks.autoattack import autoattack, bucket_sizes
from sa_mdrad_jax.attacks.fab import fab_t
from sa_mdrad_jax.attacks.pgd import pgd
from sa_mdrad_jax.attacks.square import square

# A hand-built world: 2×2×1 images; pixel (0,0) holds the point's id, pixel (0,1) its class as the
# nearest of 4 centres, pixel (1,1) is a scratch pixel the fake attacks perturb.
N, EPS = 40, 0.25
CENTRES = jnp.array([0.1, 0.3, 0.5, 0.7])


def _logits(x):
    return -100.0 * (x[:, 0, 1, 0][:, None] - CENTRES) ** 2


def _ids(x):
    return jnp.round(x[:, 0, 0, 0] * 2 * N - 0.5).astype(jnp.int32)


def _world(wrong=()):
    """(x, y): class k = id mod 4; the ids in `wrong` carry a wrong label (clean-misclassified)."""
    ids = np.arange(N)
    x = np.zeros((N, 2, 2, 1), np.float32)
    x[:, 0, 0, 0] = (ids + 0.5) / (2 * N)
    x[:, 0, 1, 0] = np.asarray(CENTRES)[ids % 4]
    x[:, 1, 1, 0] = 0.3
    y = (ids % 4).astype(np.int32)
    y[list(wrong)] = (y[list(wrong)] + 1) % 4
    return x, y


def _fake(breaks, log, traces):
    """An attack that misclassifies the ids in `breaks` (a move of 0.2 < ε to the next centre) and
    nudges every point's scratch pixel by ε/2; it logs (ids, inputs) per call and counts traces."""
    table = np.zeros(N, bool)
    table[list(breaks)] = True

    def attack(logits_fn, x, y, key, *, eps):
        traces.append(x.shape[0])
        ids = _ids(x)
        jax.debug.callback(lambda i, xx: log.append((np.asarray(i), np.asarray(xx))), ids, x)
        p = x[:, 0, 1, 0]
        moved = jnp.where(p > 0.2, p - 0.2, p + 0.2)
        x = x.at[:, 0, 1, 0].set(jnp.where(jnp.asarray(table)[ids], moved, p))
        return x.at[:, 1, 1, 0].add(eps / 2)

    return attack


def _accuracy(x, y):
    return float(np.mean(np.argmax(np.asarray(_logits(jnp.asarray(x))), -1) == y))


def test_bookkeeping_attacks_only_survivors_from_the_clean_image():
    wrong = {0, 5, 13}
    breaks = {"a": {1, 2, 5, 6}, "b": {2, 7, 8, 0}, "c": set(range(20, 40))}   # 5, 0: already wrong
    x, y = _world(wrong)
    logs = {k: [] for k in breaks}
    registry = {k: _fake(v, logs[k], []) for k, v in breaks.items()}
    x_adv, report = autoattack(_logits, x, y, jax.random.PRNGKey(0), eps=EPS, attacks=("a", "b", "c"),
                               registry=registry, batch_size=16)
    jax.effects_barrier()

    live = set(range(N)) - wrong
    assert report["clean_accuracy"] == len(live) / N
    for name in ("a", "b", "c"):
        seen = np.concatenate([ids for ids, _ in logs[name]])
        assert set(seen.tolist()) == live, name                 # exactly the survivors, no others
        assert report["n_attacked"][name] == len(live)
        for ids, inputs in logs[name]:                           # each stage starts from clean x
            np.testing.assert_array_equal(inputs, x[ids])
        live -= breaks[name]
        assert report["robust_accuracy_after"][name] == len(live) / N
    assert report["robust_accuracy"] == len(live) / N
    after = list(report["robust_accuracy_after"].values())
    assert all(report["robust_accuracy"] <= a for a in after) and after == sorted(after, reverse=True)

    x_adv = np.asarray(x_adv)
    assert _accuracy(x_adv, y) == report["robust_accuracy"]     # recomputed on the returned x'
    assert np.max(np.abs(x_adv - x)) <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    robust = sorted(live | wrong)                                # never broken: returned as clean x
    np.testing.assert_array_equal(x_adv[robust], x[robust])


def test_no_recompilation_as_the_survivor_set_shrinks():
    traces, log = [], []
    attack = _fake(set(), log, traces)
    counts = []
    for k in range(0, 31):                       # 40 down to 10 survivors, one compile per bucket
        x, y = _world(range(k))
        _, report = autoattack(_logits, x, y, jax.random.PRNGKey(0), eps=EPS, attacks=("a",),
                               registry={"a": attack}, batch_size=16)
        counts.append(report["n_attacked"]["a"])
    assert len(set(counts)) == 31
    assert bucket_sizes(16) == [1, 2, 4, 8, 12, 16]     # powers of two below 16/4, then evenly spaced
    assert len(traces) <= len(bucket_sizes(16)), traces
    assert set(traces) <= set(bucket_sizes(16))


def test_random_attack_same_key_same_result_and_empty_stages():
    def coin(logits_fn, x, y, key, *, eps):      # breaks each point with probability 1/2
        flip = jax.random.bernoulli(key, 0.5, (x.shape[0],))
        p = x[:, 0, 1, 0]
        return x.at[:, 0, 1, 0].set(jnp.where(flip, jnp.where(p > 0.2, p - 0.2, p + 0.2), p))

    registry = {"coin": coin, "coin2": coin}
    x, y = _world({3})
    run = lambda key: autoattack(_logits, x, y, key, eps=EPS, attacks=("coin", "coin2"),
                                 registry=registry, batch_size=8)
    (xa1, r1), (xa2, r2), (xa3, r3) = run(jax.random.PRNGKey(7)), run(jax.random.PRNGKey(7)), run(jax.random.PRNGKey(8))
    np.testing.assert_array_equal(xa1, xa2)
    r1.pop("seconds"), r2.pop("seconds"), r3.pop("seconds")
    assert r1 == r2 and r1 != r3
    # A stage with no survivors attacks nothing and changes nothing.
    x, y = _world(range(N))
    xa, r = autoattack(_logits, x, y, jax.random.PRNGKey(0), eps=EPS, attacks=("coin",), registry=registry)
    assert r["n_attacked"]["coin"] == 0 and r["robust_accuracy"] == 0.0
    np.testing.assert_array_equal(xa, x)
    with pytest.raises(ValueError, match="Unknown attacks"):
        autoattack(_logits, x, y, jax.random.PRNGKey(0), eps=EPS, attacks=("nope",), registry=registry)


def test_real_attacks_on_a_trained_mlp(digits_natural):
    """PGD (CE, uniform start), then small-budget FAB-T and Square, on the shared digits MLP."""
    logits_fn = digits_natural.logits_fn
    xt, yt = np.asarray(digits_natural.x_test[:48]), np.asarray(digits_natural.y_test[:48])

    def pgd_ce(logits_fn, x, y, key, *, eps):
        ce = lambda z: optax.softmax_cross_entropy_with_integer_labels(logits_fn(z), y)
        return pgd(ce, x, key, eps=eps, step_size=eps / 4, steps=10)

    registry = {"pgd": pgd_ce, "fab_t": functools.partial(fab_t, n_iter=10, n_target_classes=2),
                "square": functools.partial(square, n_queries=100)}
    eps = 16 / 255
    x_adv, report = autoattack(logits_fn, xt, yt, jax.random.PRNGKey(0), eps=eps,
                               attacks=("pgd", "fab_t", "square"), registry=registry, batch_size=32)
    x_adv = np.asarray(x_adv)
    assert np.max(np.abs(x_adv - xt)) <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    recomputed = float(np.mean(np.argmax(np.asarray(logits_fn(jnp.asarray(x_adv))), -1) == yt))
    assert recomputed == report["robust_accuracy"]
    assert report["robust_accuracy"] <= min(report["robust_accuracy_after"].values())
    assert report["robust_accuracy"] < report["clean_accuracy"] - 0.1
    n = report["n_attacked"]
    assert n["pgd"] == round(report["clean_accuracy"] * 48)
    assert n["fab_t"] == round(report["robust_accuracy_after"]["pgd"] * 48)
