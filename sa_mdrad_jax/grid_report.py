"""Tables and plots of a grid's results directory (written by sa_mdrad_jax.grid.collect).

`<results>/evaluations/*.json` are evaluation records (sa_mdrad_jax.evaluate.robustness) with a
`run` field {dataset, student, method, seed}; `<results>/metrics/*.jsonl` the runs' metric logs
with the same stem. From them:

  tables.md                    one table per (dataset, student) in the papers' layout: a row per
                               method; clean, FGSM, PGD-20, CW∞, AutoAttack accuracy (%) as
                               mean ± std over seeds (sample std, n − 1; a single seed shows the mean)
                               (papers' claims, paired differences, and a convergence table:
                               did each run's validation PGD-20 still rise over its last epochs?)
  summary.json                 the same numbers
  <dataset>_<student>_eps.png        accuracy under PGD-20 vs ε, a line per method (mean ± std)
  <dataset>_<student>_training.png   clean / robust test accuracy over epochs, per method (seed mean)
  <dataset>_<student>_sa_mdrad_diagnostics.png  SA-MDRAD's per-step diagnostics over epochs
"""
from __future__ import annotations

import json

import numpy as np

from sa_mdrad_jax import paths

COLUMNS = {"clean": "Clean", "fgsm": "FGSM", "pgd20": "PGD-20", "cw_inf_30": "CW∞", "autoattack": "AutoAttack"}
# Train-record fields that are not method diagnostics.
_TRAIN_FIELDS = {"step", "kind", "time", "loss", "accuracy", "lr", "img_per_s"}


def load_records(results_dir: str) -> list[dict]:
    records = []
    for path in paths.glob(paths.join(results_dir, "evaluations"), "*.json"):
        rec = json.loads(paths.read_text(path))
        if "run" in rec:
            records.append(rec)
    return records


def mean_std(values) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def fmt(mean: float, std: float | None) -> str:
    """'85.30 ± 1.20' in percent (accuracies are fractions)."""
    return f"{100 * mean:.2f}" + ("" if std is None else f" ± {100 * std:.2f}")


def _order(methods: list[str], known: list[str] | None) -> list[str]:
    known = known or []
    return [m for m in known if m in methods] + sorted(m for m in methods if m not in known)


def aggregate(records: list[dict]) -> dict:
    """{(dataset, student): {method: {attack: (mean, std, n)}}} over the seeds present."""
    groups: dict = {}
    for rec in records:
        r = rec["run"]
        cell = groups.setdefault((r["dataset"], r["student"]), {}).setdefault(r["method"], {})
        for attack, acc in rec["accuracy"].items():
            cell.setdefault(attack, []).append(acc)
    return {key: {m: {a: (*mean_std(v), len(v)) for a, v in attacks.items()} for m, attacks in methods.items()}
            for key, methods in groups.items()}


def markdown_table(group: dict, methods: list[str] | None = None) -> str:
    """The papers' layout: rows methods, columns Clean / FGSM / PGD-20 / CW∞ / AutoAttack, and n seeds."""
    attacks = [a for a in COLUMNS if any(a in cells for cells in group.values())]
    extra = sorted({a for cells in group.values() for a in cells} - set(attacks))
    attacks += extra
    lines = ["| method | " + " | ".join(COLUMNS.get(a, a) for a in attacks) + " | seeds |",
             "|---|" + "---|" * len(attacks) + "---|"]
    for m in _order(list(group), methods):
        cells = group[m]
        n = max(c[2] for c in cells.values())
        lines.append(f"| {m} | " + " | ".join(fmt(*cells[a][:2]) if a in cells else "–" for a in attacks)
                     + f" | {n} |")
    return "\n".join(lines)


