"""Runs the methods' OFFICIAL PyTorch code next to our JAX methods on the same weights and inputs.

    python experiments/parity_official_methods.py --official /path/to/checkouts [--out results.json]

`--official` holds the fetched repositories (never part of this repo):
    rslad/   zibojia/RSLAD            rslad_loss.rslad_inner_loss + the loss lines of resnet18_rslad_cifar10.py
    mtard/   zhaoshiji123/MTARD       mtard/mtard_loss.mtard_inner_loss_ce + the loop of mtard_resnet18_cifar10.py
    adaad/   boyellow/AdaAD           AT_helper.adaad_inner_loss + the 'AdaAD' branch of main.py:train
    igdm/ICLR_IGDM/                   the IGDM code base (rslad_loss.adaad_inner_loss + adaad_IGDM_cifar100.py loop)
    trades/  yaodongyu/TRADES         trades.trades_loss
    iad/     ZFancy/IAD               the AttackPGD class and the loss lines of IAD-I.py:train

This file contains only our code. The official functions are imported from the checkouts; where
the official loss is written inline in a training script, the script's own lines are read from the
checkout (between two marker strings, see `official_lines`) and executed on our tensors — the
official text runs, nothing is re-typed. CUDA calls are made no-ops so it runs on CPU.

The student has a BatchNorm layer (with non-trivial running statistics), so the BN mode of each
phase matters: the official code switches `model.eval()` / `model.train()` itself, our side uses
the method's `attack_bn` (sa_mdrad_jax.train.distill_step.attack_student) and train-mode outer
forwards in `method.student_views` order. Compared per method: x' after the 10-step PGD (same
start noise), the outer loss, its gradient w.r.t. the student parameters, the BN running mean
after the step, and MTARD's balance weight.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import textwrap
import types


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", required=True, help="directory with the official checkouts")
    parser.add_argument("--out", default="", help="write the records as JSON here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()   # --help and usage errors answer here, before JAX and torch are imported

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sa_mdrad_jax.config import method_config  # noqa: E402
from sa_mdrad_jax.methods import make_method  # noqa: E402
from sa_mdrad_jax.methods.base import Outputs, StepContext  # noqa: E402
from sa_mdrad_jax.train.distill_step import adversarial_examples, attack_student  # noqa: E402

B, C, D, H = 16, 10, 8 * 8 * 3, 16
EPS, STEP, STEPS = 8 / 255, 2 / 255, 10


# --- running official code on CPU ---------------------------------------------------------------
def cpu_only():
    """The official code calls .cuda() on tensors and modules: make it the identity."""
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self


def load_module(name: str, path: str):
    """Imports the file at `path` as module `name` (official helper files with clashing names)."""
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.pop(0)


def official_lines(path: str, start: str, stop: str, occurrence: int = 0) -> str:
    """The source lines of `path` from the `occurrence`-th line containing `start` through the first
    following line containing `stop`, dedented, ready to `exec`."""
    lines = open(path).read().replace("\r\n", "\n").split("\n")
    begins = [i for i, line in enumerate(lines) if start in line]
    i = begins[occurrence]
    j = next(k for k in range(i, len(lines)) if stop in lines[k])
    return textwrap.dedent("\n".join(lines[i:j + 1]))


def run_official(code: str, namespace: dict) -> dict:
    exec(compile(code, "<official>", "exec"), namespace)
    return namespace


# --- the tiny models, in both frameworks ---------------------------------------------------------
class Student(nn.Module):
    """Dense -> BatchNorm -> tanh -> Dense; (logits, features) like the project's models."""
    @nn.compact
    def __call__(self, x, train: bool = False):
        h = nn.Dense(H)(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
        return nn.Dense(C)(jnp.tanh(h)), {}


def torch_student(variables) -> torch.nn.Module:
    p, bs = variables["params"], variables["batch_stats"]
    net = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.BatchNorm1d(H, momentum=0.1, eps=1e-5),
                              torch.nn.Tanh(), torch.nn.Linear(H, C))
    t = lambda a: torch.tensor(np.asarray(a))
    with torch.no_grad():
        net[0].weight.copy_(t(p["Dense_0"]["kernel"]).T)
        net[0].bias.copy_(t(p["Dense_0"]["bias"]))
        net[1].weight.copy_(t(p["BatchNorm_0"]["scale"]))
        net[1].bias.copy_(t(p["BatchNorm_0"]["bias"]))
        net[1].running_mean.copy_(t(bs["BatchNorm_0"]["mean"]))
        net[1].running_var.copy_(t(bs["BatchNorm_0"]["var"]))
        net[3].weight.copy_(t(p["Dense_1"]["kernel"]).T)
        net[3].bias.copy_(t(p["Dense_1"]["bias"]))
    return net


