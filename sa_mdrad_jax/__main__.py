from sa_mdrad_jax.cli import run

run()
