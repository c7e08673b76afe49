"""Natural training of a small digits teacher in seconds (8×8 digits, no download): the teacher for
smoke-testing a new method without running the quickstart first.

  sa-mdrad train --config=configs/teacher_digits.py --workdir=workdir/teacher_digits
  sa-mdrad train --config=configs/teacher_digits.py:wrn16_4 --config.model.width=0.25 --workdir=...

A digits distillation config names it as a teacher, e.g.
`teacher_entry("resnet_tiny", "workdir/teacher_digits", normalize="digits")` (README, "Adding a
method, adding an attack"; tests/test_extension.py trains it for two steps).
"""
from sa_mdrad_jax.config import base_config


def get_config(model: str = "resnet_tiny"):
    c = base_config()
    # Digits at their native 8×8: a 1-pixel shift, and no mirror (a mirrored digit is another glyph).
    c.dataset.update(name="digits", image_size=8, crop_pad=1, flip=False)
    c.model.update(name=model, width=1.0, normalize="digits")
    c.train.update(epochs=3, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.checkpoint.keep = 1
    c.log.update(every_steps=20, tensorboard=False)
    return c
