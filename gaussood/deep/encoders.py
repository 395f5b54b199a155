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
  output, flattened), ``"name:input"`` (the submodule's input) or ``"output"``;
- any other callable mapping a batch to ``(N, d)``: a float ``(N, 3, H, W)`` tensor
  after ``preprocessing``, or with ``preprocessing="raw"`` (the default for callables)
  the uint8 ``(N, H, W, 3)`` numpy batch at native size.

Import specs and torchvision names are honoured only from the caller: reading a
gaussood encoder file builds only gaussood's own architectures, and nothing read from a
file is ever imported. ``ImageEncoder.identity()`` is what makes two encoders the same
(weights SHA-256, feature layer, preprocessing), not the spec they were built from.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._atomic import atomic_path
from .images import open_images
from .rotation import rotation_views
from .preprocess import (Preprocessor, check_preprocessing, describe, imagenet_preprocessing,
                         torchvision_preprocessing)

GAUSSOOD_LAYERS = ("backbone", "head")
# test-time views: none; features averaged over the image and its mirror ("flip"); or
# over its 4 quarter turns ("rot4", for encoders trained with rotations)
VIEWS = (None, "flip", "rot4")
# Images per forward pass by default, chosen by memory: ResNet-18 at 224 px on CPU (one
# thread, 512 images) peaked at 4.3 GB RSS with 512, 2.6 GB with 256, 1.4 GB with 64
# (0.86 GB before embedding); larger batches are no faster on CPU.
EMBED_BATCH_SIZE = 64
_IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def pick_device(device=None) -> torch.device:
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def state_sha256(module: nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes, values; device-independent)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class _Stop(Exception):
    """Raised by a feature hook: the rest of the forward pass is not needed."""


class ImageEncoder:
    """A model plus its feature layer and preprocessing; ``embed`` maps images to float32
    ``(N, d)``. Build one with ``make_encoder``.

    Attributes: ``kind`` ("gaussood", "module", "torchscript", "callable"), ``layer``
    (resolved), ``preprocessing``, ``batch_size``, ``device``, ``model`` (the module or
    callable), ``last_source`` (the ``ImageSource`` of the latest ``embed``: for a folder,
    ``last_source.files.read`` lists the embedded files, ``.skipped`` the unreadable ones).
    """

    def __init__(self, model, *, kind: str, layer: str, preprocessing,
                 batch_size: int = EMBED_BATCH_SIZE,
                 device=None, views: str | None = None) -> None:
        if views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}; got {views!r}.")
        self.model, self.kind, self.layer, self.views = model, kind, layer, views
        self.preprocessing = check_preprocessing(preprocessing, allow_raw=kind == "callable")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}.")
        self.batch_size, self.device = int(batch_size), device
        self._prep = None if self.preprocessing == "raw" else Preprocessor(self.preprocessing)
        self.last_source = None

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
        """Plain, JSON-able dict: weights SHA-256 (of the state dict; None for a callable
        that is not a module's method, then named by ``callable``), feature layer and
        preprocessing. Equal identities embed images identically."""
        module = self._weights_module()
        ident = {"weights_sha256": state_sha256(module) if module is not None else None,
                 "layer": self.layer, "preprocessing": describe(self.preprocessing)}
        if self.views is not None:  # only then: identities without test-time views stay
            ident["views"] = self.views
        if module is None:
            fn = self.model
            ident["callable"] = f"{getattr(fn, '__module__', '?')}." \
                                f"{getattr(fn, '__qualname__', type(fn).__qualname__)}"
        return ident

    # ---------------------------------------------------------------- embedding
    @contextmanager
    def _ready(self, device):
        module = self.model if isinstance(self.model, nn.Module) else None
        if module is None:
            yield self._callable_forward
            return
        was_training = module.training
        module.eval().to(device)
        handle, forward = None, None
        try:
            if self.kind == "gaussood":
                index = GAUSSOOD_LAYERS.index(self.layer)

                def forward(x):
                    with torch.autocast(device.type, dtype=torch.bfloat16,
                                        enabled=device.type == "cuda"):
                        return module(x)[index].float()
            elif self.layer == "output":
                forward = module
            else:
                handle, forward = _hooked(module, self.layer)
            yield forward
        finally:
            if handle is not None:
                handle.remove()
            module.train(was_training)

    def _callable_forward(self, x):
        return self.model(x)

    @torch.no_grad()
    def embed(self, images, *, batch_size: int | None = None, progress: bool = False,
              out=None, image_index: int = 0, strict: bool = False, num_workers: int = 0,
              desc: str = "embed") -> np.ndarray:
        """float32 ``(N, d)`` embeddings of any image input (``gaussood.deep.images``).

        ``out``: a ``.npy`` path; rows are written there as they come (memory does not
        grow with N) and a read-only memmap of the file is returned. A folder's unreadable
        files are skipped (listed in a warning and in ``last_source.files.skipped``), or
        raise with ``strict=True``.
        """
        bs = int(batch_size or self.batch_size)
        source = open_images(images, batch_size=bs, image_index=image_index, strict=strict,
                             num_workers=num_workers)
        self.last_source = source
        device = pick_device(self.device)
        rows = NpyRows(out, source.n)
        bar = tqdm(total=source.n, unit="img", desc=desc, leave=False,
                   disable=not progress or (source.n is not None and source.n <= bs))
        try:
            with self._ready(device) as forward:
                for batch in source:
                    rows.add(self._batch(forward, batch, device))
                    bar.update(len(batch))
        except BaseException:
            rows.abort()
            raise
        finally:
            bar.close()
        return rows.finish()

    __call__ = embed

    def _batch(self, forward, batch, device) -> np.ndarray:
        n = len(batch)
        if self._prep is None:
            if isinstance(batch, list):
                raise ValueError("images of different sizes cannot go to a callable encoder "
                                 "with preprocessing='raw': give it a preprocessing (a dict "
                                 "with input_size, or a transform).")
            x = batch
        else:
            x = self._prep(batch, device)
        try:
            if self.views is not None:  # mean features over the test-time views
                views = rotation_views(x) if self.views == "rot4" else [x, x.flip(-1)]
                feats = sum(_check_rows(_run(forward, v), n).astype(np.float64)
                            for v in views) / len(views)
                feats = feats.astype(np.float32)
            else:
                feats = forward(x)
        except _Stop as stop:
            feats = stop.args[0]
        except Exception as exc:  # noqa: BLE001 - re-raised with the input shape
            shape = tuple(x.shape)
            small = min(shape[-2:] if self._prep is not None else shape[1:3])
            hint = (f" Images of {small} px may be too small for this model: give a "
                    "preprocessing with a larger input_size.") if small < 64 else ""
            raise ValueError(f"The encoder failed on a batch of shape {shape}: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0]}.{hint}") from exc
        return _check_rows(feats, n)


