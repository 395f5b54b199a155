"""Fit and score on Dask arrays: data bigger than memory, on one machine or a cluster.

Needs ``dask[array]`` (and ``distributed`` for a cluster): ``pip install
"gaussood[dask]"``. Only this module imports dask; ``import gaussood`` never does.

``fit(scorer, X, y=None)``
    X is a dask array chunked by rows (any row chunks, one chunk across the
    features; other column chunking is merged), a ``.npy`` memmap
    (``np.load(path, mmap_mode="r")``, read chunk by chunk from its file), or
    a numpy array. For ``GaussianScorer`` (pooled, or class-conditional with
    labels ``y``) and ``NormShellScorer``, each chunk's moments
    (``gaussood._moments``) are computed where the chunk lives, reduced in a
    tree (``split_every`` chunks per merge) and finalised once on the client by
    the scorer's own code: the model equals an in-memory ``fit`` up to rounding
    (1e-10 relative for float64 input, 1e-6 for float32), ``offset_`` included
    under the parametric laws ("f", "chi2", "shell").
    Conformal calibration (``calibration="conformal"``, and what ``"auto"``
    picks for shrunk covariances and the norm shell, even where it would pick
    "cv+" in memory) is split conformal on held-out *rows*: exactly
    k = min(calibration_rows, n // calibration_folds) rows, chosen by a keyed
    pseudo-random permutation of the global row index (key from
    ``random_state``), so the choice depends neither on the row order within
    the file (a file sorted by class gives the same share of every class) nor
    on the chunking. In the one pass over the chunks each chunk sums the
    moments of its held-out rows and of its other rows apart; the model fitted
    on the other rows scores the held-out rows in a second pass, and those
    scores calibrate the p-values. The final model, as with the in-memory
    cross-conformal fit, uses every row (both sums merged). At most 1 in
    ``calibration_folds`` rows is held out, so the calibration model sees at
    least as many rows as an in-memory fold model; too few rows to hold out
    one, or to fit the calibration model, is a ValueError.
    ``contamination`` needs the scores of every
    training row: a second pass, and n float64 values on the client.
    ``KNNScorer`` needs its whole bank in an index anyway: the rows are read
    chunk by chunk into one float32 array on the client and ``KNNScorer.fit``
    builds the faiss index once (flat, or IVF as ``KNNScorer`` builds it).
    Every other registered scorer is fitted the same way (rows gathered on the
    client, then its own ``fit``); ``supported_scorers()`` says which route each
    registered scorer takes. Unregistered scorers (``PValueCombination``) are a
    TypeError.
    Not supported: ``n_clusters`` (k-means needs all rows at once; give labels),
    ``calibration="cv+"`` (fit in memory for CV+, or use "conformal"; its
    calibration model misses the held-out rows, so at high d / n it is weaker
    than the final model, as CV+'s fold models are: then call
    ``calibrate(X_cal)`` with held-out ID rows).

``score_samples``, ``decision_function``, ``predict``, ``pvalue``
    Lazy dask arrays with the values of the in-memory methods (for a scorer
    fitted in memory with "cv+" too: its fold models travel with it). The fitted
    scorer is shipped to the workers once per call (scattered to every worker
    when a ``distributed`` client is active, else one graph key), not once per
    chunk; a ``KNNScorer`` travels with its serialised faiss index, so workers
    do not rebuild (or re-train) it.

``from_npy(path, chunk_rows)``
    A ``.npy`` file as a dask array whose tasks read only their own rows from
    disk (a numpy memmap given to ``da.from_array`` would be pickled, data and
    all, into the graph). For zarr stores use ``dask.array.from_zarr``.

``pin_blas_threads(client, n=1)``, ``blas_thread_env(n=1)``
    One BLAS/OpenMP thread per worker (``gaussood._threads``): the first for
    running workers, the second as environment variables for new ones
    (``LocalCluster(env=blas_thread_env(1))``); start workers with one thread
    each as well (``threads_per_worker=1``).

Example (see docs/scale.md)::

    from distributed import Client, LocalCluster
    import gaussood.dask as gd
    from gaussood import GaussianScorer

    with LocalCluster(n_workers=2, threads_per_worker=1, env=gd.blas_thread_env(1)) as cluster, \
            Client(cluster) as client:
        gd.pin_blas_threads(client)
        X = gd.from_npy("embeddings.npy", chunk_rows=65536)
        scorer = gd.fit(GaussianScorer(), X)
        flags = gd.predict(scorer, X) == -1
        print(float(flags.mean().compute()))
"""

