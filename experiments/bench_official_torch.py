"""Side by side: our jitted RSLAD / AdaAD / PGD-AT training steps against the OFFICIAL PyTorch steps.

    python experiments/bench_official_torch.py --official /path/to/checkouts
    python experiments/bench_official_torch.py --official DIR --setups=digits --methods=rslad --rounds=5

Needs the optional torch extra (`pip install torch`). `--official` holds the fetched repositories
(never part of this repo), laid out as for experiments/parity_official_methods.py (docs/parity.md):
    rslad/   zibojia/RSLAD     rslad_loss.rslad_inner_loss + the loop body of resnet18_rslad_cifar10.py
    adaad/   boyellow/AdaAD    AT_helper.adaad_inner_loss / Madry_PGD + the 'AdaAD' / 'Plain_Madry'
                               branches of main.py:train, then its loss.backward(); optimizer.step()
This file contains only our code: the official step lines are read from the checkouts (between two
marker strings) and executed; `.cuda()` is made a no-op so they run on CPU.

Setups (both float32, PGD-10, ε = 8/255, step 2/255, SGD with momentum):
    digits  the digits grid's step: resnet_tiny student, ResNet-18 ×0.25 teacher, 8×8, batch 32. The
            official repos have no narrow models, so the torch side uses the kuangliu-layout ResNet of
            tests/torch_models.py with the same channel counts (the step code is still official).
    cifar   ResNet-18 student and ResNet-18 teacher, 32×32, batch 32; the torch side uses each method's
            own repository's ResNet-18 (RSLAD: cifar10_models.resnet18, AdaAD: networks.ResNet18).

Each side runs in its own long-lived worker process (compiled / warmed once); the driver then
alternates them — ours, theirs, theirs, ours, ... — `--rounds` times, each timing `--steps` steps, so
both see the same machine load. Reported: s/step median and min–max per side, the speed-up
(official s/step ÷ ours, median of the per-round ratios and their range), compile + first step,
threads, and the load average around every round. Differences in what is timed: ours includes the
random crop/flip inside the step and reads the batch from the on-device split; the official side
gets a ready float batch (its augmentation runs in DataLoader workers); the official PGD-AT branch
also runs one unused clean forward (`ori_outputs`), as in its code.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SETUPS = {
    "digits": dict(model="resnet_tiny", width=1.0, teacher="resnet18", teacher_width=0.25, image_size=8, batch=32),
    "cifar": dict(model="resnet18", width=1.0, teacher="resnet18", teacher_width=1.0, image_size=32, batch=32),
}
# The registered methods whose official PyTorch step this script can run: where each step comes from.
OFFICIAL_STEPS: dict[str, str] = {}


def official_step(method: str, source: str) -> None:
    OFFICIAL_STEPS[method] = source


official_step("rslad", "RSLAD's training loop (rslad/)")
official_step("adaad", "AdaAD's 'AdaAD' branch (adaad/)")
official_step("pgd_at", "AdaAD's 'Plain_Madry' branch (adaad/)")
METHODS = tuple(OFFICIAL_STEPS)
EPS, STEP_SIZE, STEPS = 8 / 255, 2 / 255, 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--official", required=True, help="directory holding the rslad/ and adaad/ checkouts")
    p.add_argument("--setups", default="digits,cifar", help=f"comma-separated, of {', '.join(SETUPS)}")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each: ours and theirs)")
    p.add_argument("--steps", type=int, default=2, help="steps timed per side per round")
    p.add_argument("--torch_threads", type=int, default=0,
                   help="torch.set_num_threads for the official side (0: torch's default, one per core)")
    p.add_argument("--xla_flags", default=None, help="XLA_FLAGS for our worker (default: inherited)")
    p.add_argument("--out", default="experiments/results/bench_official_torch_cpu.json", help="results JSON")
    p.add_argument("--md", default="", help="also write the Markdown table here")
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, given, valid in (("--setups", args.setups, SETUPS), ("--methods", args.methods, METHODS)):
        bad = [v for v in given.split(",") if v not in valid]
        if bad:
            p.error(f"{name}: unknown {', '.join(bad)}; accepted: {', '.join(valid)}")
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be at least 1")
    return args


# --------------------------------------------------------------------------------------------
# Workers: build one step, warm it, then time `n` steps per request read from stdin.


def our_worker(spec: dict):
    """(run(n) -> seconds, compile + first step seconds, info) for our step of `spec`."""
    import jax

    sys.path.insert(0, HERE)
    from bench_suite import build_step
    s = SETUPS[spec["setup"]]
    train_on, state, split, order, step_args, info = build_step(dict(
        method=spec["method"], model=s["model"], width=s["width"], teachers=[s["teacher"]],
        teacher_width=s["teacher_width"], batch=s["batch"], dtype="float32", image_size=s["image_size"],
        num_classes=10, pgd_steps=STEPS))
    box = {"state": state, "i": 0}

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            box["state"], m = train_on(box["state"], split, order, box["i"] % info["steps_per_split"], *step_args)
            box["i"] += 1
        jax.block_until_ready((box["state"], m))
        return time.perf_counter() - t0

    first = run(1)
    return run, first, {"jax": jax.__version__, "step_gflop_per_image": info["step_gflop_per_image"],
                        "compilations": train_on._cache_size(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _torch_models(spec: dict, official: str):
    """(student, teacher) torch modules for the setup."""
    import torch
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    if spec["setup"] == "digits":
        from torch_models import BasicBlock, ResNet
        student = ResNet(BasicBlock, (1, 1, 1, 1), (8, 16, 32, 64), 8)
        teacher = ResNet(BasicBlock, (2, 2, 2, 2), (16, 32, 64, 128), 16)
    elif spec["method"] == "rslad":
        sys.path.insert(0, os.path.join(official, "rslad"))
        from cifar10_models import resnet18
        student, teacher = resnet18(), resnet18()
    else:
        sys.path.insert(0, os.path.join(official, "adaad"))
        from networks.resnet import ResNet18
        student, teacher = ResNet18(10), ResNet18(10)
    torch.manual_seed(0)
    return student, teacher.eval()


def torch_worker(spec: dict, official: str):
    """(run(n) -> seconds, first step seconds, info) for the official step of `spec`."""
    import types

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, HERE)
    from parity_official_methods import cpu_only, load_module, official_lines
    cpu_only()
    if spec.get("torch_threads"):
        torch.set_num_threads(spec["torch_threads"])
    s = SETUPS[spec["setup"]]
    student, teacher = _torch_models(spec, official)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.rand((s["batch"], 3, s["image_size"], s["image_size"]), generator=g)
    y = torch.randint(0, 10, (s["batch"],), generator=g)
    student.train()
    if spec["method"] == "rslad":
        script = os.path.join(official, "rslad", "resnet18_rslad_cifar10.py")
        helpers = load_module("official_rslad_loss", os.path.join(official, "rslad", "rslad_loss.py"))
        ns = dict(torch=torch, F=F)
        exec(compile(official_lines(script, "def kl_loss(a,b):", "return loss"), "<official>", "exec"), ns)
        ns.update(student=student, teacher=teacher, optimizer=optimizer, rslad_inner_loss=helpers.rslad_inner_loss,
                  train_batch_data=x, train_batch_labels=y, epsilon=EPS)   # the script's global epsilon
        code = official_lines(script, "train_batch_data = train_batch_data.float().cuda()", "optimizer.step()")
        tail = ""
    else:
        script = os.path.join(official, "adaad", "main.py")
        helpers = load_module("official_at_helper", os.path.join(official, "adaad", "AT_helper.py"))
        args = types.SimpleNamespace(step_size=2, num_steps=STEPS, epsilon=8, mixture=False, mixture_alpha=1.0,
                                     AdaAD_alpha=1.0, dataset="CIFAR10")
        ns = dict(torch=torch, F=F, nn=torch.nn, net=student, teacher_net=teacher, optimizer=optimizer, args=args,
                  adaad_inner_loss=helpers.adaad_inner_loss, Madry_PGD=helpers.Madry_PGD, inputs=x, targets=y)
        if spec["method"] == "adaad":
            code = official_lines(script, "adv_inputs = adaad_inner_loss(net, teacher_net, inputs",
                                  "loss = args.AdaAD_alpha*kl_loss1")
        else:
            code = official_lines(script, "adv_inputs = Madry_PGD(net, inputs, targets", "loss = adv_loss")
        tail = "\nloss.backward()\noptimizer.step()"   # main.py:train after the branches (l. 386-387)
    program = compile(code + tail, "<official>", "exec")

    def run(n):
        t0 = time.perf_counter()
        for _ in range(n):
            exec(program, ns)
        return time.perf_counter() - t0

    first = run(1)
    return run, first, {"torch": torch.__version__, "threads": torch.get_num_threads(), "official": code[:80]}


def worker_main(spec: dict, official: str):
    run, first, info = our_worker(spec) if spec["side"] == "ours" else torch_worker(spec, official)
    print("READY " + json.dumps({"first_step_s": first, **info}), flush=True)
    for line in sys.stdin:
        n = int(line)
        print("TIME " + json.dumps(run(n)), flush=True)


# --------------------------------------------------------------------------------------------
# The driver.


class Worker:
    def __init__(self, spec: dict, args):
        env = dict(os.environ)
        if spec["side"] == "ours" and args.xla_flags is not None:
            env["XLA_FLAGS"] = args.xla_flags
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--official", args.official, "--worker", json.dumps(spec)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def _read(self, tag: str):
        for line in self.proc.stdout:
            if line.startswith(tag + " "):
                return json.loads(line[len(tag) + 1:])
        raise RuntimeError(f"worker died:\n{self.proc.stderr.read()[-3000:]}")

    def ready(self) -> dict:
        return self._read("READY")

    def time(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return self._read("TIME") / n

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare(setup: str, method: str, args) -> dict:
    sides, ready = {}, {}
    try:
        for side in ("ours", "official"):   # one at a time: the first step's time is its own
            sides[side] = Worker({"setup": setup, "method": method, "side": side,
                                  "torch_threads": args.torch_threads}, args)
            ready[side] = sides[side].ready()
        per_step = {"ours": [], "official": []}
        loads = [os.getloadavg()[0]]
        for r in range(args.rounds):
            order = ("ours", "official") if r % 2 == 0 else ("official", "ours")
            for side in order:
                per_step[side].append(sides[side].time(args.steps))
            loads.append(os.getloadavg()[0])
            print(f"  {setup} {method} round {r + 1}: ours {per_step['ours'][-1]:.3f} s/step, "
                  f"official {per_step['official'][-1]:.3f} s/step (load {loads[-1]:.1f})", flush=True)
    finally:
        for w in sides.values():
            w.close()
    ratios = [t / o for o, t in zip(per_step["ours"], per_step["official"])]
    return {"setup": setup, "method": method, **SETUPS[setup], "rounds": args.rounds, "steps_per_round": args.steps,
            "s_per_step": per_step, "ours_median": statistics.median(per_step["ours"]),
            "official_median": statistics.median(per_step["official"]),
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
            "ours_info": ready["ours"], "official_info": ready["official"], "load_1min_per_round": loads}


def markdown(results: list[dict]) -> str:
    lines = ["| setup | method | ours s/step median (min–max) | official s/step median (min–max) | "
             "speed-up (official ÷ ours) median (range) | ours compile + 1st step s | official 1st step s | "
             "torch threads | load (1 min) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        o, t = r["s_per_step"]["ours"], r["s_per_step"]["official"]
        lines.append(
            f"| {r['setup']} ({r['model']} / {r['teacher']}×{r['teacher_width']:g}, {r['image_size']}², b{r['batch']}) | "
            f"{r['method']} | {r['ours_median']:.3g} ({min(o):.3g}–{max(o):.3g}) | "
            f"{r['official_median']:.3g} ({min(t):.3g}–{max(t):.3g}) | **{r['speedup_median']:.2f}×** "
            f"({r['speedup_min']:.2f}–{r['speedup_max']:.2f}) | {r['ours_info']['first_step_s']:.1f} | "
            f"{r['official_info']['first_step_s']:.1f} | {r['official_info']['threads']} | "
            f"{min(r['load_1min_per_round']):.1f}–{max(r['load_1min_per_round']):.1f} |")
    return "\n".join(lines)


def main(args):
    t0 = time.time()
    results = []
    for setup in args.setups.split(","):
        for method in args.methods.split(","):
            results.append(compare(setup, method, args))
            table = markdown(results)
            record = {"host": platform.node(), "processor": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "wall_s": time.time() - t0,
                      "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime(t0)), "results": results,
                      "table": table}
            if args.out:
                os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
                with open(args.out, "w") as f:
                    json.dump(record, f, indent=2)
            if args.md:
                with open(args.md, "w") as f:
                    f.write(table + "\n")
    print(markdown(results))


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker_main(json.loads(ARGS.worker), ARGS.official)
    else:
        main(ARGS)
