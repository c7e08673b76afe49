"""The grids of the papers' tables (experiments/grids/*.py) and the digits grid that runs on a CPU.

Paper protocol (methods.md): ε = 8/255, PGD-10 of 2/255 for training; the RSLAD/MTARD schedule
of `configs/sa_mdrad.py` for every student; evaluation on the first 10,000 test points with
clean, FGSM, PGD-20, CW∞ and standard AutoAttack. Teachers:

  natural   WRN-34-10, ResNet-50, VGG-16-BN (configs/teacher_<dataset>.py), SA-MDRAD's default set
  robust    a TRADES WRN-34-10 (the robust teacher of ARD/IAD/RSLAD/AdaAD and MTARD's robust one;
            MTARD's natural teacher is the natural WRN-34-10). It is trained by the grid with the
            TRADES method; to use a published checkpoint instead, import it first
            (`sa-mdrad import-torch ... --workdir=runs/<dataset>/teachers/robust`) and set its
            'config' to None in the grid file.
"""
from __future__ import annotations

import ml_collections
import numpy as np

from sa_mdrad_jax import config as config_lib, paths

NATURAL = "natural"   # the grids' natural-training label: no method block (not a registered method)
NATURAL_SCHEDULE_OF = "pgd_at"   # natural training uses PGD-AT's paper schedule in the converged grid
PAPER_EVALUATION = {"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack"), "n_points": 10000,
                    "eps": 8 / 255, "batch_size": 500, "seed": 0,
                    "curve_eps": tuple(e / 255 for e in (0, 2, 4, 8, 12, 16))}


def method_labels(**flags) -> tuple[str, ...]:
    """'natural', then every registered method with `flags` (MethodSpec fields) in registration
    order, each followed by its `grid_terms` labels ('adaad', 'adaad+igdm')."""
    from sa_mdrad_jax.methods import method_names, method_spec
    labels = [NATURAL]
    for name in method_names(**flags):
        labels += [name] + [f"{name}+{term}" for term in method_spec(name).grid_terms]
    return tuple(labels)


def __getattr__(name):   # PAPER_METHODS: read from the registry at access time
    if name == "PAPER_METHODS":
        return method_labels(paper_grid=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def teacher_kind(method: str) -> str:
    """What the method's grid runs distil from (its registration's `teachers`)."""
    if method == NATURAL:
        return "none"
    from sa_mdrad_jax.methods import method_spec
    return method_spec(method).teachers


def _recipe(method: str):
    """The method's registered paper `Recipe` (None for natural training or a method without one)."""
    if method == NATURAL:
        return None
    from sa_mdrad_jax.methods import method_spec
    return method_spec(method).recipe


def _scale_epochs(c: ml_collections.ConfigDict, method: str, epochs: int) -> None:
    recipe = _recipe(method)
    if recipe is not None and recipe.scale_epochs is not None:
        recipe.scale_epochs(c, epochs)


def primary(natural: dict) -> str:
    """The natural teacher whose architecture the robust teacher has (WRN-34-10 in the papers)."""
    return "wrn34_10" if "wrn34_10" in natural else next(iter(natural))


def teacher_block(method: str, natural: dict, robust: str = "robust") -> dict:
    """{name: model spec} of the teachers a method distils from (the names key the grid's teachers),
    by its teacher kind: the natural set; the robust teacher and the natural one of its
    architecture; or the robust teacher alone (also for 'none': PGD-AT and TRADES do not read it)."""
    kind = teacher_kind(method)
    if kind == "natural":
        return dict(natural)
    first = primary(natural)
    if kind == "robust+natural":
        return {robust: natural[first], first: natural[first]}
    return {robust: natural[first]}


def method_config(base: ml_collections.ConfigDict, method: str, teachers: dict) -> ml_collections.ConfigDict:
    """`base` (a distillation config) with `method`'s block and teachers; 'natural' drops both."""
    c = ml_collections.ConfigDict(base.to_dict())
    if method == NATURAL:
        del c["method"], c["teachers"]
        return c
    eps, step_size, steps = base.method.eps, base.method.step_size, base.method.steps
    c.method = config_lib.method_config(method)
    c.method.update(eps=eps, step_size=step_size, steps=steps)
    if teacher_kind(method) == "robust+natural":
        robust, natural = list(teachers)
        c.method.update(robust_teacher=robust, natural_teacher=natural)
    c.teachers = ml_collections.ConfigDict()
    for name, spec in teachers.items():
        spec = dict(spec)
        c.teachers[name] = config_lib.teacher_entry(spec.pop("name"), "", **spec)
    return c


def paper_grid(dataset: str, student: str) -> dict:
    """The grid of one paper table: every method × 3 seeds on `dataset` with `student`."""
    sa_mdrad = config_lib.load_config_file(f"configs/sa_mdrad.py:{dataset},{student}")
    natural = {name: t.model.to_dict() for name, t in sa_mdrad.teachers.items()}

    def base_config(method, dataset_, student_):
        del dataset_, student_
        return method_config(sa_mdrad, method, teacher_block(method, natural))

    teachers = {}
    for name in natural:
        teachers[name] = {"config": config_lib.load_config_file(f"configs/teacher_{dataset}.py:{name}"), "workdir": ""}
    first = primary(natural)
    robust = method_config(sa_mdrad, "trades", {first: natural[first]})
    robust.model = ml_collections.ConfigDict(natural[first])
    robust.dataset.validation_size = 1000   # its best checkpoint is chosen on held-out training data
    robust.checkpoint.best_metric = "val_robust_accuracy"
    teachers["robust"] = {"config": robust, "workdir": ""}
    return {
        "name": f"{dataset}, {student}", "root": "runs/grids", "results": f"experiments/results/{dataset}_{student}",
        "datasets": (dataset,), "students": (student,), "methods": method_labels(paper_grid=True), "seeds": (0, 1, 2),
        "base_config": base_config, "overrides": {"eval.robust_eps": 8 / 255},
        "teachers": {dataset: teachers}, "evaluation": dict(PAPER_EVALUATION),
    }


def digits_grid() -> dict:
    """Every method on digits, 3 seeds, shrunk to finish on a 2-core CPU (see experiments/grids/digits.py)."""
    eps, pgd_steps = 32 / 255, 3
    natural = {"resnet18": dict(name="resnet18", width=0.25, normalize="digits"),
               "wrn16": dict(name="wrn16_4", width=0.25, normalize="digits")}

    def shared(c):
        c.dataset.update(name="digits", image_size=8, crop_pad=1, flip=False)
        c.train.update(epochs=3, batch_size=64)
        c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
        c.eval.update(batch_size=360, robust_points=100, robust_eps=eps)
        c.checkpoint.update(keep=1)
        c.log.update(every_steps=11, progress=False, tensorboard=False)
        return c

    base = shared(config_lib.distill_config("sa_mdrad"))
    base.model.update(name="resnet_tiny", width=1.0, normalize="digits")
    base.method.update(eps=eps, steps=pgd_steps, step_size=2.5 * eps / pgd_steps)

    def base_config(method, dataset, student):
        del dataset
        c = method_config(base, method, teacher_block(method, natural))
        c.model.name = student
        _scale_epochs(c, method, c.train.epochs)   # IAD: introspection from epoch 1 of 3 (60 of 200)
        return c

    teachers = {}
    for name, spec in natural.items():
        t = shared(config_lib.base_config())
        t.model.update(spec)
        t.train.epochs = 6
        t.eval.robust_points = 0
        teachers[name] = {"config": t, "workdir": ""}
    robust = method_config(base, "pgd_at", {"resnet18": natural["resnet18"]})
    robust.model.update(natural["resnet18"])
    robust.train.epochs = 6
    robust.eval.robust_points = 200
    teachers["robust"] = {"config": robust, "workdir": ""}
    return {
        "name": "digits (8×8), resnet_tiny student", "root": "workdir/grids/digits",
        "results": "experiments/results/digits",
        "datasets": ("digits",), "students": ("resnet_tiny",), "methods": method_labels(paper_grid=True),
        "seeds": (0, 1, 2),
        "base_config": base_config,
        "overrides": {},
        "teachers": {"digits": teachers},
        # No AutoAttack here: on a 2-core CPU it costs ~1.5 minutes per checkpoint at 200 points
        # (its programs are shared across checkpoints), more than the training of a run; the
        # `digits_autoattack_grid` below adds it for seed 0 of every method.
        "evaluation": {"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30"), "n_points": 200,
                       "eps": eps, "batch_size": 200, "seed": 0,
                       "curve_eps": tuple(e / 255 for e in (0, 16, 48))},   # + ε = 32 from the PGD-20 column
    }