def torch_grads(net) -> dict:
    """The student's parameter gradients in the Flax layout."""
    g = lambda m: m.grad.detach().numpy()
    return {"Dense_0": {"kernel": g(net[0].weight).T, "bias": g(net[0].bias)},
            "BatchNorm_0": {"scale": g(net[1].weight), "bias": g(net[1].bias)},
            "Dense_1": {"kernel": g(net[3].weight).T, "bias": g(net[3].bias)}}


def teacher_params(rng, hidden, scale):
    w1 = rng.normal(size=(D, hidden)) * 3 / np.sqrt(D)
    return {"w1": w1.astype(np.float32), "b1": (-0.5 * w1.sum(0)).astype(np.float32),
            "w2": (rng.normal(size=(hidden, C)) * scale / np.sqrt(hidden)).astype(np.float32),
            "b2": np.zeros(C, np.float32)}


def teacher_fn(p):
    """The same expression on jnp and torch arrays (frozen teacher, no BN)."""
    def f(x):
        tanh = torch.tanh if isinstance(x, torch.Tensor) else jnp.tanh
        w = {k: (torch.tensor(v) if isinstance(x, torch.Tensor) else jnp.asarray(v)) for k, v in p.items()}
        return tanh(x @ w["w1"] + w["b1"]) @ w["w2"] + w["b2"]
    return f


class TorchTeacher(torch.nn.Module):
    def __init__(self, p):
        super().__init__()
        self.f = teacher_fn(p)

    def forward(self, x):
        return self.f(x)


# --- our side ------------------------------------------------------------------------------------
def our_step(method, variables, x, y, noise, teachers, *, epoch=0, state=None, lr_decays=0):
    """x', outer loss, parameter gradient, running mean after the step, method state — what
    `make_distill_step` computes on one device, without augmentation or the SGD update."""
    model = Student()
    ctx = StepContext.make(epoch=epoch, lr_decays=lr_decays)
    t_at = lambda z: jnp.stack([t(z) for t in teachers])
    start = {"uniform": x + EPS * noise, "normal": x + 0.001 * noise, "none": x}[method.attack_init]
    t_nat = t_at(x) if "t_nat" in method.inner_refs else None
    x_adv, bs = adversarial_examples(method, attack_student(model, variables["params"], method.attack_bn), x, y,
                                     start, variables["batch_stats"], teachers_at=t_at, t_nat=t_nat, ctx=ctx,
                                     eps=EPS, step_size=STEP, steps=STEPS)
    views = {"nat": x, "adv": x_adv, **(method.inputs(x, x_adv) if method.inputs else {})}
    which = dict(method.view_teachers or {})
    t = {v: jnp.stack([teachers[k](views[v]) for k in which.get(v, range(len(teachers)))])
         for v in set(method.teacher_views) | {"nat"}} if teachers else {}

    def loss_fn(params, state):
        logits, stats = {}, bs
        for v in method.student_views:
            (lg, _), upd = model.apply({"params": params, "batch_stats": stats}, views[v], train=True,
                                       mutable=["batch_stats"])
            logits[v], stats = lg, upd["batch_stats"]
        out = Outputs(y=y, s_adv=logits.get("adv"), s_nat=logits.get("nat"), t_adv=t.get("adv"), t_nat=t.get("nat"),
                      s=logits, t=t, step=ctx, state=state)
        if method.update_state is not None:
            state = method.update_state(state, jax.lax.stop_gradient(method.state_inputs(out)), ctx)
            out = out._replace(state=state)
        loss, terms = method.outer_loss(out)
        return loss, (stats, state, terms)

    (loss, (stats, state, terms)), g = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"], state)
    return dict(x_adv=np.asarray(x_adv), loss=float(loss), grads=jax.tree.map(np.asarray, g),
                running_mean=np.asarray(stats["BatchNorm_0"]["mean"]), state=state, terms=terms)


# --- comparison records --------------------------------------------------------------------------
def rel(a, b) -> float:
    """max |a − b| / max |b| over all leaves."""
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    num = max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))) for u, v in zip(a, b))
    return num / max(float(np.max(np.abs(np.asarray(v, np.float64)))) for v in b)