from __future__ import annotations

import functools
import uuid
import warnings
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from . import _law_check
from ._base import atomic_update
from ._registry import registered_scorers, scorer_class
from ._dask_moments import (SPLIT_EVERY, _calibration_rows, _merge, _split_moments, _tree,
                            _whitened_shell_states)
from ._threads import blas_thread_env
from ._threads import pin_blas_threads as _pin_process
from .gaussian import GaussianScorer
from . import _space
from .knn import KNNScorer
from .norm_shell import NormShellScorer

try:
    import dask
    import dask.array as da
except ImportError:  # pragma: no cover - exercised where dask is absent
    dask = da = None

__all__ = ["fit", "score_samples", "decision_function", "predict", "pvalue", "from_npy",
           "as_dask_array", "supported_scorers", "pin_blas_threads", "blas_thread_env"]

CHUNK_BYTES = 64 * 2**20       # default row chunk: about 64 MB
CALIBRATION_ROWS = 20_000      # default held-out rows for conformal calibration
_MOMENT_KEYS = ("count", "mean", "scatter", "third", "fourth")


def _require_dask():
    if da is None:
        raise ImportError('gaussood.dask needs dask: pip install "gaussood[dask]" '
                          '(dask[array] and distributed).')


# ----------------------------------------------------------------------- input
class _NpyRows:
    """Array-like view of a C-ordered 2-D array in a file: ``[rows, cols]``
    reads only those rows (``np.fromfile`` at an offset), never the whole file.
    Pickles as a path, so a dask graph built on it stays small."""

    def __init__(self, path, offset, shape, dtype):
        self.path, self.offset = str(path), int(offset)
        self.shape, self.dtype = tuple(int(s) for s in shape), np.dtype(dtype)
        self.ndim = 2

    def __getitem__(self, key):
        rows, cols = (key + (slice(None),))[:2] if isinstance(key, tuple) else (key, slice(None))
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise IndexError("_NpyRows takes a contiguous row slice.")
        start, stop, _ = rows.indices(self.shape[0])
        count = max(stop - start, 0)
        row_bytes = self.shape[1] * self.dtype.itemsize
        if count == 0:
            block = np.empty((0, self.shape[1]), dtype=self.dtype)
        else:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset + start * row_bytes)
                block = np.fromfile(fh, dtype=self.dtype, count=count * self.shape[1])
            block = block.reshape(count, self.shape[1])
        return block[:, cols]


