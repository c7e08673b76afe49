"""scikit-learn's bundled 8x8 handwritten digits as a small RGB image dataset (no network)."""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

NUM_EXAMPLES = 1797
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _resize(images_u8: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of [n, h, w] uint8 images to [n, size, size] uint8."""
    if images_u8.shape[1:] == (size, size):
        return images_u8.copy()
    out = np.empty((images_u8.shape[0], size, size), np.uint8)
    for i, img in enumerate(images_u8):
        resized = Image.fromarray(img.astype(np.float32), mode="F").resize(
            (size, size), Image.Resampling.BILINEAR
        )
        out[i] = np.clip(np.rint(np.asarray(resized)), 0, 255).astype(np.uint8)
    return out


@functools.lru_cache(maxsize=8)
def _splits(image_size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    raw = bunch.images  # [1797, 8, 8] float, values 0..16
    labels = bunch.target.astype(np.int32)
    u8 = np.clip(np.rint(raw * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    gray = _resize(u8, image_size)
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    idx = np.arange(len(labels))
    # Fixed, stratified split independent of process count: 1437 train / 360 test.
    train_idx, test_idx = train_test_split(
        idx, test_size=TEST_FRACTION, stratify=labels, random_state=SPLIT_SEED
    )
    out = {}
    for split, ids in (("train", np.sort(train_idx)), ("test", np.sort(test_idx))):
        images, split_labels = rgb[ids], labels[ids]
        images.setflags(write=False)
        split_labels.setflags(write=False)
        out[split] = (images, split_labels)
    return out
