"""The ``gaussood`` command line: train, embed, fit, score, shift, diagnose, bench.

Each subcommand reads and writes plain files (``.npy`` arrays, ``.npz`` scorers,
``.pt`` encoders, image folders), so a pipeline is a few shell lines::

    gaussood train --out enc.pt
    gaussood embed --encoder enc.pt --dataset cifar10 --split train --out id.npy
    gaussood fit --embeddings id.npy --scorer gaussian --alpha 0.05 --out scorer.npz
    gaussood score --scorer scorer.npz --images photos/ --encoder enc.pt --out scores.csv

An encoder is a spec from the caller: a gaussood or TorchScript file, ``torchvision:NAME``
(``--weights FILE``) or ``package.module:factory``; nothing named inside a file is
imported or built. ``embed`` writes the encoder's identity (weights SHA-256, feature
layer, preprocessing) beside the embeddings (``X.encoder.json``), ``fit`` stores it with
the scorer (``provenance_``), and ``score --images`` refuses another encoder.

torch is imported only by ``train``, ``embed``, ``bench`` and ``score --images``; the
other commands need numpy, scipy, scikit-learn and faiss only. Errors are one line on
stderr, ``gaussood <command>: error: <message>``; exit status 2 for bad arguments, 1 for
errors while running (missing or unreadable files, invalid data), 0 otherwise.
Every output is written to a temporary name and renamed when complete (companion
files such as ``X.labels.npy`` only after the main output; SIGTERM removes the
temporary files), and an output that would replace one of the command's inputs
(or ``train``'s resume checkpoint) is refused with exit status 2. Scorer options are
parsed with the scorers' own ``_parameter_constraints``.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .provenance import check_identity as _check_identity
from .provenance import stored_identity as _stored_identity

PROG = "gaussood"
TORCH_COMMANDS = ("train", "embed", "bench")  # their options are built on the torch side
# Errors of a run (not of the command line): one line on stderr, exit status 1.
RUNTIME_ERRORS = (FileNotFoundError, ValueError, TypeError, OSError, ImportError,
                  RuntimeError, MemoryError, KeyError)


class CommandError(Exception):
    """A usage error found after parsing (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line (no usage block) and never exit the process."""

    def error(self, message):
        raise CommandError(f"{self.prog}: error: {_one_line(message)}")

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


class _Help(argparse.HelpFormatter):
    """Shows defaults that say something (not None, not False)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (default is not None and default is not False and default != argparse.SUPPRESS
                and "%(default)" not in text
                and action.option_strings and "default" not in text):
            text += " (default: %(default)s)"
        return text


def _one_line(text) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------- helpers
def _existing_file(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} is not a file: {path}")
    return path


def _load_npy(path, what: str) -> np.ndarray:
    path = _existing_file(path, what)
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ValueError(f"{what} {path} is not a .npy file (write it with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{what} {path} is not a readable .npy array: {_one_line(exc)}") from None
    except (OSError, EOFError) as exc:
        raise OSError(f"cannot read {what} {path}: {_one_line(exc)}") from None


def _load_embeddings(path) -> np.ndarray:
    X = _load_npy(path, "embeddings file")
    if X.ndim != 2:
        raise ValueError(f"embeddings in {path} must be a 2-D array (n_samples, n_features); "
                         f"got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"embeddings in {path} must be numbers; got dtype {X.dtype}")
    return X


def _write_text(path, text: str) -> None:
    from ._atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)


def _same_file(a: Path, b: Path) -> bool:
    """Do ``a`` and ``b`` name the same file (also through links, or before it exists)?"""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return Path(os.path.abspath(a)).resolve() == Path(os.path.abspath(b)).resolve()


def _refuse_overwriting_inputs(parser, outputs, inputs) -> None:
    """A usage error when an output would replace one of the command's inputs.

    ``outputs`` and ``inputs`` are ``(what, path)`` pairs; a None path is skipped.
    """
    for out_what, out in outputs:
        for in_what, path in inputs:
            if out is not None and path is not None and _same_file(Path(out), Path(path)):
                parser.error(f"{out_what} {out} is the same file as {in_what}; writing it "
                             "would destroy that input: choose another name")


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def _labels_path(out: Path) -> Path:
    """``emb.npy`` -> ``emb.labels.npy``."""
    return out.with_name(out.name[:-len(".npy")] + ".labels.npy")


def _classes_arg(text, parser):
    from .deep.data import parse_classes

    try:
        return parse_classes(text)
    except ValueError as exc:
        parser.error(f"argument --classes: {exc}")


def _checked(convert, check=None, want: str = "a value"):
    """An argparse ``type``: ``convert`` the text, then run the library's own ``check``."""
    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"want {want}; got {text!r}") from None
        if check is not None:
            try:
                check(value)
            except (TypeError, ValueError) as exc:
                raise argparse.ArgumentTypeError(_one_line(exc)) from None
        return value
    return parse


def _number_or_word(text):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, anything else stays a string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _positive_int_check(name, minimum: int = 1):
    from ._validation import check_positive_int

    return lambda value: check_positive_int(value, name, minimum=minimum)


_positive_int = _checked(int, _positive_int_check("the value"), "a positive integer")


def _load_dataset(name, split, **kwargs):
    """``load_dataset`` with the command line's words in its 'how to get it' hint."""
    from .deep import load_dataset

    try:
        return load_dataset(name, split, **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(str(exc).replace("pass download=True", "pass --download")
                                .replace("download=True", "--download")) from None


def _torch(command: str):
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"'{command}' needs torch: pip install 'gaussood[torch]' "
                          f"({_one_line(exc)})") from None
    return torch


# the library's words for what the command line calls an option, in its warnings
_OPTION_WORDS = (("(strict=True raises instead)", "(--strict stops instead)"),
                 ("Pass preprocessing= to", "Pass --preprocessing JSON to"),
                 ("Pass weights=PATH to", "Pass --weights FILE with"))


@contextlib.contextmanager
def _one_line_warnings(prog: str):
    """Show warnings as ``gaussood <command>: warning: <message>`` (one line each)."""
    with warnings.catch_warnings():
        def show(message, category, filename, lineno, file=None, line=None):
            text = _one_line(message)
            for library, option in _OPTION_WORDS:
                text = text.replace(library, option)
            sys.stderr.write(f"{prog}: warning: {text}\n")
        warnings.showwarning = show
        yield


