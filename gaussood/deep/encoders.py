"""One encoder abstraction: a model, the layer its features come from, its preprocessing.

``make_encoder(spec)`` builds an ``ImageEncoder`` from any of

- a gaussood encoder file or training checkpoint (its stored preprocessing; ``layer``
  "backbone" (default) or "head"), or a ``gaussood.deep.Encoder`` object;
- a TorchScript file (``torch.jit.save``): the module's output;
- ``"torchvision:<name>"`` (``weights=`` a local state-dict file; without one the weights
  are random and a warning says so: nothing is downloaded), with torchvision's ImageNet
  evaluation preprocessing for that model;
- ``"package.module:factory"``: imports the module and calls ``factory()``, which returns
  a module, a callable or an ``ImageEncoder``;
- any ``torch.nn.Module``: by default the input of its last ``nn.Linear`` (the
  penultimate features), or ``layer="name"`` (a forward hook on that submodule; its
  output), ``"name:input"`` (the submodule's input) or ``"output"``. A 4-D feature map
  ``(N, C, H, W)`` (a convolutional layer) is pooled globally to its C channel means;
  ``"name:flatten"`` (or ``"name:input:flatten"``) keeps all C x H x W values instead,
  which a Gaussian fit pays for in d x d matrices. Other outputs are flattened;
- any other callable mapping a batch to ``(N, d)``: a float ``(N, 3, H, W)`` tensor
  after ``preprocessing``, or with ``preprocessing="raw"`` (the default for callables)
  the uint8 ``(N, H, W, 3)`` numpy batch at native size.

Import specs and torchvision names are honoured only from the caller: reading a
gaussood encoder file builds only gaussood's own architectures, and nothing read from a
file is ever imported. ``ImageEncoder.identity()`` is what makes two encoders the same
(weights SHA-256, code SHA-256, feature layer, preprocessing), not the spec they were
built from.

Several layers in one forward pass: ``layer=("backbone", "head")`` or a list of submodule
names (hooks on each; the pass stops once every hooked layer has fired).
``embed`` then returns a dict of float32 arrays, one per layer, in the order given.
"""

from __future__ import annotations

import importlib
import os
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._atomic import atomic_path
from ..provenance import IMPORT_SPEC as _IMPORT_SPEC  # noqa: F401 - the one definition
from ..provenance import encoder_identity, state_sha256  # noqa: F401 - re-exported
from .images import open_images
from .rotation import rotation_views
from .preprocess import (Preprocessor, check_preprocessing, describe, imagenet_preprocessing,
                         torchvision_preprocessing)

GAUSSOOD_LAYERS = ("backbone", "head")
# test-time views: none; features averaged over the image and its mirror ("flip"); over
# those two and the same two of a small centre crop ("flip-crop"); or over its 4 quarter
# turns ("rot4", for encoders trained with rotations)
VIEWS = (None, "flip", "flip-crop", "rot4")


def crop_view(x: torch.Tensor) -> torch.Tensor:
    """The centre crop of a (N, C, H, W) batch without a border of 1/16 of each side
    (2 px at 32), resized back to (H, W) (bilinear): the "small crop" test-time view."""
    h, w = x.shape[-2:]
    mh, mw = max(1, round(h / 16)), max(1, round(w / 16))
    crop = x[..., mh:h - mh, mw:w - mw]
    return torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear",
                                           align_corners=False)


def test_time_views(x: torch.Tensor, views: str | None) -> list:
    """The inputs whose features are averaged for ``views`` (``VIEWS``)."""
    if views is None:
        return [x]
    if views == "rot4":
        return rotation_views(x)
    out = [x, x.flip(-1)]
    if views == "flip-crop":
        crop = crop_view(x)
        out += [crop, crop.flip(-1)]
    return out
# Images per forward pass by default, chosen by memory: ResNet-18 at 224 px on CPU (one
# thread, 512 images) peaked at 4.3 GB RSS with 512, 2.6 GB with 256, 1.4 GB with 64
# (0.86 GB before embedding); larger batches are no faster on CPU.
EMBED_BATCH_SIZE = 64


