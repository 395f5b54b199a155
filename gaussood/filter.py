"""A drop-in OOD filter for data pipelines: encoder + scorer + threshold.

``OODFilter`` works on numpy arrays of embeddings (2-D) or on images of any kind
(arrays, tensors, PIL images of mixed sizes and modes, folders; embedded by its encoder,
see ``gaussood.deep.encoders``), on PyTorch datasets (``subset``) and on DataLoader
streams (``stream``), and as a scikit-learn step. torch is imported only when images or
torch objects are involved.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.utils.validation import check_is_fitted

from ._base import BaseScorer
from .provenance import check_identity, stored_identity

ACTIONS = ("drop", "flag")


@dataclass
class FilterResult:
    """Per-sample outcome: ``keep`` (bool), ``score`` (higher = more ID), ``pvalue``,
    and ``paths`` (the files scored, for a folder or a list of paths; else None)."""

    keep: np.ndarray
    score: np.ndarray
    pvalue: np.ndarray
    paths: list | None = None   # the scored files, for a folder or a list of paths

    @property
    def flagged_share(self) -> float:
        return float(1.0 - self.keep.mean()) if self.keep.size else 0.0


def _embedding_array(X, *, encoder: bool = False):
    """X as an array of embeddings (2-D, or fewer dims: an error later), or None when X
    holds images. numpy only: deciding this never imports torch.

    With an encoder (``encoder=True``) a 2-D array or tensor of integers or booleans is
    one grayscale image, not embeddings (a uint8 40x6 image went to a 6-d scorer as 40
    embeddings); 2-D floats stay embeddings.
    """
    if hasattr(X, "detach") and getattr(X, "ndim", 0) <= 2:
        if encoder and X.ndim == 2 and not X.is_floating_point():
            return None
        return X.detach().cpu().numpy()
    if isinstance(X, np.ndarray):
        if encoder and X.ndim == 2 and X.dtype.kind in "biu":
            return None
        return X if X.ndim <= 2 else None
    if isinstance(X, (list, tuple)) and (not X or np.ndim(X[0]) <= 1 and not
                                         isinstance(X[0], (str, Path))):
        return np.asarray(X)
    return None


def _joined(Z):
    """(embeddings, layer widths): an encoder's features as one (n, d) array, the blocks
    of several layers side by side (widths None for one layer)."""
    if not isinstance(Z, dict):
        return Z, None
    parts = list(Z.values())
    return np.hstack(parts), [part.shape[1] for part in parts]


def _per_layer(template, widths):
    """One clone of the detector per layer, each on its layer's block of columns, their
    p-values combined by Fisher's method (with the template's threshold and seed)."""
    from .combine import PValueCombination

    stops = np.cumsum(widths).tolist()
    params = template.get_params(deep=False)
    return PValueCombination([clone(template) for _ in widths], method="fisher",
                             columns=[[a, b] for a, b in zip([0, *stops[:-1]], stops)],
                             alpha=params.get("alpha"),
                             contamination=params.get("contamination"),
                             random_state=params.get("random_state"))


def _take(X, keep: np.ndarray, paths):
    """The kept part of X: rows of an array or tensor, items of a list, kept file paths
    of a folder, a ``Subset`` of a Dataset."""
    if paths is not None:
        return [p for p, k in zip(paths, keep) if k]
    if isinstance(X, (list, tuple)):
        return [x for x, k in zip(X, keep) if k]
    if isinstance(X, np.ndarray):
        return X[keep]
    if hasattr(X, "detach"):
        import torch

        return X[torch.from_numpy(keep)]
    if hasattr(X, "__getitem__") and hasattr(X, "__len__"):
        from torch.utils.data import Subset

        return Subset(X, np.flatnonzero(keep).tolist())
    raise TypeError(f"filter cannot index a {type(X).__name__}; use evaluate (its keep mask) "
                    "or stream for DataLoaders.")


class OODFilter(TransformerMixin, BaseEstimator):
    """Drop or flag out-of-distribution samples before they reach a model.

    Parameters
    ----------
    scorer : gaussood scorer
        Template fitted (as a clone) by ``fit`` on in-distribution data. To wrap
        a scorer that is already fitted, use ``OODFilter.from_fitted``.
    encoder : None or any encoder spec of ``gaussood.deep.make_encoder``, default=None
        None: inputs are embeddings. Otherwise images are embedded by it: a gaussood
        encoder file or ``Encoder``, any ``torch.nn.Module`` (default: its penultimate
        features), ``"torchvision:<name>"``, a TorchScript file, ``"package.module:factory"``,
        an ``ImageEncoder``, or a callable (by default given the uint8 ``(N, H, W, 3)``
        numpy batch; see ``preprocessing``).
    alpha, contamination : float, optional
        Threshold set on the clone of ``scorer`` (false-alarm rate on ID data,
        or fraction of training samples flagged); at most one. Neither: the
        scorer's own setting (default alpha = 0.05).
    action : {"drop", "flag"}, default="drop"
        What ``subset`` / ``stream`` / ``filter`` do with flagged samples.
    layer : str or list of str, optional
        Feature layer: "backbone" (default) or "head" for gaussood encoders; a submodule
        name (a 4-D feature map is pooled to channel means; "name:flatten" keeps every
        value), "name:input" or "output" for other modules (default: penultimate).
        Several layers (e.g. ``["backbone", "head"]``): embedded in one forward pass, the
        detector is fitted on each layer's features (one clone of ``scorer`` per layer)
        and their p-values are combined by Fisher's method (a ``PValueCombination`` with
        ``columns``); the embeddings are the layers' features side by side, and the
        encoder identity the scorer stores names every layer. Fitting then needs images.
    preprocessing : dict, transform or "raw", optional
        What the encoder expects of an image (``gaussood.deep.preprocess``); default: the
        encoder's own (stored in gaussood files, torchvision's for its models).
    batch_size : int, default=64
        Images per encoder call, for every kind of encoder (``EMBED_BATCH_SIZE`` of
        ``gaussood.deep.encoders``: chosen by memory, 512 peaked at 4.3 GB with ResNet-18
        on CPU, 64 at 1.4 GB).
    device : str, optional   torch device for the encoder ("auto" picks CUDA).
    progress : bool, default=True   progress bars while embedding more than one batch.

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
                 action="drop", layer=None, preprocessing=None, batch_size=64, device=None,
                 progress=True):
        self.scorer = scorer
        self.encoder = encoder
        self.alpha = alpha
        self.contamination = contamination
        self.action = action
        self.layer = layer
        self.preprocessing = preprocessing
        self.batch_size = batch_size
        self.device = device
        self.progress = progress

    def set_params(self, **params):
        self.__dict__.pop("_encoder_cache", None)   # a new encoder must be reloaded
        return super().set_params(**params)

    def __getstate__(self):
        state = dict(super().__getstate__())       # a copy: never strip the live object
        state.pop("_encoder_cache", None)           # holds a model; rebuilt on first use
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
        stored = stored_identity(scorer)
        if encoder is not None and stored is not None:  # the encoder the scorer was fitted on?
            check_identity(stored, filt.image_encoder_.identity(), "the scorer given",
                           "the encoder given")
        elif encoder is not None:
            warnings.warn("the scorer stores no encoder identity (fitted on embeddings "
                          "without one), so OODFilter.from_fitted cannot check that the "
                          "encoder given is the one it was fitted on.", UserWarning,
                          stacklevel=2)
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
        from .views import gaussian_views

        scorer = clone(self.scorer) if self.scorer is not None else gaussian_views()
        Z, widths, _ = self._encode(X, desc="fit: embed")
        if self.encoder is not None and len(self.image_encoder_.layers) > 1:
            if widths is None:
                raise ValueError(f"This filter has several layers "
                                 f"({list(self.image_encoder_.layers)}): fit it on images, "
                                 "so that the detector is fitted on each layer's features.")
            scorer = _per_layer(scorer, widths)
        if self.alpha is not None or self.contamination is not None:
            scorer.set_params(alpha=self.alpha, contamination=self.contamination)
        scorer = scorer.fit(Z) if y is None else scorer.fit(Z, y)
        if self.encoder is not None:  # the scorer remembers its encoder (from_fitted checks)
            import json

            scorer.provenance_ = {"encoder_identity": json.loads(json.dumps(
                self.image_encoder_.identity(), default=str))}
        self.scorer_ = scorer
        self.n_features_in_ = scorer.n_features_in_
        return self

    # --------------------------------------------------------------- embedding
    @property
    def image_encoder_(self):
        """The ``gaussood.deep.ImageEncoder`` built from ``encoder`` (None without one)."""
        if self.encoder is None:
            return None
        if getattr(self, "_encoder_cache", None) is None:
            from .deep.encoders import make_encoder

            self._encoder_cache = make_encoder(
                self.encoder, layer=self.layer, preprocessing=self.preprocessing,
                batch_size=self.batch_size, device=self.device)
        return self._encoder_cache

    def embed(self, X, *, image_index: int = 0, strict: bool = False, desc: str = "embed",
              progress=None) -> np.ndarray:
        """Embeddings of ``X``: 2-D input is returned as is (embeddings); images (arrays,
        tensors, PIL images, lists of mixed sizes, a folder, a Dataset or DataLoader) are
        encoded (with several layers: their features side by side, in layer order). 2-D
        floats are embeddings; with an encoder, a 2-D array of integers is one grayscale
        image. The unreadable files of a folder or a list of paths are skipped
        (``strict=True``: raise); a folder or list with no readable image is refused."""
        return self._encode(X, image_index=image_index, strict=strict, desc=desc,
                            progress=progress)[0]

    def _encode(self, X, *, image_index: int = 0, strict: bool = False, desc: str = "embed",
                progress=None):
        """(embeddings of X, the width of each layer's block or None for embeddings given
        as such or a single layer, the file of each row or None)."""
        Z = _embedding_array(X, encoder=self.encoder is not None)
        if Z is not None:
            if Z.ndim != 2:
                raise ValueError("Expected embeddings (n, d) or images; got an array with "
                                 f"{Z.ndim} dimensions.")
            return Z, None, None
        encoder = self.image_encoder_
        if encoder is None:
            raise ValueError("Got images but this filter has no encoder: pass encoder=... "
                             "or give embeddings.")
        out = encoder.embed(X, batch_size=self.batch_size, image_index=image_index,
                            strict=strict, desc=desc, return_sources=True,
                            progress=self.progress if progress is None else progress)
        return (*_joined(out.X), None if out.files is None else list(out.files))

    # ----------------------------------------------------------------- scoring
    def _result(self, Z, paths=None) -> FilterResult:
        if len(Z) == 0:
            empty = np.empty(0)
            return FilterResult(np.empty(0, dtype=bool), empty, empty.copy(), paths)
        scored = self.scorer_.score_pvalue_decision(Z)  # as predict, pvalue (cv+ included)
        return FilterResult(keep=~scored.flagged, score=scored.score, pvalue=scored.pvalue,
                            paths=paths)

    def evaluate(self, X, *, strict: bool = False, progress=None) -> FilterResult:
        """Score, p-value and keep/flag decision of every sample (for a folder, of every
        readable file, listed in ``result.paths``)."""
        check_is_fitted(self, "scorer_")
        Z, _, paths = self._encode(X, strict=strict, desc="evaluate: embed",
                                   progress=progress)
        self.last_result_ = self._result(Z, paths)
        return self.last_result_

    def predict(self, X) -> np.ndarray:
        """+1 in-distribution, -1 flagged (the scorer's ``predict`` on the embeddings)."""
        return np.where(self.evaluate(X).keep, 1, -1)

    def transform(self, X) -> np.ndarray:
        """The embeddings (so the filter can be the featurizer step of a Pipeline)."""
        check_is_fitted(self, "scorer_")
        return self.embed(X)

    def filter(self, X, *, strict: bool = False):
        """(kept part of X, FilterResult): rows of an array or tensor, items of a list,
        file paths of a folder, a ``Subset`` of a Dataset."""
        result = self.evaluate(X, strict=strict)
        return _take(X, result.keep, result.paths), result

    # ------------------------------------------------------------------- torch
    def subset(self, dataset, *, image_index: int = 0, num_workers: int = 0):
        """Filter a map-style PyTorch Dataset.

        Scans it once in batches (a DataLoader) and returns
        ``torch.utils.data.Subset`` of the kept indices (``action="drop"``), or
        a dataset whose items are the original items followed by the score and
        the p-value (``action="flag"``). Items are tuples whose element
        ``image_index`` is the image, or bare images (tensors, arrays or PIL images,
        of any size), or 1-D embeddings for a filter without an encoder. The scan's
        FilterResult is kept in ``last_result_``.
        """
        import torch
        from torch.utils.data import DataLoader, Subset

        check_is_fitted(self, "scorer_")
        if self.encoder is None:   # items are embeddings
            loader = DataLoader(dataset, batch_size=self.batch_size, shuffle=False,
                                num_workers=num_workers)
            parts = [self.embed(b[image_index] if isinstance(b, (tuple, list)) else b)
                     for b in loader]
            Z = np.concatenate(parts) if parts else np.empty((0, self.n_features_in_))
        else:
            Z = _joined(self.image_encoder_.embed(
                dataset, batch_size=self.batch_size, image_index=image_index,
                num_workers=num_workers, progress=self.progress, desc="subset: embed"))[0]
        result = self.last_result_ = self._result(Z)
        if self.action == "drop":
            return Subset(dataset, np.flatnonzero(result.keep).tolist())
        return _FlaggedDataset(dataset, torch.from_numpy(result.score),
                               torch.from_numpy(result.pvalue))

    def stream(self, loader, *, image_index: int = 0, window: int | None = None,
               shift_method: str = "ks", shift_alpha: float = 0.05, shift_reference=None):
        """Filter a stream of batches (e.g. a DataLoader), batch by batch.

        Yields each batch with flagged rows removed (``action="drop"``; empty
        batches are skipped), or with two float64 tensors appended: score and
        p-value (``action="flag"``). A batch is a tensor, a tuple/list of tensors
        (or lists) sharing the first dimension, or a list of PIL images.

        With ``window=n``, the stream is also cut into windows of n consecutive rows
        (across batch boundaries; flagged rows included) and each window is tested for a
        distribution shift (``gaussood.shift.test`` with ``shift_method`` and
        ``shift_alpha``). Each item is then ``(batch, windows)``: the batch as above
        (None when ``action="drop"`` kept no row of it) and the list of ``ShiftResult``
        of the windows that ended in it (usually empty). A batch is skipped only when it
        has nothing to yield on both counts; an incomplete last window is not tested.
        ``shift_reference`` (``shift_method="hotelling"``): held-out ID embeddings (or a
        ``gaussood.shift.Reference``), pooled with each window for a permutation null
        (``shift.test(..., reference=)``; advised on real embeddings).
        """
        import torch
        from tqdm.auto import tqdm

        if window is not None:
            from . import shift

            if isinstance(window, bool) or not isinstance(window, (int, np.integer)) \
                    or window < 1:
                raise ValueError(f"window must be a positive integer or None; got {window!r}.")
            shift._check_method(shift_method)
            shift._check_alpha(shift_alpha)
            check_is_fitted(self, "scorer_")
            pending_Z, pending_p = [], []
            if shift_reference is not None and shift_method != "hotelling":
                raise ValueError("shift_reference is for shift_method='hotelling'; got "
                                 f"{shift_method!r}.")
            if shift_reference is not None and not isinstance(shift_reference,
                                                              shift.Reference):
                shift_reference = shift.Reference(self.scorer_, shift_reference)
        total = len(loader) if hasattr(loader, "__len__") else None
        for batch in tqdm(loader, total=total, desc="stream", unit="batch", leave=False,
                          disable=not self.progress):
            pil_list = isinstance(batch, list) and batch and all(hasattr(b, "convert")
                                                                 for b in batch)
            images = batch[image_index] if isinstance(batch, (tuple, list)) and not pil_list \
                else batch
            if window is None:
                result = self.evaluate(images, progress=False)
            else:   # evaluate, keeping the embeddings for the window tests
                Z, _, paths = self._encode(images, desc="stream: embed", progress=False)
                result = self.last_result_ = self._result(Z, paths)
                pending_Z.append(Z)
                pending_p.append(result.pvalue)
                windows = self._full_windows(pending_Z, pending_p, window, shift_method,
                                             shift_alpha, shift_reference)
            if result.keep.size == 0 and (window is None or not windows):
                continue
            items = [batch] if pil_list or not isinstance(batch, (tuple, list)) else list(batch)
            if self.action == "drop":
                if not result.keep.any():
                    if window is not None and windows:
                        yield None, windows
                    continue
                items = [_take(item, result.keep, None) for item in items]
            else:
                items += [torch.from_numpy(result.score), torch.from_numpy(result.pvalue)]
            bare = pil_list or not isinstance(batch, (tuple, list))
            out = items[0] if bare and len(items) == 1 else items
            yield out if window is None else (out, windows)

    def _full_windows(self, pending_Z, pending_p, window, method, alpha, reference) -> list:
        """Shift results of the complete windows at the head of the pending rows (the
        lists are consumed in place; the incomplete tail stays)."""
        from . import shift

        if sum(len(p) for p in pending_p) < window:
            return []
        Z, p = np.concatenate(pending_Z), np.concatenate(pending_p)
        done = (len(p) // window) * window
        results = [shift.test(self.scorer_, Z[i:i + window], method, alpha,
                              pvalues=p[i:i + window], reference=reference)
                   for i in range(0, done, window)]
        pending_Z[:], pending_p[:] = [Z[done:]], [p[done:]]
        return results


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
