"""Provenance: the one place for hashing files and states, encoder identity, data
fingerprints and the training record.

- ``file_sha256``: SHA-256 of a file's bytes (encoder files, embeddings).
- ``state_sha256``: SHA-256 of a torch module's state dict (names, dtypes, shapes, values;
  device-independent).
- ``code_sha256``: SHA-256 of what a model *does* beyond its weights: the TorchScript code
  of every submodule and method with its non-tensor attributes, or a Python callable's
  qualified name, code objects, defaults, closure and ``functools.partial`` arguments.
  Raises ``Unverifiable`` when that cannot be written down stably (an argument whose
  ``repr`` is a memory address, ...).
- ``encoder_identity``: what makes two encoders the same (weights, code, feature layer,
  preprocessing, test-time views); ``stored_identity`` / ``check_identity``: what a fitted
  scorer stores about its encoder (``provenance_``) and the check that another encoder
  is the same one (the command line, ``OODFilter.from_fitted``).
- ``data_fingerprint``: content hash of an image set (images and labels), with its size,
  shape, name and classes: the key of embedding caches and the check of training resumes.
- ``training_record`` / ``read_training_record``: the provenance file written beside a
  trained encoder (``gaussood train``, ``benchmarks/train_encoder.py``), one schema.

numpy only at import (torch is imported inside the functions that hash torch objects).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types
import warnings
from pathlib import Path

import numpy as np

# ``package.module:factory`` (an encoder built by calling an importable factory)
IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class Unverifiable(ValueError):
    """A model's code cannot be hashed stably (its identity could not be checked)."""


# ------------------------------------------------------------------- files, states
def file_sha256(path) -> str:
    """SHA-256 (hex) of the bytes of the file at ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(module) -> str:
    """SHA-256 of a torch module's state dict (names, dtypes, shapes, values;
    device-independent)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------------------- code
