"""Datasets: registry, per-process loading into numpy, and TFDS preparation.

``load_split`` returns the whole shard of one process as host numpy arrays
(``uint8 [n, H, W, 3]`` images, ``int32 [n]`` labels). Process ``p`` of ``P``
gets the contiguous example range ``[p*N//P, (p+1)*N//P)`` of the split and
reads only that range.

Every dataset also has a ``validation`` split when ``validation_size > 0``: that many
examples carved from the training split, stratified by class, with a fixed seed
(:data:`VALIDATION_SEED`), so the same examples are held out on every machine, for every
process count and every run; ``train`` is then the rest. The test split is never touched
by it (see :func:`validation_indices`).

* ``digits``: scikit-learn's bundled 8x8 digits, upscaled bilinearly; fixed
  stratified 80/20 split (1437/360). Needs no network and no preparation.
* ``cifar10``/``cifar100``/``tiny_imagenet``: read with ``tfds.data_source``
  (random access to ``array_record`` files, no TensorFlow needed). Loading never
  downloads: a missing dataset raises :class:`DatasetNotFoundError` naming the
  command that prepares it (``sa-mdrad prepare ...`` -> :func:`prepare`).
  Preparing CIFAR needs TensorFlow (TFDS encodes its images with TF): install
  the ``prepare`` extra. Preparing Tiny-ImageNet does not.
* ``fashion_mnist``: the four official idx files read with numpy
  (:mod:`sa_mdrad_jax.data.fashion_mnist`), grey repeated to RGB, from ``data_dir`` -- or,
  when it is empty, from Debian's ``dataset-fashion-mnist`` location and then TFDS's default
  data dir; a TFDS-prepared ``fashion_mnist`` in the same directory is read like CIFAR.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import importlib.util
import os
from typing import Any

import numpy as np

from sa_mdrad_jax import paths

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetNotFoundError",
    "dataset_info",
    "load_split",
    "prepare",
    "default_data_dir",
    "validation_indices",
    "VALIDATION_SEED",
]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_size: int
    splits: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, 32, ("train", "test")),
    "cifar10": DatasetInfo("cifar10", 10, 32, ("train", "test")),
    "cifar100": DatasetInfo("cifar100", 100, 32, ("train", "test")),
    "tiny_imagenet": DatasetInfo("tiny_imagenet", 200, 64, ("train", "test")),
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 28, ("train", "test")),
}

# Our dataset name -> TFDS builder name, and our split name -> TFDS split name.
_TFDS_NAME = {"cifar10": "cifar10", "cifar100": "cifar100", "tiny_imagenet": "tiny_imagenet200",
              "fashion_mnist": "fashion_mnist"}
_TFDS_SPLIT = {
    "cifar10": {"train": "train", "test": "test"},
    "cifar100": {"train": "train", "test": "test"},
    "tiny_imagenet": {"train": "train", "test": "validation"},
    "fashion_mnist": {"train": "train", "test": "test"},
}
# TFDS's own CIFAR and Fashion-MNIST builders yield numpy images, which TFDS can only encode with
# TensorFlow (its Fashion-MNIST builder also reads the idx files through tf.io.gfile).
_PREPARE_NEEDS_TF = frozenset({"cifar10", "cifar100", "fashion_mnist"})
PREPARE_EXTRA_HINT = 'pip install "sa_mdrad_jax[prepare]"'

_READ_CHUNK = 1024
VALIDATION_SEED = 0   # fixed: the validation split must not change between runs or machines
SPLITS = ("train", "validation", "test")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is not prepared in the data_dir (and loading never downloads)."""


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Registry entry for ``name``; ``image_size`` overrides the size (only ``digits`` is resizable)."""
    if name not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}; valid names: {sorted(DATASETS)}")
    info = DATASETS[name]
    if image_size is None or image_size == info.image_size:
        return info
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if name != "digits":
        raise ValueError(
            f"Dataset {name!r} is only available at its native image_size={info.image_size} "
            f"(got {image_size}); only 'digits' can be resized."
        )
    return dataclasses.replace(info, image_size=int(image_size))


def default_data_dir() -> str:
    """TFDS's default data dir (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``)."""
    return os.environ.get("TFDS_DATA_DIR", paths.join(paths.absolute("~"), "tensorflow_datasets"))


def _resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    return os.fspath(data_dir) if data_dir is not None else default_data_dir()


def _shard_range(n: int, process_index: int, process_count: int) -> tuple[int, int]:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(
            f"need 0 <= process_index < process_count, got process_index={process_index}, "
            f"process_count={process_count}"
        )
    return process_index * n // process_count, (process_index + 1) * n // process_count