def _run(forward, x):
    try:
        return forward(x)
    except _Stop as stop:
        return stop.args[0]


def _check_rows(feats, n: int) -> np.ndarray:
    if isinstance(feats, (tuple, list)) and not isinstance(feats, np.ndarray):
        raise ValueError(f"The encoder returned a {type(feats).__name__}, not an (N, d) "
                         "array (a gaussood Encoder? pass it to make_encoder directly).")
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().float().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float32)
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


def _hooked(module: nn.Module, layer: str):
    """(hook handle, forward) taking the output (or ``:input``) of a named submodule."""
    name, _, what = layer.partition(":")
    named = dict(module.named_modules())
    if name not in named or what not in ("", "input"):
        some = [n for n in named if n][-8:]
        raise ValueError(f"{type(module).__name__} has no layer {layer!r}; give a submodule "
                         f"name (e.g. {', '.join(some)}), 'name:input', or 'output'.")

    def capture(_mod, args, output=None):
        raise _Stop(args[0] if what == "input" else output)

    sub = named[name]
    handle = (sub.register_forward_pre_hook(capture) if what == "input"
              else sub.register_forward_hook(capture))

    def forward(x):
        module(x)
        raise ValueError(f"layer {layer!r} was not reached by the forward pass.")
    return handle, forward


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
        if layer not in GAUSSOOD_LAYERS:
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
    if layer != "output":
        _hooked(module, layer)[0].remove()        # check the name now
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
    layer : str, optional
        gaussood encoders: "backbone" (default) or "head". Modules: a submodule name
        (its output), "name:input", or "output"; default: the input of the last Linear.
    preprocessing : dict, transform or "raw", optional
        Default: stored in a gaussood file; torchvision's for its models; ImageNet's (with
        a warning) for other modules; "raw" for callables.
    weights : path, optional
        State dict for ``torchvision:<name>``.
    batch_size, device : images per forward pass; torch device (default: CUDA if any).
    views : None, "flip" or "rot4"
        Test-time views (TTA): "flip" averages the features of every preprocessed image
        and its left-right mirror (the flip of the training augmentations); "rot4" those
        of its 4 quarter turns (for encoders trained with ``rotation``). Part of
        ``identity()``, so a scorer fitted on one refuses embeddings of another.
    """
    kw = {"batch_size": batch_size, "device": device, "views": views}
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
