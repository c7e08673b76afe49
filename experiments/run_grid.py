"""Runs an experiment grid: teachers, every (dataset, student, method, seed) run, evaluation, tables, plots.

  python experiments/run_grid.py --grid=experiments/grids/digits.py
  python experiments/run_grid.py --grid=experiments/grids/cifar10_resnet18.py --root=/data/runs
  python experiments/run_grid.py --grid=experiments/grids/digits.py --methods=pgd_at,sa_mdrad --seeds=0 \\
      --results=runs/mini                     # a sub-grid
  python experiments/run_grid.py --grid=experiments/grids/digits.py --report_only   # re-make tables/plots

Re-running the same command skips finished runs and evaluations and resumes unfinished runs from
their checkpoints. On a machine without the workdirs, --reuse_results keeps the runs whose results
are committed and trains the rest. Run it from the repository root (grid files name configs/ by relative path).
See sa_mdrad_jax/grid.py for the grid file's fields.
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags, logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_string("grid", None, "Grid file (a Python module with get_grid()).", required=True)
flags.DEFINE_string("root", "", "Override the grid's root directory of run workdirs.")
flags.DEFINE_string("results", "", "Override the grid's results directory.")
flags.DEFINE_list("methods", [], "Only these method labels (default: the grid's).")
flags.DEFINE_list("seeds", [], "Only these seeds (default: the grid's).")
flags.DEFINE_string("only", "", "Only runs whose name (dataset/student/method/seedN) contains this.")
flags.DEFINE_bool("reuse_results", False,
                  "Keep runs whose evaluation is already in the results directory (committed by an earlier session "
                  "whose workdirs are gone) instead of training them again: for resuming a grid on a new machine. "
                  "Off, a fresh clone re-trains every run and so reproduces the committed tables.")
flags.DEFINE_bool("report_only", False, "Only re-make tables and plots from the results directory.")
flags.DEFINE_string("compilation_cache", "workdir/jax_cache",
                    "Persistent XLA compilation cache ('' = off): seeds of a method share their programs.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    import jax
    logging.set_verbosity(logging.WARNING)   # Orbax logs every checkpoint operation at INFO

    from sa_mdrad_jax import grid as grid_lib, paths
    if FLAGS.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", FLAGS.compilation_cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    grid = grid_lib.load_grid(FLAGS.grid)
    for key in ("root", "results"):
        if getattr(FLAGS, key):
            grid[key] = getattr(FLAGS, key)
    if FLAGS.methods:
        unknown = set(FLAGS.methods) - set(grid["methods"])
        if unknown:
            raise SystemExit(f"--methods: {sorted(unknown)} not in the grid's methods {list(grid['methods'])}.")
        grid["methods"] = tuple(FLAGS.methods)
    if FLAGS.seeds:
        grid["seeds"] = tuple(int(s) for s in FLAGS.seeds)
    if FLAGS.report_only:
        print(grid_lib.write_report(grid))   # whatever runs have evaluations
        return
    t0 = time.time()
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731
    grid_lib.run_grid(grid, only=FLAGS.only, log=log, reuse_results=FLAGS.reuse_results)   # attacks compile once per architecture
    print(paths.read_text(paths.join(grid["results"], "tables.md")))
    print(f"wall time {time.time() - t0:.0f} s")


if __name__ == "__main__":
    app.run(main)
