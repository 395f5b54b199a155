"""The chunk side of ``gaussood.dask.fit``: moments of each chunk, their tree reduction,
and the rows held out for conformal calibration, chosen by global row index.

Every function here runs on numpy blocks (on a worker) or builds delayed tasks from
them; ``gaussood.dask`` holds the public API, input and scoring. See its docstring for
what the held-out rows are and why they do not depend on row order or chunking.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.utils import check_random_state

from ._moments import compute_moments, merge_moments
from ._validation import check_labels
from .gaussian import GaussianScorer

try:
    import dask
except ImportError:  # pragma: no cover - gaussood.dask says what to install
    dask = None

SPLIT_EVERY = 8                # moments merged per task in the tree reduction


def _chunk_moments(block, labels, with_norms):
    """(moments, keys, norm sums) of one chunk; None for an empty chunk."""
    if block.shape[0] == 0:
        return None
    if labels is None:
        moments, keys = compute_moments(block, None, 1), np.array([0])
    else:
        labels = check_labels(labels, block.shape[0])
        keys, codes = np.unique(labels, return_inverse=True)
        moments = compute_moments(block, codes, keys.shape[0])
    norms = None
    if with_norms:  # for NormShellScorer's "L2-normalised input" warning
        r = np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))
        norms = np.array([r.shape[0], r.sum(), r @ r])
    return moments, keys, norms


def _split_moments(block, labels, with_norms, rows, start):
    """(moments of the fit rows, moments of the held-out rows) of one chunk, the
    held-out rows being those of ``rows`` (a ``_CalibrationRows``, or None: none)."""
    if rows is None:
        return _chunk_moments(block, labels, with_norms), None
    held = rows.mask(start, start + block.shape[0])
    labels = None if labels is None else np.asarray(labels)
    return tuple(_chunk_moments(block[m], None if labels is None else labels[m], with_norms)
                 for m in (~held, held))


def _whitened_norm_moments(block, location_whitener, rows=None, start=0):
    """Moments of the squared whitened norms of a chunk (as a 1-column array);
    of its fit rows only when ``rows`` (the held-out rows) is given."""
    location, whitener = location_whitener
    if rows is not None:
        block = block[~rows.mask(start, start + block.shape[0])]
        if block.shape[0] == 0:
            return None
    Z = (block - location) @ whitener
    r2 = np.einsum("ij,ij->i", Z, Z)
    return compute_moments(r2[:, None], None, 1), np.array([0]), None


def _merge(*parts):
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    moments, keys, norms = parts[0]
    for other, other_keys, other_norms in parts[1:]:
        moments, keys = merge_moments(moments, keys, other, other_keys)
        norms = None if norms is None else norms + other_norms
    return moments, keys, norms


def _tree(nodes, split_every=SPLIT_EVERY):
    """Tree reduction of delayed partial moments (``split_every`` per merge task)."""
    nodes = list(nodes)
    if not nodes:
        return None
    while len(nodes) > 1:
        nodes = [dask.delayed(_merge, pure=True)(*nodes[i:i + split_every])
                 for i in range(0, len(nodes), split_every)]
    return nodes[0]


_MASK64 = 0xFFFFFFFFFFFFFFFF


def _mix64(x):
    """splitmix64's finaliser on a uint64 array (wraps modulo 2**64)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _CalibrationRows:
    """The rows held out for conformal calibration: exactly ``k`` of ``n``,
    chosen by the global row index alone (so not by row order within the file,
    nor by the chunking, nor by which worker reads which chunk).

    Row i is held out when ``perm(i) < k``, where ``perm`` is a keyed
    pseudo-random permutation of range(n): a 4-round Feistel network on the
    next even number of bits, cycle-walked back into range(n). Each chunk
    computes its own rows' membership from its row offset; nothing travels but
    (n, k, key).
    """

    def __init__(self, n, k, key):
        self.n, self.k = int(n), int(k)
        bits = max(2, (self.n - 1).bit_length())
        bits += bits % 2
        self._half = np.uint64(bits // 2)
        self._low = np.uint64((1 << (bits // 2)) - 1)
        keys = np.arange(4, dtype=np.uint64) + np.uint64(int(key) & _MASK64)
        self._round_keys = _mix64(keys * np.uint64(0x9E3779B97F4A7C15))

    def _feistel(self, x):
        left, right = x >> self._half, x & self._low
        for round_key in self._round_keys:
            left, right = right, left ^ (_mix64(right ^ round_key) & self._low)
        return (left << self._half) | right

    def permute(self, rows):
        y = self._feistel(np.asarray(rows, dtype=np.uint64))
        out = y >= self.n
        while out.any():  # cycle walking: a bijection of range(2**bits) restricted to range(n)
            y[out] = self._feistel(y[out])
            out = y >= self.n
        return y

    def mask(self, start, stop):
        """Boolean mask of the held-out rows among global rows start..stop-1."""
        return self.permute(np.arange(start, stop, dtype=np.uint64)) < self.k


def _calibration_rows(scorer, n, calibration_rows):
    """The held-out rows: min(calibration_rows, n // calibration_folds) of them
    (None when that is 0)."""
    if (isinstance(calibration_rows, (bool, np.bool_))
            or not isinstance(calibration_rows, (int, np.integer)) or calibration_rows < 1):
        raise ValueError(f"calibration_rows must be a positive integer; got {calibration_rows!r}.")
    k = min(int(calibration_rows), n // int(scorer.calibration_folds))
    if k < 1:
        return None
    key = check_random_state(scorer.random_state).randint(0, np.iinfo(np.int64).max,
                                                          dtype=np.int64)
    return _CalibrationRows(n, k, key)


def _whitened_shell_states(scorer, xs, starts, total, rest, rows, split_every):
    """Whitened shell: a Gaussian from the moments, then one more pass for the
    squared whitened norms (of all rows, and of the fit rows for calibration)."""
    def gaussian_of(part):
        gauss = GaussianScorer(scorer.covariance, calibration="chi2")
        state = gauss._state_from_moments(part[0], np.array([0]), "single")
        return state["location_"], state["whitener_"]

    fits = {"all": (gaussian_of(total), None, total)}
    if rest is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            fits["rest"] = (gaussian_of(rest), rows, rest)
    trees = {}
    for name, (lw, held, _) in fits.items():
        shipped = dask.delayed(lw, pure=True, traverse=False)
        trees[name] = _tree([dask.delayed(_whitened_norm_moments, pure=True)(
            xb, shipped, held, int(start)) for xb, start in zip(xs, starts)], split_every)
    computed = dict(zip(trees, dask.compute(*trees.values())))
    states = {}
    for name, ((location, whitener), _, part) in fits.items():
        r2 = computed[name][0]
        count = float(r2["count"][0])
        states[name] = scorer._whitened_state(location, whitener, int(part[0]["count"].sum()),
                                              float(r2["mean"][0, 0]),
                                              float(r2["scatter"][0, 0, 0]) / count)
    return states["all"], states.get("rest")
