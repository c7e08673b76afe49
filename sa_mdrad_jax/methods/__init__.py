"""Training methods: each registers a `Method` (pure losses + what its attack and teachers need);
composable terms (IGDM, the TRADES KL) register a `Term` that any method config can add."""
from sa_mdrad_jax.methods import adaad, ard, iad, igdm, mtard, pgd_at, rslad, sa_mdrad, trades  # noqa: F401
from sa_mdrad_jax.methods.base import (METHODS, TERMS, AttackContext, Method, Outputs, StepContext, Term,
                                       make_method, with_term)
from sa_mdrad_jax.methods.natural import natural_loss

__all__ = ["METHODS", "TERMS", "AttackContext", "Method", "Outputs", "StepContext", "Term", "make_method",
           "natural_loss", "with_term"]
