"""sa_mdrad_jax: adversarial distillation from multiple teachers, and robustness evaluation, in JAX/Flax."""

__version__ = "0.1.0"
