"""L∞ attacks: pure, jittable functions built from a loss, a step rule, an init and a projection.

Every named attack is `attack(logits_fn, x, y, key, *, eps) -> x_adv`; `NAMED` maps the names of
evaluation.md to them. `pgd`/`pgd_from` is the one PGD that training steps use as well.
"""
from sa_mdrad_jax.attacks import apgd, iterative, losses
from sa_mdrad_jax.attacks.apgd import apgd_ce, apgd_t, checkpoints
from sa_mdrad_jax.attacks.autoattack import STANDARD, as_partial, autoattack, default_registry
from sa_mdrad_jax.attacks.fab import fab_t
from sa_mdrad_jax.attacks.fgsm import fgsm
from sa_mdrad_jax.attacks.iterative import cw_inf_30, cw_inf_50x10, pgd20, pgd20_trades, pgd_attack
from sa_mdrad_jax.attacks.pgd import init_perturbation, pgd, pgd_from, project
from sa_mdrad_jax.attacks.square import square

NAMED = {**iterative.NAMED, **apgd.NAMED, "fab_t": fab_t, "square": square}

__all__ = ["NAMED", "STANDARD", "apgd", "apgd_ce", "apgd_t", "as_partial", "autoattack", "checkpoints", "cw_inf_30",
           "cw_inf_50x10", "default_registry", "fab_t", "fgsm", "init_perturbation", "iterative", "losses",
           "pgd", "pgd20", "pgd20_trades", "pgd_attack", "pgd_from", "project", "square"]
