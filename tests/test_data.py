"""Data layer: registry, digits, TFDS-backed loaders (mocked / tiny local data), augmentation."""
import io
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from sa_mdrad_jax import data
from sa_mdrad_jax.data import augment as aug

tfds = pytest.importorskip("tensorflow_datasets")


# ----------------------------------------------------------------------------- registry


def test_registry_and_dataset_info():
    assert set(data.DATASETS) == {"digits", "cifar10", "cifar100", "tiny_imagenet", "fashion_mnist"}
    assert data.dataset_info("cifar100").num_classes == 100
    assert data.dataset_info("tiny_imagenet").image_size == 64
    assert data.dataset_info("digits", image_size=16).image_size == 16
    for info in data.DATASETS.values():
        assert info.splits == ("train", "test")
    with pytest.raises(ValueError, match="cifar10"):
        data.dataset_info("mnist")
    with pytest.raises(ValueError):
        data.dataset_info("cifar10", image_size=16)


def test_unknown_split_and_bad_process_args():
    with pytest.raises(ValueError, match="train"):
        data.load_split("digits", "validation")
    with pytest.raises(ValueError, match="train"):
        data.load_split("cifar10", "validation", data_dir="/nonexistent")
    with pytest.raises(ValueError):
        data.load_split("digits", "train", process_index=2, process_count=2)


# ----------------------------------------------------------------------------- digits


def test_digits_basic():
    x_tr, y_tr = data.load_split("digits", "train")
    x_te, y_te = data.load_split("digits", "test")
    assert x_tr.shape == (1437, 32, 32, 3) and x_te.shape == (360, 32, 32, 3)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32
    assert y_tr.shape == (1437,) and y_te.shape == (360,)
    np.testing.assert_array_equal(x_tr[..., 0], x_tr[..., 1])
    np.testing.assert_array_equal(x_tr[..., 0], x_tr[..., 2])
    assert y_tr.min() == 0 and y_tr.max() == 9
    assert set(np.unique(y_te)) == set(range(10))  # stratified: every class in test
    counts = np.bincount(y_te, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    assert x_tr.max() == 255 and x_tr.min() == 0  # scaled from 0..16 to the full range
    # Deterministic, and the caller gets its own copy.
    x_tr[:] = 0
    x2, y2 = data.load_split("digits", "train")
    assert x2.max() == 255
    np.testing.assert_array_equal(y2, y_tr)


def test_digits_train_test_disjoint():
    x_tr, _ = data.load_split("digits", "train", image_size=8)
    x_te, _ = data.load_split("digits", "test", image_size=8)
    from sklearn.datasets import load_digits

    raw = load_digits().images
    assert x_tr.shape[1:] == (8, 8, 3)
    # At native size the pixels are exactly the scaled originals.
    expected = np.rint(raw * 255 / 16).astype(np.uint8)
    all_rows = {r.tobytes() for r in expected}
    assert all(r[..., 0].tobytes() in all_rows for r in x_te)
    assert len(x_tr) + len(x_te) == len(raw)


@pytest.mark.parametrize("size", [16, 24])
def test_digits_image_size(size):
    x, y = data.load_split("digits", "test", image_size=size)
    assert x.shape == (360, size, size, 3) and x.dtype == np.uint8
    _, y32 = data.load_split("digits", "test")
    np.testing.assert_array_equal(y, y32)  # same split whatever the size


@pytest.mark.parametrize("count", [2, 3])
def test_digits_process_shards(count):
    full_x, full_y = data.load_split("digits", "train")
    parts = [data.load_split("digits", "train", process_index=p, process_count=count) for p in range(count)]
    n = len(full_y)
    for p, (x, y) in enumerate(parts):
        start, stop = p * n // count, (p + 1) * n // count
        np.testing.assert_array_equal(x, full_x[start:stop])
        np.testing.assert_array_equal(y, full_y[start:stop])
    np.testing.assert_array_equal(np.concatenate([x for x, _ in parts]), full_x)
    np.testing.assert_array_equal(np.concatenate([y for _, y in parts]), full_y)


# ----------------------------------------------------------------------------- CIFAR (mocked TFDS)


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_under_mock_data(tmp_path, name, num_classes):
    n = 11
    with tfds.testing.mock_data(num_examples=n):
        for split in ("train", "test"):
            x, y = data.load_split(name, split, data_dir=str(tmp_path))
            assert x.shape == (n, 32, 32, 3) and x.dtype == np.uint8
            assert y.shape == (n,) and y.dtype == np.int32
            assert 0 <= y.min() and y.max() < num_classes
        full_x, full_y = data.load_split(name, "train", data_dir=str(tmp_path))
        parts = [data.load_split(name, "train", data_dir=str(tmp_path), process_index=p, process_count=3)
                 for p in range(3)]
    assert [len(p[1]) for p in parts] == [3, 4, 4]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), full_x)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), full_y)
    assert len({full_x[i].tobytes() for i in range(n)}) > 1  # real (random) images, not one repeated