def digits_autoattack_grid() -> dict:
    """The digits grid's seed-0 runs (same teachers, same checkpoints) evaluated with AutoAttack:
    clean, PGD-20 and standard AutoAttack on the first 100 test points, in each run's
    `evaluation_autoattack/` (the 3-seed evaluation stays in `evaluation/`)."""
    grid = digits_grid()
    grid.update(name="digits (8×8), resnet_tiny student — AutoAttack, seed 0",
                results="experiments/results/digits_autoattack", seeds=(0,),
                evaluation_dir="evaluation_autoattack")
    grid["evaluation"] = {"attacks": ("clean", "pgd20", "autoattack"), "n_points": 100,
                          "eps": grid["evaluation"]["eps"], "batch_size": 100, "seed": 0, "curve_eps": ()}
    return grid


def _scaled_schedule(recipe: str, epochs: int) -> dict:
    """The paper's piecewise schedule of `recipe` (its registered `Recipe.schedule`) scaled to `epochs`:
    each LR decay at the same fraction of training, the paper's weight decay."""
    from sa_mdrad_jax.methods import method_spec
    paper_epochs, boundaries, weight_decay = method_spec(recipe).recipe.schedule
    return dict(schedule="piecewise", boundaries=tuple(round(b * epochs / paper_epochs) for b in boundaries),
                decay=0.1, weight_decay=weight_decay, warmup_epochs=0.0)


def schedule_of(method: str) -> str:
    """The method whose paper schedule `method` trains with (SA-MDRAD: its config's RSLAD/MTARD
    schedule, `register(..., schedule_of='rslad')`; natural training: PGD-AT's)."""
    if method == NATURAL:
        return NATURAL_SCHEDULE_OF
    from sa_mdrad_jax.methods.base import schedule_recipe
    return schedule_recipe(method)


