"""Import faiss with a usable BLAS.

The faiss-cpu wheels bundle their own OpenBLAS (0.3.15 at the time of writing),
which does not recognise some recent or virtualised Intel CPUs and falls back to
its oldest x86 kernels ("Prescott", no AVX): exact k-NN then runs 3-4x slower
(measured: 886 vs 259 us per query at n = 50,000, d = 512 on an AVX-512 Xeon).
OpenBLAS reads ``OPENBLAS_CORETYPE`` once, when the library loads; before the
first ``import faiss`` we set it from the CPU's own flags, unless the user has
set it, or set ``GAUSSOOD_NO_BLAS_HINT=1`` to leave it alone.
"""

from __future__ import annotations

import os
import sys


def _core_type() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh
                          if line.startswith("flags")), [])
    except OSError:
        return None
    if "avx512f" in flags and "avx512bw" in flags:
        return "SkylakeX"
    if "avx2" in flags and "fma" in flags:
        return "Haswell"
    return None


def import_faiss():
    if ("faiss" not in sys.modules and "OPENBLAS_CORETYPE" not in os.environ
            and not os.environ.get("GAUSSOOD_NO_BLAS_HINT")):
        core = _core_type()
        if core is not None:
            os.environ["OPENBLAS_CORETYPE"] = core
    import faiss

    return faiss
