"""Sanity checks S1–S11 against gradient masking: they pass on an adversarially trained model, they
fail on a deliberately masked one, each threshold rule can fail, and the `sanity` command."""
from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sa_mdrad_jax import cli
from sa_mdrad_jax.evaluate import sanity
from sa_mdrad_jax.train import loop
from util import tiny_config

IDS = [f"S{i}" for i in range(1, 12)]
# The PGD-AT model was trained at 16/255 (util.ADV_EPS); at its own radius it is so smooth that FGSM and
# PGD-20 break nearly the same points (1-2 of 360), a little beyond it the attacks separate (6 points).
AT_EPS = 20 / 255


def _accuracy(logits_fn, x, y) -> float:
    return float(jnp.mean(jnp.argmax(logits_fn(x), -1) == y))


# ------------------------------------------------------------------------------ masked model

def saturate_off_data_levels(logits_fn, x, *, levels: int = 16, dead_zone: float = 4.5 / 255,
                             gain: float = 1e4):
    """A deliberately gradient-masked classifier: logits(x) · (1 + gain · q(x)) with

        q(x) = 255 · mean_i max(d_i − dead_zone, 0),   d_i = |x_i − round(16 x_i)/16|,

    d_i being pixel i's distance to the nearest grey level of the digits data (k/16, k = 0..16).
    The factor is positive, so argmax — the decision and the TRUE robustness — is the base
    model's everywhere. Within `dead_zone` (4.5/255) of the data's levels, i.e. at the clean points
    and for every perturbation of ε ≤ 4/255, the factor is exactly 1 with zero gradient: the model
    is the base model. Beyond, the logits grow by up to ~10^4, the softmax saturates and the CE
    gradient underflows to exactly 0 for all but the least confident points: a "defence" that
    PGD reports as robust.
    """
    d = jnp.abs(x - jnp.round(x * levels) / levels)
    q = 255 * jnp.mean(jax.nn.relu(d - dead_zone).reshape(x.shape[0], -1), axis=1)
    return logits_fn(x) * (1 + gain * q)[:, None]


def _results_by_id(results) -> dict:
    assert [r.id for r in results] == IDS
    for r in results:                        # every check reports what it measured and against what
        assert r.description and r.summary and r.values and r.threshold
        json.dumps(r.to_dict(), default=float)
    return {r.id: r for r in results}


@pytest.fixture(scope="module")
def adversarial_results(digits_adversarial):
    m = digits_adversarial
    f = jax.jit(m.logits_fn)
    return sanity.run_sanity_checks(f, m.x_test, m.y_test, jax.random.PRNGKey(0), eps=AT_EPS,
                                    batch_size=len(m.x_test), budget="fast")


def test_all_checks_pass_on_an_adversarially_trained_model(digits_adversarial, adversarial_results):
    """PGD-AT digits MLP (trained at 16/255) at ε = 20/255, all 360 test points, the "fast" budget.
    Measured: clean 98.1 %, fgsm 85.8 %, pgd20 84.2 %, apgd_ce 84.2 %, autoattack 84.2 %, square
    89.4 %, noise 98.1 %; 0 % at 64/255 and at ε = 1."""
    r = _results_by_id(adversarial_results)
    assert [k for k, v in r.items() if not v.passed] == []
    n = len(digits_adversarial.x_test)
    clean = r["S10"].values["clean"]
    assert clean > 0.9 and r["S8"].values["pgd20"] > 0.6          # genuinely robust-ish at 20/255
    assert r["S1"].values["n_outputs"] == 16 and r["S1"].values["max_linf_minus_eps"] <= 1e-6
    assert r["S4"].values["n_all_zero"] == 0
    curve = r["S5"].values["accuracy"]
    assert curve[0] == clean and curve[-1] < curve[0] - 0.2        # the radii do matter
    for acc in r["S6"].values["accuracy"].values():
        assert acc["worst_case"] <= 0.01
    assert r["S7"].values["pgd20"] <= r["S7"].values["fgsm"]
    s11 = r["S11"].values
    assert s11["robust_accuracy"] == s11["recomputed"] <= min(s11["robust_accuracy_after"].values())
    assert r["S8"].values["autoattack"] <= r["S8"].values["apgd_ce"] <= r["S8"].values["pgd20"] + 1 / n
    assert r["S9"].values["square"] >= r["S9"].values["best_white_box"]

    table = sanity.markdown_table(adversarial_results, "header line")
    assert table.startswith("header line") and table.count("| PASS |") == 11
    assert "11/11 checks passed." in table