def pick_device(device=None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass(frozen=True)
class Embeddings:
    """What ``ImageEncoder.embed(..., return_sources=True)`` returns: the embeddings and
    the files they came from, together.

    Attributes
    ----------
    X : ndarray of float32, shape (n, d)
        One row per image read (a read-only memmap when written to ``out``).
    files : tuple of str or None
        The file of each row, in order, for a folder, a path or a list of paths; None
        for other inputs (arrays, tensors, PIL images, datasets).
    skipped : tuple of (str, str)
        ``(path, reason)`` of each unreadable file of a folder (not a row of ``X``).
    """

    X: np.ndarray
    files: tuple | None = None
    skipped: tuple = ()


def _paths_of(images) -> tuple | None:
    """The file of each image of a path or list of paths (each one row), else None."""
    if isinstance(images, (str, os.PathLike)) and not Path(images).is_dir():
        return (os.fspath(images),)
    if isinstance(images, (list, tuple)) and images and all(
            isinstance(i, (str, os.PathLike)) for i in images):
        return tuple(os.fspath(i) for i in images)
    return None


class _Stop(Exception):
    """Raised by a feature hook: the rest of the forward pass is not needed."""


class ImageEncoder:
    """A model plus its feature layer and preprocessing; ``embed`` maps images to float32
    ``(N, d)``. Build one with ``make_encoder``.

    Attributes: ``kind`` ("gaussood", "module", "torchscript", "callable"), ``layer``
    (resolved), ``preprocessing``, ``batch_size``, ``device``, ``model`` (the module or
    callable). The files the rows came from: ``embed(..., return_sources=True)``.
    """

    def __init__(self, model, *, kind: str, layer: str, preprocessing,
                 batch_size: int = EMBED_BATCH_SIZE,
                 device=None, views: str | None = None) -> None:
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}; got {views!r}.")
        self.model, self.kind, self.views = model, kind, views
        self.layer = layer if isinstance(layer, str) else tuple(layer)
        self.preprocessing = check_preprocessing(preprocessing, allow_raw=kind == "callable")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        self.batch_size, self.device = int(batch_size), device
        self._prep = None if self.preprocessing == "raw" else Preprocessor(self.preprocessing)

    @property
    def layers(self) -> tuple:
        """The feature layers, in order (``(layer,)`` for one)."""
        return self.layer if isinstance(self.layer, tuple) else (self.layer,)

    def __repr__(self) -> str:
        return f"ImageEncoder(kind={self.kind!r}, layer={self.layer!r}, " \
               f"model={type(self.model).__name__})"

    # ----------------------------------------------------------------- identity
    def _weights_module(self):
        if isinstance(self.model, nn.Module):
            return self.model
        owner = getattr(self.model, "__self__", None)   # a bound method of a module
        return owner if isinstance(owner, nn.Module) else None

    def identity(self) -> dict:
        """Plain, JSON-able dict (``gaussood.provenance.encoder_identity``): weights SHA-256
        (of the state dict; None for a callable that is not a module's method), feature
        layer, preprocessing, test-time views, and for TorchScript modules, torch modules
        (not gaussood's own) and callables the SHA-256 of their code (``code_sha256``; None with an ``unverifiable`` reason
        when it cannot be hashed stably). Equal identities embed images identically."""
        return encoder_identity(self.model, weights_module=self._weights_module(),
                                layer=self.layer, preprocessing=describe(self.preprocessing),
                                views=self.views, kind=self.kind)

    # ---------------------------------------------------------------- embedding
    @contextmanager
    def _ready(self, device):
        module = self.model if isinstance(self.model, nn.Module) else None
        if module is None:
            yield self._callable_forward
            return
        was_training = module.training
        module.eval().to(device)
        handles = []
        try:  # every forward returns a tuple: the features of each layer
            if self.kind == "gaussood":
                index = [GAUSSOOD_LAYERS.index(layer) for layer in self.layers]

                def forward(x):
                    with torch.autocast(device.type, dtype=torch.bfloat16,
                                        enabled=device.type == "cuda"):
                        out = module(x)
                    return tuple(out[i].float() for i in index)
            else:
                handles, forward = _hooked(module, self.layers)
            yield forward
        finally:
            for handle in handles:
                handle.remove()
            module.train(was_training)

    def _callable_forward(self, x):
        return (self.model(x),)

    @torch.no_grad()
    def embed(self, images, *, batch_size: int | None = None, progress: bool = False,
              out=None, image_index: int = 0, strict: bool = False, num_workers: int = 0,
              desc: str = "embed", return_sources: bool = False):
        """float32 ``(N, d)`` embeddings of any image input (``gaussood.deep.images``).

        ``out``: a ``.npy`` path; rows are written there as they come (memory does not
        grow with N) and a read-only memmap of the file is returned. With several layers
        the result is a dict ``{layer: (N, d_layer) array}`` (one forward pass), and
        ``out`` a dict ``{layer: .npy path}`` naming every layer. A folder's unreadable
        files are skipped (listed in a warning), or raise with ``strict=True``.
        ``return_sources=True``: an ``Embeddings`` (``X``: the array or the dict of
        arrays, ``files``: the file of each row for a folder or paths, ``skipped``: the
        unreadable files) instead.
        """
        bs = int(batch_size or self.batch_size)
        source = open_images(images, batch_size=bs, image_index=image_index, strict=strict,
                             num_workers=num_workers)
        device = pick_device(self.device)
        rows = [NpyRows(path, source.n) for path in self._out_paths(out)]
        bar = tqdm(total=source.n, unit="img", desc=desc, leave=False,
                   disable=not progress or (source.n is not None and source.n <= bs))
        try:
            with self._ready(device) as forward:
                for batch in source:
                    for layer_rows, feats in zip(rows, self._batch(forward, batch, device)):
                        layer_rows.add(feats)
                    bar.update(len(batch))
        except BaseException:
            for layer_rows in rows:
                layer_rows.abort()
            raise
        finally:
            bar.close()
        done = [layer_rows.finish() for layer_rows in rows]
        X = done[0] if len(done) == 1 else dict(zip(self.layers, done))
        if not return_sources:
            return X
        if source.files is not None:
            return Embeddings(X, tuple(source.files.read), tuple(source.files.skipped))
        return Embeddings(X, _paths_of(images))

    def _out_paths(self, out) -> list:
        """One ``out`` path (or None) per layer."""
        if len(self.layers) == 1 or out is None:
            return [out] * len(self.layers)
        if not isinstance(out, dict) or set(out) != set(self.layers):
            raise ValueError(f"out must be a dict {{layer: .npy path}} naming each of the "
                             f"layers {list(self.layers)} for an encoder with several; got "
                             f"{out!r:.200}.")
        return [out[layer] for layer in self.layers]

    __call__ = embed

    def _batch(self, forward, batch, device) -> list:
        """float32 ``(n, d_layer)`` features of each layer for one batch of images."""
        n = len(batch)
        if self._prep is None:
            if isinstance(batch, list):
                raise ValueError("images of different sizes cannot go to a callable encoder "
                                 "with preprocessing='raw': give it a preprocessing (a dict "
                                 "with input_size, or a transform).")
            x = batch
        else:
            x = self._prep(batch, device)
        views = test_time_views(x, self.views)   # their mean features
        try:
            outputs = [_run(forward, v) for v in views]
        except Exception as exc:  # noqa: BLE001 - re-raised with the input shape
            shape = tuple(x.shape)
            small = min(shape[-2:] if self._prep is not None else shape[1:3])
            hint = (f" Images of {small} px may be too small for this model: give a "
                    "preprocessing with a larger input_size.") if small < 64 else ""
            raise ValueError(f"The encoder failed on a batch of shape {shape}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0]}.{hint}") from exc
        flatten = [":flatten" in layer for layer in self.layers]
        feats = [[_check_rows(f, n, flat) for f, flat in zip(out, flatten)] for out in outputs]
        if len(feats) == 1:
            return feats[0]
        return [(sum(view[i].astype(np.float64) for view in feats) / len(feats)).astype(
            np.float32) for i in range(len(self.layers))]


