"""SA-MDRAD (or PGD-AT) student on digits from the quickstart's two teachers.

  sa-mdrad quickstart --workdir=workdir/quickstart          # trains the teachers
  sa-mdrad distill --config=configs/sa_mdrad_digits.py --workdir=workdir/sa_mdrad \\
      --config.teachers.resnet18.workdir=workdir/quickstart/teachers/resnet18 \\
      --config.teachers.wrn16.workdir=workdir/quickstart/teachers/wrn16
  (`:pgd_at` selects the PGD-AT baseline, which ignores the teachers.)
"""
from sa_mdrad_jax.config import distill_config, teacher_entry


def get_config(method: str = "sa_mdrad"):
    c = distill_config(method)
    c.dataset.update(name="digits", image_size=16, crop_pad=2, flip=False)
    c.model.update(name="resnet18", width=0.25, normalize="digits")
    c.train.update(epochs=6, batch_size=64)
    c.optim.update(lr=0.05, weight_decay=5e-4, schedule="cosine", boundaries=(), warmup_epochs=0.5)
    c.eval.batch_size = 360
    c.log.every_steps = 20
    c.teachers.resnet18 = teacher_entry("resnet18", "workdir/quickstart/teachers/resnet18", width=0.25,
                                        normalize="digits")
    c.teachers.wrn16 = teacher_entry("wrn16_4", "workdir/quickstart/teachers/wrn16", width=0.25,
                                     normalize="digits")
    return c
