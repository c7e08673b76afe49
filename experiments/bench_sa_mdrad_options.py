"""What each SA-MDRAD option costs: training-step throughput of every configuration of the option
sweep (experiments/grids/sa_mdrad_sweep.py) and PGD-AT, measured side by side in one process.

  python experiments/bench_sa_mdrad_options.py --out=experiments/results/sa_mdrad_sweep/option_cost.json
  python experiments/bench_sa_mdrad_options.py --labels=sa_mdrad,sa_mdrad@gamma=1,pgd_at --rounds=7

The setup is the sweep's (digits protocol): resnet_tiny student on 8×8 inputs, batch 64, PGD-10,
the two natural teachers ResNet-18 ×0.25 and WRN-16-4 ×0.25 (random weights: the cost does not
depend on them), each label's method options (`grid_presets.sweep_overrides` over the pinned
`SWEEP_BASE`). Every step is compiled first (experiments/bench_suite.py's `build_step`, the function
the training loop runs); then `--rounds` rounds each time `--steps` steps of every label in turn, so
that a shared machine's load drifts over all labels alike. Reported per label: the median img/s over
rounds, its min–max, and the ratio to the defaults' median in the same rounds. The sweep's own
tables carry each run's training img/s too, but those runs shared the machine with other runs.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                      # bench_suite
sys.path.insert(0, os.path.dirname(HERE))     # sa_mdrad_jax from a checkout

flags.DEFINE_list("labels", [], "Sweep labels to time (default: every label of the sweep grid, PGD-AT included).")
flags.DEFINE_integer("rounds", 5, "Interleaved timing rounds.")
flags.DEFINE_integer("steps", 5, "Steps per label per round.")
flags.DEFINE_integer("batch", 64, "Global batch size (the digits protocol's).")
flags.DEFINE_string("out", "", "Write the results JSON (with a Markdown table) here.")
FLAGS = flags.FLAGS


def spec_of(label: str) -> dict:
    """bench_suite's spec of one sweep label: the digits protocol's student, teachers and PGD."""
    from sa_mdrad_jax import grid_presets
    options = {} if label == "pgd_at" else {**grid_presets.SWEEP_BASE, **grid_presets.sweep_overrides(label)}
    return dict(method="pgd_at" if label == "pgd_at" else "sa_mdrad", model="resnet_tiny", width=1.0,
                teachers=["resnet18", "wrn16_4"], teacher_width=0.25, batch=FLAGS.batch, dtype="float32",
                image_size=8, num_classes=10, pgd_steps=10, method_options=options)


def markdown(rows: list[dict]) -> str:
    lines = ["| label | img/s median (min–max) | ÷ defaults | compile + 1st step s |", "|---|---|---|---|"]
    lines += [f"| {r['label']} | {r['img_per_s_median']:.0f} ({r['img_per_s_min']:.0f}–{r['img_per_s_max']:.0f}) | "
              f"{r['vs_defaults']:.2f} | {r['compile_plus_first_step_s']:.1f} |" for r in rows]
    return "\n".join(lines)


def main(argv):
    del argv
    import jax

    from bench_suite import build_step
    from sa_mdrad_jax import grid_presets
    from sa_mdrad_jax.attacks.pgd import loop_unroll
    labels = list(FLAGS.labels) or list(grid_presets.sa_mdrad_sweep_grid()["methods"])
    if "sa_mdrad" not in labels:
        labels.insert(0, "sa_mdrad")         # the reference of every ratio
    load_before, t_start = os.getloadavg(), time.time()
    built = {}
    for label in labels:
        with loop_unroll("auto"):             # as the grid's runs: traced (and unrolled on CPU) at the first call
            train_on, state, split, order, step_args, info = build_step(spec_of(label))
            t0 = time.perf_counter()
            state, m = train_on(state, split, order, 0, *step_args)
            jax.block_until_ready((state, m))
        built[label] = [train_on, state, split, order, step_args, info, time.perf_counter() - t0]
        print(f"compiled {label} ({built[label][-1]:.1f} s)", flush=True)
    rates = {label: [] for label in labels}
    for _ in range(FLAGS.rounds):
        for label in labels:
            train_on, state, split, order, step_args, info, _ = built[label]
            t0 = time.perf_counter()
            for i in range(FLAGS.steps):
                state, m = train_on(state, split, order, (i + 1) % info["steps_per_split"], *step_args)
            jax.block_until_ready((state, m))
            rates[label].append(FLAGS.steps * FLAGS.batch / (time.perf_counter() - t0))
            built[label][1] = state
    base = statistics.median(rates["sa_mdrad"])
    rows = [{"label": label, "img_per_s_median": statistics.median(r), "img_per_s_min": min(r),
             "img_per_s_max": max(r), "vs_defaults": statistics.median(r) / base,
             "compile_plus_first_step_s": built[label][-1], "rates": r} for label, r in rates.items()]
    table = markdown(rows)
    print(table)
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump({"host": platform.node(), "processor": platform.processor() or platform.machine(),
                       "cpu_count": os.cpu_count(), "jax": jax.__version__, "device": jax.devices()[0].device_kind,
                       "devices": jax.device_count(), "load_average_before": load_before,
                       "load_average_after": os.getloadavg(), "wall_s": time.time() - t_start,
                       "rounds": FLAGS.rounds, "steps": FLAGS.steps, "batch": FLAGS.batch, "results": rows,
                       "table": table}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
