"""Fashion-MNIST: idx reader (generated files in the exact format), search order, errors, real files."""
import gzip
import os
import struct

import numpy as np
import pytest

from sa_mdrad_jax import data
from sa_mdrad_jax.data import fashion_mnist as fm
from sa_mdrad_jax.models import NORMALIZATION

REAL_DIR = "/usr/share/datasets/fashion-mnist"
needs_real_files = pytest.mark.skipif(
    not os.path.isdir(REAL_DIR),
    reason="needs the Fashion-MNIST idx files: apt-get install dataset-fashion-mnist",
)


# ----------------------------------------------------------------------------- idx writer


def _idx_bytes(array, kind, magic=None, dims=None):
    """The idx encoding of uint8 images [n, r, c] or labels [n] (magic / dims overridable)."""
    array = np.asarray(array, np.uint8)
    if kind == "images":
        header = struct.pack(">IIII", magic or 0x803, *(dims or array.shape))
    else:
        header = struct.pack(">II", magic or 0x801, *(dims or array.shape))
    return header + array.tobytes()


def _write(path, payload, gz):
    path = str(path) + (".gz" if gz else "")
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if gz else payload)
    return path


def _make(rng, n):
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255  # both extremes survive the round trip
    return images, (np.arange(n) % 10).astype(np.uint8)


def _write_dataset(directory, gz=True, n_train=20, n_test=10, seed=0):
    """Both splits in ``directory``; ``gz`` is a bool or an {images, labels} -> bool dict."""
    os.makedirs(directory, exist_ok=True)
    gz_of = gz if isinstance(gz, dict) else {"images": gz, "labels": gz}
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = _make(rng, n)
        images_stem, labels_stem = fm.FILES[split]
        _write(os.path.join(directory, images_stem), _idx_bytes(images, "images"), gz_of["images"])
        _write(os.path.join(directory, labels_stem), _idx_bytes(labels, "labels"), gz_of["labels"])
        arrays[split] = images, labels
    return arrays


# ----------------------------------------------------------------------------- reading


def test_registry_entry():
    info = data.dataset_info("fashion_mnist")
    assert (info.num_classes, info.image_size, info.splits) == (10, 28, ("train", "test"))
    with pytest.raises(ValueError, match="only 'digits' can be resized"):
        data.dataset_info("fashion_mnist", image_size=32)


@pytest.mark.parametrize("gz", [True, False, {"images": True, "labels": False}], ids=["gz", "plain", "mixed"])
def test_round_trip(tmp_path, gz):
    written = _write_dataset(tmp_path, gz=gz)
    for split, n in (("train", 20), ("test", 10)):
        x, y = data.load_split("fashion_mnist", split, data_dir=str(tmp_path))
        assert x.shape == (n, 28, 28, 3) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int32
        images, labels = written[split]
        for c in range(3):  # grey repeated to RGB
            np.testing.assert_array_equal(x[..., c], images)
        np.testing.assert_array_equal(y, labels)
    # The caller owns its copy; the cache is read-only and untouched.
    x[:] = 7
    x2, _ = data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(x2[..., 0], written["test"][0])
    cached_images, cached_labels = fm.read_split(*fm.split_files(str(tmp_path), "test"))
    assert not cached_images.flags.writeable and not cached_labels.flags.writeable


def test_gzip_recognised_by_content_and_rewritten_file_reread(tmp_path):
    # A gzip stream under the plain name (as left by a browser that kept the wrong name) still reads.
    written = _write_dataset(tmp_path, gz=False)
    stem = os.path.join(tmp_path, fm.FILES["test"][0])
    with open(stem, "wb") as f:
        f.write(gzip.compress(_idx_bytes(written["test"][0][:4], "images")))
    labels_path = os.path.join(tmp_path, fm.FILES["test"][1])
    with open(labels_path, "wb") as f:
        f.write(_idx_bytes(written["test"][1][:4], "labels"))
    x, y = data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
    assert len(x) == 4
    np.testing.assert_array_equal(x[..., 1], written["test"][0][:4])
    np.testing.assert_array_equal(y, written["test"][1][:4])