# -------------------------------------------------------------------- commands
def cmd_train(args, parser) -> int:
    if args.out.suffix == ".json":
        parser.error("--out names the encoder file (.pt); the .json provenance goes beside it")
    if args.snapshots and args.work_dir is None:
        parser.error("--snapshots needs --work-dir")
    json_path = args.out.with_suffix(".json")
    if args.work_dir is not None:
        inputs = [("the resume checkpoint of --work-dir", args.work_dir / "last.pt")]
        if args.snapshots and re.fullmatch(r"epoch\d+\.pt", args.out.name):
            inputs.append(("a snapshot of --work-dir", args.work_dir / args.out.name))
        _refuse_overwriting_inputs(parser, [("--out", args.out),
                                            ("the provenance file", json_path)], inputs)
    classes = _classes_arg(args.classes, parser)
    torch = _torch("train")
    import dataclasses

    from ._atomic import atomic_paths
    from ._env import environment
    from .deep import save_encoder, train_encoder
    from .deep.checkpoint import file_sha256
    from .deep.train import as_image_set
    from .deep.embed import pick_device

    if args.threads:
        torch.set_num_threads(args.threads)
    config = _train_config(args)
    device = pick_device(args.device)
    start = time.perf_counter()
    if args.images is not None:  # unlabelled: no k-NN monitor, the OOD-proxy one runs
        if not args.images.is_dir():
            parser.error(f"--images {args.images}: no such folder")
        train = as_image_set(args.images, config)
    else:
        train = _load_dataset(args.dataset, "train", root=args.data_root,
                              download=args.download, classes=classes, n=args.n,
                              seed=config.seed)
    labelled = len(train) > 0 and int(train.labels.min()) >= 0
    test = None
    if labelled and not args.no_eval and args.images is None:
        test = _load_dataset(args.dataset, "test", root=args.data_root, download=args.download,
                            classes=classes)
    load_s = time.perf_counter() - start
    result = train_encoder(train, config, eval_set=test, checkpoint_dir=args.work_dir,
                           device=device, progress=not args.quiet, snapshots=args.snapshots,
                           nproc=args.nproc)
    if result.rank != 0:
        return 0  # under torchrun only rank 0 writes --out and the provenance
    if not result.history:
        raise ValueError("no epoch was trained (--epochs 0?)")
    wall = time.perf_counter() - start

    out = args.out
    final = result.history[-1]
    # the encoder is renamed into place first; its .json only after it
    with atomic_paths([out, json_path], [".partial.pt", ".partial"]) as (tmp_pt, tmp_json):
        save_encoder(result.model, tmp_pt, half=True)
        size = os.path.getsize(tmp_pt)
        provenance = {
            "command": "gaussood " + shlex.join(args.argv),
            "config": dataclasses.asdict(config),
            **({"world_size": result.world_size} if result.world_size > 1 else {}),
            "epochs": len(result.history), "history": result.history,
            "device": str(device),
            "data": {"train": train.source, "eval": None if test is None else test.source,
                     "n_train": len(train), "classes": classes,
                     "dataset": None if args.images is not None else args.dataset},
            "knn_top1": final.get("knn_top1"),
            "train_seconds": sum(h["seconds"] for h in result.history),
            "wall_seconds_this_call": wall, "data_load_seconds": load_s,
            "work_dir": None if args.work_dir is None else str(args.work_dir),
            "encoder_file": out.name, "sha256": file_sha256(tmp_pt), "size_bytes": size,
            "weights": "float16",
            "environment": environment(),
        }
        with open(tmp_json, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(provenance, indent=2, default=_json_default) + "\n")
    knn = "" if final.get("knn_top1") is None else f", kNN top-1 {100 * final['knn_top1']:.1f}%"
    print(f"trained {config.model} ({config.objective}) for {len(result.history)} epoch(s) on "
          f"{len(train)} images, final loss {final['loss']:.4f}{knn}; wrote {out} "
          f"(fp16, {size / 2**20:.1f} MiB) and {json_path}")
    return 0


# ------------------------------------------------------------ encoders, images
# An encoder on the command line is a spec from the caller (a file, torchvision:NAME,
# package.module:factory); what a file holds is never imported or built beyond
# gaussood's own architectures (gaussood.deep.encoders). Its identity (weights SHA-256,
# feature layer, preprocessing) goes with the embeddings (X.encoder.json) and with the
# scorer fitted on them (provenance_), and 'score --images' compares it.
_IMPORT_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
IDENTITY_FORMAT = "gaussood.embeddings"


def _companion(out: Path, tail: str) -> Path:
    """``emb.npy`` -> ``emb<tail>``: ``.paths.csv`` (the image file of each row, for a
    folder), ``.encoder.json`` (the identity of the encoder that wrote it)."""
    return out.with_name(out.name[:-len(".npy")] + tail)


def _paths_path(out: Path) -> Path:
    return _companion(out, ".paths.csv")


def _identity_path(out: Path) -> Path:
    return _companion(out, ".encoder.json")


def _file_sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _preprocessing_arg(text):
    """``--preprocessing``: a JSON object (or the word raw)."""
    if text.strip() == "raw":
        return "raw"
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            "want a JSON object, e.g. '{\"input_size\": 224, \"resize\": \"resize_crop\", "
            f"\"resize_size\": 256}}'; got {text!r}")
    return value


def _encoder_file(args, parser) -> Path | None:
    """The local file ``--encoder`` names (checked), or None for torchvision:NAME and
    package.module:factory specs."""
    spec = args.encoder
    torchvision = spec.startswith("torchvision:")
    if args.weights is not None:
        if not torchvision:
            parser.error("--weights goes with --encoder torchvision:NAME only (gaussood and "
                         "TorchScript files hold their own weights)")
        _existing_file(args.weights, "weights file")
    if torchvision:
        return None
    if not Path(spec).exists() and _IMPORT_SPEC.match(spec):
        return None
    return _existing_file(spec, "encoder file")


def _image_encoder(args, parser, encoder_file):
    """``make_encoder`` from the command line's encoder options."""
    from .deep.encoders import make_encoder
    from .deep.preprocess import check_preprocessing

    if isinstance(args.preprocessing, dict):
        try:
            check_preprocessing(args.preprocessing)
        except (TypeError, ValueError) as exc:
            parser.error(f"argument --preprocessing: {_one_line(exc)}")
    try:
        return make_encoder(args.encoder if encoder_file is None else encoder_file,
                            layer=args.layer, preprocessing=args.preprocessing,
                            weights=args.weights, batch_size=args.batch_size,
                            device=args.device)
    except ValueError:
        hint = None if encoder_file is None else _plain_state_dict_hint(encoder_file)
        if hint is None:
            raise
        raise ValueError(hint) from None