def test_missing_dataset_raises_with_prepare_command(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load_split("cifar10", "train", data_dir=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path) in msg
    assert f"sa-mdrad prepare --dataset=cifar10 --data_dir={tmp_path}" in msg
    assert "sa_mdrad_jax[prepare]" in msg
    assert isinstance(err.value, FileNotFoundError)
    assert list(tmp_path.iterdir()) == []  # nothing downloaded or created


def test_missing_tiny_imagenet_mentions_manual_dir(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="--manual_dir="):
        data.load_split("tiny_imagenet", "test", data_dir=str(tmp_path))


# ----------------------------------------------------------------------------- Tiny-ImageNet


_WNIDS = ["n09999999", "n01443537", "n02000000"]  # deliberately unsorted in wnids.txt
_COLORS = {"n01443537": (200, 30, 30), "n02000000": (30, 200, 30), "n09999999": (30, 30, 200)}
_GRAY_LEVEL = 128


def _jpeg(color, mode="RGB"):
    buf = io.BytesIO()
    if mode == "L":
        Image.new("L", (64, 64), _GRAY_LEVEL).save(buf, format="JPEG", quality=95)
    else:
        Image.new("RGB", (64, 64), color).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _make_tiny_zip(path):
    """3 wnids x 4 train images, 6 val images, one grayscale train JPEG; official layout."""
    val_lines = []
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("tiny-imagenet-200/wnids.txt", "\n".join(_WNIDS) + "\n")
        z.writestr("tiny-imagenet-200/words.txt", "".join(f"{w}\tthing {w}\n" for w in _WNIDS))
        for wnid in _WNIDS:
            z.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "")
            for k in range(4):
                gray = wnid == "n02000000" and k == 0
                z.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_{k}.JPEG",
                           _jpeg(_COLORS[wnid], "L" if gray else "RGB"))
        for k in range(6):
            wnid = _WNIDS[k % 3]
            z.writestr(f"tiny-imagenet-200/val/images/val_{k}.JPEG", _jpeg(_COLORS[wnid]))
            val_lines.append(f"val_{k}.JPEG\t{wnid}\t0\t0\t63\t63")
        z.writestr("tiny-imagenet-200/val/val_annotations.txt", "\n".join(val_lines) + "\n")
        z.writestr("tiny-imagenet-200/test/images/test_0.JPEG", _jpeg((0, 0, 0)))


def _color_label(img):
    """Label implied by an image's (near-constant) colour, None for the grayscale image."""
    mean = img.reshape(-1, 3).mean(0)
    if np.allclose(mean, _GRAY_LEVEL, atol=3):
        return None
    sorted_wnids = sorted(_WNIDS)
    for wnid, color in _COLORS.items():
        if np.allclose(mean, color, atol=4):
            return sorted_wnids.index(wnid)
    raise AssertionError(f"unexpected colour {mean}")


def test_tiny_imagenet_prepare_and_load(tmp_path):
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    _make_tiny_zip(manual_dir / "tiny-imagenet-200.zip")
    data_dir = tmp_path / "tfds"
    data.prepare("tiny_imagenet", data_dir=str(data_dir), manual_dir=str(manual_dir))

    x_tr, y_tr = data.load_split("tiny_imagenet", "train", data_dir=str(data_dir))
    x_te, y_te = data.load_split("tiny_imagenet", "test", data_dir=str(data_dir))
    assert x_tr.shape == (12, 64, 64, 3) and x_te.shape == (6, 64, 64, 3)
    assert x_tr.dtype == np.uint8 and y_tr.dtype == np.int32
    # Label = index of the wnid in sorted order; 4 train and 2 val images per class.
    assert np.bincount(y_tr).tolist() == [4, 4, 4]
    assert np.bincount(y_te).tolist() == [2, 2, 2]
    gray_seen = 0
    for img, label in zip(np.concatenate([x_tr, x_te]), np.concatenate([y_tr, y_te])):
        implied = _color_label(img)
        if implied is None:  # the grayscale JPEG, converted to RGB; it belongs to n02000000
            gray_seen += 1
            np.testing.assert_array_equal(img[..., 0], img[..., 1])
            assert label == sorted(_WNIDS).index("n02000000")
        else:
            assert label == implied
    assert gray_seen == 1

    shards = [data.load_split("tiny_imagenet", "train", data_dir=str(data_dir), process_index=p, process_count=2)
              for p in range(2)]
    assert [len(s[1]) for s in shards] == [6, 6]
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards]), x_tr)
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards]), y_tr)