def converged_grid(*, data: dict, eps: float, student: str, natural: dict, robust_model: dict | None = None,
                   student_options: dict | None = None, epochs: int, teacher_epochs: int, batch_size: int, lr: float, robust_points: int,
                   eval_batch_size: int, log_every: int, evaluation: dict, methods: tuple, seeds: tuple,
                   name: str, root: str, results: str) -> dict:
    """Every method in `methods` in its paper's setting on one dataset, trained until validation
    PGD-20 plateaus, the best validation checkpoint evaluated once on the test split.

    `data`: the `dataset` block (its `validation_size` > 0 is required: every epoch's clean and
    PGD-20 accuracy on `robust_points` validation points selects the checkpoint). `natural`:
    {name: model spec} of the natural teachers (SA-MDRAD's set; the first is MTARD's natural one).
    `robust_model`: the architecture of the adversarially trained teacher (PGD-AT, `teacher_epochs`)
    of ARD/IAD/RSLAD/AdaAD and MTARD (default: the first natural teacher's, as in the papers).
    `student_options`: extra model-spec fields of the student (e.g. {'stem_stride': 2}).
    Training attack PGD-10 of 2.5·ε/10; each paper's piecewise schedule scaled to `epochs`, SGD
    momentum 0.9 at `lr` and `batch_size`; TRADES and IAD scaled by their recipes; AdaAD+IGDM with
    the IGDM scripts' weight decay 2e-4 and batchmean KL; natural training selects on clean accuracy."""
    pgd_steps = 10
    first = primary(natural)
    robust_spec = dict(robust_model or natural[first])
    dataset = data["name"]

    def shared(c, recipe, epochs=epochs):
        c.dataset.update(data)
        c.train.update(epochs=epochs, batch_size=batch_size)
        c.optim.update(lr=lr, momentum=0.9, **_scaled_schedule(recipe, epochs))
        c.eval.update(batch_size=eval_batch_size, robust_points=robust_points, robust_eps=eps,
                      robust_every_epochs=1)
        c.checkpoint.update(keep=1, best_metric="val_robust_accuracy")
        c.log.update(every_steps=log_every, progress=False, tensorboard=False)
        return c

    base = config_lib.distill_config("sa_mdrad")
    base.model.update({"name": student, "width": 1.0, "normalize": dataset, **(student_options or {})})
    base.method.update(eps=eps, steps=pgd_steps, step_size=2.5 * eps / pgd_steps)

    def teachers_of(method):
        block = teacher_block(method, natural)
        if "robust" in block:
            block["robust"] = robust_spec
        return block

    def base_config(method, dataset_, student_):
        del dataset_
        c = shared(method_config(base, method, teachers_of(method)), schedule_of(method))
        c.model.name = student_
        if teacher_kind(method) == "none" and method != NATURAL:
            c.teachers = ml_collections.ConfigDict()   # trained alone, as in their papers
        recipe = _recipe(method)
        if recipe is not None and recipe.at_eps is not None:
            recipe.at_eps(c, eps)                      # TRADES: its step 0.007/0.031·ε and S(x), S(x'), S(x) BN order
        _scale_epochs(c, method, epochs)               # IAD's introspection from epoch 60 of 200, scaled
        return c

    teachers = {}
    for t_name, spec in natural.items():
        t = shared(config_lib.base_config(), "pgd_at", teacher_epochs)
        t.model.update(spec)
        t.eval.robust_points = 0
        t.checkpoint.best_metric = "val_accuracy"
        teachers[t_name] = {"config": t, "workdir": ""}
    if any(teacher_kind(m.split("+")[0]) in ("robust", "robust+natural") for m in methods):
        robust = shared(method_config(base, "pgd_at", {first: natural[first]}), "pgd_at", teacher_epochs)
        robust.model.update(robust_spec)
        teachers["robust"] = {"config": robust, "workdir": ""}
    return {
        "name": name, "root": root, "results": results,
        "datasets": (dataset,), "students": (student,), "methods": tuple(methods), "seeds": tuple(seeds),
        "base_config": base_config, "overrides": {},
        # AdaAD+IGDM follows the IGDM scripts: weight decay 2e-4, batchmean AdaAD KL, the ramp over the run.
        "label_overrides": {"adaad+igdm": {"optim.weight_decay": 2e-4, "method.kl_scale": 1.0,
                                           "method.igdm.e_ref": float(epochs)},
                            # The undefended reference keeps its best clean checkpoint: selected on
                            # validation PGD-20 (~15 % throughout) it could be an early, half-trained one.
                            NATURAL: {"checkpoint.best_metric": "val_accuracy"}},
        "teachers": {dataset: teachers},
        "evaluation": {"seed": 0, "curve_eps": (), "checkpoint": "best", "eps": eps, **evaluation},
    }


# SA-MDRAD's heterogeneous natural teachers on digits (the first is MTARD's natural one and the
# robust teacher's architecture).
DIGITS_NATURAL = {"resnet18": dict(name="resnet18", width=0.25, normalize="digits"),
                  "wrn16": dict(name="wrn16_4", width=0.25, normalize="digits")}


def digits_protocol(epochs: int, teacher_epochs: int) -> dict:
    """The converged digits protocol's `converged_grid` arguments other than what is evaluated, which
    methods and seeds, and where: data, ε, student, teachers, epochs, optimiser, validation."""
    validation_size = 287                         # 20 % of the 1,437 training digits, stratified
    return dict(data=dict(name="digits", image_size=8, crop_pad=1, flip=False, validation_size=validation_size),
                eps=32 / 255, student="resnet_tiny", natural=DIGITS_NATURAL, epochs=epochs,
                teacher_epochs=teacher_epochs, batch_size=64, lr=0.05,   # lr 0.1 @ 128, scaled to 64
                robust_points=validation_size, eval_batch_size=validation_size + 1, log_every=16)


def digits_converged_grid(epochs: int = 60, teacher_epochs: int = 40) -> dict:
    """Every method on digits in its paper's setting, trained until validation PGD-20 plateaus
    (experiments/grids/digits_converged.py explains every choice). Students train `epochs`, the
    teachers `teacher_epochs` (their validation curves plateau by 40; experiments/results/digits_converged_40)."""
    grid = converged_grid(
        **digits_protocol(epochs, teacher_epochs),
        evaluation={"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack"), "n_points": 360,
                    "batch_size": 360},
        methods=method_labels(paper_grid=True), seeds=(0, 1, 2, 3, 4),
        name=f"digits (8×8), resnet_tiny student, {epochs} epochs (teachers {teacher_epochs}), best validation checkpoint",
        root="workdir/grids/digits_converged", results="experiments/results/digits_converged")
    grid["evaluate_teachers"] = {}     # the teachers as the students: what a distilled student can reach
    # SA-MDRAD's defaults are the validation choice gamma=1 (docs/sa_mdrad_defaults.md): its runs are
    # the ones of that label (the sweep's seeds 0-2, sa_mdrad_chosen.py's 3-4: the same config and
    # directory); the first guess's runs stay in 'sa_mdrad', the sweep's base.
    grid["workdir_names"] = {"sa_mdrad": defaults_label()}
    from sa_mdrad_jax.methods import method_names
    # The rolled runs were made on the first machine; of this grid's runs only the teacher-free ones are
    # from that machine too (the distillation pairs are in experiments/results/digits_converged_machine1).
    grid["compare_with"] = [{"results": "experiments/results/digits_converged_rolled", "labels": ("rolled", "unrolled"),
                             "methods": (NATURAL,) + method_names(teachers="none", paper_grid=True),
                             "title": "How far float-level differences move a number: seed-0 runs trained with "
                                      "the PGD loop rolled, then unrolled (same machine)"},
                            {"results": "experiments/results/digits_converged_machine1",
                             "labels": ("machine 1", "machine 2"),
                             # SA-MDRAD's machine-1 run is of the first guess (gamma=0), not of this grid's config
                             "methods": tuple(m for m in method_labels(paper_grid=True) if m != "sa_mdrad"),
                             "title": "How far another machine moves a number: distillation runs from the first "
                                      "machine's teachers, then from the same teacher configs re-trained on the second"},
                            {"results": "experiments/results/digits_converged_machine2_check",
                             "labels": ("machine 2", "machine 1"),
                             "title": "How far the CPU alone moves a number: teacher-free seed-0 runs of this grid "
                                      "(first machine) trained again on the second"}]
    return grid


