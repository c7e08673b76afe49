"""Benchmark of standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square): wall time per 1,000 points.

  sa-mdrad quickstart --workdir=workdir/quickstart      # a small robust model to attack
  python experiments/bench_autoattack.py --workdir=workdir/quickstart/students/pgd_at --n_points=100 --reps=2
  python experiments/bench_autoattack.py --synthetic=resnet18 --n_points=10000 --batch=2500 --eps_255=8 --reps=1
  python experiments/bench_autoattack.py --synthetic=resnet_tiny --image_size=28 --n_points=32 --batch=32 \
      --eps_255=25.5 --reps=1 --loops=device,host     # APGD/FAB loops in-graph vs host-driven, interleaved

Runs `attacks.autoattack` (the standard version, in full) on the first `--n_points` test images of
the checkpoint's dataset, `--reps` + 1 times with the same key and the same jitted logits function
(evaluation.md: float32, highest precision, eval mode). The first run compiles every stage (one
compilation per bucket size met); later runs reuse the executables, so per stage

    run s     = median over the later runs,   compile s ≈ first run − run s.

Per-1,000-point figures scale run s by 1000 / n_points. They depend on how many points survive
to the expensive stages (APGD-T, FAB-T, Square), so the robust accuracy after each stage and the
points each stage attacked are recorded with them. `--loops` lists the attack-loop modes to time
(attacks/host_loop.py: 'device' = in-graph loops, 'host' = host-driven iterations, 'auto' = the
backend's default); with several, each repetition runs them in turn (interleaved, same load) and
`same_result_every_run` also compares the modes. Writes JSON and prints one Markdown row per mode.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app, flags

flags.DEFINE_string("workdir", None, "Training workdir of the checkpoint to attack (or --synthetic).")
flags.DEFINE_string("synthetic", "", "Instead of a checkpoint: this zoo model, randomly initialised, on random "
                    "images labelled with its own predictions (clean accuracy 100%), e.g. resnet18.")
flags.DEFINE_integer("image_size", 32, "Image size of --synthetic data.")
flags.DEFINE_integer("num_classes", 10, "Classes of the --synthetic model.")
flags.DEFINE_integer("n_points", 100, "First n test points.")
flags.DEFINE_integer("batch", 0, "AutoAttack chunk size (0: all points in one chunk).")
flags.DEFINE_float("eps_255", 32.0, "L∞ ε in units of 1/255.")
flags.DEFINE_integer("reps", 2, "Timed runs after the compiling one.")
flags.DEFINE_integer("seed", 0, "Attack key.")
flags.DEFINE_list("loops", ["auto"], "Attack-loop modes to time, interleaved: auto, host, device.")
flags.DEFINE_string("out", "", "Write results JSON here (default experiments/results/bench_autoattack_<model>_<device>.json).")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sa_mdrad_jax import attacks, checkpoints, data, models

    if bool(FLAGS.workdir) == bool(FLAGS.synthetic):
        raise app.UsageError("Give exactly one of --workdir (a checkpoint) and --synthetic (a zoo model name).")
    if FLAGS.synthetic:
        model_cfg = {"name": FLAGS.synthetic, "num_classes": FLAGS.num_classes, "width": 1.0}
        model = models.get_model(**model_cfg)
        size = FLAGS.image_size
        variables = jax.jit(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3)), train=False))()
        meta = {"dataset": f"synthetic {size}x{size}", "method": "random init", "image_shape": [size, size, 3]}
        x = np.asarray(jax.random.uniform(jax.random.PRNGKey(1), (FLAGS.n_points, size, size, 3)))
    else:
        model_cfg, variables, meta = checkpoints.load_variables(FLAGS.workdir)
        model = models.get_model(**{**model_cfg, "dtype": "float32"})
        size = meta["image_shape"][0]
        x, y = data.load_split(meta["dataset"], "test", image_size=size if meta["dataset"] == "digits" else None)
        x, y = x[:FLAGS.n_points].astype(np.float32) / 255.0, y[:FLAGS.n_points]
    variables = jax.device_get(variables)
    logits_fn = jax.jit(lambda z: model.apply(variables, z, train=False)[0])   # one object: jit cache reused
    if FLAGS.synthetic:   # its own predictions as labels: every point starts correctly classified
        chunk = FLAGS.batch or 1000
        y = np.concatenate([np.asarray(jnp.argmax(logits_fn(jnp.asarray(x[i:i + chunk])), -1))
                            for i in range(0, len(x), chunk)])
    eps = FLAGS.eps_255 / 255
    key = jax.random.PRNGKey(FLAGS.seed)
    registries = {loop: attacks.default_registry(loop) for loop in FLAGS.loops}   # validates the names
    runs = {loop: [] for loop in FLAGS.loops}
    x_advs = []
    with jax.default_matmul_precision("highest"):
        for _ in range(FLAGS.reps + 1):
            for loop in FLAGS.loops:
                t0 = time.perf_counter()
                x_adv, report = attacks.autoattack(logits_fn, jnp.asarray(x), jnp.asarray(y), key, eps=eps,
                                                   batch_size=FLAGS.batch or None, registry=registries[loop])
                report["total_seconds"] = time.perf_counter() - t0
                runs[loop].append(report)
                x_advs.append(np.asarray(x_adv))
    first_report = runs[FLAGS.loops[0]][0]
    n = len(x)
    result = {
        "model": model_cfg, "checkpoint": os.path.relpath(FLAGS.workdir) if FLAGS.workdir else "synthetic",
        "method": meta.get("method"),
        "dataset": meta["dataset"], "image_size": size, "eps": eps, "n_points": n,
        "batch": FLAGS.batch or n, "reps": FLAGS.reps,
        "clean_accuracy": first_report["clean_accuracy"], "robust_accuracy": first_report["robust_accuracy"],
        "robust_accuracy_after": first_report["robust_accuracy_after"], "n_attacked": first_report["n_attacked"],
        "loops": {loop: _timing(loop, reports, n) for loop, reports in runs.items()},
        "same_result_every_run": all(np.array_equal(a, x_advs[0]) for a in x_advs),
        "device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "host": platform.node(),
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "jax": jax.__version__,
    }
    out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                    f"bench_autoattack_{model_cfg['name']}_{jax.default_backend()}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    stages = list(first_report["seconds"])
    print("| model | method | input | eps | points | clean % | robust % (AA) | loop | "
          + " | ".join(f"{s} s/1k" for s in stages) + " | total s/1k | compile s (all stages) | load |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(stages) + "---|---|---|")
    for loop, timing in result["loops"].items():
        per = timing["seconds_per_1000_points"]
        print(f"| {model_cfg['name']} ×{model_cfg['width']:g} | {result['method']} | {size}×{size} | "
              f"{FLAGS.eps_255:g}/255 | {n} | {100 * result['clean_accuracy']:.1f} | "
              f"{100 * result['robust_accuracy']:.1f} | {timing['loop']} | "
              + " | ".join(f"{per[s]:.0f}" for s in stages) + f" | {per['total']:.0f} | "
              f"{sum(v for s, v in timing['compile_seconds'].items() if s != 'total'):.0f} | "
              f"{result['load_average_1min']:.1f} |")
    print(f"same result every run and mode: {result['same_result_every_run']}; wrote {out}")


def _timing(loop: str, reports: list[dict], n: int) -> dict:
    """Per stage: median run time over the timed (non-first) runs, their range, compile estimate."""
    from sa_mdrad_jax.attacks.host_loop import resolve_loop

    stages = list(reports[0]["seconds"])
    timed = reports[1:] or reports
    run_s = {s: statistics.median(r["seconds"][s] for r in timed) for s in stages}
    run_s["total"] = statistics.median(r["total_seconds"] for r in timed)
    first = {**reports[0]["seconds"], "total": reports[0]["total_seconds"]}
    return {"loop": loop if loop != "auto" else f"auto ({resolve_loop(loop)})",
            "run_seconds_median": run_s,
            "run_seconds_min_max": {s: [min(r["seconds"][s] for r in timed), max(r["seconds"][s] for r in timed)]
                                    for s in stages},
            "compile_seconds": {s: max(first[s] - run_s[s], 0.0) for s in first},
            "seconds_per_1000_points": {s: v * 1000 / n for s, v in run_s.items()}}


if __name__ == "__main__":
    app.run(main)