def _plain_state_dict_hint(path: Path) -> str | None:
    """The error for a file of bare weights (a state dict), naming the options that
    load it; None when ``path`` is not one."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a torch file at all: the original error stands
        return None
    if isinstance(state, dict) and "format" not in state:
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    if not (isinstance(state, dict) and state
            and all(isinstance(v, torch.Tensor) for v in state.values())):
        return None
    import torchvision.models as tvm

    stem = path.name.lower()
    names = sorted((n for n in tvm.list_models() if n in stem), key=len, reverse=True)
    name = names[0] if names else "NAME"
    return (f"{path} holds plain weights (a state dict), not a gaussood encoder: give "
            f"their architecture, e.g. --encoder torchvision:{name} --weights {path} "
            "(or save the whole model with torch.jit.save, or give "
            "--encoder package.module:factory)")


def _image_input(path: Path, strict: bool, parser):
    """``--images``: a folder (returned as is, after checking it has image files) or a
    ``.npy`` of uint8 ``(N, H, W, 3)`` images (returned as an array)."""
    if path.is_dir():
        from .deep.images import IMAGE_EXTENSIONS, ImageFiles

        if not len(ImageFiles(path)):
            raise ValueError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) under {path}")
        return path
    if strict:
        parser.error("--strict applies to --images FOLDER only")
    images = _load_npy(path, "images file")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images in {path} must be uint8 of shape (N, H, W, 3) (or give a "
                         f"folder of image files); got {images.dtype} {images.shape}")
    return images


def _write_paths_csv(path, files) -> None:
    import csv

    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["index", "path"])
        writer.writerows(enumerate(files))


def _read_identity(embeddings: Path) -> dict | None:
    """The encoder identity in ``X.encoder.json`` beside ``X.npy``, when it describes
    this very file (its SHA-256); else None (with a warning for a stale or foreign file).
    """
    path = _identity_path(embeddings)
    if embeddings.suffix != ".npy" or not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if not (isinstance(info, dict) and info.get("format") == IDENTITY_FORMAT
            and isinstance(info.get("encoder_identity"), dict)):
        warnings.warn(f"{path} is not an encoder identity file written by 'gaussood embed'; "
                      "ignored", UserWarning, stacklevel=2)
        return None
    if info.get("sha256") != _file_sha256(embeddings):
        warnings.warn(f"{path} describes another version of {embeddings} (the file was "
                      "changed after 'gaussood embed' wrote it); its encoder identity is "
                      "ignored", UserWarning, stacklevel=2)
        return None
    return info["encoder_identity"]


def cmd_embed(args, parser) -> int:
    if (args.dataset is None) == (args.images is None):
        parser.error("give exactly one of --dataset NAME and --images DIR_OR_NPY")
    out = args.out
    if out.suffix != ".npy":
        parser.error(f"--out must end in .npy; got {out}")
    if args.images is not None:
        dataset_only = [flag for flag, value in (("--split", args.split), ("--n", args.n),
                                                 ("--classes", args.classes),
                                                 ("--jpeg-quality", args.jpeg_quality))
                        if value is not None]
        if dataset_only:
            parser.error(f"{', '.join(dataset_only)} apply to --dataset only")
    if args.strict and not (args.images is not None and args.images.is_dir()):
        parser.error("--strict applies to --images FOLDER only")
    encoder_file = _encoder_file(args, parser)
    labels_out, paths_out, identity_out = (_labels_path(out), _paths_path(out),
                                           _identity_path(out))
    _refuse_overwriting_inputs(
        parser, [("--out", out), ("the labels file", labels_out),
                 ("the paths file", paths_out), ("the encoder identity file", identity_out)],
        [("--images", args.images), ("--encoder", encoder_file), ("--weights", args.weights)])
    classes = _classes_arg(args.classes, parser)
    images = None if args.images is None else _image_input(args.images, args.strict, parser)
    folder = isinstance(images, Path)
    _torch("embed")
    from ._atomic import atomic_paths
    from .deep import extract_embeddings

    encoder = _image_encoder(args, parser, encoder_file)
    labels, feats = None, None
    if images is None:
        dataset = _load_dataset(args.dataset, args.split or "test", root=args.data_root,
                               download=args.download, jpeg_quality=args.jpeg_quality,
                               classes=classes, n=args.n, seed=args.seed)
        cache = False if args.no_cache else args.cache_dir
        feats = extract_embeddings(encoder, dataset, cache_dir=cache,
                                   batch_size=args.batch_size, progress=not args.quiet)
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if len(dataset) and int(dataset.labels.min()) >= 0:
            labels = dataset.labels
        what = dataset.source
    else:
        what = (f"images from folder {args.images}" if folder
                else f"{len(images)} images from {args.images}")
    targets = [out] + ([labels_out] if labels is not None else []) \
        + ([paths_out] if folder else []) + [identity_out]
    suffixes = [".partial.npy"] + [".partial" + p.suffix for p in targets[1:]]
    skipped = []
    # everything is written to temporary names first and renamed together, the
    # embeddings first: never a companion without (or older than) its embeddings
    with atomic_paths(targets, suffixes) as temps:
        tmp = dict(zip(targets, temps))
        if feats is None:   # a folder or an image array: rows go straight to the file
            feats = encoder.embed(images, out=tmp[out], progress=not args.quiet,
                                  strict=args.strict, desc=f"embed ({encoder.layer})")
        else:
            with open(tmp[out], "wb") as fh:
                np.save(fh, feats)
        shape = tuple(int(s) for s in feats.shape)
        del feats   # a memmap of the temporary file for folders
        if folder:
            files = encoder.last_source.files
            skipped = list(files.skipped)
            if not files.read:
                raise ValueError(f"none of the {len(files)} image files under {args.images} "
                                 f"could be read (first: {skipped[0][1] if skipped else '?'})")
            _write_paths_csv(tmp[paths_out], files.read)
            what = f"{len(files.read)} images from folder {args.images}"
        if labels is not None:
            with open(tmp[labels_out], "wb") as fh:
                np.save(fh, np.asarray(labels, dtype=np.int64))
        record = {"format": IDENTITY_FORMAT, "version": 1, "embeddings": out.name,
                  "sha256": _file_sha256(tmp[out]), "shape": list(shape),
                  "encoder_identity": encoder.identity(), "source": what}
        with open(tmp[identity_out], "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n")
    for stale in ([] if labels is not None else [labels_out]) + ([] if folder else [paths_out]):
        if stale.exists():  # from an earlier run: it no longer matches
            stale.unlink()
            print(f"{PROG} embed: removed stale {stale}", file=sys.stderr)
    wrote = ", ".join(str(p) for p in targets[:-1]) + f" and {identity_out}"
    skip = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
    print(f"embedded {what}{skip}: {shape[0]} x {shape[1]} float32 ({encoder.layer}); "
          f"wrote {wrote}")
    return 0


# ------------------------------------------------------------ scorer options
# Each registered scorer's constructor parameters become options of 'fit'
# (``n_neighbors`` -> ``--n-neighbors``). Types and checks come from this table
# (built on the library's own checks); other parameters get one from their
# default. Help comes from the class docstrings (numpydoc "Parameters").
FIT_FLAGS = ("embeddings", "labels", "scorer", "out")  # the command's own options
_PARAM_DEFAULTS = {"random_state": 0}  # where 'fit' differs from the class default


def _candidates(text):
    """The values a command-line word may stand for: an int, a float, the word itself."""
    out = {"true": [True], "false": [False]}.get(text.lower(), [])  # KNN's --normalize
    for convert in (int, float):
        try:
            out.append(convert(text))
        except ValueError:
            pass
    return out + [text]


def _constraint_type(name, constraint_lists):
    """An argparse ``type`` built from scikit-learn parameter declarations.

    ``constraint_lists``: the ``_parameter_constraints[name]`` of each scorer that
    takes ``name`` (a value any of them accepts is parsed; ``_scorer_params`` then
    checks it against the chosen scorer). None: a boolean (a --flag/--no-flag pair).
    """
    from sklearn.utils._param_validation import _Booleans, _NoneConstraint, make_constraint

    constraints = [make_constraint(c) for lst in constraint_lists for c in lst]
    constraints = [c for c in constraints if not isinstance(c, _NoneConstraint)]
    if constraints and all(isinstance(c, _Booleans) for c in constraints):
        return None
    want = " or ".join(dict.fromkeys(str(c) for c in constraints if not c.hidden))

    def parse(text):
        for value in _candidates(text):
            if any(c.is_satisfied_by(value) for c in constraints):
                return value
        raise argparse.ArgumentTypeError(f"want {want}; got {text!r}")
    return parse


def _param_types() -> dict:
    """``{parameter: argparse type}`` for every scorer parameter with a declaration."""
    from ._base import registered_scorers

    lists: dict = {}
    for cls in registered_scorers().values():
        for name, constraints in cls._parameter_constraints.items():
            lists.setdefault(name, []).append(constraints)
    types = {name: _constraint_type(name, value) for name, value in lists.items()}
    types["random_state"] = _checked(int, None, "an integer")  # files store an int seed
    return types


def _type_from_default(name, default):
    if isinstance(default, bool):
        return None  # a --flag / --no-flag pair
    if isinstance(default, int):
        return _checked(int, _positive_int_check(name) if default > 0 else None, "an integer")
    if isinstance(default, float):
        return _checked(float, None, "a number")
    if isinstance(default, str):
        return str
    return _number_or_word


def _docstring_params(cls) -> dict:
    """``{name: first sentence of its description}`` from a numpydoc docstring."""
    doc = inspect.getdoc(cls) or ""
    match = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    out, name = {}, None
    for line in (match[1] if match else "").splitlines():
        if line and not line[0].isspace():
            name = line.split(":")[0].strip()
            for one in name.split(","):
                out.setdefault(one.strip(), "")
        elif name and line.strip() and "," not in name and not out[name].endswith("."):
            out[name] = (out[name] + " " + line.strip()).strip()
    return {k: re.split(r"(?<=\.)\s", v)[0].replace("``", "") for k, v in out.items() if v}


def scorer_options() -> dict:
    """``{parameter: {"scorers": [short names], "default": ..., "help": ...}}`` of every
    registered scorer's constructor parameters that a command line can set."""
    from ._base import registered_scorers

    options = {}
    for short, cls in registered_scorers().items():
        docs = _docstring_params(cls)
        for param in inspect.signature(cls.__init__).parameters.values():
            default = param.default
            if (param.name == "self" or param.name in FIT_FLAGS
                    or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
                    or not (default is None or isinstance(default, (bool, int, float, str)))):
                continue
            entry = options.setdefault(param.name, {"scorers": [], "defaults": {},
                                                    "help": docs.get(param.name, "")})
            entry["scorers"].append(short)
            entry["defaults"][short] = default
            entry["help"] = entry["help"] or docs.get(param.name, "")
    return options