def record(name, ours, official_loss, net, x_adv_official=None, extra=None):
    r = {"method": name, "loss_ours": ours["loss"], "loss_official": float(official_loss),
         "loss_rel_diff": abs(ours["loss"] - float(official_loss)) / abs(float(official_loss)),
         "grad_rel_diff": rel(ours["grads"], torch_grads(net)),
         "running_mean_rel_diff": rel(ours["running_mean"], net[1].running_mean.detach().numpy())}
    if x_adv_official is not None:
        xo = x_adv_official.detach().numpy()
        r["x_adv_max_abs_diff"] = float(np.max(np.abs(ours["x_adv"] - xo)))
        r["x_adv_pixels_differing"] = int(np.sum(np.abs(ours["x_adv"] - xo) > 1e-6))
    r.update(extra or {})
    return r


# --- the methods ---------------------------------------------------------------------------------
def setup(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(B, D)).astype(np.float32)
    y = rng.integers(0, C, size=B)
    variables = Student().init(jax.random.PRNGKey(seed), jnp.asarray(x), train=False)
    variables = {"params": variables["params"],
                 "batch_stats": {"BatchNorm_0": {"mean": jnp.asarray(rng.normal(size=H) * 0.3, jnp.float32),
                                                 "var": jnp.asarray(rng.uniform(0.5, 2.0, size=H), jnp.float32)}}}
    teachers = [teacher_params(rng, 24, 6.0), teacher_params(rng, 20, 5.0)]
    return x, y, variables, teachers


def torch_noise(seed, shape):
    torch.manual_seed(seed)
    return torch.randn(shape)


def rslad(root, x, y, variables, teachers):
    script = os.path.join(root, "rslad", "resnet18_rslad_cifar10.py")
    helpers = load_module("official_rslad_loss", os.path.join(root, "rslad", "rslad_loss.py"))
    net, teacher = torch_student(variables), TorchTeacher(teachers[0]).eval()
    xt, yt = torch.tensor(x), torch.tensor(y)
    with torch.no_grad():
        teacher_logits = teacher(xt)
    ns = dict(torch=torch, F=torch.nn.functional, nn=torch.nn, student=net, teacher=teacher,
              teacher_logits=teacher_logits, train_batch_data=xt, train_batch_labels=yt,
              optimizer=torch.optim.SGD(net.parameters(), lr=0.1), epsilon=EPS,
              rslad_inner_loss=helpers.rslad_inner_loss)
    run_official(official_lines(script, "def kl_loss(a,b):", "return loss"), ns)
    noise = torch_noise(0, xt.shape)
    torch.manual_seed(0)
    ns = run_official(official_lines(script, "adv_logits = rslad_inner_loss(", "loss = 5/6.0*kl_Loss1"), ns)
    ns["loss"].backward()
    # The official x' is not returned: rebuild it from the same start with the official function.
    net2 = torch_student(variables)
    torch.manual_seed(0)
    x_adv_off = _rslad_x_adv(helpers, net2, teacher_logits, xt, yt)
    ours = our_step(make_method(method_config("rslad")), variables, jnp.asarray(x), jnp.asarray(y),
                    jnp.asarray(noise.numpy()), [teacher_fn(teachers[0])])
    return record("rslad", ours, ns["loss"], net, x_adv_off,
                  {"official": "zibojia/RSLAD rslad_loss.rslad_inner_loss + resnet18_rslad_cifar10.py loss lines",
                   "ours": "methods/rslad.py (kl_scale 0.1 = 'mean' on C=10)"})


def _rslad_x_adv(helpers, net, teacher_logits, xt, yt):
    captured = {}
    forward = net.forward

    def spy(z):
        if not net.training:
            return forward(z)
        captured["x_adv"] = z.detach()
        return forward(z)
    net.forward = spy
    helpers.rslad_inner_loss(net, teacher_logits, xt, yt, torch.optim.SGD(net.parameters(), lr=0.1),
                             step_size=STEP, epsilon=EPS, perturb_steps=STEPS)
    return captured["x_adv"]