def still_rising(metrics_dir: str, prefix: str, seed: int = 0, window: int = 10,
                 min_gain: float = 0.015) -> tuple[str, ...]:
    """Method labels whose validation PGD-20 (`val_robust_accuracy`, per epoch) rose by more than
    `min_gain` from the mean of the `window` epochs before the last `window` to the mean of the last
    `window`, read from a grid's collected metrics (`<metrics_dir>/<prefix><label>_seed<seed>.jsonl`,
    prefix '<dataset>_<student>_')."""
    from sa_mdrad_jax import grid_report, paths
    rising = []
    for path in paths.glob(metrics_dir, f"{prefix}*_seed{seed}.jsonl"):
        curve = [r["val_robust_accuracy"] for r in grid_report.read_jsonl(path)
                 if r["kind"] == "eval" and "val_robust_accuracy" in r]
        gain = grid_report.late_gain(curve, window)
        if gain is not None and gain > min_gain:
            rising.append(paths.name(path)[len(prefix):].rsplit("_seed", 1)[0])
    order = method_labels(paper_grid=True)
    return tuple(sorted(rising, key=lambda m: order.index(m) if m in order else len(order)))


def digits_epochs_check_grid(epochs: int = 60, methods=None, seeds: tuple = (0,)) -> dict:
    """Was 40 epochs enough? The converged digits protocol at `epochs` (schedules scaled again),
    `seeds` (default 0), for `methods`, with the 40-epoch teachers: does a longer run beat the 40-epoch one
    (experiments/results/digits_converged_40) on the validation split? Scored on validation only
    (clean and PGD-20 of the best-validation checkpoint); the test split is not read. `methods`
    default: those whose seed-0 validation PGD-20 rose by more than 1.5 points (≈4 of the 287
    validation digits) from epochs 21-30 to 31-40 of the 40-epoch grid (`still_rising` on its
    committed metrics). At 60 epochs these are the converged grid's seed-0 runs themselves."""
    grid = digits_converged_grid(epochs)
    base = digits_converged_grid()
    if methods is None:
        methods = still_rising(f"{base['results']}_40/metrics", "digits_resnet_tiny_", min_gain=0.015)
    grid["teachers"] = {"digits": {name: {"config": None,
                                          "workdir": f"{base['root']}/digits/teachers/{name}"}
                                   for name in base["teachers"]["digits"]}}
    grid.update(name=f"digits epochs check: {epochs} epochs, seed {', '.join(map(str, seeds))}, validation split",
                root=f"workdir/grids/digits_converged_{epochs}",
                results=f"experiments/results/digits_converged_{epochs}", methods=tuple(methods), seeds=tuple(seeds))
    grid.pop("compare_with")
    grid["evaluation"] = {**grid["evaluation"], "attacks": ("clean", "pgd20"), "n_points": 287,
                          "split": "validation", "batch_size": 287}
    grid["evaluate_teachers"] = None   # validation only: the converged grid evaluates the teachers on test
    return grid


TEACHER_CANDIDATE_RESULTS = "experiments/results/digits_teacher_candidates"


def validation_records(results_dir: str, grid_file: str, keep=lambda label: True) -> list[dict]:
    """The committed evaluation records of `results_dir` whose label passes `keep`, for a choice made
    on them: a ConfigError naming `grid_file` when there are none, and one when any record is of
    another split than validation (choices never read the test split)."""
    from sa_mdrad_jax import grid_report
    records = grid_report.load_records(results_dir) if paths.exists(results_dir) else []
    records = [r for r in records if keep(r["run"]["method"])]
    if not records:
        raise config_lib.ConfigError(f"No results in {results_dir}: run "
                                     f"`python experiments/run_grid.py --grid={grid_file}` first.")
    if any(r.get("split") != "validation" for r in records):
        raise config_lib.ConfigError(f"{results_dir} holds results of another split than validation: choices are "
                                     "made on the validation split only.")
    return records


def digits_teacher_candidates_grid(epochs: int = 60) -> dict:
    """Could digits have a robust teacher stronger than the PGD-AT student? The converged grid's
    robust teacher (PGD-AT, 40 epochs) is below the student's own PGD-AT on both splits. Candidates,
    each the converged protocol with the teacher's architecture (ResNet-18 ×0.25) as the trained
    model, `epochs` epochs, seed 0: PGD-AT (the converged grid's teacher recipe, run longer) and
    TRADES (the papers' robust-teacher recipe: ARD, RSLAD, AdaAD distil from TRADES WRN-34-10).
    Scored on the validation split only (clean and PGD-20 of the best-validation checkpoint); the
    test split is read once, by the distillation grid that uses the winner (`digits_strong_teacher_grid`)."""
    from sa_mdrad_jax.methods import method_names
    converged = digits_converged_grid(epochs)
    teacher = DIGITS_NATURAL[primary(DIGITS_NATURAL)]
    grid = converged_grid(
        **{**digits_protocol(epochs, epochs), "student": teacher["name"], "student_options": {"width": teacher["width"]}},
        evaluation={},
        methods=method_names(teachers="none", paper_grid=True),
        seeds=(0,), name=f"digits robust-teacher candidates: {teacher['name']} ×{teacher['width']}, {epochs} epochs, "
                         "seed 0, validation split",
        root="workdir/grids/digits_teacher_candidates", results=TEACHER_CANDIDATE_RESULTS)
    grid["teachers"] = {"digits": {}}
    grid["evaluation"] = {**converged["evaluation"], "attacks": ("clean", "pgd20"), "n_points": 287,
                          "split": "validation", "batch_size": 287}
    grid.pop("label_overrides")
    return grid