def _add_scorer_flags(p) -> None:
    from ._base import registered_scorers

    scorers = registered_scorers()
    types = _param_types()
    options = scorer_options()
    p.add_argument("--scorer", choices=list(scorers), required=True,
                   help="; ".join(f"{short}: {cls.__name__}" for short, cls in scorers.items()))
    group = p.add_mutually_exclusive_group()
    for name, entry in options.items():
        flag = "--" + name.replace("_", "-")
        holders = entry["scorers"]
        defaults = set(map(repr, entry["defaults"].values()))
        default = _PARAM_DEFAULTS.get(name)
        text = entry["help"].rstrip(".") or name.replace("_", " ")
        if name == "calibration":
            text += ". Per scorer: " + "; ".join(
                f"{short} {'/'.join(('auto',) + scorers[short]._calibrations)}"
                for short in holders)
        where = "" if len(holders) == len(scorers) else " or ".join(holders) + " only"
        shown = (f"default {next(iter(entry['defaults'].values()))!r}"
                 if default is None and len(defaults) == 1
                 and next(iter(entry["defaults"].values())) is not None else "")
        if where or shown:
            text += f" ({'; '.join(t for t in (where, shown) if t)})"
        target = group if name in ("alpha", "contamination") else p
        kwargs = {"dest": f"param_{name}", "default": default, "help": text,
                  "metavar": name.upper()}
        if name in types:
            kind = types[name]
        else:
            kind = _type_from_default(name, next(iter(entry["defaults"].values())))
        if kind is None:
            del kwargs["metavar"]
            target.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            target.add_argument(flag, type=kind, **kwargs)


def _scorer_params(args, parser, cls) -> dict:
    """The constructor arguments given on the command line, checked against ``cls``."""
    from ._base import registered_scorers

    scorers = {v: k for k, v in registered_scorers().items()}
    options = scorer_options()
    params = {}
    for key, value in vars(args).items():
        if not key.startswith("param_") or value is None:
            continue
        name = key[len("param_"):]
        holders = options[name]["scorers"]
        if scorers[cls] not in holders:
            parser.error(f"--{name.replace('_', '-')} applies to --scorer "
                         f"{' or '.join(holders)} only")
        params[name] = value
    calibration = params.get("calibration", "auto")
    allowed = ("auto",) + tuple(cls._calibrations)
    if calibration not in allowed:
        parser.error(f"--calibration for --scorer {scorers[cls]} must be one of "
                     f"{', '.join(allowed)}; got {calibration!r}")
    from sklearn.utils._param_validation import validate_parameter_constraints

    for name, value in params.items():  # the chosen class's own declarations
        try:
            validate_parameter_constraints(cls._parameter_constraints, {name: value},
                                           caller_name=cls.__name__)
        except (TypeError, ValueError) as exc:
            parser.error(f"--{name.replace('_', '-')}: {_one_line(exc)}")
    return params


def cmd_fit(args, parser) -> int:
    from ._base import registered_scorers

    cls = registered_scorers()[args.scorer]
    if args.labels is not None and not cls._fit_uses_labels:
        users = [k for k, c in registered_scorers().items() if c._fit_uses_labels]
        parser.error(f"--labels applies to --scorer {' or '.join(users)} only")
    params = _scorer_params(args, parser, cls)
    _refuse_overwriting_inputs(parser, [("--out", args.out)],
                               [("--embeddings", args.embeddings), ("--labels", args.labels)])
    X = _load_embeddings(args.embeddings)
    y = None
    if args.labels is not None:
        y = _load_npy(args.labels, "labels file")
        if y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise ValueError(f"labels in {args.labels} must be a 1-D array of {X.shape[0]} "
                             f"labels (one per embedding row); got shape {y.shape}")
        if y.dtype.kind in "iu" and y.size and int(y.min()) < 0:
            raise ValueError(f"labels in {args.labels} contain -1 (unlabelled rows); fit "
                             "without --labels")

    identity = _read_identity(args.embeddings)   # X.encoder.json, from 'gaussood embed'
    scorer = cls(**params)
    scorer.fit(X, y)
    if identity is not None:
        scorer.provenance_ = {"encoder_identity": identity}
    scorer.save(args.out)
    if scorer.threshold_rule_ == "alpha":
        rule = f"alpha {scorer.alpha_:g}"
    else:
        rule = f"contamination {scorer.contamination:g}"
    offset = ("flags by the CV+ p-value" if np.isnan(scorer.offset_)
              else f"offset {scorer.offset_:.6g}")
    print(f"fitted {type(scorer).__name__} on {X.shape[0]} x {X.shape[1]} embeddings"
          f"{'' if y is None else f' with {np.unique(y).shape[0]} classes'} "
          f"(calibration {scorer.calibration_}, {rule}, {offset}); "
          f"wrote {args.out}"
          f"{'' if identity is None else ' with the encoder identity of the embeddings'}")
    return 0


