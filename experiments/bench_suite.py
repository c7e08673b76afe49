"""Benchmark suite: the jitted training step of every method, and AutoAttack, against the device's limit.

  python experiments/bench_suite.py          # the default set: the digits grid's setup (resnet_tiny student,
                                             # ResNet-18 ×0.25 + WRN-16-4 ×0.25 teachers, 8×8, batch 32, PGD-10)
  python experiments/bench_suite.py --methods=pgd_at,sa_mdrad --models=resnet18 --width=1 \\
      --teachers=wrn34_10,resnet50,vgg16_bn --teacher_width=1 --image_size=32 --batches=512 \\
      --dtypes=bfloat16 --steps=10 --reps=5                         # the H100 goal of performance.md
  python experiments/bench_suite.py --methods=pgd_at --compare_unroll --compare_dtype --devices=1,8

Each configuration runs in its own subprocess (a fresh process: its peak memory is its own, and
`--devices=N` sets XLA_FLAGS=--xla_force_host_platform_device_count=N there, which simulates N CPU
devices; on a GPU machine N must not exceed the real device count). The step is the same function
the training loop runs — gather from the on-device split, augmentation, PGD (`lax.fori_loop`, fully unrolled on CPU by
default, both forms with `--compare_unroll`), teacher calls, forward/backward, the update — data-parallel
with shard_map over all devices, timed after compilation with `block_until_ready`: the median of
`--reps` timings of `--steps` steps, with the min–max spread.

FLOPs per image are analytic (sa_mdrad_jax.flops.method_step_flops: K·2F + views·3F + teacher
views, performance.md); MFU = achieved FLOP/s ÷ the matmul ceiling this script measures on the
device (a large square matmul in the same dtype), not a datasheet peak. Peak memory is the
device's `peak_bytes_in_use` when the backend reports it, else the process's max RSS (CPU).
AutoAttack is timed by experiments/bench_autoattack.py (its own script), called as a subprocess
when `--autoattack` is set. Writes JSON and a Markdown table (`--out`, `--md`).
"""
from __future__ import annotations

import functools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)



def default_methods() -> list[str]:
    """'natural' and every method registered with `benchmark=True` (with its grid terms)."""
    from sa_mdrad_jax.grid_presets import method_labels
    return list(method_labels(benchmark=True))


def define_flags():
    """The driver's flags. Defined only when this file runs as a script, so that importing it for
    `time_step` (experiments/bench_step.py, device_check) does not clash with the importer's flags."""
    flags.DEFINE_list("methods", [], "Method labels ('name+term' enables a composable term); default: natural and "
                      "every method registered for the benchmarks (read when the suite runs, not at --help).")
    flags.DEFINE_list("models", ["resnet_tiny"], "Student models (zoo names).")
    flags.DEFINE_float("width", 1.0, "Student channel multiplier.")
    flags.DEFINE_list("teachers", ["resnet18", "wrn16_4"], "Teachers: SA-MDRAD uses all; single-teacher methods "
                      "the first; MTARD the first (robust) and second (natural).")
    flags.DEFINE_float("teacher_width", 0.25, "Teacher channel multiplier.")
    flags.DEFINE_list("batches", ["32"], "Global batch sizes.")
    flags.DEFINE_list("dtypes", ["float32"], "Compute dtypes (model.dtype): float32, bfloat16.")
    flags.DEFINE_list("devices", ["1"], "Device counts (CPU: simulated with XLA_FLAGS in the subprocess).")
    flags.DEFINE_integer("image_size", 8, "Square image size.")
    flags.DEFINE_integer("num_classes", 10, "Classes.")
    flags.DEFINE_integer("pgd_steps", 10, "PGD steps K of the training attack.")
    flags.DEFINE_integer("steps", 3, "Steps per timed repetition.")
    flags.DEFINE_integer("reps", 3, "Timed repetitions.")
    flags.DEFINE_bool("compare_unroll", False, "Also time each PGD method with the attack loop forced rolled "
                     "(one fori_loop body) and fully unrolled (the default 'auto' unrolls on CPU).")
    flags.DEFINE_bool("compare_dtype", False, "Also time each configuration in the other dtype (fp32 <-> bf16).")
    flags.DEFINE_bool("autoattack", False, "Also run experiments/bench_autoattack.py (AutoAttack wall time).")
    flags.DEFINE_string("autoattack_args", "", "Extra flags for bench_autoattack.py (space-separated).")
    flags.DEFINE_integer("matmul_n", 0, "Matmul ceiling size n (n×n @ n×n); 0 = 2048 on CPU, 8192 on GPU/TPU.")
    flags.DEFINE_string("out", "experiments/results/bench_suite_cpu.json", "Results JSON.")
    flags.DEFINE_string("md", "", "Also write the Markdown table here.")
    flags.DEFINE_string("worker", "", "(internal) JSON spec of one configuration to time in this process.")


