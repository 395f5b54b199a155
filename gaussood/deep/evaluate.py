"""Evaluate OOD scorers on one encoder: embed, then ``gaussood.evaluate_embeddings``.

``evaluate(encoder, id_fit, id_test, ood, scorers=..., seeds=...)`` embeds the
in-distribution (ID) fit and test sets and every OOD set once, then hands the arrays to
the numpy core ``gaussood.evaluation.evaluate_embeddings``, which for each seed draws new
random subsets, fits every scorer and reports AUROC, AUPR and FPR at 95% TPR (both
conventions) per OOD set, and the false-alarm rate on the held-out ID rows at each
scorer's own threshold; mean and std over the seeds. The encoder is fixed across seeds.
It never trains anything: an encoder file that is missing is an error.

The CIFAR-10 benchmark (``benchmarks/cifar10_ood.py``, which adds its peers) and
``gaussood bench`` are thin layers over this function.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..evaluation import METRICS, Evaluation, Method, OODSet, default_scorers, draw  # noqa: F401
from ..evaluation import evaluate_embeddings

__all__ = ["evaluate", "Evaluation", "OODSet", "default_scorers", "dataset_loader", "METRICS"]

# Errors that mean "this OOD set's files are not here": the set is skipped and reported.
MISSING = (FileNotFoundError, RuntimeError, OSError)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- data
def dataset_loader(name: str, split: str = "test", *, root=None, classes=None, n=None,
                   seed: int = 0, download: bool = False, jpeg_quality: int | None = 75):
    """A function of no arguments that loads ``name`` with ``load_dataset`` (for an
    ``OODSet`` that is skipped when its files are missing). JPEG q75 by default: the
    compression of the CIFAR-10 archive, so that no detector can key on compression."""
    from .data import load_dataset

    def load():
        return load_dataset(name, split, root=root, classes=classes, n=n, seed=seed,
                            jpeg_quality=jpeg_quality, download=download)
    return load


def _as_embeddings(item, encoder, layer, progress, views=None):
    """(embeddings, labels, one-line description) of an ImageSet or an array."""
    from .data import ImageSet

    if isinstance(item, ImageSet):
        if encoder is None:
            raise ValueError("image sets need an encoder")
        from .embed import extract_embeddings

        return (extract_embeddings(_encoder_file(encoder), item, layer=layer, progress=progress,
                                   views=views),
                item.labels, item.source)
    array = np.asarray(item)
    if array.ndim == 4:
        if encoder is None:
            raise ValueError("images need an encoder")
        from .checkpoint import load_encoder
        from .embed import embed_images

        model = load_encoder(_encoder_file(encoder)) if isinstance(encoder, (str, Path)) \
            else encoder
        feats = embed_images(model, array, layer=layer, progress=progress, views=views)
        return feats, np.full(len(array), -1, np.int64), f"{len(array)} images {array.shape[1:]}"
    if array.ndim != 2:
        raise ValueError(f"want an ImageSet, images (N, H, W, 3) or embeddings (N, d); "
                         f"got shape {array.shape}")
    return array, np.full(len(array), -1, np.int64), f"embeddings {array.shape[0]} x " \
        f"{array.shape[1]}"


def _encoder_file(encoder) -> Path:
    path = Path(encoder)
    if not path.is_file():
        raise FileNotFoundError(f"encoder file not found: {path}")
    return path


# ------------------------------------------------------------------ evaluate
def evaluate(encoder, id_fit, id_test, ood: Mapping[str, Any], *,
             scorers: Mapping[str, Any] | None = None, seeds=(0,), n_fit: int | None = None,
             n_eval: int | None = None, alpha: float = 0.05,
             n_calibrate: int | str | None = None, layer: str = "backbone",
             views: str | None = None, id_labels=None, peers: Mapping[str, Any] | None = None,
             name: str = "evaluation", encoder_label: str | None = None,
             progress: bool = True) -> Evaluation:
    """Embed once, then fit and score every scorer on the same embeddings, over seeds.

    Parameters
    ----------
    encoder : path of a gaussood encoder file, a torch encoder, or None
        None when every set is given as embeddings already. Never trained here.
    id_fit, id_test : ImageSet, images (N, H, W, 3) or embeddings (N, d)
        ID rows to fit the scorers on, and held-out ID rows to evaluate on.
    ood : mapping name -> OODSet, or name -> data (a far OOD set labelled by its name)
        A set whose loader raises ``FileNotFoundError``, ``RuntimeError`` or ``OSError``
        is skipped, and the report says why.
    scorers : mapping name -> detector, (detector, fit_with_labels) or Method, optional
        Unfitted, cloned for each seed with ``random_state=seed``.
        Default: ``gaussood.evaluation.default_scorers`` at ``alpha``.
    seeds : sequence of int
    n_fit, n_eval : int, optional
        Rows drawn per seed from ``id_fit``, and from ``id_test`` and each OOD set
        (default: all).
    alpha : float
        Target false-alarm rate, reported beside each scorer's false alarms.
    n_calibrate : int or "rest", optional
        Calibrate the scorers on this many other ``id_test`` rows per seed after the fit,
        or on every ``id_test`` row not evaluated (``"rest"``); see
        ``gaussood.evaluation.evaluate_embeddings``.
    layer : {"backbone", "head"}
    views : None, "flip", "flip-crop" or "rot4"
        Test-time views of the encoder (``gaussood.deep.embed_images``), for every set.
    id_labels : array, optional
        Labels of ``id_fit`` given as an array (an ImageSet carries its own).
    peers : mapping name -> detector, (detector, fit_with_labels) or Method, optional
        Other methods (objects with ``fit`` / ``score_samples``) run after the scorers on
        the same rows; a peer that fails is reported as failed, not raised.
    name : str
        Setting name in the report.
    encoder_label : str, optional
        How the report names the encoder (default: ``str(encoder)``).

    Returns
    -------
    Evaluation
    """
    report = log if progress else (lambda msg: None)
    if not seeds:
        raise ValueError("give at least one seed")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    report(f"[{name}] embedding with {getattr(encoder, 'name', encoder)} ({layer})")
    Xtr, ytr, src_tr = _as_embeddings(id_fit, encoder, layer, progress, views)
    if id_labels is not None:
        ytr = np.asarray(id_labels)
    Xte, _, src_te = _as_embeddings(id_test, encoder, layer, progress, views)
    sets, described, skipped, skipped_labels = {}, {}, {}, {}
    for key, spec in ood.items():
        spec = spec if isinstance(spec, OODSet) else OODSet(spec)
        label = spec.label or key
        try:
            data = spec.data() if callable(spec.data) else spec.data
            feats, _, src = _as_embeddings(data, encoder, layer, progress, views)
        except MISSING as exc:
            if not callable(spec.data):
                raise
            skipped[key] = str(exc).splitlines()[0]
            skipped_labels[key] = label
            report(f"  {label}: skipped ({skipped[key]})")
            continue
        sets[key] = OODSet(feats, spec.kind, label, spec.note)
        described[key] = src
    if not sets:
        raise FileNotFoundError(f"No OOD set could be loaded for {name}.")
    methods = dict(scorers if scorers is not None else default_scorers(alpha))
    for key, peer in (peers or {}).items():
        peer = peer if isinstance(peer, Method) else Method(*peer) if isinstance(peer, tuple) \
            else Method(peer)
        methods[key] = Method(peer.estimator, peer.labels, peer.note, optional=True)
    return evaluate_embeddings(
        methods, Xtr, ytr, Xte, sets, seeds=seeds, n_fit=n_fit, n_eval=n_eval, alpha=alpha,
        n_calibrate=n_calibrate, name=name, layer=layer, log=report,
        describe={"id_train": src_tr, "id_test": src_te, "views": views, "ood": described,
                  "skipped": skipped, "skipped_labels": skipped_labels,
                  "encoder": encoder_label if encoder_label is not None else str(encoder)})