def mtard(root, x, y, variables, teachers, steps=3):
    script = os.path.join(root, "mtard", "mtard", "mtard_resnet18_cifar10.py")
    helpers = load_module("official_mtard_loss", os.path.join(root, "mtard", "mtard", "mtard_loss.py"))
    net = torch_student(variables)
    t_rob, t_nat = TorchTeacher(teachers[0]).eval(), TorchTeacher(teachers[1]).eval()
    ns = dict(torch=torch, F=torch.nn.functional, nn=torch.nn, student=net, teacher=t_rob, teacher_nat=t_nat,
              optimizer=torch.optim.SGD(net.parameters(), lr=0.1), epsilon=EPS,
              mtard_inner_loss_ce=helpers.mtard_inner_loss_ce, weight={"adv_loss": 0.5, "nat_loss": 0.5},
              init_loss_nat=None, init_loss_adv=None, weight_learn_rate=0.025, bert=1)
    run_official(official_lines(script, "def kl_loss(a,b):", "return loss"), ns)
    body = official_lines(script, "with torch.no_grad():", "total_loss = weight[\"adv_loss\"]*kl_Loss1", occurrence=0)
    method = make_method(method_config("mtard"), teacher_names=("robust", "natural"))
    state, out = method.init_state(), []
    params = variables
    for step in range(steps):
        xs = np.clip(x + 0.05 * step, 0, 1).astype(np.float32)      # a different batch each step
        net.load_state_dict(torch_student(params).state_dict())
        net.zero_grad()
        ns.update(train_batch_data=torch.tensor(xs), train_batch_labels=torch.tensor(y))
        noise = torch_noise(step, xs.shape)
        torch.manual_seed(step)
        run_official(body, ns)
        ns["total_loss"].backward()
        ours = our_step(method, params, jnp.asarray(xs), jnp.asarray(y), jnp.asarray(noise.numpy()),
                        [teacher_fn(teachers[0]), teacher_fn(teachers[1])], epoch=step, state=state)
        state = ours["state"]
        out.append(record(f"mtard step {step}", ours, ns["total_loss"], net, None, {
            "w_nat_ours": float(state["w_nat"]), "w_nat_official": float(ns["weight"]["nat_loss"]),
            "w_nat_rel_diff": abs(float(state["w_nat"]) - ns["weight"]["nat_loss"]) / ns["weight"]["nat_loss"]}))
        # the next step starts from the same (un-updated) weights on both sides: losses, not SGD, are compared
    out[0]["official"] = "zhaoshiji123/MTARD mtard_loss.mtard_inner_loss_ce + mtard_resnet18_cifar10.py loop lines"
    out[0]["ours"] = "methods/mtard.py (balance_update, kl_scale 0.1)"
    return out


def adaad(root, x, y, variables, teachers, dataset="CIFAR10"):
    script = os.path.join(root, "adaad", "main.py")
    helpers = load_module("official_at_helper", os.path.join(root, "adaad", "AT_helper.py"))
    net, teacher = torch_student(variables), TorchTeacher(teachers[0]).eval()
    xt = torch.tensor(x)
    args = types.SimpleNamespace(step_size=2, num_steps=10, epsilon=8, dataset=dataset, AdaAD_alpha=1.0)
    ns = dict(torch=torch, F=torch.nn.functional, nn=torch.nn, net=net, teacher_net=teacher, inputs=xt, args=args,
              optimizer=torch.optim.SGD(net.parameters(), lr=0.1), adaad_inner_loss=helpers.adaad_inner_loss)
    noise = torch_noise(0, xt.shape)
    torch.manual_seed(0)
    ns = run_official(official_lines(script, "adv_inputs = adaad_inner_loss(net, teacher_net, inputs",
                                     "loss = args.AdaAD_alpha*kl_loss1"), ns)
    ns["loss"].backward()
    config = method_config("adaad")
    config.kl_scale = 1.0 / C if dataset == "CIFAR10" else 1.0   # 'mean' vs the CIFAR-100 branch's batchmean
    ours = our_step(make_method(config), variables, jnp.asarray(x), jnp.asarray(y), jnp.asarray(noise.numpy()),
                    [teacher_fn(teachers[0])])
    return record(f"adaad ({dataset} branch)", ours, ns["loss"], net, ns["adv_inputs"],
                  {"official": "boyellow/AdaAD AT_helper.adaad_inner_loss + main.py train() 'AdaAD' branch",
                   "ours": f"methods/adaad.py, kl_scale={config.kl_scale:g}"})


