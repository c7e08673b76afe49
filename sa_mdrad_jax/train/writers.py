"""Metrics to JSON lines and TensorBoard (process 0 only), and the progress bar."""
from __future__ import annotations

import json
import time

import jax

from sa_mdrad_jax import paths


class MetricWriter:
    """Appends `{"step", "kind", ...metrics}` to `<workdir>/metrics.jsonl` and TensorBoard events.

    TensorBoard events of a URL workdir (`gs://...`) are written to a local directory and copied
    to `<workdir>/tensorboard` after every write (`paths.LocalMirror`)."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self.path = paths.join(workdir, "metrics.jsonl")
        self._tb = self._mirror = None
        if self.active:
            paths.makedirs(workdir)
            if tensorboard:
                from tensorboardX import SummaryWriter
                self._mirror = paths.LocalMirror(paths.join(workdir, "tensorboard"))
                self._tb = SummaryWriter(self._mirror.directory)

    def write(self, step: int, kind: str, metrics: dict) -> None:
        if not self.active:
            return
        record = {"step": int(step), "kind": kind, "time": time.time(),
                  **{k: float(v) for k, v in metrics.items()}}
        paths.append_text(self.path, json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{kind}/{k}", float(v), int(step))
            if paths.is_remote(self._mirror.target):   # local events need no flush per write
                self._tb.flush()
                self._mirror.sync()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._mirror.close()


def read_metrics(workdir: str, kind: str | None = None) -> list[dict]:
    path = paths.join(workdir, "metrics.jsonl")
    if not paths.exists(path):
        return []
    records = [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]
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