def _stable(value, seen=None) -> str:
    """A text for ``value`` that is the same in every process (never a memory address);
    raises ``Unverifiable`` when there is none."""
    seen = set() if seen is None else seen
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        return f"{type(value).__name__}:{value!r}"
    if id(value) in seen:
        return "<cycle>"
    seen = seen | {id(value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_stable(v, seen) for v in value]
        items = sorted(items) if isinstance(value, (set, frozenset)) else items
        return f"{type(value).__name__}[{','.join(items)}]"
    if isinstance(value, dict):
        return "dict{" + ",".join(sorted(f"{_stable(k, seen)}={_stable(v, seen)}"
                                         for k, v in value.items())) + "}"
    if hasattr(value, "detach") and hasattr(value, "numpy"):       # a torch tensor
        import torch

        t = value.detach().cpu().contiguous()
        return (f"tensor:{t.dtype}:{tuple(t.shape)}:"
                f"{hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy()).hexdigest()}")
    if isinstance(value, np.ndarray):
        return (f"ndarray:{value.dtype.str}:{value.shape}:"
                f"{hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}")
    if isinstance(value, np.generic):
        return f"{type(value).__name__}:{value!r}"
    if callable(value) and not isinstance(value, type):
        return "callable:" + _callable_text(value, seen)
    if isinstance(value, type):
        return f"type:{value.__module__}.{value.__qualname__}"
    text = repr(value)
    if type(value).__repr__ is object.__repr__ or re.search(r" at 0x[0-9a-fA-F]+", text):
        raise Unverifiable(f"a {type(value).__module__}.{type(value).__qualname__} value has "
                           f"no stable text (its repr is {text[:60]!r})")
    return f"{type(value).__module__}.{type(value).__qualname__}:{text}"


def _code_text(code: types.CodeType) -> str:
    """The parts of a code object that decide what it computes (nested code included)."""
    consts = ",".join(_code_text(c) if isinstance(c, types.CodeType) else _stable(c)
                      for c in code.co_consts)
    return (f"code({code.co_code.hex()}|{consts}|{code.co_names}|{code.co_varnames}|"
            f"{code.co_freevars}|{code.co_argcount}|{code.co_kwonlyargcount})")


def _callable_text(fn, seen) -> str:
    if isinstance(fn, functools.partial):
        return (f"partial({_callable_text(fn.func, seen)}|{_stable(fn.args, seen)}|"
                f"{_stable(fn.keywords, seen)})")
    if isinstance(fn, types.MethodType):
        owner = fn.__self__
        # a module: its code and settings (its weights are hashed on their own)
        me = _module_text(owner) if _is_module(owner) else _stable(owner, seen)
        return f"method({_callable_text(fn.__func__, seen)}|{me})"
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"
    if isinstance(fn, types.FunctionType):
        cells = [c.cell_contents for c in (fn.__closure__ or ())]
        return (f"function({name}|{_code_text(fn.__code__)}|{_stable(fn.__defaults__, seen)}|"
                f"{_stable(fn.__kwdefaults__, seen)}|{_stable(cells, seen)})")
    if isinstance(fn, (types.BuiltinFunctionType, np.ufunc)):
        return f"builtin({name})"
    if isinstance(fn, type):                       # a class called as a factory
        return f"type({fn.__module__}.{fn.__qualname__})"
    call = getattr(type(fn), "__call__", None)     # an object with __call__
    state = getattr(fn, "__dict__", None)
    return (f"object({type(fn).__module__}.{type(fn).__qualname__}|"
            f"{_callable_text(call, seen) if isinstance(call, types.FunctionType) else ''}|"
            f"{_stable(state if state is not None else {}, seen)})")


def _is_module(obj) -> bool:
    return hasattr(obj, "named_modules") and hasattr(obj, "state_dict")


def _module_text(module) -> str:
    """An eager torch module: for every submodule its class, the code of its ``forward``
    and its public plain attributes (a convolution's stride and padding, a custom
    module's constants; tensors are in the state dict)."""
    parts = []
    for name, sub in module.named_modules():
        cls = type(sub)
        forward = getattr(cls, "forward", None)
        code = _code_text(forward.__code__) if isinstance(forward, types.FunctionType) else ""
        attrs = []
        for key, value in sorted(vars(sub).items()):
            if key.startswith("_") or key == "training" or hasattr(value, "detach"):
                continue
            try:
                attrs.append(f"{key}={_stable(value)}")
            except Unverifiable as exc:
                raise Unverifiable(f"attribute {name + '.' if name else ''}{key}: {exc}") \
                    from None
        parts.append(f"[{name}] {cls.__module__}.{cls.__qualname__} {code} {' '.join(attrs)}")
    return "\n".join(parts)


def _torchscript_text(module) -> str:
    """Every submodule's methods (TorchScript code) and non-tensor attributes."""
    import torch

    if not hasattr(torch._C, "_jit_debug_module_iterators"):
        raise Unverifiable(f"torch {torch.__version__} does not list TorchScript attributes")
    parts = []
    for name, sub in sorted(module.named_modules(), key=lambda item: item[0]):
        methods = sub._c._method_names()
        parts.append(f"[{name}]")
        parts += [f"def {m}:\n{sub._c._get_method(m).code}" for m in sorted(methods)]
        attrs = torch._C._jit_debug_module_iterators(sub._c)["named_attributes"]
        for key, value in sorted(attrs, key=lambda kv: kv[0]):
            if key == "training" or isinstance(value, (torch.Tensor, torch.ScriptObject)):
                continue            # tensors: in the state dict; submodules: their own entry
            try:
                parts.append(f"{key}={_stable(value)}")
            except Unverifiable as exc:
                raise Unverifiable(f"TorchScript attribute {name + '.' if name else ''}{key}: "
                                   f"{exc}") from None
    return "\n".join(parts)


def code_sha256(model) -> str:
    """SHA-256 of what ``model`` computes beyond its weights.

    A TorchScript module: the code of every method of every submodule and their
    non-tensor attributes. An eager ``nn.Module``: every submodule's class, the code of
    its ``forward`` and its public plain attributes. A Python callable (function, ``functools.partial``, bound
    method, object with ``__call__``): its qualified name, code objects (bytecode,
    constants, names), defaults, closure values and partial arguments. Raises
    ``Unverifiable`` when a part has no stable text (e.g. an argument whose repr is a
    memory address).
    """
    if hasattr(model, "_c") and hasattr(model._c, "_method_names"):   # TorchScript
        text = "torchscript:" + _torchscript_text(model)
    elif _is_module(model):
        text = "module:" + _module_text(model)
    else:
        text = "callable:" + _callable_text(model, set())
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------- identity
# keys an identity gained after the first release: a stored identity without them was
# recorded by an older gaussood and is compared without them (with a warning)
_LATER_KEYS = ("code_sha256", "callable", "unverifiable")


def encoder_identity(model, *, weights_module, layer: str, preprocessing, views=None,
                     kind: str = "module") -> dict:
    """Plain, JSON-able identity of an encoder: equal identities embed images identically.

    ``weights_sha256`` (of ``weights_module``'s state dict, None without one), ``layer``,
    ``preprocessing`` (a JSON-able description), ``views`` (only when set); for a
    TorchScript module, an eager module other than gaussood's own (``kind="gaussood"``: its
    code is gaussood's, versioned with the package) or a callable also
    ``code_sha256`` (``code_sha256``), and for a callable its qualified name
    (``callable``). When the code cannot be hashed,
    ``code_sha256`` is None and ``unverifiable`` says why: ``check_identity`` then warns
    that it cannot tell two such encoders apart.
    """
    ident = {"weights_sha256": state_sha256(weights_module) if weights_module is not None
             else None, "layer": layer, "preprocessing": preprocessing}
    if views is not None:  # only then: identities without test-time views stay as they were
        ident["views"] = views
    if kind == "callable":
        fn = getattr(model, "func", model) if isinstance(model, functools.partial) else model
        ident["callable"] = (f"{getattr(fn, '__module__', '?')}."
                             f"{getattr(fn, '__qualname__', type(fn).__qualname__)}")
    if kind in ("callable", "torchscript", "module"):
        try:
            ident["code_sha256"] = code_sha256(model)
        except Unverifiable as exc:
            ident["code_sha256"], ident["unverifiable"] = None, str(exc)
        except (RecursionError, TypeError, AttributeError, RuntimeError) as exc:
            ident["code_sha256"] = None
            ident["unverifiable"] = f"hashing its code failed ({type(exc).__name__}: {exc})"
    return ident


def stored_identity(scorer) -> dict | None:
    """The encoder identity a fitted scorer stores (``provenance_``), or None."""
    provenance = getattr(scorer, "provenance_", None)
    identity = provenance.get("encoder_identity") if isinstance(provenance, dict) else None
    return identity if isinstance(identity, dict) else None


def _text(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_identity(stored: dict, given: dict, scorer_path, given_what: str) -> None:
    """Refuse (ValueError) an encoder other than the one the scorer was fitted with.

    Warns (UserWarning) instead when the identities agree on everything they can
    compare but cannot be checked completely: code that could not be hashed
    (``unverifiable``), or a stored identity from an older gaussood without the code.
    """
    keys = set(stored) | set(given)
    older = "code_sha256" in given and "code_sha256" not in stored
    if older:   # compared without the keys the older identity did not have
        keys -= {key for key in _LATER_KEYS if key not in stored}
    unverifiable = stored.get("unverifiable") or given.get("unverifiable")
    diffs = []
    for key in sorted(keys):
        a, b = stored.get(key), given.get(key)
        if _text(a) != _text(b) and not (unverifiable and key == "unverifiable"):
            short = [v[:12] + "..." if isinstance(v, str) and len(v) > 16 else _text(v)
                     for v in (a, b)]
            diffs.append(f"{key}: {short[0]} vs {short[1]}")
    if diffs:
        raise ValueError(f"the scorer in {scorer_path} was fitted on embeddings of another "
                         f"encoder than {given_what} ({'; '.join(diffs)}; scorer vs given): "
                         "use the encoder it was fitted with, or embed, fit and score again "
                         "with this one")
    if unverifiable:
        warnings.warn(f"cannot check that {given_what} is the encoder the scorer in "
                      f"{scorer_path} was fitted on: its code has no stable hash "
                      f"({unverifiable}); weights, layer and preprocessing agree",
                      UserWarning, stacklevel=3)
    elif older:
        warnings.warn(f"the scorer in {scorer_path} stores an encoder identity from an older "
                      f"gaussood, without the encoder's code: cannot check that the code of "
                      f"{given_what} is the same (weights, layer and preprocessing agree); "
                      "fit the scorer again to record it", UserWarning, stacklevel=3)


# -------------------------------------------------------------------------- data
def data_fingerprint(dataset) -> dict:
    """What identifies an image set (an ``ImageSet``, or anything with ``images``,
    ``labels`` and ``name``): the one definition, used as the key of embedding caches
    and by training checkpoints to refuse resuming on other data.

    Returns ``{"sha256", "n", "shape", "name", "classes"}``: ``sha256`` hashes the
    images' bytes (C order) followed by the labels as int64; ``shape`` and ``name`` are
    beside it, not in it, so checkpoints written since the first release keep matching.
    """
    images = np.ascontiguousarray(dataset.images)
    labels = np.ascontiguousarray(np.asarray(dataset.labels).astype(np.int64))
    digest = hashlib.sha256()
    digest.update(images.data)
    digest.update(labels.data)
    return {"sha256": digest.hexdigest(), "n": int(len(labels)),
            "shape": [int(s) for s in images.shape], "name": getattr(dataset, "name", None),
            "classes": sorted(int(c) for c in np.unique(labels))}


# ---------------------------------------------------------------------- training
TRAINING_FORMAT, TRAINING_VERSION = "gaussood.training", 1
TRAINING_KEYS = ("format", "version", "command", "config", "total_steps", "epochs", "device",
                 "data", "knn_top1", "train_seconds", "encoder_file", "sha256", "size_bytes",
                 "weights", "environment")


def training_record(*, command: str, config: dict, encoder_file, encoder_name: str,
                    total_steps: int, epochs: int, device: str, data: dict,
                    knn_top1: float | None, train_seconds: float, environment: dict,
                    world_size: int = 1, weights: str = "float16", **extra) -> dict:
    """The provenance record of a trained encoder (the ``.json`` beside its ``.pt``).

    One schema for ``gaussood train`` and ``benchmarks/train_encoder.py``: the keys of
    ``TRAINING_KEYS`` (``config`` is ``dataclasses.asdict(TrainConfig)``; ``data`` holds
    ``train``, ``eval`` (descriptions), ``n_train``, ``classes``, ``dataset`` and the
    training set's ``fingerprint``), ``world_size`` when above 1, then ``extra`` keys
    (history, timings, k-NN protocols, commit). ``encoder_file`` is the file whose bytes
    are hashed (``sha256``, ``size_bytes``); ``encoder_name`` the name recorded.
    """
    record = {"format": TRAINING_FORMAT, "version": TRAINING_VERSION, "command": command,
              "config": dict(config), "total_steps": int(total_steps), "epochs": int(epochs),
              **({"world_size": int(world_size)} if world_size > 1 else {}),
              "device": str(device),
              "data": {"train": None, "eval": None, "n_train": None, "classes": None,
                       "dataset": None, **data},
              "knn_top1": knn_top1, "train_seconds": float(train_seconds),
              "encoder_file": encoder_name, "sha256": file_sha256(encoder_file),
              "size_bytes": Path(encoder_file).stat().st_size, "weights": weights,
              "environment": environment}
    clash = set(extra) & set(record)
    if clash:
        raise ValueError(f"training_record: extra keys {sorted(clash)} are schema keys.")
    return {**record, **extra}


def read_training_record(path) -> dict:
    """A training provenance file in the current schema, also when written before it:
    ``recipe`` (benchmarks/train_encoder.py) becomes ``config``, ``data["test"]``
    becomes ``data["eval"]``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable training provenance file: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a training provenance file (not a JSON object).")
    if "config" not in record and isinstance(record.get("recipe"), dict):
        record["config"] = record.pop("recipe")
    data = record.get("data")
    if isinstance(data, dict) and "eval" not in data and "test" in data:
        data["eval"] = data.pop("test")
    if not isinstance(record.get("config"), dict):
        raise ValueError(f"{path} is not a training provenance file (no 'config' entry).")
    return record