def _run(forward, x):
    try:
        return forward(x)
    except _Stop as stop:
        return stop.args[0]


def _check_rows(feats, n: int, flatten: bool = False) -> np.ndarray:
    """float32 ``(n, d)`` rows of one layer's features; a 4-D feature map ``(n, C, H, W)``
    is pooled to its C channel means unless ``flatten`` (then C x H x W values)."""
    if isinstance(feats, (tuple, list)) and not isinstance(feats, np.ndarray):
        raise ValueError(f"The encoder returned a {type(feats).__name__}, not an (N, d) "
                         "array (a gaussood Encoder? pass it to make_encoder directly).")
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().float().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim == 4 and not flatten:  # global average pooling of a feature map
        feats = feats.mean(axis=(2, 3))
    if feats.ndim > 2:
        feats = feats.reshape(feats.shape[0], -1)
    if feats.ndim != 2 or feats.shape[0] != n:
        raise ValueError(f"The encoder returned an array of shape {feats.shape} for {n} "
                         f"images; it must return one row per image, (N, d) = ({n}, d).")
    bad = ~np.isfinite(feats).all(axis=1)
    if bad.any():
        raise ValueError(f"The encoder returned non-finite values (NaN or inf) for "
                         f"{int(bad.sum())} of {n} images (first: row {int(np.argmax(bad))} "
                         "of the batch).")
    return feats