def cmd_score(args, parser) -> int:
    out = args.out
    if out.suffix not in (".csv", ".npz"):
        parser.error(f"--out must end in .csv or .npz; got {out}")
    if (args.embeddings is None) == (args.images is None):
        parser.error("give exactly one of --embeddings X.npy and --images DIR_OR_NPY")
    encoder_file = None
    if args.images is None:
        image_only = [flag for flag, value in (
            ("--encoder", args.encoder), ("--layer", args.layer), ("--weights", args.weights),
            ("--preprocessing", args.preprocessing), ("--strict", args.strict or None))
            if value is not None]
        if image_only:
            parser.error(f"{', '.join(image_only)} apply to --images only")
    else:
        if args.encoder is None:
            parser.error("--images needs --encoder SPEC (the encoder the scorer was fitted on)")
        encoder_file = _encoder_file(args, parser)
    _refuse_overwriting_inputs(parser, [("--out", out)],
                               [("--scorer", args.scorer), ("--embeddings", args.embeddings),
                                ("--images", args.images), ("--encoder", encoder_file),
                                ("--weights", args.weights)])
    import zipfile

    if not zipfile.is_zipfile(_existing_file(args.scorer, "scorer file")):
        raise ValueError(f"{args.scorer} is not a gaussood scorer file (.npz written by "
                         "'gaussood fit')")
    import gaussood

    paths, skipped = None, []
    if args.images is None:
        X = _load_embeddings(args.embeddings)
        scorer = gaussood.load(args.scorer)
        stored = _stored_identity(scorer)
        if stored is not None:
            given = _read_identity(args.embeddings)
            if given is not None:
                _check_identity(stored, given, args.scorer,
                                f"the one in {_identity_path(args.embeddings)}")
            else:
                warnings.warn(f"the scorer in {args.scorer} was fitted on embeddings of a known "
                              f"encoder, but {args.embeddings} has no encoder identity file "
                              f"({_identity_path(args.embeddings).name}): cannot check that "
                              "they come from the same encoder", UserWarning, stacklevel=1)
        if X.shape[1] != scorer.n_features_in_:
            raise ValueError(f"embeddings in {args.embeddings} have {X.shape[1]} features but "
                             f"the scorer in {args.scorer} was fitted on "
                             f"{scorer.n_features_in_}")
        what = "rows"
    else:
        scorer = gaussood.load(args.scorer)
        images = _image_input(args.images, args.strict, parser)
        _torch("score --images")
        encoder = _image_encoder(args, parser, encoder_file)
        stored = _stored_identity(scorer)
        if stored is None:
            warnings.warn(f"the scorer in {args.scorer} stores no encoder identity (fitted on "
                          "embeddings without their .encoder.json): cannot check that "
                          f"{args.encoder} is the encoder it was fitted on", UserWarning,
                          stacklevel=1)
        else:
            _check_identity(stored, encoder.identity(), args.scorer,
                            f"--encoder {args.encoder} (layer {encoder.layer})")
        X = encoder.embed(images, progress=not args.quiet, strict=args.strict,
                          desc=f"embed ({encoder.layer})")
        if isinstance(images, Path):
            files = encoder.last_source.files
            paths, skipped = list(files.read), list(files.skipped)
            if not paths:
                raise ValueError(f"none of the {len(files)} image files under {args.images} "
                                 "could be read")
        if X.shape[1] != scorer.n_features_in_:
            raise ValueError(f"{args.encoder} gives {X.shape[1]} features ({encoder.layer}) "
                             f"but the scorer in {args.scorer} was fitted on "
                             f"{scorer.n_features_in_}")
        what = "images"
    result = scorer.score_pvalue_decision(X)  # one pass, fold models included under cv+
    score, pvalue, flagged = result.score, result.pvalue, result.flagged  # flagged: predict == -1
    _write_scores(out, score, pvalue, flagged, paths)
    n, k = X.shape[0], int(flagged.sum())
    if scorer.threshold_rule_ == "alpha":
        rule = f"alpha {scorer.alpha_:g}"
    else:
        rule = f"the contamination {scorer.contamination:g} threshold"
    skip = f" ({len(skipped)} unreadable file(s) skipped)" if skipped else ""
    print(f"{n} {what}{skip}, {k} flagged ({100.0 * k / max(n, 1):.2f}%) at {rule}; "
          f"wrote {out}")
    return 0


def cmd_shift(args, parser) -> int:
    """Batch shift test; exit status 0 no shift, 1 shift, 2 bad arguments or input
    (as ``diff`` and ``cmp``: 1 is the answer here, so errors take 2)."""
    try:
        import zipfile

        if not zipfile.is_zipfile(_existing_file(args.scorer, "scorer file")):
            raise ValueError(f"{args.scorer} is not a gaussood scorer file (.npz written by "
                             "'gaussood fit')")
        import gaussood
        from . import shift

        X = _load_embeddings(args.embeddings)
        scorer = gaussood.load(args.scorer)
        stored = _stored_identity(scorer)
        given = _read_identity(args.embeddings) if stored is not None else None
        if given is not None:
            _check_identity(stored, given, args.scorer,
                            f"the one in {_identity_path(args.embeddings)}")
        if X.shape[1] != scorer.n_features_in_:
            raise ValueError(f"embeddings in {args.embeddings} have {X.shape[1]} features but "
                             f"the scorer in {args.scorer} was fitted on "
                             f"{scorer.n_features_in_}")
        result = shift.test(scorer, X, args.method, args.alpha)
    except RUNTIME_ERRORS as exc:
        raise CommandError(f"{parser.prog}: error: {_one_line(exc)}") from None
    print(f"{result.method}: statistic {result.statistic:.6g}, p-value {result.pvalue:.4g} "
          f"(n {result.n}, null: {result.null})")
    print(f"{'SHIFT' if result.shift else 'no shift'} at alpha {result.alpha:g}")
    return 1 if result.shift else 0


