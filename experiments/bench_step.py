"""Benchmark of a training step (natural, PGD-AT, SA-MDRAD): img/s, compile time, peak memory, FLOPs.

  python experiments/bench_step.py --models=resnet18,mobilenetv2 --batch=128 --image_size=32
  python experiments/bench_step.py --models=resnet18 --width=0.25 --image_size=16 --batch=64
  python experiments/bench_step.py --method=sa_mdrad --models=resnet18 --teachers=wrn34_10,resnet50,vgg16_bn --batch=32

Times the same jitted function the training loop runs (gather from the on-device split +
augmentation + forward/backward + SGD update, data-parallel over all devices), after compilation,
with `block_until_ready`; reports the median of `--reps` timings of `--steps` steps each and their
spread. FLOPs are analytic (sa_mdrad_jax.flops: 2·MACs of every conv and matmul, padding
included), per performance.md: natural 3F; PGD-AT K·2F + 3F; SA-MDRAD K·2F + 2·3F + 2·ΣT_k
(K = PGD steps, F the student's forward, T_k each teacher's). Writes JSON (and prints a Markdown table).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import resource
import time

from absl import app, flags

flags.DEFINE_list("models", ["resnet18", "mobilenetv2"], "Zoo model names (students).")
flags.DEFINE_enum("method", "natural", ["natural", "pgd_at", "sa_mdrad"], "Training method.")
flags.DEFINE_list("teachers", ["wrn34_10", "resnet50", "vgg16_bn"], "Teachers (sa_mdrad).")
flags.DEFINE_integer("pgd_steps", 10, "PGD steps (pgd_at, sa_mdrad).")
flags.DEFINE_float("teacher_width", 1.0, "Channel multiplier of the teachers.")
flags.DEFINE_float("width", 1.0, "Channel multiplier.")
flags.DEFINE_integer("batch", 128, "Global batch size.")
flags.DEFINE_integer("image_size", 32, "Square image size.")
flags.DEFINE_integer("num_classes", 10, "Classes.")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_integer("steps", 10, "Steps per timed repetition.")
flags.DEFINE_integer("reps", 5, "Timed repetitions.")
flags.DEFINE_string("out", "", "Write results JSON here.")
FLAGS = flags.FLAGS


def peak_memory_bytes() -> tuple[int, str]:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS (CPU backend)"


def bench_model(name: str) -> dict:
    from sa_mdrad_jax import flops, models
    from sa_mdrad_jax.config import base_config
    from sa_mdrad_jax.methods import natural_loss
    from sa_mdrad_jax.train import input as input_lib, schedules, step as step_lib
    from sa_mdrad_jax.train.state import create_train_state

    mesh = step_lib.make_mesh()
    n_dev = mesh.devices.size
    image_shape = (FLAGS.image_size, FLAGS.image_size, 3)
    model = models.get_model(name, num_classes=FLAGS.num_classes, width=FLAGS.width, dtype=FLAGS.dtype,
                             bn_axis_name=step_lib.DATA)
    optim = base_config().optim
    tx = schedules.make_optimizer(optim, schedules.make_schedule(optim, 100, 10))
    state = jax.jit(functools.partial(create_train_state, model, tx, image_shape, 0))()
    rng = np.random.default_rng(0)
    n = FLAGS.batch * 4
    split = input_lib.put_split(mesh, rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
                                rng.integers(0, FLAGS.num_classes, (n,), dtype=np.int32), drop_remainder=True)
    per_device_batch = FLAGS.batch // n_dev
    fwd = flops.forward_flops(model, state.variables, image_shape)
    step_args, teacher_flops = (), 0.0
    if FLAGS.method == "natural":
        train_step = step_lib.make_train_step(functools.partial(natural_loss, model), tx, mesh)
        step_flops = 3 * fwd
    else:
        from sa_mdrad_jax.config import method_config
        from sa_mdrad_jax.methods import make_method
        from sa_mdrad_jax.train import distill_step, loop
        mcfg = method_config(FLAGS.method)
        mcfg.steps = FLAGS.pgd_steps
        method = make_method(mcfg)
        names = FLAGS.teachers if method.teacher_views else []
        teachers = tuple(models.get_model(t, num_classes=FLAGS.num_classes, width=FLAGS.teacher_width,
                                          dtype=FLAGS.dtype) for t in names)
        teacher_vars = tuple(jax.jit(lambda t=t: t.init(jax.random.PRNGKey(1), jnp.zeros((1, *image_shape)),
                                                        train=False))() for t in teachers)
        teacher_flops = sum(flops.forward_flops(t, v, image_shape) for t, v in zip(teachers, teacher_vars))
        connectors = ()
        if method.connectors:
            connectors = distill_step.make_connectors(
                None, [loop.final_feature_shape(t, image_shape) for t in teachers])
            state = jax.jit(functools.partial(loop._initial_state, model, tx, image_shape, 0, connectors))()
        train_step = distill_step.make_distill_step(method, model, teachers, tx, mesh, eps=mcfg.eps,
                                                    step_size=mcfg.step_size, steps=mcfg.steps,
                                                    connectors=connectors)
        step_args = (teacher_vars, jnp.float32(1.0))
        step_flops = FLAGS.pgd_steps * 2 * fwd + (2 * 3 * fwd + 2 * teacher_flops if FLAGS.method == "sa_mdrad"
                                                  else 3 * fwd)
    train_on, _ = step_lib.compiled_epoch_fns(train_step, None, mesh, per_device_batch=per_device_batch,
                                              eval_per_device_batch=1)
    order = input_lib.epoch_order(state.key, jnp.int32(0), mesh=mesh, per_device=split.per_device)
    t0 = time.perf_counter()
    state, m = train_on(state, split, order, 0, *step_args)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    steps_per_epoch = split.per_device // per_device_batch
    rates = []
    for _ in range(FLAGS.reps):
        t0 = time.perf_counter()
        for i in range(FLAGS.steps):
            state, m = train_on(state, split, order, i % steps_per_epoch, *step_args)
        jax.block_until_ready((state, m))
        rates.append(FLAGS.steps * FLAGS.batch / (time.perf_counter() - t0))
    median = float(np.median(rates))
    peak, peak_kind = peak_memory_bytes()
    return {"method": FLAGS.method, "teachers": list(FLAGS.teachers) if teacher_flops else [],
            "pgd_steps": FLAGS.pgd_steps if FLAGS.method != "natural" else 0, "model": name, "width": FLAGS.width, "dtype": FLAGS.dtype, "batch": FLAGS.batch,
            "image_size": FLAGS.image_size, "devices": n_dev, "device_kind": jax.devices()[0].device_kind,
            "img_per_s_median": median, "img_per_s_min": float(min(rates)), "img_per_s_max": float(max(rates)),
            "compile_plus_first_step_s": compile_s, "forward_gflop_per_image": fwd / 1e9,
            "teacher_forward_gflop_per_image": teacher_flops / 1e9,
            "train_gflop_per_image": step_flops / 1e9, "achieved_tflop_per_s": step_flops * median / 1e12,
            "peak_memory_gib": peak / 2**30, "peak_memory_kind": peak_kind}


def main(argv):
    del argv
    results = [bench_model(name) for name in FLAGS.models]
    print("| method | student | teachers | width | dtype | batch | image | devices | img/s (median, min–max) | "
          "compile s | GFLOP/img (step) | TFLOP/s | peak mem GiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['method']} | {r['model']} | {'+'.join(r['teachers']) or '–'} | {r['width']} | {r['dtype']} | {r['batch']} | {r['image_size']} | "
              f"{r['devices']} × {r['device_kind']} | {r['img_per_s_median']:.3g} "
              f"({r['img_per_s_min']:.3g}–{r['img_per_s_max']:.3g}) | {r['compile_plus_first_step_s']:.1f} | "
              f"{r['train_gflop_per_image']:.3f} | {r['achieved_tflop_per_s']:.3f} | {r['peak_memory_gib']:.2f} "
              f"({r['peak_memory_kind']}) |")
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump({"host": platform.node(), "results": results}, f, indent=2)


if __name__ == "__main__":
    import jax
    import jax.numpy as jnp
    import numpy as np
    app.run(main)
