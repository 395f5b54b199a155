"""A drop-in OOD filter for data pipelines: encoder + scorer + threshold.

``OODFilter`` works on numpy arrays of embeddings (2-D) or images (4-D uint8,
N x H x W x 3, embedded by its encoder), on PyTorch datasets (``subset``) and
on DataLoader streams (``stream``), and as a scikit-learn step. torch is
imported only when images or torch objects are involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._base import BaseScorer

ACTIONS = ("drop", "flag")


@dataclass
class FilterResult:
    """Per-sample outcome: ``keep`` (bool), ``score`` (higher = more ID), ``pvalue``."""

    keep: np.ndarray
    score: np.ndarray
    pvalue: np.ndarray

    @property
    def flagged_share(self) -> float:
        return float(1.0 - self.keep.mean()) if self.keep.size else 0.0


def _to_uint8_images(batch) -> np.ndarray:
    """uint8 (N, H, W, 3) from a numpy/torch batch: uint8 NHWC or NCHW, or float NCHW
    in [0, 1] (``ToTensor()`` output, not ``Normalize``d)."""
    if hasattr(batch, "detach"):  # torch tensor
        batch = batch.detach().cpu()
        channels_first = batch.ndim == 4 and batch.shape[1] == 3 and batch.shape[-1] != 3
        if batch.dtype.is_floating_point:
            if not channels_first:
                raise ValueError("float image tensors must be (N, 3, H, W) in [0, 1]; got "
                                 f"shape {tuple(batch.shape)}.")
            lo, hi = float(batch.min()), float(batch.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"float image tensors must lie in [0, 1]; got values in "
                                 f"[{lo:.3g}, {hi:.3g}] (normalised images? give the "
                                 "ToTensor() output, before Normalize).")
            batch = (batch.clamp(0, 1) * 255).round().byte()
        batch = batch.numpy()
    batch = np.asarray(batch)
    if batch.ndim == 4 and batch.shape[1] == 3 and batch.shape[-1] != 3:
        batch = batch.transpose(0, 2, 3, 1)   # NCHW (numpy or torch) -> NHWC
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError("images must be uint8 (N, H, W, 3) arrays or float (N, 3, H, W) "
                         f"tensors in [0, 1]; got {batch.dtype} {batch.shape}.")
    return batch


class OODFilter(TransformerMixin, BaseEstimator):
    """Drop or flag out-of-distribution samples before they reach a model.

    Parameters
    ----------
    scorer : gaussood scorer
        Template fitted (as a clone) by ``fit`` on in-distribution data. To wrap
        a scorer that is already fitted, use ``OODFilter.from_fitted``.
    encoder : None, path, ``gaussood.deep.Encoder`` or callable, default=None
        None: inputs are embeddings. A path to a gaussood encoder file or an
        ``Encoder`` embeds 4-D images (uint8 N x H x W x 3 or N x 3 x H x W, or float
        N x 3 x H x W in [0, 1] as ``ToTensor()`` gives); any other callable maps an image
        batch (uint8, N x H x W x 3) to an (N, d) array.
    alpha, contamination : float, optional
        Threshold set on the clone of ``scorer`` (false-alarm rate on ID data,
        or fraction of training samples flagged); at most one. Neither: the
        scorer's own setting (default alpha = 0.05).
    action : {"drop", "flag"}, default="drop"
        What ``subset`` / ``stream`` / ``filter`` do with flagged samples.
    layer : {"backbone", "head"}, default="backbone"
    batch_size : int, default=512
    device : str, optional   torch device for the encoder ("auto" picks CUDA).

    Attributes
    ----------
    scorer_ : fitted scorer;   last_result_ : FilterResult of the latest call.

    Examples
    --------
    >>> import numpy as np
    >>> from gaussood import GaussianScorer, OODFilter
    >>> rng = np.random.default_rng(0)
    >>> filt = OODFilter(GaussianScorer(), alpha=0.01).fit(rng.normal(size=(4000, 8)))
    >>> batch = np.vstack([rng.normal(size=(99, 8)), np.full((1, 8), 6.0)])
    >>> kept, result = filt.filter(batch)
    >>> kept.shape, bool(result.keep[-1])
    ((99, 8), False)
    """

    def __init__(self, scorer=None, encoder=None, *, alpha=None, contamination=None,
                 action="drop", layer="backbone", batch_size=512, device=None):
        self.scorer = scorer
        self.encoder = encoder
        self.alpha = alpha
        self.contamination = contamination
        self.action = action
        self.layer = layer
        self.batch_size = batch_size
        self.device = device

    def set_params(self, **params):
        self.__dict__.pop("_encoder_cache", None)   # a new encoder must be reloaded
        return super().set_params(**params)

    def __getstate__(self):
        state = dict(super().__getstate__())       # a copy: never strip the live object
        state.pop("_encoder_cache", None)           # a closure; rebuilt on first use
        return state

    # ------------------------------------------------------------ construction
    @classmethod
    def from_fitted(cls, scorer, encoder=None, **kwargs) -> OODFilter:
        """Wrap an already fitted scorer (its own threshold is used as is)."""
        if not isinstance(scorer, BaseScorer):
            raise TypeError(f"scorer must be a gaussood scorer; got {type(scorer).__name__}.")
        check_is_fitted(scorer)
        if kwargs.get("alpha") is not None or kwargs.get("contamination") is not None:
            raise ValueError("from_fitted keeps the scorer's threshold; refit the scorer "
                             "(or use fit) to change alpha or contamination.")
        filt = cls(scorer, encoder, **kwargs)
        filt._check_params()
        filt.scorer_ = scorer
        filt.n_features_in_ = scorer.n_features_in_
        return filt

    def _check_params(self):
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}; got {self.action!r}.")
        if self.scorer is not None and not isinstance(self.scorer, BaseScorer):
            raise TypeError("scorer must be a gaussood scorer (GaussianScorer, "
                            f"NormShellScorer, KNNScorer, ...); got {type(self.scorer).__name__}.")
        if self.alpha is not None and self.contamination is not None:
            raise ValueError("Give either alpha or contamination, not both.")

    def fit(self, X, y=None):
        """Fit a clone of ``scorer`` on in-distribution images or embeddings."""
        self._check_params()
        from .gaussian import GaussianScorer

        scorer = clone(self.scorer) if self.scorer is not None else GaussianScorer()
        if self.alpha is not None or self.contamination is not None:
            scorer.set_params(alpha=self.alpha, contamination=self.contamination)
        Z = self.embed(X)
        scorer = scorer.fit(Z) if y is None else scorer.fit(Z, y)
        self.scorer_ = scorer
        self.n_features_in_ = scorer.n_features_in_
        return self

    # --------------------------------------------------------------- embedding
    def _encoder_fn(self):
        if self.encoder is None:
            return None
        if getattr(self, "_encoder_cache", None) is not None:
            return self._encoder_cache
        encoder = self.encoder
        if isinstance(encoder, (str, Path)):
            from .deep.checkpoint import load_encoder
            from .deep.embed import pick_device
            encoder = load_encoder(encoder, device=pick_device(self.device))
        try:
            from .deep.models import Encoder
        except ImportError:  # torch missing: only plain callables can work
            Encoder = ()
        if isinstance(encoder, Encoder):
            from .deep.embed import embed_images
            model = encoder

            def fn(images):
                return embed_images(model, images, layer=self.layer,
                                    batch_size=self.batch_size, device=self.device)
        elif callable(encoder):
            def fn(images):
                return np.asarray(encoder(images))
        else:
            raise TypeError("encoder must be None, a path to an encoder file, an Encoder, "
                            f"or a callable; got {type(encoder).__name__}.")
        self._encoder_cache = fn
        return fn

    def embed(self, X) -> np.ndarray:
        """Embeddings of ``X``: 2-D input is returned as is; 4-D images are encoded."""
        ndim = getattr(X, "ndim", np.ndim(X))
        if ndim == 2:
            return np.asarray(X.detach().cpu() if hasattr(X, "detach") else X)
        if ndim != 4:
            raise ValueError("Expected embeddings (n, d) or images (N, H, W, 3) / (N, 3, H, W); "
                             f"got an array with {ndim} dimensions.")
        fn = self._encoder_fn()
        if fn is None:
            raise ValueError("Got images but this filter has no encoder: pass encoder=... "
                             "or give embeddings.")
        return fn(_to_uint8_images(X))

    # ----------------------------------------------------------------- scoring
    def evaluate(self, X) -> FilterResult:
        """Score, p-value and keep/flag decision of every sample."""
        check_is_fitted(self, "scorer_")
        if len(X) == 0:
            empty = np.empty(0)
            self.last_result_ = FilterResult(np.empty(0, dtype=bool), empty, empty.copy())
            return self.last_result_
        Z = self.embed(X)
        score = self.scorer_.score_samples(Z)
        result = FilterResult(keep=score >= self.scorer_.offset_, score=score,
                              pvalue=self.scorer_.pvalue_from_scores(score))
        self.last_result_ = result
        return result

    def predict(self, X) -> np.ndarray:
        """+1 in-distribution, -1 flagged (the scorer's ``predict`` on the embeddings)."""
        return np.where(self.evaluate(X).keep, 1, -1)

    def transform(self, X) -> np.ndarray:
        """The embeddings (so the filter can be the featurizer step of a Pipeline)."""
        check_is_fitted(self, "scorer_")
        return self.embed(X)

    def filter(self, X):
        """(kept rows of X, FilterResult) for numpy arrays of embeddings or images."""
        result = self.evaluate(X)
        return X[result.keep], result

    # ------------------------------------------------------------------- torch
    def subset(self, dataset, *, image_index: int = 0, num_workers: int = 0):
        """Filter a map-style PyTorch Dataset.

        Scans it once in batches (a DataLoader) and returns
        ``torch.utils.data.Subset`` of the kept indices (``action="drop"``), or
        a dataset whose items are the original items followed by the score and
        the p-value (``action="flag"``). Items are tuples whose element
        ``image_index`` is the image, or bare images. The scan's FilterResult
        is kept in ``last_result_``.
        """
        import torch
        from torch.utils.data import DataLoader, Subset

        loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                            num_workers=num_workers)
        parts = [self._evaluate_batch(batch, image_index) for batch in loader]
        result = FilterResult(*(np.concatenate([getattr(p, f) for p in parts])
                                if parts else np.empty(0)
                                for f in ("keep", "score", "pvalue")))
        self.last_result_ = result
        if self.action == "drop":
            return Subset(dataset, np.flatnonzero(result.keep).tolist())
        return _FlaggedDataset(dataset, torch.from_numpy(result.score),
                               torch.from_numpy(result.pvalue))

    def stream(self, loader, *, image_index: int = 0):
        """Filter a stream of batches (e.g. a DataLoader), batch by batch.

        Yields each batch with flagged rows removed (``action="drop"``; empty
        batches are skipped), or with two float64 tensors appended: score and
        p-value (``action="flag"``). A batch is a tensor or a tuple/list of
        tensors sharing the first dimension.
        """
        import torch

        for batch in loader:
            result = self._evaluate_batch(batch, image_index)
            if result.keep.size == 0:
                continue
            items = list(batch) if isinstance(batch, (tuple, list)) else [batch]
            if self.action == "drop":
                keep = torch.from_numpy(result.keep)
                if not keep.any():
                    continue
                items = [item[keep] for item in items]
            else:
                items += [torch.from_numpy(result.score), torch.from_numpy(result.pvalue)]
            yield items if isinstance(batch, (tuple, list)) or len(items) > 1 else items[0]

    def _evaluate_batch(self, batch, image_index):
        images = batch[image_index] if isinstance(batch, (tuple, list)) else batch
        return self.evaluate(images)


