"""L∞ attacks: pure, jittable functions built from a loss, a step rule, an init and a projection.

Every named attack is `attack(logits_fn, x, y, key, *, eps) -> x_adv`, registered with
`register_attack` (attacks/registry.py); `NAMED` is that registry itself (read at call time, so an
attack registered later is seen), `resolve(spec)` turns a name or a spec string
('pgd:steps=50,restarts=2,loss=cw') into an attack. `pgd`/`pgd_from` is the one PGD that training
steps use as well.
"""
from sa_mdrad_jax.attacks import apgd, iterative, losses
from sa_mdrad_jax.attacks.apgd import apgd_ce, apgd_t, checkpoints
from sa_mdrad_jax.attacks.autoattack import STANDARD, as_partial, autoattack, default_registry
from sa_mdrad_jax.attacks.fab import fab_t
from sa_mdrad_jax.attacks.fgsm import fgsm
from sa_mdrad_jax.attacks.iterative import cw_inf_30, cw_inf_50x10, pgd20, pgd20_trades, pgd_attack
from sa_mdrad_jax.attacks.pgd import init_perturbation, pgd, pgd_from, project
from sa_mdrad_jax.attacks.registry import (ATTACKS, AttackSpecError, register_attack, resolve, split_list,
                                           unregister_attack)
from sa_mdrad_jax.attacks.square import square

NAMED = ATTACKS   # the live registry (not a copy)

__all__ = ["ATTACKS", "AttackSpecError", "NAMED", "STANDARD", "register_attack", "resolve", "split_list",
           "unregister_attack", "apgd", "apgd_ce", "apgd_t", "as_partial", "autoattack", "checkpoints", "cw_inf_30",
           "cw_inf_50x10", "default_registry", "fab_t", "fgsm", "init_perturbation", "iterative", "losses",
           "pgd", "pgd20", "pgd20_trades", "pgd_attack", "pgd_from", "project", "square"]
