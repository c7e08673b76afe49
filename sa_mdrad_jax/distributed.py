"""Multi-host start-up: `jax.distributed.initialize` when the config asks for it."""
from __future__ import annotations

import jax


def maybe_initialize(config) -> None:
    """Initialises the JAX distributed runtime from `config.distributed` (no-op unless asked).

    Empty/negative fields are left to JAX's auto-detection (TPU pods, SLURM, Open MPI).
    On CPU, cross-process collectives go through gloo.
    """
    if not config.initialize:
        return
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    if config.coordinator_address:
        kwargs["coordinator_address"] = config.coordinator_address
    if config.num_processes > 0:
        kwargs["num_processes"] = config.num_processes
    if config.process_id >= 0:
        kwargs["process_id"] = config.process_id
    if config.get("local_device_ids", ""):
        kwargs["local_device_ids"] = [int(i) for i in str(config.local_device_ids).split(",")]
    jax.distributed.initialize(**kwargs)