def paired(records: list[dict], a: str, b: str, attack: str) -> dict | None:
    """Method `a` minus method `b` on `attack` over the seeds both ran (same seed: same initialisation
    and data order): {'diff', 'se', 'n', 'ci95': (lo, hi)} with Student-t bounds, or None if no common seed."""
    from scipy import stats

    acc = {m: {r["run"]["seed"]: r["accuracy"][attack] for r in records
               if r["run"]["method"] == m and attack in r["accuracy"]} for m in (a, b)}
    seeds = sorted(set(acc[a]) & set(acc[b]))
    if not seeds:
        return None
    d = np.array([acc[a][s] - acc[b][s] for s in seeds])
    if len(d) == 1:
        return _one_seed(records, a, b, attack, seeds[0], float(d[0]))
    se = float(d.std(ddof=1) / np.sqrt(len(d)))
    half = float(stats.t.ppf(0.975, len(d) - 1)) * se
    return {"diff": float(d.mean()), "se": se, "n": len(d), "ci95": (float(d.mean()) - half, float(d.mean()) + half)}


def points_evaluated(record: dict, attack: str) -> int:
    """How many test points `attack` was evaluated on in this record (`attack_points` or all)."""
    return int(record.get("attack_points", {}).get(attack, record["n_points"]))


def _one_seed(records: list[dict], a: str, b: str, attack: str, seed: int, diff: float) -> dict:
    """One common seed: the only error left to state is the test-sampling one. Binomial standard
    errors of the two accuracies combined as if independent, sqrt(p_a(1−p_a)/n_a + p_b(1−p_b)/n_b):
    conservative for two models scored on the same points (their errors correlate), and blind to the
    seed-to-seed spread of training — `kind` 'points' marks it."""
    rec = {m: next(r for r in records if r["run"]["method"] == m and r["run"]["seed"] == seed
                   and attack in r["accuracy"]) for m in (a, b)}
    var = sum(r["accuracy"][attack] * (1 - r["accuracy"][attack]) / points_evaluated(r, attack) for r in rec.values())
    se = float(np.sqrt(var))
    if se == 0:
        return {"diff": diff, "se": None, "n": 1, "ci95": None, "kind": "points"}
    return {"diff": diff, "se": se, "n": 1, "ci95": (diff - 1.96 * se, diff + 1.96 * se), "kind": "points"}


def verdict(p: dict | None) -> str:
    """'holds' when the 95 % interval of a − b lies above 0 (a ≥ b claims accept a tie-free win only),
    'does not hold' when it lies below 0, else 'inconclusive'. With one seed the interval holds the
    test-sampling error only, and the verdict says it is about that one training run."""
    if p is None:
        return "not run"
    if p["ci95"] is None:
        return "inconclusive (1 seed)"
    lo, hi = p["ci95"]
    v = "holds" if lo > 0 else "does not hold" if hi < 0 else "inconclusive"
    return v + " for this run (1 seed; test-sampling error only)" if p.get("kind") == "points" else v


def _paper_labels() -> tuple[str, ...]:
    """The paper grids' method labels, from the method registry."""
    from sa_mdrad_jax.grid_presets import method_labels
    return method_labels(paper_grid=True)


# (claim, source, [(method a, method b, attack)]): each a paper's claim, checked as "a − b > 0".
CLAIMS = (
    ("TRADES is more robust than PGD-AT", "TRADES (Zhang et al. 2019), Table 5",
     [("trades", "pgd_at", "autoattack")]),
    ("Distilled students beat PGD-AT under AutoAttack at the same size", "ARD, RSLAD, AdaAD tables",
     [("ard", "pgd_at", "autoattack"), ("rslad", "pgd_at", "autoattack"), ("adaad", "pgd_at", "autoattack")]),
    ("Distilled students keep higher clean accuracy than PGD-AT", "ARD, RSLAD, AdaAD, SA-MDRAD tables",
     [("ard", "pgd_at", "clean"), ("rslad", "pgd_at", "clean"), ("adaad", "pgd_at", "clean"),
      ("sa_mdrad", "pgd_at", "clean")]),
    ("IAD is more robust than ARD", "IAD (Zhu et al. 2022)", [("iad", "ard", "autoattack")]),
    ("RSLAD ≥ ARD under AutoAttack", "RSLAD (Zi et al. 2021), Table 1", [("rslad", "ard", "autoattack")]),
    ("MTARD ≥ RSLAD (clean and AutoAttack)", "MTARD (Zhao et al. 2022)",
     [("mtard", "rslad", "clean"), ("mtard", "rslad", "autoattack")]),
    ("AdaAD ≥ RSLAD under AutoAttack", "AdaAD (Huang et al. 2023), Table 1", [("adaad", "rslad", "autoattack")]),
    ("IGDM raises AdaAD's AutoAttack accuracy", "IGDM (Lee et al. 2025)", [("adaad+igdm", "adaad", "autoattack")]),
    ("SA-MDRAD ≥ every baseline under AutoAttack", "SA-MDRAD (Multimedia Systems 2024)",
     [("sa_mdrad", m, "autoattack") for m in _paper_labels() if m not in ("natural", "sa_mdrad")]),
)


