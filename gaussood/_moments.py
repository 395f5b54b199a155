"""Exactly mergeable sufficient statistics, one set per mixture component.

For each component k we keep, around its own mean m_k,

    n_k, m_k, M2_k = sum (x - m_k)(x - m_k)^T, T3_k = sum ||x - m_k||^2 (x - m_k),
    Q4_k = sum ||x - m_k||^4.

M2 is what the covariance needs; Q4 is what the Ledoit-Wolf shrinkage and the
norm-shell spread need; T3 only exists so that Q4 can be moved to a new centre
exactly. Two batches merge by moving both to the pooled mean and adding
(Chan, Golub & LeVeque 1979 for M2; the same algebra carried to fourth order).
All arithmetic is float64.
"""

from __future__ import annotations

import hashlib

import numpy as np

CHUNK_ROWS = 8192


def _component(X: np.ndarray) -> tuple:
    """Moments of the rows of X around their own mean (two passes, chunked)."""
    n, d = X.shape
    mean = np.zeros(d)
    for start in range(0, n, CHUNK_ROWS):
        mean += X[start:start + CHUNK_ROWS].sum(axis=0, dtype=np.float64)
    mean /= n
    m2 = np.zeros((d, d))
    t3 = np.zeros(d)
    q4 = 0.0
    for start in range(0, n, CHUNK_ROWS):
        Y = X[start:start + CHUNK_ROWS].astype(np.float64) - mean
        sq = np.einsum("ij,ij->i", Y, Y)
        # float32 input: the d x d product in float32 (twice as fast), summed in float64
        Yc = Y.astype(np.float32) if X.dtype == np.float32 else Y
        m2 += Yc.T @ Yc
        t3 += sq @ Y
        q4 += float(sq @ sq)
    return float(n), mean, m2, t3, q4


def compute_moments(X: np.ndarray, codes: np.ndarray | None, n_components: int) -> dict:
    """Per-component moments of X; ``codes[i]`` is the component of row i."""
    d = X.shape[1]
    out = {
        "count": np.zeros(n_components),
        "mean": np.zeros((n_components, d)),
        "scatter": np.zeros((n_components, d, d)),
        "third": np.zeros((n_components, d)),
        "fourth": np.zeros(n_components),
    }
    for k in range(n_components):
        Xk = X if codes is None else X[codes == k]
        if Xk.shape[0] == 0:
            continue
        (out["count"][k], out["mean"][k], out["scatter"][k],
         out["third"][k], out["fourth"][k]) = _component(Xk)
    return out


def _shift(n, m2, t3, q4, delta):
    """Moments about a centre moved by ``delta`` (y -> y - delta)."""
    c = float(delta @ delta)
    tr = float(np.trace(m2))
    m2_delta = m2 @ delta
    q4_new = q4 + 4.0 * float(delta @ m2_delta) + n * c * c - 4.0 * float(t3 @ delta) + 2.0 * c * tr
    t3_new = t3 - tr * delta - 2.0 * m2_delta - n * c * delta
    m2_new = m2 + n * np.outer(delta, delta)
    return m2_new, t3_new, q4_new


def merge_component(a: tuple, b: tuple) -> tuple:
    """Merge the moments (n, mean, M2, T3, Q4) of two disjoint batches."""
    na, ma, m2a, t3a, q4a = a
    nb, mb, m2b, t3b, q4b = b
    if na == 0:
        return b
    if nb == 0:
        return a
    n = na + nb
    mean = ma + (nb / n) * (mb - ma)
    m2a, t3a, q4a = _shift(na, m2a, t3a, q4a, mean - ma)
    m2b, t3b, q4b = _shift(nb, m2b, t3b, q4b, mean - mb)
    return n, mean, m2a + m2b, t3a + t3b, q4a + q4b


def merge_moments(old: dict, old_keys: np.ndarray, new: dict, new_keys: np.ndarray):
    """Merge per-component moments keyed by label; returns (moments, keys)."""
    keys = np.union1d(old_keys, new_keys)
    d = old["mean"].shape[1]
    out = compute_moments(np.zeros((0, d)), None, 0)
    parts = {name: [] for name in out}
    for key in keys:
        comp = []
        for src, src_keys in ((old, old_keys), (new, new_keys)):
            hit = np.flatnonzero(src_keys == key)
            if hit.size:
                i = hit[0]
                comp.append((src["count"][i], src["mean"][i], src["scatter"][i],
                             src["third"][i], src["fourth"][i]))
        merged = comp[0] if len(comp) == 1 else merge_component(comp[0], comp[1])
        for name, value in zip(("count", "mean", "scatter", "third", "fourth"), merged):
            parts[name].append(value)
    return {name: np.asarray(values, dtype=np.float64) for name, values in parts.items()}, keys


def fold_moments(X: np.ndarray, rows: np.ndarray, codes=None, n_components: int = 1,
                 cache: dict | None = None) -> dict:
    """``compute_moments(X[rows], codes[rows], n_components)``, shared through ``cache``.

    ``cache`` is a plain dict owned by the caller (``PValueCombination`` passes one
    to all its components through ``fit_out_of_fold``): the moments of one component
    (``codes`` None) are kept there by the identity of ``X`` and the rows' content,
    and a hit returns a copy (callers may keep or change the arrays). None: no sharing.
    """
    if cache is None or codes is not None:
        return compute_moments(X[rows], None if codes is None else codes[rows], n_components)
    rows = np.asarray(rows)
    key = (id(X), X.shape, str(rows.dtype),
           hashlib.blake2b(np.ascontiguousarray(rows).tobytes(), digest_size=20).digest())
    hit = cache.get(key)
    if hit is None or hit[0] is not X:  # a different array at a reused address: recompute
        hit = (X, compute_moments(X[rows], None, 1))
        cache[key] = hit
    return {name: value.copy() for name, value in hit[1].items()}
