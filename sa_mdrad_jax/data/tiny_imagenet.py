"""TFDS builder for Tiny-ImageNet-200, reading the official ``tiny-imagenet-200.zip``.

Layout of the official archive::

    tiny-imagenet-200/wnids.txt                         one WordNet id per line (200)
    tiny-imagenet-200/train/<wnid>/images/<wnid>_<k>.JPEG   500 per class
    tiny-imagenet-200/val/images/val_<k>.JPEG           10,000 images
    tiny-imagenet-200/val/val_annotations.txt           file<TAB>wnid<TAB>bbox...
    tiny-imagenet-200/test/images/...                   unlabelled; ignored here

Class index convention: label ``i`` is the i-th wnid in **sorted** (lexicographic)
order of the wnids listed in ``wnids.txt``; this is the same as the usual
``ImageFolder`` convention on ``train/`` and does not depend on the order of the
lines in ``wnids.txt``.

Preparing needs no TensorFlow: images are stored as encoded bytes (the original
JPEG bytes for RGB images; grayscale/other-mode images are converted to RGB with
PIL and stored losslessly as PNG), the examples are serialised by TFDS's own
protos and written as ``array_record``.

The archive is read in place with :mod:`zipfile` (no extraction of 120k small
files). It is taken from ``<manual_dir>/tiny-imagenet-200.zip`` when present (an
already-extracted ``<manual_dir>/tiny-imagenet-200/`` directory also works),
otherwise downloaded from :data:`URL`.
"""
from __future__ import annotations

import io
import os
import posixpath
import zipfile
from collections.abc import Iterator
from typing import Any

import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from sa_mdrad_jax import paths

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ZIP_NAME = "tiny-imagenet-200.zip"
ROOT = "tiny-imagenet-200"
NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)


class _ArchiveReader:
    """Uniform read access to the dataset, either inside the zip or extracted."""

    def __init__(self, path: str):
        self._path = os.fspath(path)
        self._zip: zipfile.ZipFile | None = None
        if paths.isfile(self._path):
            self._zip = zipfile.ZipFile(paths.open_file(self._path, "rb"))
            names = self._zip.namelist()
            # Tolerate archives whose top-level folder was renamed/omitted.
            marker = next((n for n in names if posixpath.basename(n) == "wnids.txt"), None)
            if marker is None:
                raise ValueError(f"{self._path}: no wnids.txt found; is this tiny-imagenet-200.zip?")
            self._prefix = posixpath.dirname(marker)
            self._names = names
        else:
            if not paths.isfile(paths.join(self._path, "wnids.txt")):
                raise ValueError(f"{self._path}: no wnids.txt found; not a tiny-imagenet-200 directory")
            self._prefix = ""

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def _member(self, rel: str) -> str:
        return posixpath.join(self._prefix, rel) if self._prefix else rel

    def read(self, rel: str) -> bytes:
        if self._zip is not None:
            return self._zip.read(self._member(rel))
        return paths.read_bytes(paths.join(self._path, *rel.split("/")))

    def read_text(self, rel: str) -> str:
        return self.read(rel).decode("utf-8")

    def listdir_files(self, rel_dir: str) -> list[str]:
        """Sorted file names (not paths) directly inside ``rel_dir``."""
        if self._zip is not None:
            prefix = self._member(rel_dir).rstrip("/") + "/"
            out = []
            for n in self._names:
                if n.startswith(prefix) and not n.endswith("/"):
                    rest = n[len(prefix):]
                    if "/" not in rest:
                        out.append(rest)
            return sorted(out)
        d = paths.join(self._path, *rel_dir.split("/"))
        return [f for f in paths.listdir(d) if paths.isfile(paths.join(d, f))]


def read_wnids(reader: _ArchiveReader) -> list[str]:
    """The class wnids in label order (sorted)."""
    wnids = [line.strip() for line in reader.read_text("wnids.txt").splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError("wnids.txt lists duplicate wnids")
    if len(wnids) > NUM_CLASSES:
        raise ValueError(f"wnids.txt lists {len(wnids)} wnids, expected at most {NUM_CLASSES}")
    return sorted(wnids)


def _image_bytes(data: bytes) -> bytes:
    """Original bytes for RGB images; RGB PNG bytes for anything else (e.g. grayscale)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.mode == "RGB":
            if img.size != IMAGE_SHAPE[1::-1]:
                raise ValueError(f"unexpected image size {img.size}")
            return data
        rgb = img.convert("RGB")
    if rgb.size != IMAGE_SHAPE[1::-1]:
        raise ValueError(f"unexpected image size {rgb.size}")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


class TinyImagenet200(tfds.core.GeneratorBasedBuilder):
    """Tiny-ImageNet-200 (64x64 RGB, 200 classes): splits 'train' (100k) and 'validation' (10k)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release (reads the official zip)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Optional: place {ZIP_NAME} (from {URL}) in the manual_dir; otherwise it is downloaded."
    )
    # TFDS 4.9.10 derives this through `importlib_resources`, a package it only declares as a
    # dependency for Python < 3.9; giving the (ordinary, on-disk) module file directly avoids it.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Tiny-ImageNet-200 from the official cs231n archive.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=IMAGE_SHAPE),
                    "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
                    "wnid": tfds.features.Text(),
                    "file_name": tfds.features.Text(),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://cs231n.stanford.edu/",
        )

    def _archive_path(self, dl_manager: tfds.download.DownloadManager) -> str:
        manual_dir = None
        try:
            manual_dir = dl_manager.manual_dir
        except AssertionError:  # no manual_dir configured / does not exist
            manual_dir = None
        if manual_dir is not None:
            for candidate in (paths.join(os.fspath(manual_dir), ZIP_NAME),
                              paths.join(os.fspath(manual_dir), ROOT)):
                if paths.exists(candidate):
                    return candidate
        return os.fspath(dl_manager.download(URL))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        path = self._archive_path(dl_manager)
        reader = _ArchiveReader(path)
        try:
            wnids = read_wnids(reader)
        finally:
            reader.close()
        if len(wnids) == NUM_CLASSES:
            self.info.features["label"].names = wnids
        return {
            "train": self._generate_examples(path, "train"),
            "validation": self._generate_examples(path, "validation"),
        }

    def _generate_examples(self, path: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        reader = _ArchiveReader(path)
        try:
            wnids = read_wnids(reader)
            label_of = {w: i for i, w in enumerate(wnids)}
            if split == "train":
                for wnid in wnids:
                    for fname in reader.listdir_files(f"train/{wnid}/images"):
                        data = reader.read(f"train/{wnid}/images/{fname}")
                        yield fname, {
                            "image": _image_bytes(data),
                            "label": label_of[wnid],
                            "wnid": wnid,
                            "file_name": fname,
                        }
            else:
                for line in reader.read_text("val/val_annotations.txt").splitlines():
                    if not line.strip():
                        continue
                    fname, wnid = line.split("\t")[:2]
                    if wnid not in label_of:
                        raise ValueError(f"val_annotations.txt: {fname} has unknown wnid {wnid}")
                    data = reader.read(f"val/images/{fname}")
                    yield fname, {
                        "image": _image_bytes(data),
                        "label": label_of[wnid],
                        "wnid": wnid,
                        "file_name": fname,
                    }
        finally:
            reader.close()