def _default_chunk_rows(n_features, itemsize):
    return max(1, CHUNK_BYTES // max(1, n_features * itemsize))


def from_npy(path, chunk_rows: int | None = None):
    """A 2-D ``.npy`` file as a dask array chunked by rows, read chunk by chunk.

    Each task opens the file and reads its own ``chunk_rows`` rows (default:
    about 64 MB per chunk); nothing else of the file is loaded.
    """
    _require_dask()
    mm = np.load(path, mmap_mode="r")
    if mm.ndim != 2 or not mm.flags.c_contiguous:
        raise ValueError(f"{path}: expected a C-ordered 2-D array; got shape {mm.shape}.")
    reader = _NpyRows(Path(path).resolve(), mm.offset, mm.shape, mm.dtype)
    del mm
    return _from_reader(reader, chunk_rows)


def _from_reader(reader, chunk_rows):
    n, d = reader.shape
    rows = int(chunk_rows or _default_chunk_rows(d, reader.dtype.itemsize))
    meta = np.empty((0, 0), dtype=reader.dtype)
    return da.from_array(reader, chunks=(rows, d), meta=meta, asarray=False, fancy=False,
                         name=f"gaussood-npy-{uuid.uuid4().hex}")


def _memmap_reader(X: np.memmap):
    """A file reader for a C-contiguous memmap (also for row slices of one)."""
    import mmap

    base = getattr(X, "_mmap", None)
    if X.ndim != 2 or not X.flags.c_contiguous or base is None or not X.filename:
        raise ValueError(
            "A memmap must be a C-contiguous 2-D array mapped from a file; use "
            "gaussood.dask.from_npy(path) or dask.array.from_zarr for other layouts.")
    start = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY
    base_address = np.frombuffer(base, dtype=np.uint8).ctypes.data
    offset = start + (X.ctypes.data - base_address)
    return _NpyRows(X.filename, offset, X.shape, X.dtype)


def as_dask_array(X, chunk_rows: int | None = None):
    """X as a 2-D dask array chunked by rows only (float32/float64 kept, other
    numbers as float64). A numpy memmap is read from its file chunk by chunk."""
    _require_dask()
    if isinstance(X, np.memmap):
        X = _from_reader(_memmap_reader(X), chunk_rows)
    elif isinstance(X, np.ndarray):
        rows = chunk_rows or _default_chunk_rows(X.shape[-1] if X.ndim else 1, X.dtype.itemsize)
        X = da.from_array(X, chunks=(rows,) + (-1,) * (X.ndim - 1))
    elif not isinstance(X, da.Array):
        raise TypeError(f"X must be a dask array, a numpy memmap or array; got {type(X).__name__}.")
    elif chunk_rows is not None:
        X = X.rechunk({0: int(chunk_rows)})
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_samples, n_features); got shape {X.shape}.")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"X must hold real numbers; got dtype {X.dtype}.")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown chunk sizes; call X.compute_chunk_sizes() first.")
    return X


def _as_labels(y, X):
    if isinstance(y, np.ndarray) or not isinstance(y, da.Array):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}); "
                             f"got shape {y.shape}.")
        return da.from_array(y, chunks=(X.chunks[0],))
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be 1-D with one label per row of X ({X.shape[0]}); "
                         f"got shape {y.shape}.")
    return y.rechunk((X.chunks[0],))


def _blocks(X, y=None):
    xs = list(X.to_delayed().ravel())
    ys = [None] * len(xs) if y is None else list(y.to_delayed().ravel())
    return xs, ys


def _row_starts(X):
    return np.concatenate([[0], np.cumsum(X.chunks[0])]).astype(int)


def _sub_model(scorer, state):
    """A copy of the fitted scorer with ``state`` in place of its own."""
    model = object.__new__(type(scorer))
    model.__dict__.update(scorer.__dict__)
    model.__dict__.update(state)
    return model


