"""The papers' claims checklist across grids: one row per claim and comparison, one column per
results directory (a − b in points, mean ± standard error over paired seeds, 95 % interval, verdict).

  python experiments/claims.py \
      --results=experiments/results/digits_converged,experiments/results/fashion_mnist \
      --names="digits (5 seeds, 360 test digits),Fashion-MNIST (1 seed, AutoAttack on 1,000)" \
      --out=experiments/results/claims.md

The claims and their sources: sa_mdrad_jax/grid_report.py (CLAIMS); the verdicts are those of each
grid's own tables.md (`verdict`). Reads the collected evaluations only; trains nothing.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

flags.DEFINE_list("results", None, "Results directories of grids (each with evaluations/*.json).", required=True)
flags.DEFINE_list("names", [], "Column names, one per results directory (default: the directories).")
flags.DEFINE_string("out", "", "Also write the table to this Markdown file.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from sa_mdrad_jax import grid_report, paths
    names = FLAGS.names or FLAGS.results
    if len(names) != len(FLAGS.results):
        raise SystemExit(f"--names: {len(names)} names for {len(FLAGS.results)} results directories; give one per "
                         "directory, or none.")
    columns = []
    for name, results in zip(names, FLAGS.results):
        records = grid_report.load_records(results)
        if not records:
            raise SystemExit(f"--results: no evaluations under {paths.join(results, 'evaluations')}; collect the grid "
                             "first (run_grid.py --report_only).")
        columns.append((name, records))
    table = grid_report.claims_checklist(columns)
    if FLAGS.out:
        paths.write_text(FLAGS.out, table + "\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