def test_s5_s6_s7_fail_on_a_gradient_masked_model(digits_natural):
    """`saturate_off_data_levels` around the natural digits MLP, ε = 16/255, all 360 test points,
    the "smoke" budget (these failures do not need strong attacks). Which checks fail, and why
    (measured values in parentheses):

    S4  the CE gradient at the random start is exactly 0 (saturated softmax) for most points (302);
    S5  PGD works for ε ≤ 4/255 (inside the dead zone the model is the base model) and is stuck at
        its start from 8/255 on, so accuracy RISES with ε (84.4 % at 4/255, 94.7 % at 8/255);
    S6  stuck at the start, PGD/APGD leave noise-level accuracy at 64/255 and ε = 1 (20.8 %, 5.8 %);
    S7  FGSM takes its gradient at the clean point (factor 1: the true gradient) and its one step
        keeps the base model's decision, so it breaks what PGD cannot (fgsm 22.2 %, pgd20 91.4 %);
    S8  AutoAttack's APGD-T maximises the targeted DLR loss, invariant to the logit scale, so it gets
        true gradients and breaks what APGD-CE cannot (apgd_ce 82.5 %, autoattack 10.3 %);
    S10 PGD stuck at its random start costs what uniform noise costs (3.9 pp vs 5.8 pp).
    The others still report and pass: S1 (all x' valid), S2 (deterministic), S3 (logits), S9
    (Square, 50.6 %, does not beat the white-box DLR attack), S11 (AutoAttack's bookkeeping).
    One model makes S5, S6 and S7 fail together, so no second one is needed.
    """
    base, x, y = digits_natural
    masked = jax.jit(functools.partial(saturate_off_data_levels, base))
    noise = jnp.clip(x + jax.random.uniform(jax.random.PRNGKey(5), x.shape, minval=-0.1, maxval=0.1), 0, 1)
    for z in (x, noise):                        # same decisions: only the gradients are masked
        np.testing.assert_array_equal(jnp.argmax(masked(z), -1), jnp.argmax(base(z), -1))

    results = sanity.run_sanity_checks(masked, x, y, jax.random.PRNGKey(0), eps=16 / 255, batch_size=len(x),
                                       budget="smoke")
    r = _results_by_id(results)
    assert sorted(k for k, v in r.items() if not v.passed) == sorted(["S4", "S5", "S6", "S7", "S8", "S10"])
    n = len(x)
    assert r["S4"].values["n_all_zero"] > n // 2
    assert r["S5"].values["largest_increase_points"] >= 10 and r["S5"].values["eps0_equals_clean"]
    assert all(a["worst_case"] > 0.03 for a in r["S6"].values["accuracy"].values())
    assert r["S7"].values["pgd20"] > r["S7"].values["fgsm"] + 0.3
    assert r["S8"].values["gap_apgd_ce_autoattack"] > 0.3
    assert "**FAIL**" in sanity.markdown_table(results)


# ------------------------------------------------------------------------------ single rules

def test_s2_fails_when_logits_depend_on_the_batch(digits_natural):
    base, x, _ = digits_natural
    batch_norm = jax.jit(lambda z: base(z - z.mean(0) + 0.5 * jnp.ones_like(z[:1])))  # batch statistics
    bad = sanity.check_determinism(batch_norm, np.asarray(x[:32]), jax.random.PRNGKey(0), batch_size=32)
    good = sanity.check_determinism(jax.jit(base), np.asarray(x[:32]), jax.random.PRNGKey(0), batch_size=32)
    assert not bad.passed and bad.values["max_abs_diff_replaced"] > 1e-2
    assert good.passed and good.values["max_abs_diff_repeat"] == 0.0


def test_s3_fails_on_probabilities_and_s4_on_a_quantised_input(digits_natural):
    base, x, y = digits_natural
    x, y = np.asarray(x[:32]), np.asarray(y[:32])
    assert not sanity.check_logits(jax.jit(lambda z: jax.nn.softmax(base(z))), x, batch_size=32).passed
    assert sanity.check_logits(jax.jit(lambda z: jax.nn.log_softmax(base(z))), x, batch_size=32).passed
    rounded = jax.jit(lambda z: base(jnp.round(z * 16) / 16))         # zero gradient everywhere
    s4 = sanity.check_gradients(rounded, x, y, jax.random.PRNGKey(0), eps=8 / 255, batch_size=32)
    assert not s4.passed and s4.values["n_all_zero"] == 32


@pytest.mark.parametrize("acc_4, acc_0, passed", [(0.70, 0.90, True),   # non-increasing
                                                  (0.71, 0.90, True),   # +1 point: within tolerance
                                                  (0.72, 0.90, False),  # +2 points
                                                  (0.70, 0.89, False)]) # ε = 0 is not the clean accuracy
