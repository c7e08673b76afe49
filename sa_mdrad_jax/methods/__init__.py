"""Training methods: each is a pure loss on a device-local batch, registered by name."""
from sa_mdrad_jax.methods.natural import natural_loss

__all__ = ["natural_loss"]