def _check_split(info: DatasetInfo, split: str, validation_size: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r} for dataset {info.name!r}; valid splits: {list(SPLITS)} "
                         "('validation' needs validation_size > 0).")
    if isinstance(validation_size, bool) or not isinstance(validation_size, (int, np.integer)) or validation_size < 0:
        raise ValueError(f"validation_size must be an int >= 0 (0 = no validation split), got {validation_size!r}.")
    if split == "validation" and validation_size == 0:
        raise ValueError(f"Dataset {info.name!r} has no 'validation' split with validation_size=0: set "
                         "dataset.validation_size to the number of training examples to hold out.")


def validation_indices(labels: np.ndarray, validation_size: int,
                       seed: int = VALIDATION_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices into a training split with these `labels`.

    Stratified (each class keeps its share in both parts, to within one example), disjoint,
    together exactly all rows, each sorted, and a pure function of (labels, size, seed).
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    n, n_classes = len(labels), len(np.unique(labels))
    if not n_classes <= validation_size <= n - n_classes:
        raise ValueError(f"validation_size={validation_size} cannot be carved from a training split of {n} examples "
                         f"with {n_classes} classes: accepted are {n_classes}..{n - n_classes} (at least one example "
                         "of every class on each side).")
    train, val = train_test_split(np.arange(n), test_size=int(validation_size), stratify=labels, random_state=seed)
    return np.sort(train), np.sort(val)


def prepare_command(name: str, data_dir: str) -> str:
    cmd = f"sa-mdrad prepare --dataset={name} --data_dir={data_dir}"
    if name == "tiny_imagenet":
        cmd += " --manual_dir=<dir containing tiny-imagenet-200.zip>"
    return cmd


def _not_found_message(name: str, data_dir: str, detail: str) -> str:
    tfds_name = _TFDS_NAME[name]
    lines = [
        f"Dataset {name!r} (TFDS builder {tfds_name!r}) {detail} in data_dir {data_dir!r} "
        f"(looked under {paths.join(data_dir, tfds_name)!r}). Loading never downloads; "
        "prepare it once with:",
        f"    {prepare_command(name, data_dir)}",
    ]
    if name == "tiny_imagenet":
        lines.append(
            "(without --manual_dir, tiny-imagenet-200.zip is downloaded from "
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip)"
        )
    if name in _PREPARE_NEEDS_TF:
        lines.append(f"Preparing {name} needs TensorFlow; install it first with: {PREPARE_EXTRA_HINT}")
    return "\n".join(lines)


def _prepared_formats(data_dir: str, tfds_name: str) -> tuple[bool, bool]:
    """(has dataset_info.json, has array_record shards) anywhere under data_dir/tfds_name."""
    from etils import epath

    root = epath.Path(data_dir) / tfds_name
    try:
        if not root.exists():
            return False, False
        has_info = any(True for _ in root.glob("**/dataset_info.json"))
        has_ar = any(True for _ in root.glob("**/*.array_record*"))
    except OSError:
        return False, False
    return has_info, has_ar


def _open_tfds_source(name: str, split: str, data_dir: str):
    import tensorflow_datasets as tfds

    if name == "tiny_imagenet":
        from sa_mdrad_jax.data import tiny_imagenet  # noqa: F401  (registers the builder)

    tfds_name = _TFDS_NAME[name]
    try:
        return tfds.data_source(
            tfds_name, split=_TFDS_SPLIT[name][split], data_dir=data_dir, download=False
        )
    except Exception as e:  # TFDS raises assorted types for "not there"; diagnose on disk.
        has_info, has_ar = _prepared_formats(data_dir, tfds_name)
        if has_info and has_ar:
            raise
        detail = (
            "is prepared but not in array_record format (tfds.data_source needs array_record; "
            "prepare it into a fresh data_dir)"
            if has_info
            else "is not prepared"
        )
        raise DatasetNotFoundError(_not_found_message(name, data_dir, detail)) from e


def _batch_getter(source):
    """Batched record reader: ``source.__getitems__`` when the storage really supports it."""
    inner = getattr(source, "data_source", None)
    if inner is not None and callable(getattr(type(inner), "__getitems__", None)):
        return source.__getitems__
    # e.g. tfds.testing.mock_data's stand-in storage, whose __getitems__ is not usable.
    return lambda keys: [source[k] for k in keys]


