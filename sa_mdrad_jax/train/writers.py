"""Metrics to JSON lines and TensorBoard (process 0 only), and the progress bar."""
from __future__ import annotations

import json
import os
import time

import jax


class MetricWriter:
    """Appends `{"step", "kind", ...metrics}` to `<workdir>/metrics.jsonl` and TensorBoard events."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, kind: str, metrics: dict) -> None:
        if not self.active:
            return
        record = {"step": int(step), "kind": kind, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str, kind: str | None = None) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if kind is None or r["kind"] == kind]


class Progress:
    """A tqdm bar over optimiser steps showing loss, accuracy, img/s and the ETA."""

    def __init__(self, total: int, initial: int, *, desc: str, enabled: bool):
        self._bar = None
        if enabled and jax.process_index() == 0:
            from tqdm.auto import tqdm
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def show(self, **values) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in values.items()},
                                  refresh=False)

    def write(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text)
        elif jax.process_index() == 0:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