def _write_scores(out: Path, score, pvalue, flagged, paths=None) -> None:
    """``.npz`` (score, pvalue, flagged, and path for files) or ``.csv`` (one row each:
    index or path, score, pvalue, flagged)."""
    from ._atomic import atomic_path

    with atomic_path(out, suffix=".partial" + out.suffix) as tmp:
        if out.suffix == ".npz":
            extra = {} if paths is None else {"path": np.asarray(paths, dtype=str)}
            with open(tmp, "wb") as fh:
                np.savez(fh, score=score, pvalue=pvalue, flagged=flagged, **extra)
        elif paths is None:
            table = np.column_stack([np.arange(len(score)), score, pvalue, flagged])
            np.savetxt(tmp, table, fmt=["%d", "%.10g", "%.10g", "%d"], delimiter=",",
                       header="index,score,pvalue,flagged", comments="")
        else:
            import csv

            with open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(["path", "score", "pvalue", "flagged"])
                writer.writerows((p, "%.10g" % s, "%.10g" % v, int(f))
                                 for p, s, v, f in zip(paths, score, pvalue, flagged))


def cmd_diagnose(args, parser) -> int:
    if args.out_dir is not None:
        _refuse_overwriting_inputs(
            parser, [("--out-dir's " + name, args.out_dir / name)
                     for name in ("report.md", "report.json")],
            [("--embeddings", args.embeddings)])
    X = _load_embeddings(args.embeddings)
    from .diagnostics import diagnose
    report = diagnose(X, max_samples=args.max_samples, n_projections=args.projections,
                      seed=args.seed)
    markdown = report.to_markdown()
    print(markdown)
    if args.out_dir is not None:
        folder = args.out_dir
        folder.mkdir(parents=True, exist_ok=True)
        _write_text(folder / "report.md", markdown + "\n")
        _write_text(folder / "report.json",
                    json.dumps(report.to_dict(), indent=2, default=_json_default) + "\n")
        figures = ""
        if hasattr(report, "save_figures"):
            try:
                report.save_figures(folder)
                figures = " and figures"
            except ImportError as exc:  # e.g. no matplotlib: the report itself is written
                warnings.warn(f"figures skipped: {exc}", UserWarning, stacklevel=1)
        print(f"wrote {folder / 'report.md'} and {folder / 'report.json'}{figures}",
              file=sys.stderr)
    return 0


def cmd_bench(args, parser) -> int:
    if args.n_fit < 100 or args.n_eval < 100:
        parser.error("--n-fit and --n-eval must be at least 100")
    classes = _classes_arg(args.classes, parser)
    torch = _torch("bench")
    from .deep.data import parse_classes
    from .deep.evaluate import OODSet, dataset_loader, evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    _existing_file(args.encoder, "encoder file")
    if args.out_dir is not None:
        _refuse_overwriting_inputs(
            parser, [("--out-dir's " + name, args.out_dir / name)
                     for name in (f"{args.name}.md", f"{args.name}.json")],
            [("--encoder", args.encoder)])
    seeds = args.seeds[:1] if args.quick else args.seeds
    n_fit = min(args.n_fit, 5000) if args.quick else args.n_fit
    n_eval = min(args.n_eval, 1000) if args.quick else args.n_eval
    quality = None if args.jpeg_quality == 0 else args.jpeg_quality
    ood = {}
    for spec in args.ood:
        name, _, subset = spec.partition(":")
        try:
            ood_classes = parse_classes(subset) if subset else None
        except ValueError as exc:
            parser.error(f"argument --ood: {spec}: {exc}")
        kind = "near" if name in args.near or name == args.dataset else "far"
        ood[spec] = OODSet(dataset_loader(name, "test", root=args.data_root, classes=ood_classes,
                                          n=2 * n_eval, download=args.download,
                                          jpeg_quality=quality), kind, spec)

    def id_set(split, n):
        return _load_dataset(args.dataset, split, root=args.data_root, download=args.download,
                             classes=classes, n=n, jpeg_quality=quality)

    result = evaluate(args.encoder, id_set("train", 2 * n_fit if args.quick else None),
                      id_set("test", 2 * n_eval if args.quick else None), ood, seeds=seeds,
                      n_fit=n_fit, n_eval=n_eval, alpha=args.alpha, layer=args.layer,
                      name=args.dataset, progress=not args.quiet)
    text = result.to_markdown()
    print(text)
    if args.out_dir is not None:
        _write_text(args.out_dir / f"{args.name}.md", text)
        _write_text(args.out_dir / f"{args.name}.json", result.to_json() + "\n")
        print(f"wrote {args.out_dir / args.name}.md and .json", file=sys.stderr)
    return 0


# ------------------------------------------------------- shared option groups
def _add_data_flags(p, *, default_dataset, n_help) -> None:
    """--dataset, --data-root, --download, --classes, --n (train, embed, bench)."""
    from .deep.data import DATASETS

    p.add_argument("--dataset", default=default_dataset, help=", ".join(DATASETS))
    p.add_argument("--data-root", default=None,
                   help="data folder (default: $GAUSSOOD_DATA or ~/.cache/gaussood/data)")
    p.add_argument("--download", action="store_true", help="fetch missing data (network)")
    p.add_argument("--classes", default=None, help="class subset, e.g. '0-5' or '0,1,2'")
    if n_help is not None:
        p.add_argument("--n", type=_positive_int, default=None, help=n_help)


def _add_device_flag(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def _add_quiet_flag(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_encoder_flags(p, *, required: bool) -> None:
    """--encoder SPEC and what goes with it (embed, score --images)."""
    p.add_argument("--encoder", required=required, default=None, metavar="SPEC",
                   help="a gaussood encoder file or training checkpoint, a TorchScript file, "
                        "torchvision:NAME (with --weights), or package.module:factory")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="features: backbone (default) or head for gaussood encoders; a "
                        "submodule name, NAME:input or output for other models (default: "
                        "the input of the last Linear layer)")
    p.add_argument("--weights", type=Path, default=None, metavar="FILE",
                   help="state-dict file for --encoder torchvision:NAME (without it the "
                        "weights are random; nothing is downloaded)")
    p.add_argument("--preprocessing", type=_preprocessing_arg, default=None, metavar="JSON",
                   help="what the model expects, as a JSON object (keys input_size, resize, "
                        "resize_size, channels, value_range, mean, std; default: stored in "
                        "gaussood files, torchvision's for its models, else ImageNet's)")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="images per batch")
    _add_device_flag(p)
    p.add_argument("--strict", action="store_true",
                   help="stop at an unreadable file of an --images folder (default: skip it "
                        "with a warning)")
    _add_quiet_flag(p)


def _add_layer_flag(p) -> None:
    p.add_argument("--layer", choices=["backbone", "head"], default="backbone",
                   help="backbone features h or projection-head output z")


