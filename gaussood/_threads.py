"""One BLAS/OpenMP thread per process, for process-parallel work.

When several worker processes share a few cores, BLAS and OpenMP thread pools
of their own oversubscribe them. Measured on a 2-core machine: a 256 x 256
``eigh`` with OpenBLAS on 2 threads, both cores busy, is 20-40x slower than
with 1 thread. Dask workers, benchmark processes and data-parallel training
ranks should each run with one BLAS thread (``threadpoolctl``, a scikit-learn
dependency, changes the pools of libraries already loaded; the environment
variables reach the ones loaded later, such as faiss's bundled OpenBLAS).
"""

from __future__ import annotations

import contextlib
import os

from threadpoolctl import threadpool_limits

# Read by OpenBLAS, MKL, OpenMP runtimes, Accelerate and numexpr when they load.
BLAS_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                 "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def blas_thread_env(n: int = 1) -> dict[str, str]:
    """Environment variables that give libraries loaded later ``n`` threads each.

    Pass them to child processes (``LocalCluster(env=...)``, ``subprocess``).
    """
    return {name: str(int(n)) for name in BLAS_ENV_VARS}


@contextlib.contextmanager
def limit_blas_threads(n: int = 1):
    """Context manager: at most ``n`` BLAS/OpenMP threads inside the block."""
    with threadpool_limits(limits=int(n)):
        yield


def pin_blas_threads(n: int = 1) -> None:
    """Limit this whole process to ``n`` BLAS/OpenMP threads, for good.

    Meant for the start of a worker process: sets the environment variables
    (for libraries loaded later) and limits the thread pools already loaded.
    """
    os.environ.update(blas_thread_env(n))
    threadpool_limits(limits=int(n))


# Largest d x d matrix decomposed on one thread by ``dense_decomposition_threads``.
# Measured: a 256 x 256 ``eigh`` takes 10-44 ms on one thread (quiet / busy) and
# 0.8-1.6 s with 2 OpenBLAS threads on 2 busy cores; a pool only pays off for
# matrices far larger than embedding covariances.
SMALL_DENSE_MAX = 1024


def dense_decomposition_threads(size: int):
    """Context manager for an ``eigh``/``cholesky``/``qr`` of a ``size`` x ``size`` matrix.

    One BLAS/OpenMP thread when ``size <= SMALL_DENSE_MAX`` (the pool's
    synchronisation costs more than it gains there, and on busy cores it stalls),
    the process's own setting above. Used around the covariance decompositions of
    the scorers and diagnostics; ``limit_blas_threads`` is the unconditional form.
    """
    if int(size) <= SMALL_DENSE_MAX:
        return limit_blas_threads(1)
    return contextlib.nullcontext()


# Largest fit (rows x features^2, about the multiply-adds of its moment products) run
# on one BLAS thread by ``fit_threads``: 1e10 is about 0.1 s on one core here. Below it
# a thread pool gains little on a quiet machine and stalls on a busy one (measured by
# benchmarks/speed.py --busy-only: busy/quiet fit time 4.0x with the pool).
SMALL_FIT_WORK = 1e10


def fit_threads(n_samples: int, n_features: int):
    """Context manager for a whole fit: one BLAS/OpenMP thread when the fit is small
    (``n_samples * n_features**2 <= SMALL_FIT_WORK``), the process's setting above."""
    if float(n_samples) * float(n_features) ** 2 <= SMALL_FIT_WORK:
        return limit_blas_threads(1)
    return contextlib.nullcontext()
