"""CIFAR-10 OOD benchmark (the README's main job); same as `gaussood bench`.

    python benchmarks/cifar10_ood.py            # default: 3 seeds, <= 45 min on 2 CPU cores
    python benchmarks/cifar10_ood.py --quick    # < 5 min, run by CI
    python benchmarks/cifar10_ood.py --help

Writes benchmarks/results/cifar10_ood{,_quick}.json, .md and _hist.png.
See gaussood/deep/benchmark.py for what is measured and how.
"""

import sys

from gaussood.deep.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