def _hooked(module: nn.Module, layers):
    """(hook handles, forward): ``forward(x)`` returns a tuple, the features of each of
    ``layers`` in order: a submodule's output (or ``name:input``) through a forward hook,
    or the module's ``output``. Without "output" the pass stops once every hook fired."""
    named = dict(module.named_modules())
    specs = []
    for layer in layers:
        name, *modes = layer.split(":")
        if ((name not in named and name != "output") or len(set(modes)) != len(modes)
                or not set(modes) <= {"input", "flatten"}
                or (name == "output" and "input" in modes)):
            some = [n for n in named if n][-8:]
            raise ValueError(f"{type(module).__name__} has no layer {layer!r}; give a "
                             f"submodule name (e.g. {', '.join(some)}), 'name:input', "
                             "'name:flatten', or 'output'.")
        specs.append((name, "input" in modes))
    hooked = [i for i, (name, _) in enumerate(specs) if name != "output"]
    captured = {}

    def capture(i, want_input):
        def hook(_mod, args, output=None):
            if i not in captured:  # a submodule that runs twice: its first call
                captured[i] = args[0] if want_input else output
                if len(captured) == len(specs):  # all there: the rest is not needed
                    raise _Stop(tuple(captured[j] for j in range(len(specs))))
        return hook

    handles = [named[specs[i][0]].register_forward_pre_hook(capture(i, True)) if specs[i][1]
               else named[specs[i][0]].register_forward_hook(capture(i, False))
               for i in hooked]

    def forward(x):
        captured.clear()
        output = module(x)
        missing = [layers[i] for i in hooked if i not in captured]
        if missing:
            raise ValueError(f"layer {missing[0]!r} was not reached by the forward pass.")
        return tuple(output if i not in hooked else captured[i] for i in range(len(specs)))
    return handles, forward


def _layer_spec(layer):
    """``layer`` as given to ``make_encoder``: None, a name, or a tuple of several."""
    if layer is None or isinstance(layer, str):
        return layer
    layers = list(layer) if isinstance(layer, (list, tuple)) else None
    if not layers or not all(isinstance(item, str) for item in layers) \
            or len(set(layers)) != len(layers):
        raise ValueError(f"layer must be a layer name or a list of distinct names; got "
                         f"{layer!r:.200}.")
    return layers[0] if len(layers) == 1 else tuple(layers)


def default_layer(module: nn.Module) -> str:
    """The input of the last ``nn.Linear`` (penultimate features), else the output."""
    linears = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    return f"{linears[-1]}:input" if linears else "output"