# -------------------------------------------------------------------------- fit
def fit(scorer, X, y=None, *, calibration_rows: int = CALIBRATION_ROWS,
        split_every: int = SPLIT_EVERY):
    """Fit ``scorer`` (unfitted or not) on a dask array; returns the scorer.

    The result equals ``scorer.fit(X.compute(), y)`` (see the module doc for
    conformal calibration, which holds out ``min(calibration_rows, n //
    calibration_folds)`` rows chosen by their index). On error the scorer
    keeps its previous state.
    """
    _require_dask()
    route = _fit_route(type(scorer))
    if route is None:
        raise TypeError("gaussood.dask.fit takes a registered scorer ("
                        f"{', '.join(c.__name__ for c in registered_scorers().values())}); "
                        f"got {type(scorer).__name__}.")
    if route == "gathered":
        return _fit_gathered(scorer, X, y)
    X = as_dask_array(X)
    n, d = X.shape
    gaussian = isinstance(scorer, GaussianScorer)
    if y is not None and not gaussian:
        y = None  # as in-memory: NormShellScorer.fit ignores y
    with atomic_update(scorer):
        rule, alpha = scorer._resolve_threshold()
        if scorer.calibration == "cv+":
            raise ValueError(
                "gaussood.dask.fit does not do calibration='cv+' (it would fit and keep "
                "a model per fold and score the rows with each). Fit in memory for CV+, "
                "or use calibration='conformal' (on dask: held-out rows scored by a "
                "model fitted on the others, close to the final model when they are a "
                "small share of the rows), or call calibrate(X_cal) afterwards with "
                "held-out ID rows (split conformal, exact).")
        if gaussian:
            scorer._validate_params()
            if y is None and scorer.n_clusters is not None:
                raise ValueError("gaussood.dask.fit does not run k-means (n_clusters): "
                                 "give class labels y, or fit in memory.")
            if y is not None and scorer.n_clusters is not None:
                warnings.warn("fit got labels y: class-conditional fit, n_clusters ignored.",
                              UserWarning, stacklevel=2)
        else:
            if not isinstance(scorer.whiten, (bool, np.bool_)):
                raise TypeError(f"whiten must be True or False; got {scorer.whiten!r}.")
            from .covariance import check_covariance_param
            check_covariance_param(scorer.covariance)
        if n < 2:
            raise ValueError(f"Found array with {n} sample(s) while a minimum of 2 is required.")
        scorer._clear_fitted()
        scorer.n_features_in_ = d
        scorer._check_space()
        raw = X  # scored by models (they apply the space themselves)
        X = _in_space(scorer, X)  # the moments are of the rows in the scorer's space
        labels = None if y is None else _as_labels(y, X)
        structure = "class" if labels is not None else "single"

        maybe_conformal = scorer.calibration in ("conformal", "auto")
        held = _calibration_rows(scorer, n, calibration_rows) if maybe_conformal else None
        xs, ys = _blocks(X, labels)
        starts = _row_starts(X)
        leaves = [dask.delayed(_split_moments, pure=True, nout=2)(xb, yb, not gaussian, held,
                                                                   int(start))
                  for xb, yb, start in zip(xs, ys, starts)]
        rest = _tree([leaf[0] for leaf in leaves], split_every)
        cal = _tree([leaf[1] for leaf in leaves], split_every) if held is not None else None
        rest, cal = dask.compute(rest, cal)
        total = _merge(rest, cal)
        moments, classes, norms = total
        if not (np.all(np.isfinite(moments["mean"])) and np.all(np.isfinite(moments["scatter"]))):
            raise ValueError("Input X contains NaN or infinity.")
        if norms is not None:
            _warn_if_normalised(scorer, norms, n, d)

        calibration = scorer.calibration
        if calibration == "auto":
            calibration = scorer._auto_calibration(n, d, classes if labels is not None else None)
            if calibration == "cv+":  # not on dask: its held-out-rows calibration
                calibration = "conformal"
        if calibration == "conformal" and held is None:
            raise ValueError(
                f"Conformal calibration on dask holds out at most 1 in calibration_folds="
                f"{scorer.calibration_folds} rows, and X has only {n} rows: too few to hold "
                "out any. Give more rows, or use a parametric calibration.")

        def state_of(part, quiet=False):
            with warnings.catch_warnings():
                if quiet:
                    warnings.simplefilter("ignore", UserWarning)
                if gaussian:
                    m, k, _ = part
                    if m["count"].sum() <= k.shape[0]:
                        raise ValueError(
                            f"A tied covariance needs more samples than components: got "
                            f"{int(m['count'].sum())} samples for {k.shape[0]} components.")
                    return scorer._state_from_moments(m, k, structure)
                return _shell_state(scorer, part)

        if gaussian or not scorer.whiten:
            state = state_of(total)
            cal_state = None
            if calibration == "conformal":
                try:
                    cal_state = state_of(rest, quiet=True)
                except ValueError as exc:
                    raise ValueError(
                        f"Conformal calibration fits a model on the {n - held.k} rows "
                        f"that are not among the {held.k} held-out rows, and that fit "
                        f"fails: {exc} Give more rows (per class), lower calibration_rows, "
                        "or use a parametric calibration.") from None
        else:
            state, cal_state = _whitened_shell_states(
                scorer, xs, starts, total, rest if calibration == "conformal" else None,
                held, split_every)
        scorer.__dict__.update(state)
        scorer.alpha_, scorer.threshold_rule_ = alpha, rule
        scorer.calibration_, scorer.calibration_scores_ = calibration, None
        if calibration == "conformal":
            scorer.calibration_scores_ = _held_out_scores(
                _sub_model(scorer, cal_state), _blocks(raw)[0], starts, held)
        if rule == "contamination":
            scores = score_samples(scorer, raw).compute()
            scorer.offset_ = float(np.percentile(scores, 100.0 * scorer.contamination))
        else:
            scorer.offset_ = scorer._alpha_offset(alpha)
        if gaussian and calibration in ("f", "chi2"):  # as in memory: GaussianScorer.fit
            rows = _law_check.check_rows(n)
            codes = None if labels is None else np.searchsorted(
                classes, np.asarray(labels[rows].compute()))
            _law_check.record(scorer, np.asarray(X[rows].compute()), codes, stacklevel=3)
    return scorer