def _pct_pm(p: dict) -> str:
    return f"{100 * p['diff']:+.2f}" + ("" if p["se"] is None else f" ± {100 * p['se']:.2f}")


def claims_table(records: list[dict]) -> str:
    """The papers' claims, one row per comparison: measured a − b (mean ± standard error over paired
    seeds, percentage points; one seed: ± the test-sampling error, `paired`), the 95 % interval and
    the verdict."""
    lines = ["| claim | source | comparison | a − b (pp, mean ± s.e.) | 95 % CI | seeds | verdict |",
             "|---|---|---|---|---|---|---|"]
    for claim, source, comparisons in CLAIMS:
        for a, b, attack in comparisons:
            p = paired(records, a, b, attack)
            diff = _pct_pm(p) if p else "–"
            ci = f"[{100 * p['ci95'][0]:+.2f}, {100 * p['ci95'][1]:+.2f}]" if p and p["ci95"] else "–"
            lines.append(f"| {claim} | {source} | {a} − {b}, {COLUMNS.get(attack, attack)} | {diff} | {ci} | "
                         f"{p['n'] if p else 0} | {verdict(p)} |")
    return "\n".join(lines)


def teacher_table(results_dir: str) -> str | None:
    """The grid's evaluated teachers (`<results>/teachers/*_evaluation.json`, grid key
    `evaluate_teachers`): a row per teacher — model, the checkpoint students load, accuracy (%) per
    attack; None when there are none."""
    found = paths.glob(paths.join(results_dir, "teachers"), "*_evaluation.json")
    if not found:
        return None
    records = [(paths.name(p)[:-len("_evaluation.json")], json.loads(paths.read_text(p))) for p in found]
    attacks = [a for a in COLUMNS if any(a in r["accuracy"] for _, r in records)]
    first = records[0][1]
    lines = [f"Teachers (the checkpoint their students load), on the first {first['n_points']} points of the "
             f"{first.get('split', 'test')} split, L∞ ε = {first['eps'] * 255:.4g}/255"
             + "".join(f"; {a} on the first {n}" for a, n in first.get("attack_points", {}).items()) + ":", "",
             "| teacher | model | step | " + " | ".join(COLUMNS[a] for a in attacks) + " |",
             "|---|---|---|" + "---|" * len(attacks)]
    for name, r in records:
        model = r.get("model", {})
        lines.append(f"| {name} | {model.get('name', '?')} ×{model.get('width', 1):g} | {r.get('step')} | "
                     + " | ".join(f"{100 * r['accuracy'][a]:.2f}" if a in r["accuracy"] else "–" for a in attacks)
                     + " |")
    return "\n".join(lines)