FLAGS = flags.FLAGS


# --------------------------------------------------------------------------------------------
# One configuration (runs in a worker process).


def peak_memory() -> tuple[float, str]:
    """(GiB, what it is): device peak_bytes_in_use, else the process's max RSS."""
    import jax
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**30, "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process max RSS"


def teachers_for(method, names: list[str]) -> list[str]:
    """Which of the given teachers a method distils from (see --teachers), by its registered teacher kind."""
    from sa_mdrad_jax.methods import method_spec
    if not method.uses_teachers:
        return []
    kind = method_spec(method.name.split("+")[0]).teachers
    if kind == "natural":
        return list(names)
    if kind == "robust+natural":
        return list(names[:2])
    return list(names[:1])


def build_step(spec: dict):
    """(jitted train_on, state, split, order, step_args, per-image FLOPs record) for one spec.

    Mirrors sa_mdrad_jax.train.loop.train: the same step builders, connectors and initial state.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from sa_mdrad_jax import config as config_lib, flops, models
    from sa_mdrad_jax.methods import make_method, natural_loss
    from sa_mdrad_jax.methods.base import StepContext
    from sa_mdrad_jax.train import distill_step, input as input_lib, loop, schedules, step as step_lib

    mesh = step_lib.make_mesh()
    n_dev = mesh.devices.size
    # The state placed as the loop places it (replicated over the mesh): the step's output state has
    # this sharding, so an input state without it would compile the step a second time.
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    image_shape = (spec["image_size"], spec["image_size"], 3)
    model = models.get_model(spec["model"], num_classes=spec["num_classes"], width=spec["width"],
                             dtype=spec["dtype"], bn_axis_name=step_lib.DATA)
    optim = config_lib.base_config().optim
    tx = schedules.make_optimizer(optim, schedules.make_schedule(optim, 100, 10))
    rng = np.random.default_rng(0)
    n = spec["batch"] * 4
    split = input_lib.put_split(mesh, rng.integers(0, 256, (n, *image_shape), dtype=np.uint8),
                                rng.integers(0, spec["num_classes"], (n,), dtype=np.int32), drop_remainder=True)
    f_student = flops.forward_flops(model, jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *image_shape)), train=False)), image_shape)
    name, *terms = spec["method"].split("+")
    if name == "natural":
        method, teacher_names, step_args = None, [], ()
        state = jax.jit(functools.partial(loop._initial_state, model, tx, image_shape, 0),
                        out_shardings=replicated)()
        train_step = step_lib.make_train_step(functools.partial(natural_loss, model), tx, mesh)
        teacher_flops = []
    else:
        mcfg = config_lib.method_config(name)
        mcfg.steps = spec["pgd_steps"]
        mcfg.update(spec.get("method_options") or {})   # e.g. an SA-MDRAD sweep value (bench_sa_mdrad_options.py)
        for term in terms:
            mcfg[term].enabled = True
        probe = make_method(mcfg, ("robust", "natural"))
        teacher_names = teachers_for(probe, spec["teachers"])
        keys = tuple(["robust", "natural"][:len(teacher_names)]) if name == "mtard" else tuple(teacher_names)
        method = make_method(mcfg, keys)
        teachers = tuple(models.get_model(t, num_classes=spec["num_classes"], width=spec["teacher_width"],
                                          dtype=spec["dtype"]) for t in teacher_names)
        teacher_vars = tuple(jax.jit(lambda t=t: t.init(jax.random.PRNGKey(1), jnp.zeros((1, *image_shape)),
                                                        train=False))() for t in teachers)
        teacher_flops = [flops.forward_flops(t, v, image_shape) for t, v in zip(teachers, teacher_vars)]
        connectors = ()
        if method.connectors:
            connectors = distill_step.make_connectors(
                distill_step.feature_shapes(model, image_shape),
                [distill_step.feature_shapes(t, image_shape) for t in teachers], stages=method.feature_stages,
                axis_name=step_lib.DATA)
        state = jax.jit(functools.partial(loop._initial_state, model, tx, image_shape, 0, connectors, method),
                        out_shardings=replicated)()
        train_step = distill_step.make_distill_step(method, model, teachers, tx, mesh, eps=mcfg.eps,
                                                    step_size=mcfg.step_size, steps=mcfg.steps,
                                                    connectors=connectors)
        ctx = StepContext.make(epoch=1, feature_weight=1.0, lr_decays=0)
        step_args = (teacher_vars, ctx)
    train_on, _ = step_lib.compiled_epoch_fns(train_step, None, mesh, per_device_batch=spec["batch"] // n_dev,
                                              eval_per_device_batch=1)
    order = input_lib.epoch_order(state.key, jnp.int32(0), mesh=mesh, per_device=split.per_device)
    step_flops = flops.method_step_flops(method, f_student, teacher_flops, spec["pgd_steps"])
    info = {"teachers": teacher_names, "forward_gflop_per_image": f_student / 1e9,
            "teacher_forward_gflop_per_image": sum(teacher_flops) / 1e9, "step_gflop_per_image": step_flops / 1e9,
            "devices": n_dev, "steps_per_split": split.per_device // (spec["batch"] // n_dev)}
    return train_on, state, split, order, step_args, info


def time_step(spec: dict) -> dict:
    """Compiles and times one configuration; returns its record."""

    import jax
    import numpy as np

    from sa_mdrad_jax.attacks.pgd import loop_unroll
    with loop_unroll(spec.get("unroll", "auto")):   # the PGD loop is traced (and so unrolled or not) at the first call
        train_on, state, split, order, step_args, info = build_step(spec)
        t0 = time.perf_counter()
        state, m = train_on(state, split, order, 0, *step_args)
        jax.block_until_ready((state, m))
        compile_s = time.perf_counter() - t0
    rates = []
    for _ in range(spec["reps"]):
        t0 = time.perf_counter()
        for i in range(spec["steps"]):
            state, m = train_on(state, split, order, (i + 1) % info["steps_per_split"], *step_args)
        jax.block_until_ready((state, m))
        rates.append(spec["steps"] * spec["batch"] / (time.perf_counter() - t0))
    median = float(statistics.median(rates))
    compilations = train_on._cache_size()   # 1 unless a later call recompiled the step
    peak, peak_kind = peak_memory()
    return {**spec, **info, "device_kind": jax.devices()[0].device_kind, "platform": jax.devices()[0].platform,
            "img_per_s_median": median, "img_per_s_min": float(min(rates)), "img_per_s_max": float(max(rates)),
            "compile_plus_first_step_s": compile_s, "step_compilations": compilations,
            "achieved_tflop_per_s": info["step_gflop_per_image"] * median / 1e3,
            "peak_memory_gib": peak, "peak_memory_kind": peak_kind, "finite_loss": bool(np.isfinite(
                float(np.asarray(m["loss_sum"]).sum())))}


def matmul_ceiling(dtype: str, n: int, reps: int = 5) -> dict:
    """The device's measured dense matmul rate (TFLOP/s): median over `reps` of a chain of n×n matmuls."""
    import jax
    import jax.numpy as jnp
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype) / n**0.5
    chain = 4

    @jax.jit
    def f(a):
        for _ in range(chain):   # dependent matmuls: one dispatch amortised over `chain` products
            a = a @ b
        return a

    jax.block_until_ready(f(a))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        times.append(time.perf_counter() - t0)
    return {"dtype": dtype, "n": n, "tflop_per_s": chain * 2 * n**3 / statistics.median(times) / 1e12,
            "device_kind": jax.devices()[0].device_kind}