def _in_space(scorer, X):
    """X in the scorer's feature space (``normalize``), lazily; sets the centre of
    "center-l2" (the mean of all rows, one pass) on the scorer."""
    space = scorer._normalize()
    if space is None:
        return X
    if space == "center-l2":
        setattr(scorer, _space.CENTER, X.mean(axis=0, dtype=np.float64).compute())
    transform = functools.partial(_space.to_space, normalize=space,
                                  mean=getattr(scorer, _space.CENTER, None))
    return X.map_blocks(transform, dtype=X.dtype)


def _moment_tuple(moments):
    return tuple(moments[k][0] for k in _MOMENT_KEYS)


def _shell_state(scorer, part):
    moments, _, _ = part
    if moments["count"][0] < 2:
        raise ValueError("NormShellScorer needs at least 2 samples.")
    return scorer._state_from_moments(_moment_tuple(moments))


def _score_held_out(block, payload, rows, start):
    block = block[rows.mask(start, start + block.shape[0])]
    if block.shape[0] == 0:
        return np.empty(0)
    return _unwrap(payload).score_samples(block)


def _held_out_scores(model, xs, starts, rows):
    """Sorted scores of the held-out rows by ``model`` (fitted without them):
    one more pass over the chunks, each scoring only its own held-out rows."""
    shipped = _ship(model)
    parts = dask.compute(*[dask.delayed(_score_held_out, pure=True)(xb, shipped, rows,
                                                                    int(start))
                           for xb, start in zip(xs, starts)])
    scores = np.sort(np.concatenate(parts))
    if scores.shape[0] != rows.k:  # the row selection is a permutation: exactly k
        raise RuntimeError(f"scored {scores.shape[0]} held-out rows; expected {rows.k}.")
    return scores


def _warn_if_normalised(scorer, norms, n, d):
    count, total, total_sq = norms
    mean = total / count
    std = np.sqrt(max(total_sq / count - mean**2, 0.0))
    if n > 2 and d > 1 and mean > 0 and std < 1e-5 * mean:
        warnings.warn(
            "All inputs have the same norm (L2-normalised features?). The "
            "norm-shell score is meaningless on a sphere: pass unnormalised "
            "embeddings, or use GaussianScorer / KNNScorer.", UserWarning, stacklevel=3)


def _gather_rows(X, dtype):
    """Rows of a dask array into one numpy array, filled chunk by chunk
    (at most a few chunks in flight besides the result)."""
    out = np.empty(X.shape, dtype=dtype)
    blocks = list(X.astype(dtype).to_delayed().ravel())
    starts = np.concatenate([[0], np.cumsum(X.chunks[0])])
    batch = 8
    for i in range(0, len(blocks), batch):
        for j, block in enumerate(dask.compute(*blocks[i:i + batch]), start=i):
            out[starts[j]:starts[j + 1]] = block
    return out


def _fit_gathered(scorer, X, y):
    """Every scorer without a moments route (``KNNScorer``, new registered scorers): the
    rows gathered chunk by chunk into one array on the client (float32 for a k-NN bank,
    what its index stores), then the scorer's own ``fit``."""
    X = as_dask_array(X)
    dtype = np.float32 if isinstance(scorer, KNNScorer) else X.dtype
    if y is not None and scorer._fit_uses_labels:
        y = np.asarray(y.compute() if hasattr(y, "compute") else y)
        return scorer.fit(_gather_rows(X, dtype), y)
    return scorer.fit(_gather_rows(X, dtype))


def _fit_route(cls) -> str | None:
    """How ``fit`` fits an instance of ``cls`` on a dask array: "moments" (per-chunk
    moments merged in a tree), "gathered" (rows gathered on the client, then ``fit``),
    or None (not a registered scorer, e.g. ``PValueCombination``: not supported)."""
    if issubclass(cls, (GaussianScorer, NormShellScorer)):
        return "moments"
    return "gathered" if scorer_class(cls.__name__) is cls else None