def strongest_teacher(results_dir: str = TEACHER_CANDIDATE_RESULTS, score: str = "pgd20") -> str:
    """The candidate label whose best-validation checkpoint has the highest validation `score`
    (ties: the first record). Reads only the validation split."""
    records = validation_records(results_dir, "experiments/grids/digits_teacher_candidates.py")
    return max(records, key=lambda r: r["accuracy"][score])["run"]["method"]   # max keeps the first of ties


def digits_strong_teacher_grid(seeds: tuple = (0, 1, 2), candidate: str | None = None) -> dict:
    """The converged digits protocol for every method that distils from the robust teacher, with the
    strongest candidate of `digits_teacher_candidates_grid` (by validation PGD-20; `candidate` to
    force one) in place of the converged grid's 40-epoch PGD-AT teacher; MTARD's natural teacher
    is unchanged. PGD-AT is the converged grid's own runs (`borrowed`: their committed test
    evaluations, never trained here): the report's paired differences are to it, over `seeds`. Test split, the converged grid's evaluation."""
    converged = digits_converged_grid()
    candidates = digits_teacher_candidates_grid()
    label = candidate or strongest_teacher(candidates["results"])
    from sa_mdrad_jax import grid as grid_lib
    run = next(r for r in grid_lib.expand(candidates) if r.method == label)
    methods = tuple(m for m in method_labels(paper_grid=True)
                    if teacher_kind(m.split("+")[0]) in ("robust", "robust+natural"))
    needed = {name for m in methods for name in teacher_block(m.split("+")[0], DIGITS_NATURAL)} - {"robust"}
    natural = {name: spec for name, spec in converged["teachers"]["digits"].items() if name in needed}
    teachers = {**natural, "robust": {"config": grid_lib.run_config(candidates, run), "workdir": run.workdir}}
    return {**converged, "methods": ("pgd_at",) + methods, "seeds": tuple(seeds),
            "name": f"digits, resnet_tiny student, 60 epochs, robust teacher: {run.student} {label} "
                    f"{teachers['robust']['config'].train.epochs} epochs (the strongest candidate on validation)",
            "results": "experiments/results/digits_strong_teacher", "teachers": {"digits": teachers},
            "workdir_names": {m: f"{m}_strong_teacher" for m in methods}, "compare_with": (),
            "reference": "pgd_at", "borrowed": {"pgd_at": converged["results"]}}


# SA-MDRAD's options of methods.md §2, each varied alone from the default (issue: defaults settled by evidence).
SA_MDRAD_SWEEP = {
    "gamma": (0.0, 0.5, 1.0),
    "attack_loss": ("ce", "kl_fused_clean", "trades", "kl_fused_adv"),
    "teacher_input_adv": ("adv", "clean", "hybrid"),
    "rectify": ("swap", "none", "soft", "drop"),
    "weighting": ("ca", "uniform", "softmax_neg_ce"),
    "tau": (1.0, 2.0, 4.0, 8.0),
    "kl_scale": (0.1, 0.3, 1.0),
    "lambda_adv": (5 / 6, 0.5, 1.0),          # lambda_nat = 1 − lambda_adv
    "beta": (0.0, 0.5, 1.0),
    "feature_distance": ("mse", "normalized_mse"),
    "feature_target": ("nat", "adv"),
    "feature_warmup_epochs": (0, 1, 5),
    "branch_weights": ("fixed", "mtard"),
}


# The defaults the sweep varies from: methods.md §2's first guesses, as they stood when the sweep
# was run (pinned, so that the committed sweep reproduces after the defaults it chose replace them).
SWEEP_BASE = {"gamma": 0.0, "attack_loss": "ce", "teacher_input_adv": "adv", "rectify": "swap", "weighting": "ca",
              "tau": 4.0, "kl_scale": 0.1, "lambda_adv": 5 / 6, "lambda_nat": 1 / 6, "beta": 1.0,
              "feature_distance": "mse", "feature_target": "nat", "feature_warmup_epochs": 1, "branch_weights": "fixed"}


def first_guess_label() -> str:
    """The sweep label of the first guess (SWEEP_BASE) relative to SA-MDRAD's current defaults:
    'sa_mdrad@gamma=0' once gamma=1 is the default; 'sa_mdrad' while they agree."""
    return combined_label({o: first for o, (first, _) in _moved_defaults().items()})


def defaults_label() -> str:
    """The sweep label of SA-MDRAD's current defaults ('sa_mdrad@gamma=1'): the directory name of
    their runs in a grid that ran the first guess as 'sa_mdrad' before (the sweep's runs are theirs)."""
    return combined_label({o: now for o, (_, now) in _moved_defaults().items()})


def _moved_defaults() -> dict:
    """{option: (first guess, current default)} of the sweep options whose default changed."""
    defaults = config_lib.method_config("sa_mdrad")
    return {o: (v, defaults[o]) for o, v in SWEEP_BASE.items() if defaults[o] != v}


def sweep_label(option: str, value) -> str:
    """'sa_mdrad@tau=2' (a grid method label: the run's workdir is named by it)."""
    return f"sa_mdrad@{option}={value:.4g}" if isinstance(value, float) else f"sa_mdrad@{option}={value}"


