"""Where a result was produced: versions, CPU and device (for benchmark JSON files)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Versions of the stack (torch and pytorch-ood when installed), platform, CPU."""
    import numpy
    import scipy
    import sklearn

    from . import __version__

    env = {"python": platform.python_version(), "numpy": numpy.__version__,
           "scipy": scipy.__version__, "scikit-learn": sklearn.__version__,
           "gaussood": __version__, "platform": platform.platform(),
           "cpu": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        import torch
        import torchvision

        env.update({"torch": torch.__version__, "torchvision": torchvision.__version__,
                    "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None})
    except ImportError:
        pass
    try:
        import pytorch_ood

        env["pytorch-ood"] = getattr(pytorch_ood, "__version__", "unknown")
    except ImportError:
        pass
    return env