class NpyRows:
    """Collects float32 rows in memory, or appends them to a ``.npy`` file (``path``)."""

    _HEADER = 128

    def __init__(self, path, n: int | None) -> None:
        self.path, self.n, self.count, self.dim = path, n, 0, None
        self.parts, self.fh = [], None
        if path is not None:
            self.path = Path(path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # a name of its own beside the target (two writers of one ``out`` used to
            # share "<out>.partial" and cross their rows), renamed onto it by finish()
            self._atomic = atomic_path(self.path)
            self.tmp = Path(self._atomic.__enter__())
            self.fh = open(self.tmp, "wb")
            self.fh.write(b"\0" * self._HEADER)

    def add(self, feats: np.ndarray) -> None:
        if self.dim is None:
            self.dim = feats.shape[1]
        elif feats.shape[1] != self.dim:
            raise ValueError(f"The encoder returned {feats.shape[1]} features for one batch "
                             f"and {self.dim} for an earlier one.")
        if self.fh is not None:
            self.fh.write(np.ascontiguousarray(feats, dtype="<f4").tobytes())
        else:
            self.parts.append(feats)
        self.count += len(feats)

    def abort(self) -> None:
        if self.fh is not None:
            self.fh.close()
            stop = RuntimeError("embedding aborted")
            self._atomic.__exit__(type(stop), stop, None)  # removes the temporary file

    def finish(self) -> np.ndarray:
        shape = (self.count, self.dim or 0)
        if self.fh is None:
            return (np.concatenate(self.parts) if self.parts
                    else np.empty(shape, dtype=np.float32))
        text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
        text = text.ljust(self._HEADER - 10 - 1) + "\n"
        self.fh.seek(0)
        self.fh.write(b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text.encode())
        self.fh.close()
        self._atomic.__exit__(None, None, None)  # renames it onto ``path``
        return np.load(self.path, mmap_mode="r")


# ----------------------------------------------------------------- construction
def _module_encoder(module: nn.Module, layer, preprocessing, **kw) -> ImageEncoder:
    from .checkpoint import cifar10_preprocessing
    from .models import Encoder

    if isinstance(module, Encoder):
        layer = layer or "backbone"
        if not set((layer,) if isinstance(layer, str) else layer) <= set(GAUSSOOD_LAYERS):
            raise ValueError(f"layer must be one of {GAUSSOOD_LAYERS} for a gaussood "
                             f"encoder; got {layer!r}.")
        return ImageEncoder(module, kind="gaussood", layer=layer,
                            preprocessing=preprocessing or cifar10_preprocessing(), **kw)
    script = isinstance(module, torch.jit.ScriptModule)
    if script and layer not in (None, "output"):
        raise ValueError("a TorchScript module gives its output only (hooks cannot be "
                         f"added to it); got layer={layer!r}.")
    if preprocessing is None:
        preprocessing = imagenet_preprocessing()
        if not type(module).__module__.startswith("torchvision.models"):
            warnings.warn(f"No preprocessing given for {type(module).__name__}: using "
                          "ImageNet's (shorter side 256, centre 224, ImageNet mean/std). "
                          "Pass preprocessing= to say what the model expects.", stacklevel=3)
    layer = "output" if script else (layer or default_layer(module))
    for handle in _hooked(module, (layer,) if isinstance(layer, str) else layer)[0]:
        handle.remove()                           # the names are checked now
    return ImageEncoder(module, kind="torchscript" if script else "module", layer=layer,
                        preprocessing=preprocessing, **kw)


def torchvision_encoder(name: str, *, weights=None, layer=None, preprocessing=None,
                        **kw) -> ImageEncoder:
    """``torchvision.models.get_model(name)`` with a local state-dict file or random
    weights (warned), with torchvision's evaluation preprocessing for ``name``."""
    import torchvision.models as tvm

    if name not in tvm.list_models():
        import difflib

        close = difflib.get_close_matches(name, tvm.list_models(), n=3)
        raise ValueError(f"torchvision has no model {name!r}"
                         f"{'; did you mean ' + ', '.join(close) + '?' if close else '.'}")
    model = tvm.get_model(name, weights=None)
    if weights is not None:
        load_state(model, weights)
    else:
        warnings.warn(f"torchvision:{name} without a weights file: its weights are random "
                      "(nothing is downloaded at run time). Pass weights=PATH to a state "
                      "dict (e.g. torchvision's .pth file).", stacklevel=2)
    return _module_encoder(model, layer, preprocessing or torchvision_preprocessing(name), **kw)


def load_state(model: nn.Module, path) -> None:
    """Load a state-dict file (also ``{"state_dict": ...}`` / ``{"model": ...}``) into
    ``model``, strictly, with a clear error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No weights file at {path}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"{path} is not a readable state-dict file: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict.")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The weights in {path} do not fit {type(model).__name__}: "
                         f"{str(exc).splitlines()[0]} {str(exc).splitlines()[1:2]}") from exc


def _file_encoder(path: Path, layer, preprocessing, **kw) -> ImageEncoder:
    from .checkpoint import encoder_preprocessing, load_encoder, read_payload

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            script = any("/code/" in n for n in zf.namelist())
        if script:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # torch.jit is deprecated
                module = torch.jit.load(str(path), map_location="cpu")
            return _module_encoder(module, layer, preprocessing, **kw)
    try:
        payload = read_payload(path)
    except ValueError as exc:
        raise ValueError(f"{exc} A plain state dict needs its architecture: "
                         "'torchvision:NAME' with weights=PATH, or 'package.module:factory'; "
                         "a TorchScript file (torch.jit.save) works as it is.") from exc
    model = load_encoder(path, device=pick_device(kw.get("device")))
    return _module_encoder(model, layer, preprocessing or encoder_preprocessing(payload), **kw)


def make_encoder(spec, *, layer: str | None = None, preprocessing=None, weights=None,
                 batch_size: int = EMBED_BATCH_SIZE, device=None,
                 views: str | None = None) -> ImageEncoder:
    """An ``ImageEncoder`` from any spec (see the module docstring).

    Parameters
    ----------
    spec : ImageEncoder, path, "torchvision:<name>", "package.module:factory",
        ``torch.nn.Module`` or callable.
    layer : str or list of str, optional
        gaussood encoders: "backbone" (default) or "head". Modules: a submodule name
        (its output; a 4-D feature map pooled to channel means), "name:input",
        "name:flatten" (every value of the map), or "output"; default: the input of the
        last Linear. Several: features of each, in one forward pass (``embed`` returns
        a dict by layer).
    preprocessing : dict, transform or "raw", optional
        Default: stored in a gaussood file; torchvision's for its models; ImageNet's (with
        a warning) for other modules; "raw" for callables.
    weights : path, optional
        State dict for ``torchvision:<name>``.
    batch_size, device : images per forward pass; torch device (default: CUDA if any).
    views : None, "flip", "flip-crop" or "rot4"
        Test-time views (TTA): "flip" averages the features of every preprocessed image
        and its left-right mirror (the flip of the training augmentations); "flip-crop"
        also those of a small centre crop (``crop_view``) and its mirror (4 passes);
        "rot4" those of its 4 quarter turns (for encoders trained with ``rotation``). Part of
        ``identity()``, so a scorer fitted on one refuses embeddings of another.
    """
    kw = {"batch_size": batch_size, "device": device, "views": views}
    layer = _layer_spec(layer)
    if weights is not None and not (isinstance(spec, str) and spec.startswith("torchvision:")):
        raise ValueError("weights= goes with 'torchvision:<name>' only.")
    if isinstance(spec, ImageEncoder):
        if layer is not None or preprocessing is not None or views is not None:
            raise ValueError("this ImageEncoder already has its layer, preprocessing and "
                             "views.")
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.startswith("torchvision:"):
            return torchvision_encoder(text.split(":", 1)[1], weights=weights, layer=layer,
                                       preprocessing=preprocessing, **kw)
        if Path(text).is_file():
            return _file_encoder(Path(text), layer, preprocessing, **kw)
        if isinstance(spec, str) and _IMPORT_SPEC.match(text):
            module_name, factory = text.split(":")
            obj = getattr(importlib.import_module(module_name), factory)()
            return make_encoder(obj, layer=layer, preprocessing=preprocessing, **kw)
        raise FileNotFoundError(f"No encoder file at {text} (an encoder is a file path, "
                                "'torchvision:<name>' or 'package.module:factory').")
    if isinstance(spec, nn.Module):
        return _module_encoder(spec, layer, preprocessing, **kw)
    if callable(spec):
        if layer not in (None, "output"):
            raise ValueError(f"a callable encoder has no layers; got layer={layer!r}.")
        return ImageEncoder(spec, kind="callable", layer="output",
                            preprocessing="raw" if preprocessing is None else preprocessing,
                            **kw)
    raise TypeError("encoder must be a file path, 'torchvision:<name>', "
                    "'package.module:factory', a torch.nn.Module or a callable; got "
                    f"{type(spec).__name__}.")
