"""Shared bits of the benchmark scripts: environment record and result writing."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    import numpy
    import scipy
    import sklearn

    import gaussood

    env = {"python": platform.python_version(), "numpy": numpy.__version__,
           "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
           "gaussood": gaussood.__version__, "platform": platform.platform(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        import torch
        import torchvision

        env.update({"torch": torch.__version__, "torchvision": torchvision.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    except ImportError:
        pass
    return env


def write_results(name: str, result: dict, table: str, folder: Path = RESULTS) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (folder / f"{name}.md").write_text(table.rstrip() + "\n")
    print(table)
    print(f"\nwrote {folder / name}.json and .md")
