"""The attacks' losses; they live in `sa_mdrad_jax/losses.py`, the one home of every loss."""
from sa_mdrad_jax.losses import cross_entropy, cw_margin, dlr, dlr_targeted, kl_div  # noqa: F401