# --------------------------------------------------------------------------------------------
# The driver: one subprocess per configuration.


def run_worker(spec: dict, devices: int) -> dict:
    env = dict(os.environ)
    if devices > 1 or "XLA_FLAGS" in env:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}").strip()
    cmd = [sys.executable, os.path.abspath(__file__), "--worker=" + json.dumps(spec)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        return {**spec, "error": proc.stderr[-2000:]}
    return json.loads(lines[-1][len("RESULT "):])


def specs_from_flags() -> list[tuple[dict, int]]:
    out = []
    for model in FLAGS.models:
        for batch in FLAGS.batches:
            for dtype in FLAGS.dtypes:
                for devices in FLAGS.devices:
                    for method in (FLAGS.methods or default_methods()):
                        spec = dict(method=method, model=model, width=FLAGS.width, teachers=list(FLAGS.teachers),
                                    teacher_width=FLAGS.teacher_width, batch=int(batch), dtype=dtype,
                                    image_size=FLAGS.image_size, num_classes=FLAGS.num_classes,
                                    pgd_steps=FLAGS.pgd_steps, steps=FLAGS.steps, reps=FLAGS.reps, unroll="auto",
                                    requested_devices=int(devices))
                        out.append((spec, int(devices)))
                        if FLAGS.compare_unroll and method != "natural":
                            out += [({**spec, "unroll": u}, int(devices)) for u in ("rolled", "unrolled")]
                        if FLAGS.compare_dtype:
                            other = "bfloat16" if dtype == "float32" else "float32"
                            if other not in FLAGS.dtypes:
                                out.append(({**spec, "dtype": other}, int(devices)))
    return out


def markdown(results: list[dict], ceilings: dict) -> str:
    head = ("| method | student | teachers | dtype | batch | image | devices | PGD loop | img/s median (min–max) | "
            "compile + 1st step s | GFLOP/img | TFLOP/s | MFU vs measured matmul | peak memory GiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['model']} | – | {r['dtype']} | {r['batch']} | {r['image_size']} | "
                         f"{r['requested_devices']} | – | failed: {r['error'].strip().splitlines()[-1][:80]} "
                         "| | | | | |")
            continue
        ceiling = ceilings.get(r["dtype"], {}).get("tflop_per_s")
        mfu = f"{100 * r['achieved_tflop_per_s'] / ceiling:.1f}%" if ceiling else "–"
        teachers = "+".join(f"{t}×{r['teacher_width']:g}" for t in r["teachers"]) or "–"
        lines.append(
            f"| {r['method']} | {r['model']}×{r['width']:g} | {teachers} | {r['dtype']} | {r['batch']} | "
            f"{r['image_size']} | {r['devices']} × {r['device_kind']} | "
            f"{'–' if r['method'] == 'natural' else r['unroll']} | "
            f"{r['img_per_s_median']:.3g} ({r['img_per_s_min']:.3g}–{r['img_per_s_max']:.3g}) | "
            f"{r['compile_plus_first_step_s']:.1f} | {r['step_gflop_per_image']:.3f} | "
            f"{r['achieved_tflop_per_s']:.4f} | {mfu} | {r['peak_memory_gib']:.2f} ({r['peak_memory_kind']}) |")
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.worker:
        spec = json.loads(FLAGS.worker)
        if spec.get("matmul"):
            print("RESULT " + json.dumps(matmul_ceiling(spec["dtype"], spec["n"])), flush=True)
        else:
            print("RESULT " + json.dumps(time_step(spec)), flush=True)
        return
    t_start = time.time()
    load_before = os.getloadavg()
    import jax
    platform_name = jax.devices()[0].platform
    n = FLAGS.matmul_n or (2048 if platform_name == "cpu" else 8192)
    dtypes = sorted({d for d in FLAGS.dtypes} | ({"float32", "bfloat16"} if FLAGS.compare_dtype else set()))
    ceilings = {}
    for dtype in dtypes:
        ceilings[dtype] = run_worker({"matmul": True, "dtype": dtype, "n": n}, 1)
        print(f"matmul ceiling {dtype}: {ceilings[dtype].get('tflop_per_s', float('nan')):.4f} TFLOP/s", flush=True)
    results = []

    def write(final: bool):
        """JSON (and Markdown) after every configuration: an interrupted suite keeps what it measured."""
        table = markdown(results, ceilings)
        record = {"host": platform.node(), "processor": platform.processor() or platform.machine(),
                  "cpu_count": os.cpu_count(), "jax": jax.__version__, "load_average_before": load_before,
                  "load_average_after": os.getloadavg(), "wall_s": time.time() - t_start, "complete": final,
                  "matmul_ceiling": ceilings, "results": results, "autoattack": autoattack, "table": table}
        if FLAGS.out:
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
            with open(FLAGS.out, "w") as f:
                json.dump(record, f, indent=2)
        if FLAGS.md:
            with open(FLAGS.md, "w") as f:
                f.write(table + "\n")
        return table

    autoattack = None
    for spec, devices in specs_from_flags():
        r = run_worker(spec, devices)
        results.append(r)
        write(final=False)
        status = (f"{r['img_per_s_median']:.3g} img/s, compile {r['compile_plus_first_step_s']:.0f} s"
                  if "error" not in r else "FAILED " + r["error"].strip().splitlines()[-1][:200])
        print(f"{spec['method']} {spec['model']} {spec['dtype']} b{spec['batch']} dev{devices} "
              f"PGD loop {spec['unroll']}: {status}", flush=True)
    if FLAGS.autoattack:
        script = os.path.join(HERE, "bench_autoattack.py")
        if os.path.exists(script):
            proc = subprocess.run([sys.executable, script, *FLAGS.autoattack_args.split()], cwd=ROOT,
                                  capture_output=True, text=True)
            autoattack = {"returncode": proc.returncode, "stdout": proc.stdout[-6000:],
                          "stderr": proc.stderr[-2000:] if proc.returncode else ""}
            print(proc.stdout[-6000:], flush=True)
        else:
            autoattack = {"skipped": "experiments/bench_autoattack.py does not exist yet"}
    print(write(final=True))


if __name__ == "__main__":
    define_flags()
    app.run(main)
