"""Training methods: each registers a `Method` (pure losses + what its attack and teachers need)."""
from sa_mdrad_jax.methods import pgd_at, sa_mdrad  # noqa: F401  (registration)
from sa_mdrad_jax.methods.base import METHODS, Method, Outputs, make_method
from sa_mdrad_jax.methods.natural import natural_loss

__all__ = ["METHODS", "Method", "Outputs", "make_method", "natural_loss"]