@pytest.mark.parametrize("count", [2, 3])
def test_process_shards(tmp_path, count):
    _write_dataset(tmp_path)
    full_x, full_y = data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))
    parts = [data.load_split("fashion_mnist", "train", data_dir=str(tmp_path), process_index=p,
                             process_count=count) for p in range(count)]
    for p, (x, y) in enumerate(parts):
        start, stop = p * 20 // count, (p + 1) * 20 // count
        np.testing.assert_array_equal(x, full_x[start:stop])
        np.testing.assert_array_equal(y, full_y[start:stop])
    assert sum(len(y) for _, y in parts) == 20
    with pytest.raises(ValueError, match="process_index"):
        data.load_split("fashion_mnist", "train", data_dir=str(tmp_path), process_index=3, process_count=3)


# ----------------------------------------------------------------------------- corrupt files

_IMAGES = np.zeros((3, 28, 28), np.uint8)
_LABELS = np.array([0, 1, 2], np.uint8)


def _corrupt_cases():
    good_labels = _idx_bytes(_LABELS, "labels")
    good_images = _idx_bytes(_IMAGES, "images")
    return {
        # name: (images payload, labels payload, gz, which file is named, phrase in the message)
        "bad_magic": (_idx_bytes(_IMAGES, "images", magic=0x801), good_labels, False, "images",
                      "magic number 0x00000801"),
        "labels_magic": (good_images, _idx_bytes(_LABELS, "labels", magic=0x803), False, "labels",
                         "magic number 0x00000803"),
        "truncated": (good_images[:-5], good_labels, False, "images", "truncated"),
        "header_only_part": (good_images[:10], good_labels, False, "images", "shorter than the 16-byte idx header"),
        "extra_bytes": (good_images + b"\0", good_labels, False, "images", "longer than its header says"),
        "wrong_dims": (_idx_bytes(np.zeros((3, 32, 32), np.uint8), "images"), good_labels, False, "images",
                       "32x32"),
        "bad_label": (good_images, _idx_bytes(np.array([0, 10, 2], np.uint8), "labels"), False, "labels",
                      "label 10 at index 1"),
        "count_mismatch": (good_images, _idx_bytes(_LABELS[:2], "labels"), False, "labels",
                           "holds 3 images but labels file"),
    }


@pytest.mark.parametrize("case", list(_corrupt_cases()))
def test_corrupt_file_is_named(tmp_path, case):
    images, labels, gz, bad, phrase = _corrupt_cases()[case]
    images_stem, labels_stem = fm.FILES["test"]
    paths = {"images": _write(tmp_path / images_stem, images, gz), "labels": _write(tmp_path / labels_stem, labels, gz)}
    with pytest.raises(fm.IdxFormatError, match=phrase) as err:
        data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
    assert repr(paths[bad]) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_truncated_gzip_is_named(tmp_path):
    images_stem, labels_stem = fm.FILES["train"]
    blob = gzip.compress(_idx_bytes(np.arange(3 * 28 * 28).reshape(3, 28, 28) % 251, "images"))
    path = str(tmp_path / (images_stem + ".gz"))
    with open(path, "wb") as f:
        f.write(blob[: len(blob) // 2])
    _write(tmp_path / labels_stem, _idx_bytes(_LABELS, "labels"), True)
    with pytest.raises(fm.IdxFormatError, match="corrupt or truncated gzip") as err:
        data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))
    assert repr(path) in str(err.value)


# ----------------------------------------------------------------------------- where files are searched


def _assert_both_ways(msg, directory):
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "github.com/zalandoresearch/fashion-mnist" in msg
    for stem in fm.ALL_FILES:
        assert f"{stem}.gz" in msg
    assert f"into {directory}" in msg
    assert f"sa-mdrad prepare --dataset=fashion_mnist --data_dir={directory}" in msg
    assert "sa_mdrad_jax[prepare]" in msg


