"""SA-MDRAD (or PGD-AT) student on digits from the quickstart's two teachers: the quickstart's students.

  sa-mdrad quickstart --workdir=workdir/quickstart          # trains teachers and both students
  sa-mdrad distill --config=configs/sa_mdrad_digits.py --workdir=workdir/sa_mdrad \\
      --config.teachers.resnet18.workdir=workdir/quickstart/teachers/resnet18 \\
      --config.teachers.wrn16.workdir=workdir/quickstart/teachers/wrn16
  (`:pgd_at` selects the PGD-AT baseline, which ignores the teachers.)

Built by `quickstart.student_config`, so it is exactly the config the quickstart trains its students
with (8×8 digits, resnet_tiny student, ε = 32/255, PGD-3, 6 epochs).
"""
from sa_mdrad_jax import quickstart


def get_config(method: str = "sa_mdrad"):
    qs = quickstart.get_config()
    dirs = {name: f"workdir/quickstart/teachers/{name}" for name in qs.teachers}
    return quickstart.student_config(qs, method, dirs)
