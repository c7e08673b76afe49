"""The validation split: carved from the training split (stratified, fixed seed), disjoint from
everything else, stable, and the only split that per-epoch evaluation and checkpoint selection read."""
from __future__ import annotations

import numpy as np
import pytest

from sa_mdrad_jax import checkpoints, config as config_lib, data
from sa_mdrad_jax.train import loop, writers
from util import tiny_config


def _rows(images):
    return {img.tobytes() for img in images}


def test_indices_are_disjoint_complete_stratified_and_stable():
    rng = np.random.default_rng(0)
    labels = rng.choice(10, size=1000, p=np.linspace(1, 3, 10) / np.linspace(1, 3, 10).sum())
    train, val = data.validation_indices(labels, 150)
    assert len(val) == 150 and len(train) == 850
    assert not set(train) & set(val) and sorted(np.concatenate([train, val])) == list(range(1000))
    for c in range(10):   # each class keeps its share (to within one example)
        share = np.mean(labels == c) * 150
        assert abs(np.sum(labels[val] == c) - share) <= 1
    again_train, again_val = data.validation_indices(labels.copy(), 150)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)
    assert not np.array_equal(val, data.validation_indices(labels, 150, seed=1)[1])   # the seed decides


@pytest.mark.parametrize("size", [5, 995, -1])
def test_impossible_sizes_say_what_is_accepted(size):
    labels = np.repeat(np.arange(10), 100)
    with pytest.raises(ValueError, match="accepted are 10..990|int >= 0"):
        if size < 0:
            data.load_split("digits", "validation", image_size=8, validation_size=size)
        data.validation_indices(labels, size)


def test_digits_validation_comes_out_of_train_and_never_touches_test():
    train, test = (data.load_split("digits", s, image_size=8) for s in ("train", "test"))
    small_train = data.load_split("digits", "train", image_size=8, validation_size=287)
    val = data.load_split("digits", "validation", image_size=8, validation_size=287)
    assert len(val[0]) == 287 and len(small_train[0]) == len(train[0]) - 287
    test_again = data.load_split("digits", "test", image_size=8, validation_size=287)
    np.testing.assert_array_equal(test_again[0], test[0])   # the test split is the same with or without it
    # Together the two parts are exactly the training split (as index sets: rows are in the original order).
    train_idx, val_idx = data.validation_indices(train[1], 287)
    np.testing.assert_array_equal(val[0], train[0][val_idx])
    np.testing.assert_array_equal(small_train[1], train[1][train_idx])
    assert np.bincount(val[1], minlength=10).min() >= 28   # ~10 % of each class
    # Process shards of the validation split concatenate to it.
    shards = [data.load_split("digits", "validation", image_size=8, validation_size=287, process_index=p,
                              process_count=3) for p in range(3)]
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards]), val[0])
    with pytest.raises(ValueError, match="validation_size"):
        data.load_split("digits", "validation", image_size=8)


def test_selection_on_the_test_split_is_refused():
    with pytest.raises(config_lib.ConfigError, match="test split"):
        config_lib.validate(tiny_config(**{"checkpoint.best_metric": "test_accuracy"}))
    with pytest.raises(config_lib.ConfigError, match="dataset.validation_size"):
        config_lib.validate(tiny_config(**{"checkpoint.best_metric": "val_accuracy"}))
    config_lib.validate(tiny_config(**{"checkpoint.best_metric": "val_accuracy", "dataset.validation_size": 100}))


def test_training_and_selection_never_read_the_test_labels(tmp_path, monkeypatch):
    """Two runs, one with the test labels scrambled: every per-epoch record, every checkpoint and the
    best step are identical; only the end-of-run test accuracy (read once, at the end) differs."""
    config = tiny_config(**{"train.epochs": 2, "train.num_devices": 1, "dataset.validation_size": 287,
                            "checkpoint.best_metric": "val_accuracy", "checkpoint.keep": 1,
                            "checkpoint.async_save": False})
    real = loop.train(config, str(tmp_path / "real"))
    load = data.load_split

    def scrambled(name, split, **kw):
        images, labels = load(name, split, **kw)
        return (images, (labels + 1) % 10) if split == "test" else (images, labels)

    monkeypatch.setattr(data, "load_split", scrambled)
    fake = loop.train(config, str(tmp_path / "fake"))
    strip = lambda recs: [{k: v for k, v in r.items() if k != "time"} for r in recs]   # noqa: E731
    assert strip(writers.read_metrics(str(tmp_path / "real"), "eval")) == \
        strip(writers.read_metrics(str(tmp_path / "fake"), "eval"))
    ckpts = [checkpoints.Checkpointer(str(tmp_path / r), read_only=True, async_save=False) for r in ("real", "fake")]
    assert ckpts[0].best_step() == ckpts[1].best_step() is not None
    assert {k: v for k, v in real.items() if not k.startswith("test_")} == \
        {k: v for k, v in fake.items() if not k.startswith("test_")}
    assert real["test_accuracy"] > 0.3 and fake["test_accuracy"] < real["test_accuracy"] - 0.2


def test_train_size_takes_a_stratified_subset_of_what_validation_leaves():
    train = data.load_split("digits", "train", image_size=8, validation_size=287)
    sub = data.load_split("digits", "train", image_size=8, validation_size=287, train_size=500)
    val = data.load_split("digits", "validation", image_size=8, validation_size=287, train_size=500)
    assert len(sub[1]) == 500 and _rows(sub[0]) <= _rows(train[0]) and not _rows(sub[0]) & _rows(val[0])
    assert np.bincount(sub[1], minlength=10).min() >= 45   # ~50 per class
    again = data.load_split("digits", "train", image_size=8, validation_size=287, train_size=500)
    np.testing.assert_array_equal(again[0], sub[0])
    np.testing.assert_array_equal(val[0], data.load_split("digits", "validation", image_size=8,
                                                          validation_size=287)[0])   # untouched by train_size
    with pytest.raises(ValueError, match="train_size"):
        data.load_split("digits", "train", image_size=8, train_size=-2)