def test_missing_data_names_directory_and_both_ways(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))
    msg = str(err.value)
    assert repr(str(tmp_path)) in msg
    assert os.path.join(str(tmp_path), "fashion_mnist") in msg  # where a TFDS-prepared copy was looked for
    _assert_both_ways(msg, str(tmp_path))
    assert isinstance(err.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created

    # Half a split: the message says which file is missing.
    _write(tmp_path / fm.FILES["train"][0], _idx_bytes(_IMAGES, "images"), True)
    with pytest.raises(data.DatasetNotFoundError, match="has train-images-idx3-ubyte.gz but not train-labels"):
        data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))


def test_default_search_order(tmp_path, monkeypatch):
    debian, tfds_default = tmp_path / "debian", tmp_path / "tfds"
    monkeypatch.setattr(fm, "DEBIAN_DIR", str(debian))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_default))
    for data_dir in (None, ""):  # config.dataset.data_dir='' means unset
        with pytest.raises(data.DatasetNotFoundError) as err:
            data.load_split("fashion_mnist", "test", data_dir=data_dir)
        msg = str(err.value)
        assert repr(str(debian)) in msg and repr(str(tfds_default)) in msg
        _assert_both_ways(msg, str(tfds_default))

    in_tfds = _write_dataset(tfds_default, seed=1)
    _, y = data.load_split("fashion_mnist", "test")
    assert len(y) == 10
    x, _ = data.load_split("fashion_mnist", "test", data_dir="")
    np.testing.assert_array_equal(x[..., 0], in_tfds["test"][0])
    in_debian = _write_dataset(debian, seed=2, n_test=6)  # Debian's location comes first
    x, y = data.load_split("fashion_mnist", "test")
    assert len(y) == 6
    np.testing.assert_array_equal(x[..., 0], in_debian["test"][0])
    # An explicit data_dir is the only place searched.
    with pytest.raises(data.DatasetNotFoundError):
        data.load_split("fashion_mnist", "test", data_dir=str(tmp_path / "elsewhere"))


# ----------------------------------------------------------------------------- TFDS route


def test_tfds_prepared_source(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    n = 11
    with tfds.testing.mock_data(num_examples=n):
        x, y = data.load_split("fashion_mnist", "test", data_dir=str(tmp_path))
        parts = [data.load_split("fashion_mnist", "test", data_dir=str(tmp_path), process_index=p, process_count=2)
                 for p in range(2)]
    assert x.shape == (n, 28, 28, 3) and x.dtype == np.uint8
    assert y.shape == (n,) and y.dtype == np.int32 and 0 <= y.min() and y.max() < 10
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # TFDS's (28, 28, 1) repeated to RGB
    assert len({x[i].tobytes() for i in range(n)}) > 1
    assert [len(p[1]) for p in parts] == [5, 6]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), x)


def test_prepare_without_tensorflow_names_the_extra(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec(
        "importlib_resources"
    ) is not None:
        pytest.skip("the prepare extra is installed")
    with pytest.raises(ImportError, match=r'pip install "sa_mdrad_jax\[prepare\]"'):
        data.prepare("fashion_mnist", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- the real files


@needs_real_files
def test_real_files():
    x_tr, y_tr = data.load_split("fashion_mnist", "train", data_dir=REAL_DIR)
    x_te, y_te = data.load_split("fashion_mnist", "test")  # the default search finds Debian's copy
    assert x_tr.shape == (60_000, 28, 28, 3) and x_te.shape == (10_000, 28, 28, 3)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32
    assert np.bincount(y_tr).tolist() == [6000] * 10
    assert np.bincount(y_te, minlength=10).tolist() == [1000] * 10
    assert x_tr.min() == 0 and x_tr.max() == 255
    np.testing.assert_array_equal(x_te[..., 0], x_te[..., 2])


@needs_real_files
def test_normalization_matches_training_images():
    mean, std = fm.train_statistics(fm.find_file(REAL_DIR, fm.FILES["train"][0]))
    assert NORMALIZATION["fashion_mnist"] == ((round(mean, 4),) * 3, (round(std, 4),) * 3)
