"""L∞ attacks: pure, jittable functions built from a loss, a step rule, an init and a projection."""
from sa_mdrad_jax.attacks.pgd import init_perturbation, pgd, project

__all__ = ["init_perturbation", "pgd", "project"]