# TrainConfig fields become options of 'train' (``batch_size`` -> ``--batch-size``), so a
# new field needs no change here. This table only words the help of some of them and
# names the choices of string fields; other fields get their name as help.
TRAIN_HELP = {
    "model": "encoder architecture",
    "objective": "contrastive InfoNCE, or the cross-entropy baseline (needs labels)",
    "epochs": "training epochs",
    "batch_size": "images per step",
    "lr": "default: 0.06 * batch_size / 128",
    "seed": "seed of the weights, batches and --n",
    "steps_per_epoch": "cap the steps of each epoch (smoke runs)",
    "rotation": "rotations in the objective: negatives (one random quarter turn per image, "
                "CSI-style shifted negatives) or predict (also a 4-way rotation head)",
    "rotation_negatives": "fraction of the batch with an extra view at another rotation, "
                          "as explicit negatives",
    "rotation_weight": "weight of the rotation cross-entropy (--rotation predict)",
    "proxy_monitor": "OOD-proxy AUROC (noise, pixel-permuted, jigsaw, rotated ID images) "
                     "next to the k-NN monitor",
}


def _train_choices() -> dict:
    from .deep.models import MODELS

    from .deep.rotation import ROTATIONS

    return {"model": list(MODELS), "objective": ["infonce", "supervised"],
            "rotation": list(ROTATIONS)}