# ----------------------------------------------------------------------------- augmentation


def _images(b=4, h=8, w=8, c=3, seed=0):
    return np.random.default_rng(seed).integers(1, 256, size=(b, h, w, c), dtype=np.uint8)


def test_to_float():
    x = _images()
    y = aug.to_float(x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), x.astype(np.float32) / 255.0, rtol=1e-6)


def test_sample_params_shapes_ranges_and_reproducible():
    key = jax.random.key(3)
    p = aug.sample_augment_params(key, 64, pad=4)
    assert p["offsets"].shape == (64, 2) and p["offsets"].dtype == jnp.int32
    assert p["flips"].shape == (64,) and p["flips"].dtype == jnp.bool_
    assert int(p["offsets"].min()) >= 0 and int(p["offsets"].max()) <= 8
    assert 0 < int(p["flips"].sum()) < 64
    q = aug.sample_augment_params(key, 64, pad=4)
    np.testing.assert_array_equal(p["offsets"], q["offsets"])
    np.testing.assert_array_equal(p["flips"], q["flips"])
    r = aug.sample_augment_params(jax.random.key(4), 64, pad=4)
    assert not np.array_equal(p["offsets"], r["offsets"])


def test_augment_identity_flip_and_shift():
    x = _images()
    xf = x.astype(np.float32) / 255.0
    b, pad = x.shape[0], 2
    ident = {"offsets": jnp.full((b, 2), pad, jnp.int32), "flips": jnp.zeros((b,), bool)}
    out = aug.augment(x, ident, pad=pad)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), xf, rtol=1e-6)

    flip = {"offsets": ident["offsets"], "flips": jnp.ones((b,), bool)}
    np.testing.assert_allclose(np.asarray(aug.augment(x, flip, pad=pad)), xf[:, :, ::-1], rtol=1e-6)

    shift = {"offsets": jnp.zeros((b, 2), jnp.int32), "flips": jnp.zeros((b,), bool)}
    out = np.asarray(aug.augment(x, shift, pad=pad))
    np.testing.assert_array_equal(out[:, :pad], 0)
    np.testing.assert_array_equal(out[:, :, :pad], 0)
    np.testing.assert_allclose(out[:, pad:, pad:], xf[:, :-pad, :-pad], rtol=1e-6)

    # Per-example params: only the flagged example is flipped.
    mixed = {"offsets": ident["offsets"], "flips": jnp.array([False, True, False, False])}
    out = np.asarray(aug.augment(x, mixed, pad=pad))
    np.testing.assert_allclose(out[0], xf[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], xf[1, :, ::-1], rtol=1e-6)


def test_augment_jit_range_and_sliced_params():
    x = _images(b=8, h=32, w=32)
    params = aug.sample_augment_params(jax.random.key(0), 8, pad=4)
    f = jax.jit(aug.augment, static_argnames="pad")
    out = f(x, params, pad=4)
    assert out.shape == x.shape and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(out), np.asarray(aug.augment(x, params, pad=4)), rtol=1e-6)
    # Slicing the global-batch params per device gives the same result as the whole batch.
    half = jax.tree.map(lambda a: a[4:], params)
    np.testing.assert_allclose(np.asarray(f(x[4:], half, pad=4)), np.asarray(out[4:]), rtol=1e-6)
    # Vmappable over a leading device-like axis.
    stacked = jax.tree.map(lambda a: a.reshape(2, 4, *a.shape[1:]), params)
    out_v = jax.vmap(lambda im, p: aug.augment(im, p, pad=4))(x.reshape(2, 4, 32, 32, 3), stacked)
    np.testing.assert_allclose(np.asarray(out_v).reshape(out.shape), np.asarray(out), rtol=1e-6)


# ----------------------------------------------------------------------------- prepare / data_dir


def test_prepare_digits_is_noop(tmp_path):
    data.prepare("digits", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="valid names"):
        data.prepare("mnist", data_dir=str(tmp_path))


def test_prepare_cifar_without_tensorflow_names_the_extra(tmp_path):
    import importlib.util

    if importlib.util.find_spec("tensorflow") is not None and importlib.util.find_spec(
        "importlib_resources"
    ) is not None:
        pytest.skip("the prepare extra is installed")
    with pytest.raises(ImportError, match=r'pip install "sa_mdrad_jax\[prepare\]"'):
        data.prepare("cifar100", data_dir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_default_data_dir_is_resolved_in_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    assert data.default_data_dir() == str(tmp_path)
    with pytest.raises(data.DatasetNotFoundError, match=f"--data_dir={tmp_path}"):
        data.load_split("cifar100", "test")