def test_s5_tolerates_at_most_one_point(acc_4, acc_0, passed):
    n = 100
    curve = {0.0: acc_0, 1 / 255: 0.8, 2 / 255: 0.7, 4 / 255: acc_4, 8 / 255: 0.5}
    assert sanity.check_monotone(curve, clean=0.90, n=n, tolerance_points=1).passed is passed


def test_threshold_rules_of_s7_to_s10():
    assert sanity.check_iterative(0.40, 0.40).passed and not sanity.check_iterative(0.41, 0.40).passed
    assert sanity.check_convergence(0.52, 0.50, 0.48).passed
    assert not sanity.check_convergence(0.53, 0.50, 0.50).passed
    assert not sanity.check_convergence(0.50, 0.50, 0.47).passed
    wb = {"fgsm": 0.6, "pgd20": 0.5}
    assert sanity.check_black_box(0.498, wb).passed and not sanity.check_black_box(0.497, wb).passed
    assert sanity.check_noise(0.9, 0.85, 0.7).passed and not sanity.check_noise(0.9, 0.84, 0.7).passed
    assert sanity.check_noise(0.9, 0.91, 0.9).passed                # noise costs nothing


def test_bad_inputs_are_rejected_with_what_is_accepted(digits_natural):
    f, x, y = digits_natural
    x, y = np.asarray(x[:4]), np.asarray(y[:4])
    key = jax.random.PRNGKey(0)
    for kwargs, match in [(dict(eps=0.0), r"eps must be in \(0, 1\]"),
                          (dict(eps=8 / 255, budget="huge"), "Unknown budget 'huge'. Valid: standard, fast, smoke"),
                          (dict(eps=8 / 255, batch_size=0), "batch_size")]:
        with pytest.raises(ValueError, match=match):
            sanity.run_sanity_checks(f, x, y, key, **kwargs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sanity.run_sanity_checks(f, x * 255, y, key)
    with pytest.raises(ValueError, match="at least 2 points"):
        sanity.run_sanity_checks(f, x[:1], y[:1], key)


# ------------------------------------------------------------------------------ the command

@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("sanity_model"))
    loop.train(tiny_config(**{"train.max_steps": 10, "train.epochs": 1}), workdir)
    return workdir


def _run(*args) -> int:
    try:
        cli.run(["sa-mdrad", "sanity", *args])
    except SystemExit as e:
        return e.code
    return 0


def test_sanity_command_writes_reports_and_exit_code_reflects_failures(tiny_checkpoint, capsys):
    code = _run(f"--workdir={tiny_checkpoint}", "--n_points=2", "--batch_size=2", "--budget=smoke")
    record = json.loads(open(f"{tiny_checkpoint}/sanity.json").read())
    assert [c["id"] for c in record["checks"]] == IDS
    failed = [c["id"] for c in record["checks"] if not c["passed"]]
    assert record["passed"] is (not failed) and code == (1 if failed else 0)
    assert record["n_points"] == 2 and record["step"] == 10 and record["budget"]["name"] == "smoke"
    out = capsys.readouterr().out
    md = open(f"{tiny_checkpoint}/sanity.md").read()
    for text in (out, md):
        assert "budget smoke" in text and "2 digits test points" in text
        assert f"{11 - len(failed)}/11 checks passed." in text and text.count("| S") == 11


@pytest.mark.parametrize("passed", [True, False])
def test_sanity_command_exit_code(tmp_path, monkeypatch, capsys, passed):
    """The command's exit status is 1 exactly when some check failed (reports written either way)."""
    def fake(workdir, *, out_dir, **kwargs):
        checks = [sanity.CheckResult(i, sanity.DESCRIPTIONS[i], passed or i != "S7", {"v": 1}, {"t": 0}, "m")
                  for i in IDS]
        record = {"model": {"name": "m"}, "step": 1, "n_points": 2, "dataset": "digits", "eps": 8 / 255,
                  "seed": 0, "budget": {"name": "fast", **dataclasses.asdict(sanity.BUDGETS["fast"])},
                  "passed": passed, "checks": [c.to_dict() for c in checks]}
        sanity.write_reports(record, out_dir)
        return record

    monkeypatch.setattr(sanity, "sanity_check_checkpoint", fake)
    assert _run(f"--workdir={tmp_path}") == (0 if passed else 1)
    assert json.loads((tmp_path / "sanity.json").read_text())["passed"] is passed
    assert ("| S7 | " + sanity.DESCRIPTIONS["S7"] + " | **FAIL**" in capsys.readouterr().out) is (not passed)