def claims_checklist(columns: list[tuple[str, list[dict]]]) -> str:
    """The papers' claims side by side on several grids: a row per comparison of `CLAIMS`, a column
    per (name, records) — a − b in pp (mean ± s.e.), its 95 % interval, the number of paired seeds
    and the verdict of `verdict` (one seed: the test-sampling error of that run only)."""
    lines = ["| claim | source | comparison | " + " | ".join(name for name, _ in columns) + " |",
             "|---|---|---|" + "---|" * len(columns)]
    for claim, source, comparisons in CLAIMS:
        for a, b, attack in comparisons:
            cells = []
            for _, records in columns:
                p = paired(records, a, b, attack)
                if p is None:
                    cells.append("not run")
                    continue
                ci = f" [{100 * p['ci95'][0]:+.2f}, {100 * p['ci95'][1]:+.2f}]" if p["ci95"] else ""
                short = verdict(p).split(" for this run")[0].split(" (1 seed)")[0]
                cells.append(f"{_pct_pm(p)}{ci}, {p['n']} seed{'s' if p['n'] > 1 else ''}: **{short}**")
            lines.append(f"| {claim} | {source} | {a} − {b}, {COLUMNS.get(attack, attack)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_table(records: list[dict], reference: str = "pgd_at", methods: list[str] | None = None) -> str:
    """Every method minus `reference` per attack, paired over seeds (pp, mean ± standard error)."""
    present = sorted({r["run"]["method"] for r in records})
    attacks = [a for a in COLUMNS if any(a in r["accuracy"] for r in records)]
    lines = [f"| method − {reference} | " + " | ".join(COLUMNS[a] for a in attacks) + " | seeds |",
             "|---|" + "---|" * len(attacks) + "---|"]
    for m in _order(present, methods):
        if m == reference:
            continue
        ps = [paired(records, m, reference, a) for a in attacks]
        n = max((p["n"] for p in ps if p), default=0)
        lines.append(f"| {m} | " + " | ".join(_pct_pm(p) if p else "–" for p in ps) + f" | {n} |")
    return "\n".join(lines)


def _records_by(records, dataset, student):
    return [r for r in records if (r["run"]["dataset"], r["run"]["student"]) == (dataset, student)]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_eps_curves(records: list[dict], path: str, title: str, methods=None) -> bool:
    """Accuracy under PGD-20 vs ε (/255), a line per method: mean over seeds, std as error bars."""
    by_method: dict = {}
    for rec in records:
        if rec.get("curve"):
            curve = dict(rec["curve"])
            if "pgd20" in rec["accuracy"]:   # the table's PGD-20 column is the curve at the evaluation ε
                curve.setdefault(f"{rec['eps']:.6f}", rec["accuracy"]["pgd20"])
            by_method.setdefault(rec["run"]["method"], []).append(curve)
    if not by_method:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for m in _order(list(by_method), methods):
        eps = sorted(by_method[m][0], key=float)
        acc = np.array([[c[e] for e in eps] for c in by_method[m]], dtype=np.float64) * 100
        ax.errorbar([float(e) * 255 for e in eps], acc.mean(0), yerr=acc.std(0, ddof=1) if len(acc) > 1 else None,
                    marker="o", ms=3, capsize=2, label=m)
    ax.set_xlabel("ε (/255)")
    ax.set_ylabel("accuracy under PGD-20 (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def sweep_label_parts(label: str) -> tuple[str, str | None, str | None]:
    """'sa_mdrad@tau=2' -> ('sa_mdrad', 'tau', '2'); a label without '@' -> (label, None, None)."""
    base, _, assignment = label.partition("@")
    if not assignment:
        return base, None, None
    option, _, value = assignment.partition("=")
    return base, option, value


def _value_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def img_per_s(runs: list[list[dict]]) -> float | None:
    """Median training throughput over the runs' train records (each run's first record, which holds
    the compilation, left out)."""
    rates = [r["img_per_s"] for run in runs for r in [x for x in run if x.get("kind") == "train"][1:]
             if r.get("img_per_s")]
    return float(np.median(rates)) if rates else None


def _sweep_rows(records: list[dict], sweep: dict) -> list[tuple[str, str, str, bool]]:
    """(option, value text, label, is_default) of every option of the sweep, the default first."""
    base = sweep["base"]
    labels = sorted({r["run"]["method"] for r in records})
    rows = []
    for option, default in sweep["defaults"].items():
        rows.append((option, _value_text(default), base, True))
        rows += [(option, value, label, False) for label in labels
                 for b, o, value in [sweep_label_parts(label)] if b == base and o == option]
    return rows


def option_sweep_table(records: list[dict], metrics: dict, sweep: dict, score: str = "pgd20") -> str:
    """One row per (option, value) of a one-option-at-a-time sweep ({'base': label of the defaults,
    'defaults': {option: default value}}; other labels 'base@option=value'): accuracies mean ± std
    over seeds, the paired difference to the defaults on `score` (same seeds), training img/s."""
    attacks = [a for a in COLUMNS if any(a in r["accuracy"] for r in records)]
    group = aggregate(records)
    if len(group) != 1:
        raise ValueError(f"option_sweep_table: records of one (dataset, student) expected, got {sorted(group)}.")
    (cells_by_label,) = group.values()
    lines = ["| option | value | " + " | ".join(COLUMNS[a] for a in attacks)
             + f" | {COLUMNS[score]} − default (pp, mean ± s.e.) | train img/s | seeds |",
             "|---|---|" + "---|" * len(attacks) + "---|---|---|"]
    for option, value, label, is_default in _sweep_rows(records, sweep):
        cells = cells_by_label.get(label)
        if cells is None:
            continue
        n = max(c[2] for c in cells.values())
        diff = "–" if is_default else (lambda p: _pct_pm(p) if p else "–")(paired(records, label, sweep["base"], score))
        rate = img_per_s(metrics.get(label, []))
        lines.append(f"| {option} | {value}{' (default)' if is_default else ''} | "
                     + " | ".join(fmt(*cells[a][:2]) if a in cells else "–" for a in attacks)
                     + f" | {diff} | {'–' if rate is None else f'{rate:.0f}'} | {n} |")
    return "\n".join(lines)


def plot_option_sweep(records: list[dict], sweep: dict, path: str, title: str, score: str = "pgd20",
                      reference: str | None = "pgd_at") -> bool:
    """A panel per option: `score` (mean ± std over seeds) per value, the default filled, the
    defaults' mean (solid) and `reference`'s (dashed) as horizontal lines."""
    acc: dict = {}
    for rec in records:
        if score in rec["accuracy"]:
            acc.setdefault(rec["run"]["method"], []).append(100 * rec["accuracy"][score])
    rows = [r for r in _sweep_rows(records, sweep) if r[2] in acc]
    options = list(dict.fromkeys(r[0] for r in rows))
    if not options:
        return False
    plt = _plt()
    cols = min(4, len(options))
    fig, axes = plt.subplots(-(-len(options) // cols), cols, figsize=(3.2 * cols, 2.6 * -(-len(options) // cols)),
                             squeeze=False)
    for ax, option in zip(axes.flat, options):
        mine = [r for r in rows if r[0] == option]
        for x, (_, value, label, is_default) in enumerate(mine):
            v = np.asarray(acc[label])
            ax.errorbar([x], [v.mean()], yerr=[v.std(ddof=1)] if len(v) > 1 else None, marker="o", capsize=2,
                        color="C0", mfc="C0" if is_default else "white")
        ax.axhline(np.mean(acc[sweep["base"]]), color="C0", lw=0.8)
        if reference in acc:
            ax.axhline(np.mean(acc[reference]), color="C3", lw=0.8, ls="--")
        ax.set_xticks(range(len(mine)), [r[1] for r in mine], fontsize=7, rotation=20)
        ax.set_title(option, fontsize=9)
    for ax in list(axes.flat)[len(options):]:
        ax.axis("off")
    axes[0, 0].set_ylabel(f"{COLUMNS[score]} accuracy (%)")
    fig.suptitle(title + (f" (filled: default; dashed: {reference})" if reference in acc else " (filled: default)"),
                 fontsize=9)
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def read_jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]


def _runs_by_method(results_dir: str, records: list[dict]) -> dict:
    """{method: [(evaluation record, its run's metric records), ...]} for the runs in `records`
    that have a metric log."""
    out: dict = {}
    for rec in records:
        path = paths.join(results_dir, "metrics", rec["run"]["stem"] + ".jsonl")
        if paths.exists(path):
            out.setdefault(rec["run"]["method"], []).append((rec, read_jsonl(path)))
    return out


def _seed_mean(series: list[dict[float, float]]) -> tuple[list[float], np.ndarray]:
    """Mean over seeds at the x values all seeds have."""
    xs = sorted(set.intersection(*(set(s) for s in series)))
    return xs, np.array([[s[x] for x in xs] for s in series]).mean(0)


def late_gain(curve, window: int | None = None) -> float | None:
    """How much a per-epoch curve still rose at the end: the mean of its last `window` values minus
    the mean of the `window` before them (None when the curve is shorter than 2 windows). Default
    window: a sixth of the curve, at least 3 epochs (10 of 60, 3 of 10)."""
    window = window or max(3, len(curve) // 6)
    if len(curve) < 2 * window:
        return None
    return float(np.mean(curve[-window:]) - np.mean(curve[-2 * window:-window]))


def plateau_table(runs: dict, methods=None, min_gain: float = 0.015) -> str:
    """Has every run converged? `runs`: {method: [(evaluation record, metric records), ...]}. A row
    per method: the validation (else test) curves' `late_gain` — clean as mean ± std over seeds,
    PGD-20 per seed (pp) —, the epoch of each evaluated checkpoint (the eval record at its step),
    and 'yes' when no seed's PGD-20 gained more than `min_gain`. A step up after the last LR decay
    counts as a gain: read it with the training-curve plot."""
    split = "val" if any("val_accuracy" in r for rs in runs.values() for _, run in rs for r in run) else "test"
    lines = ["| method | epochs | clean gain (pp, mean ± std) | PGD-20 gain per seed (pp) "
             "| evaluated checkpoint's epoch per seed | plateaued |", "|---|---|---|---|---|---|"]
    for m in _order(list(runs), methods):
        clean, robust, epochs, lengths = [], [], [], []
        for rec, run in runs[m]:
            evals = [r for r in run if r["kind"] == "eval" and f"{split}_accuracy" in r]
            if not evals:
                continue
            lengths.append(len(evals))
            for out, key in ((clean, f"{split}_accuracy"), (robust, f"{split}_robust_accuracy")):
                out.append(late_gain([r[key] for r in evals if key in r]))
            at = [r["epoch"] for r in evals if r.get("step") == rec.get("step")]
            epochs.append(f"{at[0]:g}" if at else "–")
        if not lengths:
            continue
        known = [g for g in robust if g is not None]
        plateaued = "–" if not known else ("yes" if max(known) <= min_gain else "no")
        clean_known = [g for g in clean if g is not None]
        lines.append(f"| {m} | {max(lengths)} | {fmt(*mean_std(clean_known)) if clean_known else '–'} | "
                     + ", ".join("–" if g is None else f"{100 * g:+.2f}" for g in robust)
                     + f" | {', '.join(epochs)} | {plateaued} |")
    return "\n".join(lines)


def plot_training_curves(metrics: dict, path: str, title: str, methods=None) -> bool:
    """Clean and robust accuracy over epochs (eval records), a line per method (seed mean), on the
    split the runs evaluated every epoch: validation (`val_*`) when they have one, else test."""
    if not metrics:
        return False
    split = "val" if any("val_accuracy" in r for runs in metrics.values() for run in runs for r in run) else "test"
    name = {"val": "validation", "test": "test"}[split]
    panels = [(f"{split}_accuracy", f"clean {name} accuracy (%)"), (f"{split}_robust_accuracy", f"robust {name} accuracy (%)")]
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, label) in zip(axes, panels):
        for m in _order(list(metrics), methods):
            series = [{r["epoch"]: r[key] for r in run if r["kind"] == "eval" and key in r} for run in metrics[m]]
            series = [s for s in series if s]
            if not series:
                continue
            xs, ys = _seed_mean(series)
            ax.plot(xs, 100 * ys, marker="o", ms=3, label=m)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=110)
    plt.close(fig)
    return True


def diagnostic_series(run: list[dict]) -> dict[str, dict[float, float]]:
    """{diagnostic: {epoch (fractional): value}} from a run's train records; epochs from the eval records."""
    evals = [r for r in run if r["kind"] == "eval" and r.get("epoch")]
    steps_per_epoch = evals[0]["step"] / evals[0]["epoch"] if evals else 1.0
    out: dict = {}
    for r in run:
        if r["kind"] != "train":
            continue
        for k, v in r.items():
            if k not in _TRAIN_FIELDS:
                out.setdefault(k, {})[r["step"] / steps_per_epoch] = v
    return out


def plot_diagnostics(runs: list[list[dict]], path: str, title: str) -> bool:
    """Every diagnostic field of the train records (seed mean) over epochs, one panel each."""
    per_seed = [diagnostic_series(run) for run in runs]
    names = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    if not names:
        return False
    plt = _plt()
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        xs, ys = _seed_mean([s[name] for s in per_seed])
        ax.plot(xs, ys, lw=1)
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    fig.suptitle(title)
    fig.supxlabel("epoch")
    fig.tight_layout()
    paths.save_figure(fig, path, dpi=100)
    plt.close(fig)
    return True


def comparison_table(reference_dir: str, results_dir: str, labels: tuple[str, str],
                     methods: list[str] | None = None, only: list[str] | tuple | None = None) -> str:
    """Per run present in both results directories (same dataset, student, method, seed; of the
    methods in `only` if given): the selected step and each accuracy as `reference / this
    (difference)`, in percent. For the same grid run twice with one thing changed (e.g. the PGD
    loop rolled vs unrolled: float rounding)."""
    key = lambda r: (r["run"]["dataset"], r["run"]["student"], r["run"]["method"], r["run"]["seed"])
    reference = {key(r): r for r in load_records(reference_dir)}
    pairs = [(reference[key(r)], r) for r in load_records(results_dir)
             if key(r) in reference and (only is None or r["run"]["method"] in only)]
    if not pairs:
        return f"(no run of {reference_dir} has been evaluated here yet)"
    order = _order(sorted({k[2] for k in map(key, (b for _, b in pairs))}), methods)
    pairs.sort(key=lambda p: (order.index(p[1]["run"]["method"]), p[1]["run"]["seed"]))
    names = [n for n in pairs[0][1]["accuracy"] if all(n in a["accuracy"] and n in b["accuracy"] for a, b in pairs)]
    lines = [f"| method (seed) | selected step, {labels[0]} / {labels[1]} | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for a, b in pairs:
        cells = [f"{100 * a['accuracy'][n]:.2f} / {100 * b['accuracy'][n]:.2f} "
                 f"({100 * (b['accuracy'][n] - a['accuracy'][n]):+.2f})" for n in names]
        lines.append(f"| {b['run']['method']} ({b['run']['seed']}) | {a.get('step')} / {b.get('step')} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(results_dir: str, *, title: str = "", methods: list[str] | None = None,
                 evaluation: dict | None = None, compare_with: list[dict] | tuple = (),
                 sweep: dict | None = None, reference: str = "pgd_at", claims: bool = True) -> str:
    """Writes tables.md, summary.json and the plots; returns the tables' Markdown. Each entry of
    `compare_with` ({'results': dir, 'title': str, 'labels': (reference, this)}) adds a
    `comparison_table` of that directory's runs against these. `sweep` ({'base', 'defaults'}: a
    one-option-at-a-time sweep) adds `option_sweep_table` and `option_sweep.png` in place of the
    papers' claims, which compare methods, not options (and are read on test-split results only);
    `claims=False` leaves them out."""
    records = load_records(results_dir)
    groups = aggregate(records)
    parts, summary = [], []
    for (dataset, student), group in sorted(groups.items()):
        subset = _records_by(records, dataset, student)
        first = subset[0]
        aa = " (AutoAttack: standard version)" if any("autoattack" in c for c in group.values()) else ""
        selection = {"best": "best-validation checkpoint", "final": "final checkpoint"}.get(first.get("selection", "final"))
        head = (f"### {dataset}, {student} student\n\nAccuracy (%) of each run's {selection} on the first "
                f"{first['n_points']} points of the {first.get('split', 'test')} split, "
                f"L∞ ε = {first['eps'] * 255:.4g}/255, mean ± std over seeds{aa}"
                + "".join(f"; {name} on the first {n}" for name, n in first.get("attack_points", {}).items())
                + ".\n\n")
        parts.append(head + markdown_table(group, methods))
        if any(r["run"]["method"] == reference for r in subset) and len(group) > 1:
            name = "PGD-AT" if reference == "pgd_at" else reference
            parts.append(f"Paired difference to {name} over the same seeds (percentage points, mean ± standard "
                         "error):\n\n" + paired_table(subset, reference, methods))
        # The claims are read on the test split only: validation grids choose options and teachers.
        if (claims and any(r["run"]["method"] == "pgd_at" for r in subset) and len(group) > 1 and not sweep
                and first.get("split", "test") == "test"):
            parts.append("The papers' claims (a − b > 0 is the claim; 'holds' when the paired 95 % interval "
                         "is above 0, 'does not hold' when below, else inconclusive; with one seed the interval "
                         "is the test-sampling error of that run only — binomial, conservative for two models "
                         "scored on the same points — and says nothing of seed-to-seed spread):\n\n"
                         + claims_table(subset))
        summary.append({"dataset": dataset, "student": student,
                        "methods": {m: {a: {"mean": c[0], "std": c[1], "n": c[2]} for a, c in cells.items()}
                                    for m, cells in group.items()}})
        stem = paths.join(results_dir, f"{dataset}_{student}")
        plot_eps_curves(subset, stem + "_eps.png", f"{dataset}, {student}: accuracy vs ε", methods)
        runs = _runs_by_method(results_dir, subset)
        metrics = {m: [run for _, run in rs] for m, rs in runs.items()}
        plot_training_curves(metrics, stem + "_training.png", f"{dataset}, {student}: accuracy per epoch", methods)
        if runs and not sweep:
            parts.append("Convergence: the per-epoch validation curves (plot: "
                         f"`{dataset}_{student}_training.png`), the mean of each run's last window of epochs (a "
                         "sixth of the run, at least 3) minus the window before it; 'plateaued' when no seed's "
                         "PGD-20 gained more than 1.5 points:\n\n" + plateau_table(runs, methods, min_gain=0.015))
        if sweep:
            parts.append(f"One option at a time: every option's values on the {first.get('split', 'test')} split "
                         "(mean ± std over seeds), the paired difference to the defaults over the same seeds, and the "
                         "median training throughput of its runs (img/s on the machine and core that ran them; "
                         "each run's first record, with the compilation, left out):\n\n"
                         + option_sweep_table(subset, metrics, sweep))
            plot_option_sweep(subset, sweep, paths.join(results_dir, "option_sweep.png"),
                              f"{dataset}, {student}: one option at a time, {first.get('split', 'test')} split")
        if "sa_mdrad" in metrics:
            plot_diagnostics(metrics["sa_mdrad"], stem + "_sa_mdrad_diagnostics.png",
                             f"{dataset}, {student}: SA-MDRAD diagnostics (seed mean)")
    teachers = teacher_table(results_dir)
    if teachers:
        parts.append(teachers)
    for other in compare_with:
        parts.append(f"### {other['title']}\n\nAccuracy (%) {other['labels'][0]} / {other['labels'][1]} "
                     f"(difference), from `{other['results']}` and this grid:\n\n"
                     + comparison_table(other["results"], results_dir, tuple(other["labels"]), methods,
                                        other.get("methods")))
    text = (f"# {title}\n\n" if title else "") + "\n\n".join(parts) + "\n"
    paths.write_text(paths.join(results_dir, "tables.md"), text)
    paths.write_text(paths.join(results_dir, "summary.json"),
                     json.dumps({"groups": summary, "evaluation": evaluation}, indent=2, default=list))
    return text