def igdm(root, x, y, variables, teachers, epoch=50):
    base = os.path.join(root, "igdm", "ICLR_IGDM")
    script = os.path.join(base, "adaad_IGDM_cifar100.py")
    helpers = load_module("official_igdm_rslad_loss", os.path.join(base, "rslad_loss.py"))
    net, teacher = torch_student(variables), TorchTeacher(teachers[0]).eval()
    xt = torch.tensor(x)
    args = types.SimpleNamespace(beta=1.0, gamma=1.0, alpha=20.0)
    ns = dict(torch=torch, F=torch.nn.functional, nn=torch.nn, student=net, teacher=teacher, X=xt, args=args,
              epoch=epoch, criterion_kl=torch.nn.KLDivLoss(reduction="batchmean"),
              optimizer=torch.optim.SGD(net.parameters(), lr=0.1), adaad_inner_loss=helpers.adaad_inner_loss)
    noise = torch_noise(0, xt.shape)
    torch.manual_seed(0)
    ns = run_official(official_lines(script, "inputs_adv = adaad_inner_loss(student, teacher, X",
                                     "loss = 1*kl_loss1 + (1-1)*kl_loss2"), ns)
    ns["loss"].backward()
    config = method_config("adaad")
    config.kl_scale = 1.0                 # the IGDM code base's AdaAD term is batchmean
    config.igdm.enabled = True
    ours = our_step(make_method(config), variables, jnp.asarray(x), jnp.asarray(y), jnp.asarray(noise.numpy()),
                    [teacher_fn(teachers[0])], epoch=epoch - 1)
    return record("adaad+igdm", ours, ns["loss"], net, ns["inputs_adv"], {
        "igdm_kl_ours": float(ours["terms"]["igdm_kl"]), "igdm_kl_official": float(ns["ours_loss"]),
        "official": "IGDM code base (ICLR_IGDM) rslad_loss.adaad_inner_loss + adaad_IGDM_cifar100.py loop lines",
        "ours": "methods/adaad.py + methods/igdm.py, kl_scale=1, epoch (0-based) = official epoch - 1"})


def trades(root, x, y, variables, teachers):
    helpers = load_module("official_trades", os.path.join(root, "trades", "trades.py"))
    net = torch_student(variables)
    xt, yt = torch.tensor(x), torch.tensor(y)
    noise = torch_noise(0, xt.shape)
    torch.manual_seed(0)
    loss = helpers.trades_loss(net, xt, yt, torch.optim.SGD(net.parameters(), lr=0.1), step_size=STEP,
                               epsilon=EPS, perturb_steps=STEPS, beta=6.0)
    loss.backward()
    ours = our_step(make_method(method_config("trades")), variables, jnp.asarray(x), jnp.asarray(y),
                    jnp.asarray(noise.numpy()), [])
    return record("trades", ours, loss, net, None, {"official": "yaodongyu/TRADES trades.trades_loss",
                                                     "ours": "methods/trades.py"})


def iad(root, x, y, variables, teachers, epoch=60):
    script = os.path.join(root, "iad", "IAD-I.py")
    basic_net, teacher = torch_student(variables), TorchTeacher(teachers[0]).eval()
    ns = dict(torch=torch, F=torch.nn.functional, nn=torch.nn)
    run_official(official_lines(script, "class AttackPGD(nn.Module):", "return self.basic_net(x), x"), ns)
    net = ns["AttackPGD"](basic_net, {"epsilon": EPS, "num_steps": STEPS, "step_size": STEP})
    net.train()
    xt, yt = torch.tensor(x), torch.tensor(y)
    args = types.SimpleNamespace(begin=60, beta=0.1, alpha=1.0, temp=30.0)
    ns.update(net=net, basic_net=basic_net, teacher_net=teacher, inputs=xt, targets=yt, epoch=epoch, args=args,
              KL_loss=torch.nn.KLDivLoss(reduce=False), XENT_loss=torch.nn.CrossEntropyLoss())
    torch.manual_seed(0)
    noise = torch.zeros_like(xt).uniform_(-EPS, EPS) / EPS
    torch.manual_seed(0)
    ns = run_official(official_lines(script, "teacher_outputs = teacher_net(inputs)", "loss.backward()")
                      .replace("loss.backward()", ""), ns)
    ns["loss"].backward()
    config = method_config("iad")
    config.tau, config.kl_scale = args.temp, 1.0     # IAD-I.py: τ² · batchmean (its default temp is 1)
    ours = our_step(make_method(config), variables, jnp.asarray(x), jnp.asarray(y), jnp.asarray(noise.numpy()),
                    [teacher_fn(teachers[0])], epoch=epoch)
    return record(f"iad-I (epoch {epoch})", ours, ns["loss"], basic_net, ns["pert_inputs"], {
        "official": "ZFancy/IAD IAD-I.py AttackPGD + train() loss lines", "ours": "methods/iad.py, tau=30, kl_scale=1"})


def main(args):
    cpu_only()
    jax.config.update("jax_default_matmul_precision", "highest")
    torch.set_num_threads(1)
    x, y, variables, teachers = setup()
    records = []
    for fn in (rslad, lambda *a: adaad(*a, dataset="CIFAR10"), lambda *a: adaad(*a, dataset="CIFAR100"), igdm,
               trades, iad, lambda *a: iad(*a, epoch=59)):
        records.append(fn(args.official, x, y, variables, teachers))
    records.extend(mtard(args.official, x, y, variables, teachers))
    for r in records:
        print(json.dumps(r))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(records, f, indent=1)


if __name__ == "__main__":
    main(ARGS)