class _FlaggedDataset:
    """Items of ``dataset`` followed by their OOD score and p-value."""

    def __init__(self, dataset, scores, pvalues):
        self.dataset, self.scores, self.pvalues = dataset, scores, pvalues

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        item = self.dataset[index]
        item = tuple(item) if isinstance(item, (tuple, list)) else (item,)
        return (*item, self.scores[index], self.pvalues[index])


class AbstainingClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that abstains on inputs its OOD filter flags.

    A scikit-learn Pipeline cannot drop rows, so the filter cannot sit in one
    as a row remover. This wrapper is the pattern that works: ``fit`` fits the
    filter and the classifier on the same in-distribution data (the
    classifier on the filter's embeddings); ``predict`` returns the
    classifier's label, or ``abstain_label`` where the filter flags the input.

    Parameters
    ----------
    ood_filter : OODFilter
    classifier : scikit-learn classifier
    abstain_label : default=-1
        Returned for flagged inputs. With string classes and a numeric label the
        result is an object array (so ``pred == -1`` still works).
    """

    def __init__(self, ood_filter=None, classifier=None, *, abstain_label=-1):
        self.ood_filter = ood_filter
        self.classifier = classifier
        self.abstain_label = abstain_label

    def fit(self, X, y):
        if self.ood_filter is None or self.classifier is None:
            raise ValueError("AbstainingClassifier needs ood_filter and classifier.")
        self.filter_ = clone(self.ood_filter).fit(X, y)   # labels: class-conditional scorers
        Z = self.filter_.transform(X)
        self.classifier_ = clone(self.classifier).fit(Z, y)
        self.classes_ = self.classifier_.classes_
        return self

    def predict(self, X):
        check_is_fitted(self)
        Z = self.filter_.transform(X)        # embed once; evaluate passes 2-D through
        result = self.filter_.evaluate(Z)
        labels = self.classifier_.predict(Z).astype(object)
        labels[~result.keep] = self.abstain_label
        kind = np.asarray(self.classes_).dtype.kind
        abstain_kind = np.asarray(self.abstain_label).dtype.kind
        if kind in "iufb" and abstain_kind in "iufb" or kind == abstain_kind == "U":
            return labels.astype(np.result_type(self.classes_.dtype,
                                                np.asarray(self.abstain_label).dtype))
        return labels   # mixed kinds (e.g. string classes, -1): object array, -1 kept as is
