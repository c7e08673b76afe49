"""Clean test accuracy of a restored model, data-parallel over the mesh."""
from __future__ import annotations

import jax

from sa_mdrad_jax import data, models
from sa_mdrad_jax.train import input as input_lib, step as step_lib


def clean_accuracy(model_config: dict, variables, dataset: str, *, split: str = "test",
                   data_dir: str | None = None, image_size: int | None = None, batch_size: int = 500,
                   mesh=None) -> dict:
    """{'accuracy', 'loss', 'count'} of `variables` on this dataset split (all processes' shards)."""
    mesh = step_lib.make_mesh() if mesh is None else mesh
    per_device = max(1, -(-batch_size // mesh.devices.size))
    images, labels = data.load_split(dataset, split, data_dir=data_dir, image_size=image_size,
                                     process_index=jax.process_index(), process_count=jax.process_count())
    device_split = input_lib.put_split(mesh, images, labels, drop_remainder=False, multiple_of=per_device)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    variables = jax.device_put(jax.device_get(variables), replicated)
    model = models.get_model(**model_config)
    eval_step = step_lib.make_eval_step(model, mesh)
    _, eval_on = step_lib.compiled_epoch_fns(None, eval_step, mesh, per_device_batch=1,
                                             eval_per_device_batch=per_device)
    return step_lib.evaluate_split(eval_on, variables, device_split, per_device)
