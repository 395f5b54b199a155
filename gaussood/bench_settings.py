"""The benchmark's settings, OOD sets and quick mode: one table for ``gaussood bench`` and
``benchmarks/cifar10_ood.py``.

- ``OOD_SETS``: name -> ``OODSpec`` (``load_dataset`` name, split, near/far, label);
  ``near_sets()`` the near ones (``gaussood bench --near``'s default).
- ``SETTINGS``: setting -> ``Setting`` (ID dataset, ID classes, default encoder file in
  ``benchmarks/checkpoints``, how to train it, OOD sets); the benchmark never trains.
- ``QUICK`` and ``quick``: the quick mode (one seed, at most 5,000 fit and 1,000 eval
  images per seed, small peer fits), and ``pool``: how many images a split is read with
  (twice the rows drawn per seed in quick mode; all otherwise).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["OODSpec", "Setting", "OOD_SETS", "SETTINGS", "QUICK", "near_sets", "quick", "pool",
           "held_out_pool"]


class OODSpec(NamedTuple):
    dataset: str           # name for gaussood.deep.load_dataset
    split: str
    kind: str              # "near" or "far"
    label: str


class Setting(NamedTuple):
    dataset: str           # the ID dataset
    classes: list | None   # ID classes (None: all); the other classes are the near OOD set
    encoder: str           # default encoder file, in benchmarks/checkpoints
    train_hint: str        # how to make that file
    ood: tuple = ()        # OOD_SETS keys (empty: the dataset's other classes)


OOD_SETS = {
    "cifar100": OODSpec("cifar100", "test", "near", "CIFAR-100 test"),
    "svhn": OODSpec("svhn", "test", "far", "SVHN test"),
    "fashion-mnist": OODSpec("fashion-mnist", "test", "far", "Fashion-MNIST test"),
    "mnist": OODSpec("mnist", "test", "far", "MNIST test"),
    "uniform-noise": OODSpec("uniform-noise", "test", "far", "uniform noise"),
    "gaussian-noise": OODSpec("gaussian-noise", "test", "far", "Gaussian noise"),
}

_FASHION_RECIPE = ("python benchmarks/train_encoder.py --threads 1 --dataset fashion-mnist "
                   "--model small --resolution 16:0.75,32 --temperature 0.2 --epochs 12")

SETTINGS = {
    "cifar10": Setting("cifar10", None, "cifar10-cpu-2x.pt",
                       "make train-2x  (the CPU recipe: small net, 16:0.75,32 px, T 0.2, 34,718 "
                       "steps; resumable)", tuple(OOD_SETS)),
    "open-set": Setting("cifar10", list(range(6)), "cifar10-cpu-c0to5-supcon-2x.pt",
                        "make train-open-set-supcon-2x  (the recipe with SupCon on the labels "
                        "of classes 0-5, 8,680 steps; resumable)"),
    "fashion-mnist": Setting("fashion-mnist", None, "fashion-mnist-cpu-rotneg.pt",
                             f"{_FASHION_RECIPE} --rotation negatives --name "
                             "fashion-mnist-cpu-rotneg",
                             ("cifar10-gray", "mnist", "uniform-noise", "gaussian-noise")),
    "fashion-open-set": Setting("fashion-mnist", list(range(6)),
                                "fashion-mnist-cpu-c0to5-rotneg.pt",
                                f"{_FASHION_RECIPE} --classes 0-5 --rotation negatives "
                                "--name fashion-mnist-cpu-c0to5-rotneg"),
}

# the quick mode: the first seed only, and at most these many rows
QUICK = {"n_fit": 5_000, "n_eval": 1_000, "ee_max": 1_000, "lof_max": 5_000}


def near_sets() -> list:
    """The names of the near OOD sets of ``OOD_SETS``."""
    return [name for name, spec in OOD_SETS.items() if spec.kind == "near"]


def quick(seeds, **sizes):
    """(the first seed, ``sizes`` capped by ``QUICK``): the quick mode of the benchmark."""
    unknown = set(sizes) - set(QUICK)
    if unknown:
        raise ValueError(f"quick: no quick-mode limit for {sorted(unknown)}")
    return list(seeds)[:1], {k: min(v, QUICK[k]) for k, v in sizes.items()}


def pool(n: int, quick_mode: bool) -> int | None:
    """Images read from a split of which ``n`` are drawn per seed: ``2 n`` in quick mode
    (a smaller read, still a random draw), None (all) otherwise."""
    return 2 * n if quick_mode else None


def held_out_pool(n_eval: int, calibrate, quick_mode: bool) -> int | None:
    """Held-out ID images to read: the evaluated ``n_eval`` and, for held-out calibration
    on N images (an int), N more; ``"rest"`` or None adds none (in quick mode the read is
    ``2 n_eval``, so "rest" leaves ``n_eval`` for calibration)."""
    extra = calibrate if isinstance(calibrate, int) else 0
    return pool(n_eval + extra, quick_mode)
