"""The offline quickstart: heterogeneous teachers trained on real handwritten digits.

Digits (scikit-learn's 1,797 real 8×8 scans, resized and made RGB) need no download, so the whole
pipeline — device-side data, the sharded jitted step, Orbax checkpoints, restore — runs on any
laptop in minutes. Each teacher is trained with the same command a user runs for CIFAR, into
`<workdir>/teachers/<name>`, then restored from its checkpoint and evaluated.
"""
from __future__ import annotations

import os

import ml_collections

from sa_mdrad_jax import checkpoints, config as config_lib
from sa_mdrad_jax.evaluate.clean import clean_accuracy
from sa_mdrad_jax.train import loop


def get_config() -> ml_collections.ConfigDict:
    c = config_lib.base_config()
    # Digits are centred 8x8 scans: a small shift, and no mirror (a mirrored digit is another glyph).
    c.dataset.update(name="digits", image_size=16, crop_pad=2, flip=False)
    c.train.update(epochs=6, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.checkpoint.keep = 1
    c.log.every_steps = 20
    del c["model"]
    # Two heterogeneous teachers (ResNet-18 and WRN-16-4 families), narrowed to fit a 2-core CPU.
    c.teachers = ml_collections.ConfigDict({
        "resnet18": ml_collections.ConfigDict(dict(
            model=dict(name="resnet18", width=0.25, dtype="float32", normalize="digits"))),
        "wrn16": ml_collections.ConfigDict(dict(
            model=dict(name="wrn16_4", width=0.25, dtype="float32", normalize="digits"))),
    })
    return c


def teacher_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """The natural-training config of one teacher: the shared settings plus its model."""
    c = ml_collections.ConfigDict(config.to_dict())
    del c["teachers"]
    c.model = ml_collections.ConfigDict(config.teachers[name].model.to_dict())
    return c


def run(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    rows = []
    for name in config.teachers:
        tdir = os.path.join(workdir, "teachers", name)
        trained = loop.train(teacher_config(config, name), tdir)
        model_config, variables, meta = checkpoints.load_variables(tdir)
        restored = clean_accuracy(model_config, variables, config.dataset.name,
                                  data_dir=config.dataset.data_dir or None,
                                  image_size=config.dataset.image_size or None)
        rows.append({"teacher": name, "model": f"{model_config['name']} (width {model_config['width']})",
                     "step": meta["step"], "trained_accuracy": trained["test_accuracy"],
                     "restored_accuracy": restored["accuracy"], "workdir": tdir})
    print(format_table(rows), flush=True)
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| teacher | model | steps | test acc (end of training) | test acc (restored checkpoint) |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['teacher']} | {r['model']} | {r['step']} | {100 * r['trained_accuracy']:.2f}% "
                     f"| {100 * r['restored_accuracy']:.2f}% |")
    return "\n".join(lines)