def supported_scorers() -> dict:
    """``{short name: "moments" or "gathered"}``: how ``fit`` fits each registered scorer
    (``gaussood.registered_scorers()``). "moments": each chunk's moments are computed
    where it lives and merged in a tree, so no more than a chunk is in memory at once;
    "gathered": the rows are read chunk by chunk into one array on the client and the
    scorer's own ``fit`` runs there. Scoring is distributed for every scorer."""
    return {name: _fit_route(cls) for name, cls in registered_scorers().items()}


# ---------------------------------------------------------------------- scoring
class _ShippedKNN:
    """A fitted KNNScorer in transit: its faiss index travels serialised and is
    deserialised on arrival (a plain pickle would rebuild, or re-train, it on
    every worker). The training rows stay behind: the index holds them. Stays
    wrapped on the workers, so that a copy from worker to worker travels the
    same way."""

    def __init__(self, scorer):
        self.scorer = scorer

    def __reduce__(self):
        from ._faiss import import_faiss

        state = {k: v for k, v in self.scorer.__dict__.items()
                 if k not in ("_index", "embeddings_")}
        index = import_faiss().serialize_index(self.scorer._index)
        return _unship_knn, (type(self.scorer), state, index)


def _unship_knn(cls, state, index):
    from ._faiss import import_faiss

    scorer = object.__new__(cls)
    scorer.__dict__.update(state)
    scorer._index = import_faiss().deserialize_index(index)
    return _ShippedKNN(scorer)


def _unwrap(payload):
    return payload.scorer if isinstance(payload, _ShippedKNN) else payload


def _ship(scorer):
    """The fitted scorer as one graph argument: scattered to every worker
    when a distributed client is active, else a single graph key."""
    payload = _sub_model(scorer, {})  # later changes to ``scorer`` do not leak in
    if isinstance(scorer, KNNScorer):
        payload = _ShippedKNN(payload)
    try:
        from distributed import default_client

        client = default_client()
    except (ImportError, ValueError):
        client = None
    key = f"gaussood-scorer-{uuid.uuid4().hex}"
    if client is not None:
        return client.scatter({key: payload}, broadcast=True, hash=False)[key]
    return dask.delayed(payload, name=key, traverse=False)


def _apply(block, payload, method):
    return getattr(_unwrap(payload), method)(block)


def _map_rows(scorer, X, method, dtype):
    _require_dask()
    check_is_fitted(scorer)
    X = as_dask_array(X)
    if X.shape[1] != scorer.n_features_in_:
        raise ValueError(f"X has {X.shape[1]} features, but {type(scorer).__name__} is "
                         f"expecting {scorer.n_features_in_} features as input.")
    return X.map_blocks(_apply, _ship(scorer), method, drop_axis=1, dtype=dtype,
                        meta=np.empty((0,), dtype=dtype))


def score_samples(scorer, X):
    """Lazy ``scorer.score_samples`` of each row: a float64 dask array."""
    return _map_rows(scorer, X, "score_samples", np.float64)


def decision_function(scorer, X):
    """Lazy ``scorer.decision_function``: negative for flagged rows."""
    return _map_rows(scorer, X, "decision_function", np.float64)


def predict(scorer, X):
    """Lazy ``scorer.predict``: +1 inlier, -1 outlier."""
    return _map_rows(scorer, X, "predict", np.dtype(int))


def pvalue(scorer, X):
    """Lazy ``scorer.pvalue``: p-values under the in-distribution null."""
    return _map_rows(scorer, X, "pvalue", np.float64)


# ---------------------------------------------------------------------- workers
def pin_blas_threads(client, n: int = 1) -> None:
    """One BLAS/OpenMP thread (``n``) in every worker of ``client``, present and future."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class PinBLASThreads(WorkerPlugin):
        name = "gaussood-pin-blas-threads"

        def __init__(self, n_threads):
            self.n_threads = n_threads

        def setup(self, worker):
            _pin_process(self.n_threads)

    client.register_plugin(PinBLASThreads(int(n)))
