"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017) read with numpy from its four official idx files.

70,000 grey 28x28 images of Zalando articles, 10 classes: 60,000 train / 10,000 test
(``train-*`` / ``t10k-*``). The files come from the dataset's official release
(github.com/zalandoresearch/fashion-mnist, folder ``data/fashion``; mirrored at
fashion-mnist.s3-website.eu-central-1.amazonaws.com) or from Debian's
``dataset-fashion-mnist`` package (:data:`DEBIAN_DIR`).

The idx format (yann.lecun.com/exdb/mnist) is a big-endian header -- magic number
``0x00000803`` then the count, rows and columns for images; ``0x00000801`` then the count for
labels -- followed by one unsigned byte per pixel / label. Every file is checked strictly
(magic, dimensions, exact length, label range) and a bad one raises :class:`IdxFormatError`
naming the file and what is wrong.

Each file may be gzipped or plain, under either name (``x.gz`` or ``x``); gzip is recognised
by its content, so a file a browser decompressed but left named ``.gz`` still reads. Decoded
arrays are cached per file (keyed by path, size and modification time), read-only; callers
get fresh copies, the grey channel repeated to RGB like every other dataset here.
"""
from __future__ import annotations

import functools
import gzip
import zlib

import numpy as np

from sa_mdrad_jax import paths

#: Where Debian's ``dataset-fashion-mnist`` package installs the four ``.gz`` files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
OFFICIAL_URL = "https://github.com/zalandoresearch/fashion-mnist (folder data/fashion)"
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"

IMAGE_SIZE = 28
NUM_CLASSES = 10
#: split -> (images file, labels file), without the optional ``.gz``.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_FILES = tuple(f for pair in FILES.values() for f in pair)

_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dimensions
_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dimension
_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """An idx file is corrupt, truncated, or not the Fashion-MNIST file it is named as."""


def find_file(directory: str, stem: str) -> str | None:
    """``directory/stem`` or ``directory/stem.gz`` (the plain one first), None if neither is a file."""
    for candidate in (stem, stem + ".gz"):
        path = paths.join(directory, candidate)
        if paths.isfile(path):
            return path
    return None


def split_files(directory: str, split: str) -> tuple[str | None, str | None]:
    """(images path, labels path) of ``split`` in ``directory``; None for a file that is absent."""
    images_stem, labels_stem = FILES[split]
    return find_file(directory, images_stem), find_file(directory, labels_stem)


def _read_bytes(path: str) -> bytes:
    raw = paths.read_bytes(path)
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, bad deflate data
        raise IdxFormatError(f"Fashion-MNIST file {path!r} is a corrupt or truncated gzip file ({e}).") from e


def _parse(path: str, buf: bytes, kind: str) -> np.ndarray:
    """The payload of one idx file as uint8 ``[n, 28, 28]`` (images) or ``[n]`` (labels)."""
    magic, header = (_IMAGES_MAGIC, 16) if kind == "images" else (_LABELS_MAGIC, 8)
    what = f"Fashion-MNIST {kind} file {path!r}"
    if len(buf) < header:
        raise IdxFormatError(f"{what} is truncated: {len(buf)} bytes, shorter than the {header}-byte idx header.")
    fields = [int.from_bytes(buf[i:i + 4], "big") for i in range(0, header, 4)]
    if fields[0] != magic:
        raise IdxFormatError(
            f"{what} has magic number 0x{fields[0]:08x}; an idx {kind} file starts with 0x{magic:08x} "
            "(a labels/images mix-up, a different format, or a corrupt file)."
        )
    n = fields[1]
    if kind == "images" and tuple(fields[2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise IdxFormatError(
            f"{what} holds {fields[2]}x{fields[3]} images; Fashion-MNIST images are {IMAGE_SIZE}x{IMAGE_SIZE}."
        )
    per_item = IMAGE_SIZE * IMAGE_SIZE if kind == "images" else 1
    expected = header + n * per_item
    if len(buf) != expected:
        problem = "truncated" if len(buf) < expected else "longer than its header says"
        raise IdxFormatError(
            f"{what} is {problem}: {len(buf)} bytes (after decompression), but its header announces {n} "
            f"{kind}, i.e. {header} + {n} x {per_item} = {expected} bytes."
        )
    data = np.frombuffer(buf, np.uint8, offset=header)  # read-only view of the immutable bytes
    if kind == "labels":
        if n and int(data.max()) >= NUM_CLASSES:
            bad = int(np.argmax(data >= NUM_CLASSES))
            raise IdxFormatError(
                f"{what} has label {int(data[bad])} at index {bad}; labels must be 0..{NUM_CLASSES - 1}."
            )
        return data
    return data.reshape(n, IMAGE_SIZE, IMAGE_SIZE)


@functools.lru_cache(maxsize=8)
def _decode(path: str, kind: str, size: int, mtime_ns: int) -> np.ndarray:
    del size, mtime_ns  # part of the cache key only: a rewritten file is read again
    return _parse(path, _read_bytes(path), kind)


def _read(path: str, kind: str) -> np.ndarray:
    return _decode(paths.absolute(path), kind, *paths.signature(path))


def read_split(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """The whole split, cached and read-only: (uint8 ``[n, 28, 28]`` grey images, uint8 ``[n]`` labels)."""
    images, labels = _read(images_path, "images"), _read(labels_path, "labels")
    if len(images) != len(labels):
        raise IdxFormatError(
            f"Fashion-MNIST images file {images_path!r} holds {len(images)} images but labels file "
            f"{labels_path!r} holds {len(labels)} labels; the two files of a split must match."
        )
    return images, labels


def train_statistics(images_path: str) -> tuple[float, float]:
    """(mean, population std) of the training pixels in [0, 1], exact from the 256-bin histogram."""
    counts = np.bincount(_read(images_path, "images").ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = float(counts @ values / total)
    var = float(counts @ (values - mean) ** 2 / total)
    return mean, var ** 0.5