def _as_rgb(image: Any, size: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.shape != (size, size, 3):
        raise ValueError(f"expected an image of shape {(size, size, 3)}, got {image.shape}")
    return image


def _read_rows(source, rows: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    n = len(rows)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    labels = np.empty((n,), np.int32)
    get = _batch_getter(source)

    def read_chunk(lo: int) -> None:
        hi = min(lo + _READ_CHUNK, n)
        records = get([int(r) for r in rows[lo:hi]])
        if len(records) != hi - lo:
            raise IndexError(f"asked for {hi - lo} records, got {len(records)}")
        for i, rec in enumerate(records):
            images[lo + i] = _as_rgb(rec["image"], image_size)
            labels[lo + i] = rec["label"]

    chunk_starts = range(0, n, _READ_CHUNK)
    if len(chunk_starts) <= 1:
        for lo in chunk_starts:
            read_chunk(lo)
    else:
        # Image decoding (PIL/OpenCV) releases the GIL; array_record reads are thread-safe.
        workers = min(len(chunk_starts), os.cpu_count() or 1, 16)
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            for fut in [pool.submit(read_chunk, lo) for lo in chunk_starts]:
                fut.result()
    return images, labels


def _fashion_mnist_dirs(data_dir: str | os.PathLike | None) -> list[str]:
    # '' counts as unset, like config.dataset.data_dir=''.
    if data_dir is not None and os.fspath(data_dir):
        return [os.fspath(data_dir)]
    from sa_mdrad_jax.data import fashion_mnist

    return [fashion_mnist.DEBIAN_DIR, default_data_dir()]


def _fashion_mnist_not_found(split: str, dirs: list[str], notes: list[str], tfds_detail: str) -> str:
    from sa_mdrad_jax.data import fashion_mnist as fm

    target = dirs[-1]
    images, labels = fm.FILES[split]
    lines = [
        f"Dataset 'fashion_mnist' ({split} split) not found. Searched for its idx files {images}[.gz] and "
        f"{labels}[.gz] in {', '.join(repr(d) for d in dirs)}, and for a TFDS-prepared 'fashion_mnist' "
        f"under {paths.join(target, _TFDS_NAME['fashion_mnist'])!r} ({tfds_detail}).",
        *notes,
        "Loading never downloads; get the data either way:",
        "  1. the four official idx files: `apt-get install dataset-fashion-mnist` (Debian/Ubuntu; installs "
        f"them in {fm.DEBIAN_DIR}, searched when the data_dir is empty), or download "
        f"{', '.join(f + '.gz' for f in fm.ALL_FILES)} from {fm.OFFICIAL_URL} or {fm.MIRROR_URL} into {target}",
        f"  2. TFDS (needs the network once, and TensorFlow: {PREPARE_EXTRA_HINT}):",
        f"    {prepare_command('fashion_mnist', target)}",
    ]
    return "\n".join(lines)


def _fashion_mnist_rows(split: str, data_dir: str | os.PathLike | None):
    """idx files in each searched directory first, then a TFDS-prepared copy in the last one."""
    from sa_mdrad_jax.data import fashion_mnist as fm

    dirs = _fashion_mnist_dirs(data_dir)
    notes = []
    for directory in dirs:
        images_path, labels_path = fm.split_files(directory, split)
        if images_path and labels_path:
            # The whole file is decoded (and cached) anyway: gzip has no random access.
            return _ArrayRows(*fm.read_split(images_path, labels_path))
        if images_path or labels_path:
            missing = fm.FILES[split][1 if images_path else 0]
            notes.append(f"({directory!r} has {paths.name(images_path or labels_path)} but not {missing}[.gz].)")
    try:
        source = _open_tfds_source("fashion_mnist", split, dirs[-1])
    except DatasetNotFoundError as e:
        has_info, _ = _prepared_formats(dirs[-1], _TFDS_NAME["fashion_mnist"])
        detail = "present, but not in array_record format: prepare it into a fresh data_dir" if has_info else "absent"
        raise DatasetNotFoundError(_fashion_mnist_not_found(split, dirs, notes, detail)) from e
    return _SourceRows(source, DATASETS["fashion_mnist"].image_size)


class _ArrayRows:
    """A split held in memory: (uint8 [N,H,W,3] or grey [N,H,W] images, [N] labels)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self._labels = images, labels

    def __len__(self) -> int:
        return len(self._labels)

    def labels(self) -> np.ndarray:
        return np.asarray(self._labels)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self.images[rows]
        if images.ndim == 3:   # grey [n, H, W] (idx files): repeated to RGB on the way out
            images = np.repeat(images[..., None], 3, axis=-1)
        return images.copy(), np.asarray(self._labels[rows], np.int32).copy()


class _SourceRows:
    """A split in a TFDS data source, read by row on demand."""

    def __init__(self, source, image_size: int):
        self.source, self.image_size = source, image_size

    def __len__(self) -> int:
        return len(self.source)

    def labels(self) -> np.ndarray:   # decodes the split once: only needed to carve a validation split
        return self.read(np.arange(len(self)))[1]

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _read_rows(self.source, rows, self.image_size)


def _split_rows(name: str, split: str, info: DatasetInfo, data_dir: str | None):
    """The rows of a stored split ('train' or 'test') of dataset `name`."""
    if name == "digits":
        from sa_mdrad_jax.data import digits

        return _ArrayRows(*digits._splits(info.image_size)[split])
    if name == "fashion_mnist":
        return _fashion_mnist_rows(split, data_dir)
    return _SourceRows(_open_tfds_source(name, split, _resolve_data_dir(data_dir)), info.image_size)


def load_split(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    validation_size: int = 0,
    train_size: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """This process's contiguous shard of a split: (uint8 [n,H,W,3] images, int32 [n] labels).

    Process ``p`` of ``P`` gets examples ``[p*N//P, (p+1)*N//P)`` of the ``N``-example split
    and reads only those from storage. ``split`` is 'train', 'validation' or 'test' ('test' is
    TFDS 'validation' for Tiny-ImageNet). With ``validation_size > 0``, 'validation' is that many
    training examples (:func:`validation_indices`) and 'train' the rest; 'test' never changes.
    ``train_size > 0`` keeps a stratified subset of that many of the remaining training examples
    (fixed seed; for CPU-sized runs), leaving 'validation' and 'test' as they are.
    ``data_dir=None`` means TFDS's default data dir (for ``fashion_mnist``: Debian's
    ``/usr/share/datasets/fashion-mnist``, then TFDS's default).
    """
    info = dataset_info(name, image_size)
    _check_split(info, split, validation_size)
    _shard_range(1, process_index, process_count)  # validate early
    if isinstance(train_size, bool) or not isinstance(train_size, (int, np.integer)) or train_size < 0:
        raise ValueError(f"train_size must be an int >= 0 (0 = every training example), got {train_size!r}.")
    rows = _split_rows(name, "test" if split == "test" else "train", info, data_dir)
    if split == "test" or (validation_size == 0 and (split == "validation" or train_size == 0)):
        index = np.arange(len(rows))
    else:
        labels = rows.labels()
        train, val = validation_indices(labels, validation_size) if validation_size else (np.arange(len(labels)), None)
        index = val if split == "validation" else train
        if split == "train" and train_size and train_size < len(train):
            index = train[validation_indices(labels[train], train_size, seed=VALIDATION_SEED + 1)[1]]
    start, stop = _shard_range(len(index), process_index, process_count)
    return rows.read(index[start:stop])


def _missing_prepare_modules(name: str) -> list[str]:
    if name not in _PREPARE_NEEDS_TF:
        return []
    # TFDS 4.9.10's own builders also need importlib_resources (undeclared for Python >= 3.9).
    return [m for m in ("tensorflow", "importlib_resources") if importlib.util.find_spec(m) is None]


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None) -> None:
    """Download (or take from ``manual_dir``) and prepare a TFDS dataset as array_record.

    No-op for ``digits``. CIFAR needs TensorFlow (``pip install "sa_mdrad_jax[prepare]"``);
    Tiny-ImageNet does not, and uses ``<manual_dir>/tiny-imagenet-200.zip`` when present.
    """
    dataset_info(name)
    if name == "digits":
        return
    missing = _missing_prepare_modules(name)
    if missing:
        raise ImportError(
            f"Preparing {name!r} needs {' and '.join(missing)} (TFDS's {_TFDS_NAME[name]} builder "
            f"encodes its images with TensorFlow); install them with: {PREPARE_EXTRA_HINT}. "
            "Reading prepared data does not need them."
        )
    import tensorflow_datasets as tfds

    if name == "tiny_imagenet":
        from sa_mdrad_jax.data import tiny_imagenet  # noqa: F401  (registers the builder)

    resolved = _resolve_data_dir(data_dir)
    builder = tfds.builder(_TFDS_NAME[name], data_dir=resolved, file_format="array_record")
    download_config = tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir) if manual_dir is not None else None
    )
    builder.download_and_prepare(download_config=download_config)
