"""Fixed-size evaluation batches over a whole split: one compiled shape for every batch.

The last batch wraps around to the start (its extra rows are computed and dropped), so an
attack compiled for `batch_size` serves every batch, whatever the split's size.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def batches(n: int, batch_size: int):
    """(index array of `batch_size`, rows to keep) covering range(n); the last wraps around."""
    for start in range(0, n, batch_size):
        yield np.arange(start, start + batch_size) % n, min(batch_size, n - start)


def map_batched(fn, x: np.ndarray, y: np.ndarray, batch_size: int) -> np.ndarray:
    """Concatenates fn(xb, yb, i) -> array over the fixed-size batches i = 0, 1, ..."""
    outs = []
    for i, (idx, take) in enumerate(batches(len(x), batch_size)):
        outs.append(np.asarray(fn(jnp.asarray(x[idx]), jnp.asarray(y[idx]), i))[:take])
    return np.concatenate(outs)