def sweep_overrides(label: str) -> dict:
    """{method option: value} of a sweep label ('sa_mdrad' alone = the defaults; several options:
    'sa_mdrad@tau=2,gamma=1', as the factorial's labels)."""
    _, _, assignments = label.partition("@")
    out = {}
    for assignment in filter(None, assignments.split(",")):
        option, _, _ = assignment.partition("=")
        if option not in SA_MDRAD_SWEEP:
            raise config_lib.ConfigError(f"Sweep label {label!r}: unknown option {option!r}; "
                                         f"valid: {', '.join(SA_MDRAD_SWEEP)}.")
        value = next((v for v in SA_MDRAD_SWEEP[option] if sweep_label(option, v) == f"sa_mdrad@{assignment}"), None)
        if value is None:
            raise config_lib.ConfigError(f"Sweep label {label!r}: {option} takes {SA_MDRAD_SWEEP[option]}.")
        out[option] = value
        if option == "lambda_adv":
            out["lambda_nat"] = 1.0 - value
    return out


def combined_label(overrides: dict) -> str:
    """{'tau': 2.0, 'gamma': 1.0} -> 'sa_mdrad@tau=2,gamma=1' (sweep options in SA_MDRAD_SWEEP order)."""
    parts = [sweep_label(o, overrides[o]).partition("@")[2] for o in SA_MDRAD_SWEEP if o in overrides]
    return "sa_mdrad@" + ",".join(parts) if parts else "sa_mdrad"


def sweep_ranking(results_dir: str, score: str = "pgd20") -> list[tuple[str, float, float]]:
    """(label, mean `score`, mean clean) of every SA-MDRAD label of a sweep's committed validation
    results, best `score` first. Reads only what the sweep evaluated: the validation split."""
    records = validation_records(results_dir, "experiments/grids/sa_mdrad_sweep.py",
                                 keep=lambda label: label.startswith("sa_mdrad"))
    by_label: dict = {}
    for r in records:
        by_label.setdefault(r["run"]["method"], []).append((r["accuracy"][score], r["accuracy"]["clean"]))
    ranked = [(label, float(np.mean([v[0] for v in vals])), float(np.mean([v[1] for v in vals])))
              for label, vals in by_label.items()]
    return sorted(ranked, key=lambda t: (-t[1], t[0]))


def strongest_options(results_dir: str, k: int = 3, score: str = "pgd20") -> dict:
    """{option: its best value} of the `k` options whose best non-default value moves validation
    `score` most above the defaults' (options whose every value is below the defaults are left out:
    a factorial of them would only combine losses)."""
    ranking = {label: mean for label, mean, _ in sweep_ranking(results_dir, score)}
    default = ranking.get("sa_mdrad")
    if default is None:
        raise config_lib.ConfigError(f"{results_dir} has no run of the defaults ('sa_mdrad').")
    best: dict = {}
    for label, mean in ranking.items():
        overrides = sweep_overrides(label)
        if len(overrides) - ("lambda_nat" in overrides) == 1:
            option = next(o for o in overrides if o != "lambda_nat")
            if mean > default and mean > best.get(option, (None, -1.0))[1]:
                best[option] = (overrides[option], mean)
    top = sorted(best.items(), key=lambda kv: (-kv[1][1], kv[0]))[:k]
    return {option: value for option, (value, _) in top}


def sa_mdrad_sweep_grid(epochs: int = 60) -> dict:
    """Every SA-MDRAD option varied alone from the default, on the converged digits protocol, scored on
    the validation split (experiments/grids/sa_mdrad_sweep.py)."""
    converged = digits_converged_grid(epochs)
    defaults = SWEEP_BASE
    labels = ["sa_mdrad"] + [sweep_label(o, v) for o, values in SA_MDRAD_SWEEP.items() for v in values
                             if v != defaults[o] and not (isinstance(v, float) and abs(v - defaults[o]) < 1e-9)]
    # PGD-AT on the same validation split: the new default's clean accuracy must not be below it.
    labels.append("pgd_at")

    def base_config(label, dataset, student):
        if label == "pgd_at":
            return converged["base_config"]("pgd_at", dataset, student)
        c = converged["base_config"]("sa_mdrad", dataset, student)
        c.method.update({**SWEEP_BASE, **sweep_overrides(label)})
        return c

    return {
        **converged,
        "name": f"SA-MDRAD options one at a time, digits, {epochs} epochs, validation split",
        "root": converged["root"], "results": "experiments/results/sa_mdrad_sweep",
        "methods": tuple(labels), "seeds": (0, 1, 2), "base_config": base_config, "label_overrides": {}, "compare_with": (),
        "teacher_snapshots": f"{converged['results']}/teachers",   # the converged grid's teachers, shared
        "evaluate_teachers": None,     # validation only: the converged grid evaluates the teachers on test
        # The sweep's 'sa_mdrad' is SWEEP_BASE in the runs' original directories, whatever directory the
        # converged grid gives its SA-MDRAD once the defaults change.
        # PGD-AT in its own directories: the converged grid's PGD-AT seeds 0-1 were trained on another
        # machine (their workdirs are gone, their test results committed); training them again into the
        # converged grid's directories would put a second run of the same config there.
        "workdir_names": {"pgd_at": "pgd_at_sweep"},
        "sweep": {"base": "sa_mdrad", "defaults": {o: defaults[o] for o in SA_MDRAD_SWEEP}},
        "evaluation_dir": "evaluation_validation",
        "evaluation": {"attacks": ("clean", "pgd20"), "n_points": 287, "eps": converged["evaluation"]["eps"],
                       "batch_size": 287, "seed": 0, "curve_eps": (), "checkpoint": "best", "split": "validation"},
    }


SWEEP_RESULTS = "experiments/results/sa_mdrad_sweep"


def sa_mdrad_factorial_grid(k: int = 3, sweep_results: str = SWEEP_RESULTS) -> dict:
    """Every combination of the `k` options that raised validation PGD-20 most in the sweep
    (`strongest_options`), each at the defaults' value or its best sweep value — 2^k labels, the
    all-default and single-option ones shared with the sweep's runs; validation split, 3 seeds."""
    import itertools
    sweep = sa_mdrad_sweep_grid()
    strongest = strongest_options(sweep_results, k)
    labels = [combined_label({o: v for o, v, on in zip(strongest, strongest.values(), mask) if on})
              for mask in itertools.product((False, True), repeat=len(strongest))]
    return {**sweep, "name": f"SA-MDRAD factorial of {', '.join(strongest) or 'no option'} (best sweep values), "
                             "digits, validation split",
            "results": "experiments/results/sa_mdrad_factorial", "methods": tuple(labels) + ("pgd_at",),
            "sweep": None}


