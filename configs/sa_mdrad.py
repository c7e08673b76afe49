"""SA-MDRAD on CIFAR-10 / CIFAR-100 / Tiny-ImageNet with a ResNet-18 or MobileNetV2 student.

The default teacher set of methods.md §2 (standard, non-robust, heterogeneous): WRN-34-10,
ResNet-50 and VGG-16-BN, each trained first with the teacher config of the same dataset into
`runs/<dataset>/teachers/<model>` (or imported from PyTorch, `sa-mdrad import-torch`):

  for t in wrn34_10 resnet50 vgg16_bn; do
    sa-mdrad train --config=configs/teacher_cifar10.py:$t --workdir=runs/cifar10/teachers/$t
  done
  sa-mdrad distill --config=configs/sa_mdrad.py:cifar10,resnet18 --workdir=runs/cifar10/sa_mdrad_resnet18

Schedule: the RSLAD/MTARD recipe — 300 epochs, lr 0.1 ×0.1 after 215, 260, 285, wd 2e-4, batch
128 (Tiny-ImageNet, 64×64: 200 epochs, ×0.1 after 100 and 150). ε = 8/255, PGD-10 of 2/255.
The best checkpoint is chosen by pgd20 accuracy on 1,000 held-out test points.
"""
from sa_mdrad_jax.config import ConfigError, distill_config, teacher_entry

DATASETS = ("cifar10", "cifar100", "tiny_imagenet")
STUDENTS = ("resnet18", "mobilenetv2")
TEACHERS = ("wrn34_10", "resnet50", "vgg16_bn")


def get_config(arg: str = "cifar10,resnet18"):
    dataset, student = (arg.split(",") + [""])[:2]
    student = student or "resnet18"
    if dataset not in DATASETS or student not in STUDENTS:
        raise ConfigError(f"configs/sa_mdrad.py:{arg}: expected '<dataset>,<student>' with dataset in "
                          f"{', '.join(DATASETS)} and student in {', '.join(STUDENTS)}.")
    c = distill_config("sa_mdrad")
    c.dataset.name = dataset
    c.model.update(name=student, normalize=dataset)
    c.train.batch_size = 128
    if dataset == "tiny_imagenet":
        c.train.epochs = 200
        c.optim.update(lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="piecewise", boundaries=(100, 150))
    else:
        c.train.epochs = 300
        c.optim.update(lr=0.1, momentum=0.9, weight_decay=2e-4, schedule="piecewise", boundaries=(215, 260, 285))
    c.eval.robust_points = 1000
    c.checkpoint.best_metric = "test_robust_accuracy"
    for t in TEACHERS:
        c.teachers[t] = teacher_entry(t, f"runs/{dataset}/teachers/{t}", normalize=dataset)
    return c
