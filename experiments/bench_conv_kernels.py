"""Where XLA:CPU and torch differ inside a ResNet step: every convolution of ResNet-18 at 32×32,
timed as forward, input gradient and weight gradient, JAX and torch interleaved in one process.

  pip install torch        # optional extra
  taskset -c 1 python experiments/bench_conv_kernels.py --batch=32 --reps=5 --torch_threads=1
  taskset -c 1 python experiments/bench_conv_kernels.py --xla_flags=--xla_cpu_use_onednn=true ...

A PGD-AT/RSLAD/AdaAD step is almost entirely these three kinds of convolution (the PGD input
gradients: forward + input gradient; the update: forward + input + weight gradient). For each
distinct convolution of ResNet-18 (kuangliu layout, 32×32 input; 3×3 and the 1×1 shortcuts) this
times the three kinds on random float32 data, our side as jitted `lax.conv_general_dilated`
(NHWC/HWIO, as the zoo's `nn.Conv`) and its VJPs, torch as `F.conv2d` (NCHW) and
`torch.nn.grad.conv2d_input/conv2d_weight`; per kind the median of `--reps` calls, each side's call
directly after the other's (same load). Reports GFLOP/s per layer and kind and the whole network's
time per kind, weighted by how many layers of each shape ResNet-18 has, so the ratio says how much
of a step's gap the convolution kernels alone explain. Writes JSON and prints Markdown.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

from absl import app, flags

flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("reps", 5, "Timed calls per layer, kind and side (after one warm-up call).")
flags.DEFINE_integer("torch_threads", 1, "torch intra-op threads (0: torch's default).")
flags.DEFINE_string("xla_flags", "", "Appended to XLA_FLAGS before JAX starts (e.g. --xla_cpu_use_onednn=true).")
flags.DEFINE_integer("width_div", 1, "Divide every channel count by this (4: ResNet-18 ×0.25).")
flags.DEFINE_integer("image_size", 32, "Input size of the network (the stem's spatial size).")
flags.DEFINE_string("out", "", "Results JSON (default experiments/results/bench_conv_kernels_cpu.json).")
FLAGS = flags.FLAGS

KINDS = ("forward", "input_grad", "weight_grad")


def resnet18_convs(size: int, div: int) -> list[dict]:
    """The distinct convolutions of a CIFAR ResNet-18 and how many of each: (c_in, c_out, kernel,
    stride, input spatial size)."""
    c = lambda n: max(1, n // div)   # noqa: E731
    layers = {}

    def add(cin, cout, k, stride, hw):
        key = (cin, cout, k, stride, hw)
        layers[key] = layers.get(key, 0) + 1

    add(3, c(64), 3, 1, size)
    hw, cin = size, c(64)
    for stage, planes in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            add(cin, c(planes), 3, stride, hw)
            out_hw = hw // stride
            add(c(planes), c(planes), 3, 1, out_hw)
            if stride != 1 or cin != c(planes):
                add(cin, c(planes), 1, stride, hw)
            cin, hw = c(planes), out_hw
    return [dict(c_in=k[0], c_out=k[1], kernel=k[2], stride=k[3], hw=k[4], count=n) for k, n in layers.items()]


def conv_flops(layer: dict, batch: int) -> float:
    out_hw = layer["hw"] // layer["stride"]
    return 2.0 * batch * out_hw * out_hw * layer["c_out"] * layer["c_in"] * layer["kernel"] ** 2


def jax_kernels(layer: dict, batch: int):
    import jax
    import jax.numpy as jnp

    k, s, p = layer["kernel"], layer["stride"], layer["kernel"] // 2
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, layer["hw"], layer["hw"], layer["c_in"]))
    w = jax.random.normal(jax.random.PRNGKey(1), (k, k, layer["c_in"], layer["c_out"])) * 0.05
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (s, s), [(p, p), (p, p)],   # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y, vjp = jax.vjp(conv, x, w)
    g = jnp.ones_like(y)
    fns = {"forward": jax.jit(conv),
           "input_grad": jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0]),
           "weight_grad": jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])}
    args = {"forward": (x, w), "input_grad": (x, w, g), "weight_grad": (x, w, g)}
    return {kind: (lambda f=fns[kind], a=args[kind]: jax.block_until_ready(f(*a))) for kind in KINDS}


def torch_kernels(layer: dict, batch: int):
    import torch
    import torch.nn.functional as F

    k, s, p = layer["kernel"], layer["stride"], layer["kernel"] // 2
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, layer["c_in"], layer["hw"], layer["hw"], generator=gen)
    w = torch.randn(layer["c_out"], layer["c_in"], k, k, generator=gen) * 0.05
    g = torch.ones_like(F.conv2d(x, w, stride=s, padding=p))

    def forward():
        with torch.no_grad():
            return F.conv2d(x, w, stride=s, padding=p)

    return {"forward": forward,
            "input_grad": lambda: torch.nn.grad.conv2d_input(x.shape, w, g, stride=s, padding=p),
            "weight_grad": lambda: torch.nn.grad.conv2d_weight(x, w.shape, g, stride=s, padding=p)}


def main(argv):
    del argv
    if FLAGS.xla_flags:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FLAGS.xla_flags).strip()
    import jax
    import torch

    if FLAGS.torch_threads:
        torch.set_num_threads(FLAGS.torch_threads)
    batch = FLAGS.batch
    layers = resnet18_convs(FLAGS.image_size, FLAGS.width_div)
    rows = []
    with jax.default_matmul_precision("highest"):
        for layer in layers:
            sides = {"jax": jax_kernels(layer, batch), "torch": torch_kernels(layer, batch)}
            for kind in KINDS:
                times = {"jax": [], "torch": []}
                for side in sides:
                    sides[side][kind]()                                   # warm-up / compile
                for _ in range(FLAGS.reps):
                    for side in sides:                                    # interleaved
                        t0 = time.perf_counter()
                        sides[side][kind]()
                        times[side].append(time.perf_counter() - t0)
                med = {side: statistics.median(v) for side, v in times.items()}
                flop = conv_flops(layer, batch)
                rows.append({**layer, "kind": kind, "flop": flop, "jax_s": med["jax"], "torch_s": med["torch"],
                             "jax_gflops": flop / med["jax"] / 1e9, "torch_gflops": flop / med["torch"] / 1e9})
                print(f"{layer['c_in']}->{layer['c_out']} k{layer['kernel']} s{layer['stride']} @{layer['hw']} "
                      f"×{layer['count']} {kind}: jax {1e3 * med['jax']:.2f} ms, torch {1e3 * med['torch']:.2f} ms",
                      flush=True)
    totals = {kind: {side: sum(r[f"{side}_s"] * r["count"] for r in rows if r["kind"] == kind)
                     for side in ("jax", "torch")} for kind in KINDS}
    result = {"batch": batch, "image_size": FLAGS.image_size, "width_div": FLAGS.width_div, "reps": FLAGS.reps,
              "xla_flags": os.environ.get("XLA_FLAGS", ""), "torch_threads": torch.get_num_threads(),
              "rows": rows, "network_seconds_per_kind": totals,
              "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "host": platform.node(),
              "jax": jax.__version__, "torch": torch.__version__,
              "time_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    out = FLAGS.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "bench_conv_kernels_cpu.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print("\n| kind | JAX ms (all ResNet-18 convs) | torch ms | torch ÷ JAX time |\n|---|---|---|---|")
    for kind, t in totals.items():
        print(f"| {kind} | {1e3 * t['jax']:.1f} | {1e3 * t['torch']:.1f} | {t['torch'] / t['jax']:.2f} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
