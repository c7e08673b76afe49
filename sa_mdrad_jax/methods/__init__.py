"""Training methods: each registers a `Method` (pure losses + what its attack and teachers need);
composable terms (IGDM, the TRADES KL) register a `Term` that any method config can add."""
# Imported in the papers' table order: registration order is the order of the grids' runs and tables.
from sa_mdrad_jax.methods import pgd_at, trades, ard, iad, rslad, mtard, adaad, sa_mdrad, igdm  # noqa: F401,I001
from sa_mdrad_jax.methods.base import (METHODS, SPECS, TERMS, AttackContext, Method, MethodSpec, Outputs, Recipe,
                                       StepContext, Term, TermRecipe, make_method, method_names, method_spec,
                                       register, register_term, unregister, with_term)
from sa_mdrad_jax.methods.natural import natural_loss

__all__ = ["METHODS", "SPECS", "TERMS", "AttackContext", "Method", "MethodSpec", "Outputs", "Recipe", "StepContext",
           "Term", "TermRecipe", "make_method", "method_names", "method_spec", "natural_loss", "register",
           "register_term", "unregister", "with_term"]
