"""The offline digits quickstart (two heterogeneous teachers); see sa_mdrad_jax/quickstart.py."""
from sa_mdrad_jax.quickstart import get_config  # noqa: F401
