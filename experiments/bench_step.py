"""Benchmark of one method's training step over several students (the measurement is bench_suite.time_step).

  python experiments/bench_step.py --models=resnet18,mobilenetv2 --batch=128 --image_size=32
  python experiments/bench_step.py --models=resnet18 --width=0.25 --image_size=16 --batch=64
  python experiments/bench_step.py --method=sa_mdrad --models=resnet18 --teachers=wrn34_10,resnet50,vgg16_bn --batch=32

Times the same jitted function the training loop runs (gather from the on-device split +
augmentation + forward/backward + SGD update, data-parallel over all devices), after compilation,
with `block_until_ready`; reports the median of `--reps` timings of `--steps` steps each and their
spread. For every method at once, with MFU and comparisons, use experiments/bench_suite.py. FLOPs are
analytic (sa_mdrad_jax.flops: 2·MACs of every conv and matmul, padding
included), per performance.md: natural 3F; PGD-AT K·2F + 3F; SA-MDRAD K·2F + 2·3F + 2·ΣT_k
(K = PGD steps, F the student's forward, T_k each teacher's). Writes JSON (and prints a Markdown table).
"""
from __future__ import annotations

import json
import os
import platform
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))   # bench_suite

flags.DEFINE_list("models", ["resnet18", "mobilenetv2"], "Zoo model names (students).")
flags.DEFINE_string("method", "natural", "Training method label (natural, pgd_at, ..., adaad+igdm, sa_mdrad).")
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


def bench_model(name: str) -> dict:
    """Times one student with experiments/bench_suite.py's `time_step` (the same measurement)."""
    import jax

    from bench_suite import time_step
    spec = dict(method=FLAGS.method, model=name, width=FLAGS.width, teachers=list(FLAGS.teachers),
                teacher_width=FLAGS.teacher_width, batch=FLAGS.batch, dtype=FLAGS.dtype, image_size=FLAGS.image_size,
                num_classes=FLAGS.num_classes, pgd_steps=FLAGS.pgd_steps, steps=FLAGS.steps, reps=FLAGS.reps,
                unroll=False, requested_devices=jax.device_count())
    r = time_step(spec)
    # The field names this script has always written.
    r.update(train_gflop_per_image=r["step_gflop_per_image"],
             pgd_steps=FLAGS.pgd_steps if FLAGS.method != "natural" else 0)
    return r


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
    app.run(main)