def _add_train_config_flags(p) -> None:
    import dataclasses
    import typing

    from .deep import TrainConfig

    defaults, hints, choices = TrainConfig(), typing.get_type_hints(TrainConfig), _train_choices()
    taken = set(p._option_string_actions)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if not field.init or flag in taken:
            continue
        default = getattr(defaults, field.name)
        kinds = [t for t in typing.get_args(hints[field.name]) or (hints[field.name],)
                 if t is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else None
        kwargs = {"dest": f"config_{field.name}", "default": default,
                  "help": TRAIN_HELP.get(field.name, field.name.replace("_", " "))}
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if field.name in choices:
            kwargs["choices"] = choices[field.name]
        if kind is int:
            positive = default is None or default > 0
            kwargs["type"] = _positive_int if positive else int
        elif kind is float:
            kwargs["type"] = float
        elif kind is not str:
            continue  # not settable from a command line (lists, nested configs)
        kwargs["metavar"] = None if "choices" in kwargs else field.name.upper()
        p.add_argument(flag, **kwargs)


def _train_config(args):
    from .deep import TrainConfig

    return TrainConfig(**{k[len("config_"):]: v for k, v in vars(args).items()
                          if k.startswith("config_")})


# ---------------------------------------------------------------------- parser
def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; ``command`` (train, embed) adds that command's torch-side options."""
    from . import __version__

    parser = _Parser(prog=PROG, description=(
        "Out-of-distribution detection on contrastive embeddings: train an encoder, "
        "embed images, fit a scorer, score new embeddings."),
        epilog="Run 'gaussood <command> --help' for the options of a command. Exit status: "
               "0 ok, 1 runtime error (missing or invalid file/data), 2 bad arguments.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    fmt = _Help

    # train, embed: their options name datasets and TrainConfig fields, which live on the
    # torch side; they are added only when that command runs (see main).
    p = sub.add_parser("train", formatter_class=fmt, help="train a contrastive encoder (torch)",
                       description="Train an encoder with InfoNCE (SimCLR) or cross-entropy; "
                       "write an fp16 encoder file and a .json provenance file beside it.")
    p.set_defaults(handler=cmd_train, parser=p)
    if command == "train":
        p.add_argument("--out", type=Path, required=True, metavar="PATH.pt",
                       help="encoder file to write; PATH.json (config, history, data, sha256) "
                            "goes beside it")
        _add_data_flags(p, default_dataset="cifar10",
                        n_help="train on n images (a seeded random subset; noise sets: their "
                               "size)")
        p.add_argument("--images", type=Path, default=None, metavar="DIR",
                       help="train on the image files under DIR (recursive, any size: shorter "
                            "side to the largest --resolution side, centre crop) instead of "
                            "--dataset; unlabelled, so no k-NN monitor")
        _add_train_config_flags(p)
        p.add_argument("--nproc", type=_positive_int, default=1,
                       help="processes (DistributedDataParallel ranks, one per GPU on CUDA); "
                            "--batch-size is the global batch, split across them; under "
                            "torchrun the world size")
        p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
        _add_device_flag(p)
        p.add_argument("--work-dir", type=Path, default=None,
                       help="checkpoint after each epoch here and resume from it")
        p.add_argument("--snapshots", action="store_true",
                       help="also keep an fp16 encoder per epoch in --work-dir")
        p.add_argument("--no-eval", action="store_true",
                       help="skip the per-epoch k-NN monitor on the test split")
        _add_quiet_flag(p)

    p = sub.add_parser("embed", formatter_class=fmt, help="embed images with an encoder (torch)",
                       description="Embed a dataset (cached), a folder of image files or a "
                       "uint8 .npy image array with an encoder; write float32 embeddings, the "
                       "encoder's identity (FILE.encoder.json), and the labels or file paths.")
    p.set_defaults(handler=cmd_embed, parser=p)
    if command == "embed":
        _add_encoder_flags(p, required=True)
        _add_data_flags(p, default_dataset=None, n_help="a seeded subset of n images")
        p.add_argument("--images", type=Path, default=None, metavar="DIR_OR_NPY",
                       help="a folder of image files (recursive, sorted; any size and mode) "
                            "or a uint8 .npy of shape (N, H, W, 3), instead of --dataset")
        p.add_argument("--split", choices=["train", "test"], default=None, help="default: test")
        p.add_argument("--jpeg-quality", type=int, default=None,
                       help="re-encode the images as JPEG at this quality (1-100)")
        p.add_argument("--seed", type=int, default=0, help="seed of --n and of the noise sets")
        p.add_argument("--out", type=Path, required=True, metavar="FILE.npy",
                       help="float32 embeddings; FILE.encoder.json gets the encoder identity, "
                            "FILE.labels.npy the labels (datasets with labels), "
                            "FILE.paths.csv the image files in row order (folders)")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="embedding cache of --dataset (default: $GAUSSOOD_CACHE or "
                            "~/.cache/gaussood/cache)")
        p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")

    # fit
    p = sub.add_parser("fit", formatter_class=fmt, help="fit a scorer on ID embeddings",
                       description="Fit a scorer on in-distribution embeddings and save it "
                       "(.npz, no pickle).")
    p.add_argument("--embeddings", type=Path, required=True, metavar="X.npy",
                   help="2-D array (n_samples, n_features)")
    p.add_argument("--labels", type=Path, default=None, metavar="y.npy",
                   help="class labels: one Gaussian per class (gaussian only)")
    _add_scorer_flags(p)
    p.add_argument("--out", type=Path, required=True, metavar="scorer.npz",
                   help="fitted scorer to write (load it with gaussood.load)")
    p.set_defaults(handler=cmd_fit, parser=p)

    # score
    p = sub.add_parser("score", formatter_class=fmt, help="score embeddings or images with a "
                       "saved scorer",
                       description="Score embeddings, or images embedded on the way with the "
                       "encoder the scorer was fitted on (torch), with a saved scorer: score "
                       "(higher = more in-distribution), p-value, and the flag at the scorer's "
                       "threshold.")
    p.add_argument("--scorer", type=Path, required=True, metavar="scorer.npz",
                   help="a scorer written by 'gaussood fit'")
    p.add_argument("--embeddings", type=Path, default=None, metavar="X.npy",
                   help="2-D array with the scorer's number of features")
    p.add_argument("--images", type=Path, default=None, metavar="DIR_OR_NPY",
                   help="instead of --embeddings: a folder of image files or a uint8 .npy "
                        "(N, H, W, 3), embedded with --encoder")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.csv|FILE.npz",
                   help=".csv (index,score,pvalue,flagged; path,score,pvalue,flagged for a "
                        "folder) or .npz (score, pvalue, flagged, and path for a folder)")
    _add_encoder_flags(p, required=False)
    p.set_defaults(handler=cmd_score, parser=p)

    # shift
    p = sub.add_parser("shift", formatter_class=fmt, help="test a batch of embeddings for a "
                       "distribution shift",
                       description="Test whether a batch of embeddings, as a whole, still "
                       "looks in-distribution for a saved scorer (gaussood.shift.test): "
                       "prints the statistic, p-value and verdict. Exit status: 0 no shift, "
                       "1 shift, 2 bad arguments or bad input.")
    p.add_argument("--scorer", type=Path, required=True, metavar="scorer.npz",
                   help="a scorer written by 'gaussood fit'")
    p.add_argument("--embeddings", type=Path, required=True, metavar="B.npy",
                   help="the batch: 2-D array with the scorer's number of features")
    from .shift import METHODS as shift_methods
    p.add_argument("--method", choices=list(shift_methods), default="ks",
                   help="KS or Fisher or higher criticism on the rows' p-values; Hotelling "
                        "T^2 of the batch mean (gaussian scorers)")
    p.add_argument("--alpha", type=_param_types()["alpha"], default=0.05,
                   help="false-alarm rate of the batch test")
    p.set_defaults(handler=cmd_shift, parser=p)

    # diagnose
    p = sub.add_parser("diagnose", formatter_class=fmt, help="Gaussianity diagnostics",
                       description="Check whether embeddings look Gaussian, beside an exact "
                       "Gaussian sample of the same n, d and covariance.")
    p.add_argument("--embeddings", type=Path, required=True, metavar="X.npy",
                   help="2-D array (n_samples, n_features), n >= 20")
    p.add_argument("--max-samples", type=_checked(int, _positive_int_check("--max-samples",
                                                                      minimum=20),
                                                  "an integer >= 20"), default=5000,
                   help="random subsample of at most this many rows (at least 20)")
    p.add_argument("--projections", type=_positive_int, default=128,
                   help="random projections tested")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the subsample, projections and reference sample")
    p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                   help="write report.md, report.json (and figures, where supported)")
    p.set_defaults(handler=cmd_diagnose, parser=p)

    p = sub.add_parser("bench", formatter_class=fmt, help="evaluate every scorer on an "
                       "encoder's embeddings (torch)",
                       description="Embed an ID dataset and OOD sets with an encoder file, fit "
                       "gaussood's scorers over several seeds and print AUROC, AUPR, FPR@95TPR "
                       "and false alarms (gaussood.deep.evaluate). Never trains: give an "
                       "encoder file ('gaussood train' or 'make train' writes one). The full "
                       "CIFAR-10 benchmark with its peers is benchmarks/cifar10_ood.py.")
    p.set_defaults(handler=cmd_bench, parser=p)
    if command == "bench":
        p.add_argument("--encoder", type=Path, required=True, metavar="PATH.pt",
                       help="encoder file")
        _add_data_flags(p, default_dataset="cifar10", n_help=None)
        p.add_argument("--ood", nargs="+", metavar="NAME[:CLASSES]",
                       default=["cifar100", "svhn", "fashion-mnist", "mnist", "uniform-noise",
                                "gaussian-noise"],
                       help="OOD test sets (missing files are reported and skipped); "
                            "NAME:CLASSES takes some classes, e.g. cifar10:6-9")
        p.add_argument("--near", nargs="*", default=["cifar100"],
                       help="OOD sets reported as near (also the ID dataset's own classes)")
        p.add_argument("--jpeg-quality", type=int, default=75,
                       help="JPEG re-encoding of every image (0: none)")
        _add_layer_flag(p)
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--n-fit", type=int, default=40_000, help="ID train images per seed")
        p.add_argument("--n-eval", type=int, default=5_000,
                       help="held-out ID test images and images per OOD set, per seed")
        p.add_argument("--alpha", type=_param_types()["alpha"], default=0.05,
                       help="target false-alarm rate of every scorer")
        p.add_argument("--quick", action="store_true",
                       help="one seed, at most 5,000 fit / 1,000 eval images")
        p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
        p.add_argument("--out-dir", type=Path, default=None, metavar="DIR",
                       help="also write NAME.md and NAME.json here")
        p.add_argument("--name", default="bench", help="file name for --out-dir")
        _add_quiet_flag(p)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so that partial outputs are removed."""


@contextlib.contextmanager
def _terminate_cleanly():
    """Turn SIGTERM into an exception while a command runs (unless someone else
    already handles it), so that every atomic write removes its temporary file."""
    import signal
    import threading

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return

    def handler(signum, frame):
        raise _Terminated()
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run(prog: str, fn, *fn_args) -> int:
    with _one_line_warnings(prog), _terminate_cleanly():
        try:
            return fn(*fn_args)
        except CommandError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        except KeyboardInterrupt:
            sys.stderr.write(f"{prog}: interrupted\n")
            return 130
        except _Terminated:
            sys.stderr.write(f"{prog}: terminated\n")
            return 143
        except RUNTIME_ERRORS as exc:
            if os.environ.get("GAUSSOOD_DEBUG"):
                raise
            message = _one_line(exc) or type(exc).__name__
            if isinstance(exc, KeyError):
                message = f"missing key {message}"
            sys.stderr.write(f"{prog}: error: {message}\n")
            return 1
        except Exception as exc:  # a bug or an unexpected library error: still one line
            if os.environ.get("GAUSSOOD_DEBUG"):
                raise
            sys.stderr.write(f"{prog}: error: {type(exc).__name__}: {_one_line(exc)} "
                             "(set GAUSSOOD_DEBUG=1 to see the traceback)\n")
            return 1


def main(argv=None) -> int:
    """Run the command line; return the exit status (never raises SystemExit)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        command = argv[0] if argv and argv[0] in TORCH_COMMANDS else None
        try:
            if command is not None:
                _torch(command)
            parser = build_parser(command)
        except ImportError as exc:
            sys.stderr.write(f"{PROG} {command}: error: {_one_line(exc)}\n")
            return 1
        try:
            args = parser.parse_args(argv)
        except CommandError as exc:
            sys.stderr.write(f"{exc}\n")
            return 2
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        args.argv = argv
        return _run(args.parser.prog, args.handler, args, args.parser)
    except SystemExit as exc:  # --help, --version, or a forwarded parser exiting
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