def sa_mdrad_finalists_grid(k: int = 3, sweep_results: str = SWEEP_RESULTS,
                            factorial_results: str = "experiments/results/sa_mdrad_factorial") -> dict:
    """AutoAttack on the validation split for the finalists: the `k` best SA-MDRAD configurations by
    validation PGD-20 over the sweep and the factorial (when it has run), the defaults and PGD-AT."""
    sweep = sa_mdrad_sweep_grid()
    ranking = sweep_ranking(sweep_results)
    if paths.exists(paths.join(factorial_results, "evaluations")):
        ranking = sorted({**{r[0]: r for r in ranking}, **{r[0]: r for r in sweep_ranking(factorial_results)}}.values(),
                         key=lambda t: (-t[1], t[0]))
    finalists = [label for label, _, _ in ranking[:k]]
    defaults, reference = sweep["sweep"]["base"], "pgd_at"
    labels = tuple(dict.fromkeys([defaults, *finalists, reference]))
    return {**sweep, "name": "SA-MDRAD finalists: AutoAttack on the validation split",
            "results": "experiments/results/sa_mdrad_finalists", "methods": labels, "sweep": None,
            "evaluation_dir": "evaluation_validation_autoattack",
            "evaluation": {**sweep["evaluation"], "attacks": ("clean", "pgd20", "autoattack")}}


FINALISTS_RESULTS = "experiments/results/sa_mdrad_finalists"
# Settings that switch off the components the paper describes (sample-aware rectification,
# prediction-based adaptive fusion): never chosen as the default, only named when they win.
PAPER_COMPONENTS_OFF = {"rectify": ("none",), "weighting": ("uniform",)}


def chosen_defaults(finalists_results: str = FINALISTS_RESULTS, score: str = "autoattack") -> dict:
    """SA-MDRAD's defaults by the rule fixed before the finalists were evaluated (issue 13): the
    finalist with the highest mean validation `score` (ties: PGD-20, then the label) among those whose
    mean validation clean accuracy is not below PGD-AT's over the same seeds, and which keep the paper's
    rectification and adaptive fusion on; a better finalist that switches one of them off is returned
    as 'better_variant'. Reads only the finalists' validation records.

    Returns {'label', 'options' (every sweep option's value), 'better_variant' (label or None),
    'table' {label: {'clean', 'pgd20', score, 'seeds'}}, 'bar' (PGD-AT's clean accuracy)}."""
    records = validation_records(finalists_results, "experiments/grids/sa_mdrad_finalists.py")
    seeds: dict = {}
    for r in records:
        seeds.setdefault(r["run"]["method"], {})[r["run"]["seed"]] = r["accuracy"]
    if "pgd_at" not in seeds:
        raise config_lib.ConfigError(f"{finalists_results} has no PGD-AT run: its clean accuracy is the bar.")
    table = {}
    for label, by_seed in seeds.items():
        common = sorted(set(by_seed) & set(seeds["pgd_at"]))
        table[label] = {k: float(np.mean([by_seed[s][k] for s in common])) for k in ("clean", "pgd20", score)}
        table[label]["bar"] = float(np.mean([seeds["pgd_at"][s]["clean"] for s in common]))
        table[label]["seeds"] = common
    ranked = sorted((label for label in table if label.startswith("sa_mdrad") and table[label]["seeds"]),
                    key=lambda l: (-table[l][score], -table[l]["pgd20"], l))
    eligible = [l for l in ranked if table[l]["clean"] >= table[l]["bar"]]
    if not eligible:
        raise config_lib.ConfigError(f"No SA-MDRAD finalist in {finalists_results} reaches PGD-AT's clean "
                                     "validation accuracy: no default can be chosen by the rule.")
    paper_off = lambda l: any(v in PAPER_COMPONENTS_OFF.get(o, ()) for o, v in sweep_overrides(l).items())  # noqa: E731
    label = next((l for l in eligible if not paper_off(l)), None)
    if label is None:
        raise config_lib.ConfigError(f"Every eligible finalist in {finalists_results} switches off rectification "
                                     "or adaptive fusion: evaluate one that keeps them on.")
    better = eligible[0] if eligible[0] != label else None   # ranked above it only if it switches one off
    options = {**SWEEP_BASE, **sweep_overrides(label)}
    return {"label": label, "options": options, "better_variant": better, "table": table,
            "bar": table[label]["bar"]}


CHOSEN_RESULTS = "experiments/results/sa_mdrad_chosen"


def sa_mdrad_chosen_grid(seeds: tuple = (0, 1, 2, 3, 4), finalists_results: str = FINALISTS_RESULTS) -> dict:
    """The configuration `chosen_defaults` picked on validation, evaluated once on the TEST split
    beside the converged grid's methods: the converged protocol and evaluation, 5 seeds. Its label
    ('sa_mdrad@gamma=1', ...) is the sweep's or factorial's own: seeds 0-2 are their runs (same config
    and directory; only the test evaluation is new), seeds 3-4 train here. The first guess
    (`first_guess_label()`, the sweep's base) keeps its converged-grid runs in their directory. Every
    other method of the converged grid is `borrowed` (their committed test results)."""
    converged = digits_converged_grid()
    sweep = sa_mdrad_sweep_grid()
    label, first_guess = chosen_defaults(finalists_results)["label"], first_guess_label()
    others = tuple(m for m in converged["methods"] if m != "sa_mdrad")   # 'sa_mdrad' is one of the two now
    borrowed = {m: converged["results"] for m in others}

    def base_config(method, dataset, student):
        return sweep["base_config"](method, dataset, student) if method in (label, first_guess) else \
            converged["base_config"](method, dataset, student)

    return {**converged, "name": f"SA-MDRAD's validation choice ({label.partition('@')[2]}) on the test split, "
                                 "beside the converged digits grid",
            "results": CHOSEN_RESULTS, "methods": tuple(dict.fromkeys((label, first_guess) + others)),
            "seeds": tuple(seeds), "base_config": base_config, "borrowed": borrowed, "compare_with": (),
            "reference": "pgd_at", "workdir_names": {first_guess: sweep["sweep"]["base"]},
            "teacher_snapshots": f"{converged['results']}/teachers", "evaluate_teachers": None,
            "claims": False}   # the converged grid reads the claims; here SA-MDRAD is two labels


