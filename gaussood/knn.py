"""Deep nearest-neighbour score (Sun et al., ICML 2022) with faiss."""

from __future__ import annotations

import math
import warnings
from numbers import Integral

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from ._base import BaseScorer
from ._conformal import duplicate_groups
from ._validation import check_positive_int, raise_nonfinite

INDEXES = ("flat", "ivf")
MAX_CALIBRATION_ROWS = 20_000  # leave-one-out calibration scores drawn from at most this many rows
SEARCH_ENTRIES = 2**22  # rows x k per faiss search (about 50 MB of results)


def l2_normalise(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm, as C-ordered float32 (zero rows stay zero).

    Rows whose float32 norm overflows or is tiny (values beyond float32's range, or
    near its smallest numbers) are first divided by their largest absolute value
    in float64, so they come out unit-norm too instead of NaN or zero.
    """
    X = np.asarray(X)
    with np.errstate(over="ignore", invalid="ignore"):
        X32 = np.asarray(X, dtype=np.float32)
        norms = np.linalg.norm(X32, axis=1, keepdims=True)
        out = X32 / np.maximum(norms, np.finfo(np.float32).tiny)
    bad = ~np.all(np.isfinite(out), axis=1) | (norms[:, 0] < 1e-15)
    if np.any(bad):
        rows = np.asarray(X[bad], dtype=np.float64)
        scale = np.max(np.abs(rows), axis=1, keepdims=True)
        rows = rows / np.where(scale > 0, scale, 1.0)
        length = np.linalg.norm(rows, axis=1, keepdims=True)
        out[bad] = rows / np.where(length > 0, length, 1.0)
    return np.ascontiguousarray(out)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _search_rows(k: int) -> int:
    """Query rows per faiss search so that its (rows, k) results stay near SEARCH_ENTRIES."""
    return max(1, SEARCH_ENTRIES // max(int(k), 1))


class KNNScorer(BaseScorer):
    """Out-of-distribution score from the k-th nearest neighbour.

    By default features are L2-normalised, z = x / ||x||, and the score is minus
    the cosine distance to the k-th nearest training feature,

        score_samples(x) = cos(z, z_(k)) - 1,

    the deep k-NN detector of Sun, Ming, Zhu & Li, "Out-of-Distribution
    Detection with Deep Nearest Neighbors", ICML 2022 (k = 50 on CIFAR-10).
    Neighbours come from faiss: an exact inner-product index ("flat") or an
    inverted-file index ("ivf": approximate, much faster for large n).

    With ``normalize=False`` the raw features are used and the score is minus
    the Euclidean distance to the k-th nearest training feature,
    ``-||x - x_(k)||``: the norm then counts, so inputs far off the norm shell
    (noise images, for one) are not mapped onto the ID directions.

    Parameters
    ----------
    n_neighbors : int, default=50
        k; clipped to the number of fitted samples with a warning.
    normalize : {True, "l2", "center-l2", False, None}, default=True
        Feature space, as every scorer's ``normalize``: True or "l2"
        L2-normalises features (cosine, as Sun et al.); "center-l2" subtracts
        the fit mean first (SSD); False or None: Euclidean on raw features.
    index : {"flat", "ivf"}, default="flat"
        "ivf" stores the normalised vectors as float16 (faiss ``SQfp16``).
    n_lists : int or None, default=None
        IVF cells; ``round(sqrt(n))`` by default.
    n_probe : int, default=16
        IVF cells visited per query (more: slower, closer to exact).
    alpha, contamination, calibration_folds, random_state, chunk_size
        As in ``GaussianScorer``.
    calibration : {"auto", "conformal"}, default="auto"
        There is no parametric law for k-NN distances: p-values and the alpha
        threshold are conformal, from leave-one-out scores of the training
        rows (of 20,000 of them, drawn with ``random_state``, when n is
        larger); "auto" means "conformal". ``calibrate(X_cal)`` switches to
        split conformal on a held-out set. There is no "cv+": its fold models
        would be one index per left-out row.

    Attributes
    ----------
    embeddings_ : ndarray (n, d) float32   training features (normalised if ``normalize``).
    n_neighbors_ : int                      k after clipping.

    Notes
    -----
    A training point scored against the training set finds itself among its
    neighbours; ``contamination`` thresholds use exactly that score path, as
    scikit-learn requires. The faiss index is rebuilt from ``embeddings_`` on
    unpickling and loading (for IVF, k-means is re-run with the same seed).
    faiss's bundled OpenBLAS may not recognise the CPU; see ``gaussood._faiss``
    for the ``OPENBLAS_CORETYPE`` hint set before faiss is first imported.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import KNNScorer
    >>> rng = np.random.default_rng(0)
    >>> knn = KNNScorer(n_neighbors=10, random_state=0).fit(rng.normal(size=(2000, 16)))
    >>> knn.score_samples(knn.embeddings_[:1]).round(2) > knn.score_samples(-knn.embeddings_[:1] + 5).round(2)
    array([ True])
    """

    _calibrations = ("conformal",)
    _parameter_hints = {
        **BaseScorer._parameter_hints,
        "calibration": "k-NN distances have no parametric law, and no 'cv+' either: its "
                       "fold models would be one index per left-out row (leave-one-out). "
                       "Use 'conformal' (the default), or calibrate(X_cal) with held-out "
                       "ID rows for split conformal",
    }
    _l2_inside = True  # _prepare L2-normalises in float32 (faiss inner product)
    _parameter_constraints = {
        **BaseScorer._parameter_constraints,
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "normalize": ["boolean", StrOptions({"l2", "center-l2"}), None],
        "index": [StrOptions(set(INDEXES))],
        "n_lists": [Interval(Integral, 1, None, closed="left"), None],
        "n_probe": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, n_neighbors=50, *, normalize=True, index="flat", n_lists=None,
                 n_probe=16, alpha=None, contamination=None, calibration="auto",
                 calibration_folds=5, random_state=None, chunk_size=4096):
        self.n_neighbors = n_neighbors
        self.normalize = normalize
        self.index = index
        self.n_lists = n_lists
        self.n_probe = n_probe
        self.alpha = alpha
        self.contamination = contamination
        self.calibration = calibration
        self.calibration_folds = calibration_folds
        self.random_state = random_state
        self.chunk_size = chunk_size

    def _fit_state(self, X, y=None):
        k = int(self.n_neighbors)
        if self.normalize and X.shape[1] == 1:
            raise ValueError(
                "Cosine k-NN (normalize=True) with n_features = 1 sees only the sign of "
                "the feature: every score would be 0. Use normalize=False (Euclidean) or GaussianScorer.")
        n = X.shape[0]
        if k >= n:  # as scikit-learn's LocalOutlierFactor: the k-th of the *other* rows
            warnings.warn(f"n_neighbors={k} is not less than the {n} fitted samples; using "
                          f"{n - 1} (n_neighbors_).", UserWarning, stacklevel=4)
            k = n - 1
        embeddings = self._prepare(X)
        state = {"embeddings_": embeddings, "n_neighbors_": k}
        state["_index"] = self._build_index(embeddings)
        return state

    def _prepare(self, X) -> np.ndarray:
        if self.normalize:
            return l2_normalise(X)
        # squared distances are float32 in faiss: |x| must keep them finite
        limit = math.sqrt(_FLOAT32_MAX) / (2.0 * math.sqrt(max(X.shape[1], 1)))
        if X.size and np.max(np.abs(X)) > limit:
            raise ValueError(
                f"X holds values up to {np.max(np.abs(X)):.3g}: KNNScorer(normalize=False) "
                f"compares float32 features by squared distance, which overflows beyond "
                f"|x| = {limit:.3g} at d = {X.shape[1]}. Rescale the features (the "
                "Euclidean k-NN score scales with them), or use normalize=True.")
        return np.ascontiguousarray(X, dtype=np.float32)

    def _kth_score(self, values: np.ndarray, found: np.ndarray) -> np.ndarray:
        """Score from faiss's k-th column: inner products (normalised) or squared L2."""
        values = values.astype(np.float64)
        if self.normalize:
            return np.clip(np.where(found, values, -1.0), -1.0, 1.0) - 1.0
        return -np.sqrt(np.clip(np.where(found, values, np.finfo(np.float64).max), 0.0, None))

    def _seed(self) -> int:
        rs = self.random_state
        return int(rs) if isinstance(rs, (int, np.integer)) else 1234

    def _quantizer_rows(self, n: int):
        """Rows that train the IVF coarse quantizer (None: all, or no quantizer).

        A seeded half of the rows. The other half supplies the leave-one-out
        calibration rows: k-means pulls centroids towards the rows it trains on, so
        those rows find their neighbours in the probed cells more often than fresh
        rows do, and calibrating on them under-estimates fresh k-NN distances (it
        flagged 7-9% at alpha 5% with n_probe = 1).
        """
        if self.index != "ivf" or n < 2:
            return None
        perm = np.random.default_rng(self._seed()).permutation(n)
        return np.sort(perm[:(n + 1) // 2])

    def _build_index(self, embeddings):
        from ._faiss import import_faiss

        faiss = import_faiss()

        n, d = embeddings.shape
        metric = faiss.METRIC_INNER_PRODUCT if self.normalize else faiss.METRIC_L2
        if self.index == "flat":
            index = faiss.IndexFlatIP(d) if self.normalize else faiss.IndexFlatL2(d)
        else:
            train = self._quantizer_rows(n)
            train = embeddings if train is None else embeddings[train]
            n_lists = self.n_lists or max(1, int(round(math.sqrt(n))))
            n_lists = min(n_lists, train.shape[0])
            # float16 storage: half the memory traffic, the same neighbours in practice
            index = faiss.index_factory(d, f"IVF{n_lists},SQfp16", metric)
            ivf = faiss.extract_index_ivf(index)
            ivf.cp.seed = self._seed()
            ivf.cp.min_points_per_centroid = 1
            index.train(train)
            ivf.nprobe = min(int(self.n_probe), n_lists)
        index.add(embeddings)
        return index

    def _score_chunk(self, X, cache):
        if not np.all(np.isfinite(X)):
            raise_nonfinite(X)
        k = self.n_neighbors_
        X = self._prepare(X)
        out = np.empty(X.shape[0])
        step = _search_rows(k)  # a large k: fewer rows per search, bounded result arrays
        for start in range(0, X.shape[0], step):
            values, ids = self._index.search(X[start:start + step], k)
            out[start:start + step] = self._kth_score(values[:, -1], ids[:, -1] >= 0)
        return out  # IVF may find fewer than k: those rows get the worst score

    def kneighbors(self, X, n_neighbors: int | None = None):
        """Similarities and indices of the nearest training rows.

        Returns ``(similarities, indices)``, each of shape (n, k), nearest
        first; indices point into ``embeddings_`` (-1 where an IVF search
        found fewer than k). Similarities are cosines with ``normalize=True``
        and minus Euclidean distances with ``normalize=False``.
        """
        from sklearn.utils.validation import check_is_fitted

        from ._validation import check_features

        check_is_fitted(self)
        X = check_features(self, X, reset=False)
        k = self.n_neighbors_ if n_neighbors is None else check_positive_int(n_neighbors, "n_neighbors")
        k = min(k, self.embeddings_.shape[0])
        self._validate_params()
        sims = np.full((X.shape[0], k), np.nan, dtype=np.float32)
        ids = np.full((X.shape[0], k), -1, dtype=np.int64)
        for start in range(0, X.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            sims[start:stop], ids[start:stop] = self._index.search(
                self._prepare(self._to_space(X[start:stop])), k)
        if not self.normalize:
            sims = -np.sqrt(np.clip(sims, 0.0, None))
        return sims, ids

    def _fit_with_calibration(self, X, y, *, moments_cache=None):
        """Leave-one-out scores: each training row against all the others.

        Refitting on folds would shrink the index and push every k-NN
        distance up; dropping the row itself keeps the calibration on the
        scale of the final model (leave-one-out, i.e. jackknife, conformal).
        A row repeated c times is left out with all its copies (its k-th
        neighbour is the (k + c)-th in the index), and scored once
        (``_conformal.drop_repeats``).

        Full conformal would rank a fresh row x among rows scored with x in the
        set: row i's k-th distance d_k(i) becomes max(d_(k-1)(i), |x - x_i|) when
        x falls among its k nearest, which happens with odds k / (n - 1); x is
        then, with odds (k - 1) / k, among the first k - 1, where it gives
        d_(k-1)(i). So each calibration row takes its (k-1)-th neighbour with
        odds k / (n - 1) (a seeded draw) and its k-th otherwise. Plain
        leave-one-out is conservative where k is near n (n = 500, alpha 5%, 8
        seeds: 4.3% flagged at k = 250 and 400, 3.1% at 480, 0.1% at 499);
        with the draw 5.0-5.6% for k from 10 to 499 (5.0-5.1% at k = 10, 50).
        """
        state = self._fit_state(X, y)
        k, embeddings, index = state["n_neighbors_"], state["embeddings_"], state["_index"]
        if k + 1 > embeddings.shape[0]:
            return super()._fit_with_calibration(X, y, moments_cache=moments_cache)
        n = embeddings.shape[0]
        groups = duplicate_groups(embeddings)  # equal in the index (x and 2x, cosine)
        copies = (np.ones(n, dtype=np.int64) if groups is None
                  else np.bincount(groups, minlength=n)[groups])
        rows = np.arange(n) if groups is None else np.flatnonzero(groups == np.arange(n))
        trained = self._quantizer_rows(n)
        if trained is not None:  # calibrate on rows the IVF quantizer did not see
            rows = np.setdiff1d(rows, trained)
        if rows.shape[0] > MAX_CALIBRATION_ROWS:  # keeps fit linear in n
            rows = np.sort(check_random_state(self.random_state).choice(
                rows, MAX_CALIBRATION_ROWS, replace=False))
        rows = rows[np.argsort(copies[rows], kind="stable")]  # similar searches together
        scores = np.full(rows.shape[0], np.nan)
        pick = np.random.default_rng(self._seed())
        short = 0
        start = 0
        while start < rows.shape[0]:
            width = min(k + int(copies[rows[start]]), n)  # the row's copies come first
            step = min(self.chunk_size, _search_rows(width))
            part = rows[start:start + step]
            part = part[copies[part] == copies[part[0]]]
            values, ids = index.search(embeddings[part], width)
            found = ids[:, -1] >= 0
            if width < k + copies[part[0]]:  # fewer than k other distinct rows
                found[:] = False
            kth = self._kth_score(values[:, -1], found)
            if k > 1:  # a fresh row falls among a row's k nearest with odds k / (n - 1)
                inside = pick.random(part.shape[0]) < k / (n - 1)
                prev = self._kth_score(values[:, -2], ids[:, -2] >= 0)
                kth = np.where(inside, prev, kth)
            scores[start:start + part.shape[0]] = kth
            short += int(np.sum(ids[:, -1] < 0))
            start += part.shape[0]
        if short > 0.01 * rows.shape[0]:
            warnings.warn(
                f"The IVF search found fewer than k+1 = {k + 1} neighbours for {short} of "
                f"{rows.shape[0]} calibration rows; their scores are the worst possible and "
                "the threshold will flag too little. Raise n_probe or lower n_lists.",
                UserWarning, stacklevel=3)
        aligned = np.full(embeddings.shape[0], np.nan)  # in row order; NaN: not a calibration row
        aligned[rows] = scores
        return state, aligned, None  # no fold models: hence no "cv+" for k-NN

    def _check_fitted_state(self, state):
        super()._check_fitted_state(state)
        emb = state.array("embeddings_", ("n", "d"), kind="f")
        if emb.shape[0] < 1:
            state.fail("embeddings_ is empty")
        if emb.dtype != np.float32:
            state.fail(f"embeddings_ has dtype {emb.dtype}; expected float32")
        state.integer("n_neighbors_", low=1, high=emb.shape[0])
        if self.normalize:
            norms = np.linalg.norm(emb, axis=1)
            if np.any((np.abs(norms - 1.0) > 1e-3) & (norms != 0)):
                state.fail("embeddings_ are not L2-normalised, but normalize=True")

    def _after_load(self):
        self._index = self._build_index(self.embeddings_)

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: never strip the live object
        state.pop("_index", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "embeddings_" in state:
            self._after_load()
