"""Learning-rate schedules, defined in epochs and resolved to optimiser steps."""
from __future__ import annotations

from typing import Callable

import ml_collections
import optax


def piecewise(lr: float, steps_per_epoch: int, total_epochs: int, *, boundaries=(), decay: float = 0.1,
              warmup_epochs: float = 0.0) -> optax.Schedule:
    """lr, multiplied by `decay` after each epoch in `boundaries` (the RSLAD/MTARD/ARD recipes)."""
    del total_epochs
    scales = {int(round(b * steps_per_epoch)): decay for b in boundaries}
    schedule = optax.piecewise_constant_schedule(lr, scales)
    return _with_warmup(schedule, lr, warmup_epochs, steps_per_epoch)


def cosine(lr: float, steps_per_epoch: int, total_epochs: int, *, boundaries=(), decay: float = 0.1,
           warmup_epochs: float = 0.0) -> optax.Schedule:
    """Cosine decay from lr to 0 over the run (after an optional linear warm-up)."""
    del boundaries, decay
    warmup = int(round(warmup_epochs * steps_per_epoch))
    total = max(total_epochs * steps_per_epoch - warmup, 1)
    return _with_warmup(optax.cosine_decay_schedule(lr, total), lr, warmup_epochs, steps_per_epoch)


def constant(lr: float, steps_per_epoch: int, total_epochs: int, *, boundaries=(), decay: float = 0.1,
             warmup_epochs: float = 0.0) -> optax.Schedule:
    del total_epochs, boundaries, decay
    return _with_warmup(optax.constant_schedule(lr), lr, warmup_epochs, steps_per_epoch)


def _with_warmup(schedule, lr, warmup_epochs, steps_per_epoch):
    warmup = int(round(warmup_epochs * steps_per_epoch))
    if warmup <= 0:
        return schedule
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])


SCHEDULES: dict[str, Callable[..., optax.Schedule]] = {
    "piecewise": piecewise, "cosine": cosine, "constant": constant}


def make_schedule(optim: ml_collections.ConfigDict, steps_per_epoch: int, total_epochs: int) -> optax.Schedule:
    if optim.schedule not in SCHEDULES:
        raise ValueError(f"Unknown lr schedule {optim.schedule!r}. Valid: {', '.join(sorted(SCHEDULES))}.")
    return SCHEDULES[optim.schedule](
        optim.lr, steps_per_epoch, total_epochs, boundaries=tuple(optim.boundaries), decay=optim.decay,
        warmup_epochs=optim.warmup_epochs)


def make_optimizer(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """SGD with momentum and coupled (L2) weight decay on all parameters, as in the PyTorch recipes.

    `add_decayed_weights` before `sgd` adds wd·θ to the gradient, so the decay goes through
    momentum exactly as `torch.optim.SGD(weight_decay=wd)` does.
    """
    return optax.chain(
        optax.add_decayed_weights(optim.weight_decay),
        optax.sgd(schedule, momentum=optim.momentum or None, nesterov=optim.nesterov),
    )