ABLATION_RESULTS = "experiments/results/sa_mdrad_ablations"


def sa_mdrad_ablation_grid(seeds: tuple = (0, 1, 2, 3, 4)) -> dict:
    """SA-MDRAD's ablations (sa_mdrad_recipes.ABLATIONS: each removes one component from the current
    defaults) on the converged digits protocol and its teachers, evaluated on the TEST split like the
    converged grid (the table the paper's ablation section would hold). Labels 'sa_mdrad~<ablation>';
    'sa_mdrad' is the converged grid's own SA-MDRAD run (`borrowed`: its committed evaluation); the report's paired
    differences are to it."""
    from sa_mdrad_jax.methods.sa_mdrad_recipes import ABLATIONS
    converged = digits_converged_grid()
    labels = ("sa_mdrad",) + tuple(f"sa_mdrad~{name}" for name in ABLATIONS)

    def base_config(label, dataset, student):
        c = converged["base_config"]("sa_mdrad", dataset, student)
        if label != "sa_mdrad":
            ABLATIONS[label.partition("~")[2]](c)
        return c

    return {**converged, "name": "SA-MDRAD ablations from its defaults, digits, 60 epochs, test split",
            "results": ABLATION_RESULTS, "methods": labels, "seeds": tuple(seeds), "base_config": base_config,
            "label_overrides": {}, "compare_with": (), "reference": "sa_mdrad", "borrowed": {"sa_mdrad": converged["results"]},
            "teacher_snapshots": f"{converged['results']}/teachers", "evaluate_teachers": None}


FASHION_EPS = 0.1
FASHION_VALIDATION = 1000


def fashion_mnist_grid(*, train_size: int = 20000, epochs: int = 10, teacher_epochs: int = 10,
                       seeds: tuple = (0,), root: str = "workdir/grids/fashion_mnist",
                       results: str = "experiments/results/fashion_mnist", methods: tuple | None = None) -> dict:
    """PGD-AT, TRADES, RSLAD, AdaAD and SA-MDRAD (and the natural reference) on Fashion-MNIST at
    ε = 0.1, sized to a 2-core CPU (experiments/grids/fashion_mnist.py explains every choice).
    `methods`: a subset of those labels (default all; the teachers are those the subset needs, and
    SA-MDRAD's first guess rides along only with the full set).

    The student and the teachers halve the 28×28 input in their stem (`stem_stride=2`): a third of
    the cost of every gradient, which is what AutoAttack on 1,000 points needs on a CPU."""
    student_options = {"stem_stride": 2}
    natural = {"resnet": dict(name="resnet_tiny", width=2.0, stem_stride=2, normalize="fashion_mnist"),
               "vgg": dict(name="vgg_tiny", width=4.0, normalize="fashion_mnist")}
    from sa_mdrad_jax.methods import method_names
    every = (NATURAL,) + method_names(fashion_grid=True)   # registered with fashion_grid=True
    unknown = sorted(set(methods or ()) - set(every))
    if unknown:
        raise ValueError(f"fashion_mnist_grid: methods {unknown} are not in its set {list(every)}.")
    grid = converged_grid(
        data=dict(name="fashion_mnist", crop_pad=2, flip=True, validation_size=FASHION_VALIDATION,
                  train_size=train_size),
        eps=FASHION_EPS, student="resnet_tiny", student_options=student_options, natural=natural,
        epochs=epochs, teacher_epochs=teacher_epochs, batch_size=128, lr=0.1,
        robust_points=500, eval_batch_size=500, log_every=50,
        evaluation={"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30", "autoattack"), "n_points": 10000,
                    "batch_size": 500, "attack_points": {"autoattack": 1000}},
        methods=tuple(methods or every), seeds=tuple(seeds),
        name=(f"Fashion-MNIST (28×28, ε = 0.1), resnet_tiny (stem stride 2) student, {train_size} training "
              f"images, {epochs} epochs (teachers {teacher_epochs}), best validation checkpoint"),
        root=root, results=results)
    # The teachers on the same 10,000 test images, without AutoAttack (on the ×2 robust teacher it
    # would cost about four students' worth, > 2 core-hours here).
    grid["evaluate_teachers"] = {"attacks": ("clean", "fgsm", "pgd20", "cw_inf_30"), "attack_points": {}}
    grid = with_first_guess(grid)
    if methods is not None:   # the defaults keep their directory; the first guess is not asked for
        grid["methods"] = tuple(m for m in grid["methods"] if m in methods)
    return grid


def with_first_guess(grid: dict) -> dict:
    """`grid` with SA-MDRAD's first guess (SWEEP_BASE, label `first_guess_label()`) beside its
    defaults: the first guess keeps the runs made before the defaults changed (directory 'sa_mdrad'),
    the defaults' runs get `defaults_label()` ('sa_mdrad@gamma=1')."""
    first_guess, inner = first_guess_label(), grid["base_config"]
    if first_guess == "sa_mdrad" or "sa_mdrad" not in grid["methods"]:
        return grid

    def base_config(method, dataset, student):
        if method != first_guess:
            return inner(method, dataset, student)
        c = inner("sa_mdrad", dataset, student)
        c.method.update(SWEEP_BASE)
        return c

    methods = list(grid["methods"])
    methods.insert(methods.index("sa_mdrad") + 1, first_guess)
    return {**grid, "methods": tuple(methods), "base_config": base_config,
            "workdir_names": {**grid.get("workdir_names", {}), "sa_mdrad": defaults_label(), first_guess: "sa_mdrad"}}
