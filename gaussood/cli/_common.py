"""What every command shares: errors, reading ``.npy`` inputs, refusing to overwrite
inputs, loading datasets with the command line's words."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PROG = "gaussood"
# Errors of a run (not of the command line): one line on stderr, exit status 1.
RUNTIME_ERRORS = (FileNotFoundError, ValueError, TypeError, OSError, ImportError,
                  RuntimeError, MemoryError, KeyError)


class CommandError(Exception):
    """A usage error found after parsing (exit status 2)."""


def one_line(text) -> str:
    return " ".join(str(text).split())


def existing_file(path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} is not a file: {path}")
    return path


def load_npy(path, what: str) -> np.ndarray:
    path = existing_file(path, what)
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise ValueError(f"{what} {path} is not a .npy file (write it with numpy.save)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{what} {path} is not a readable .npy array: {one_line(exc)}") from None
    except (OSError, EOFError) as exc:
        raise OSError(f"cannot read {what} {path}: {one_line(exc)}") from None


def load_embeddings(path) -> np.ndarray:
    X = load_npy(path, "embeddings file")
    if X.ndim != 2:
        raise ValueError(f"embeddings in {path} must be a 2-D array (n_samples, n_features); "
                         f"got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"embeddings in {path} must be numbers; got dtype {X.dtype}")
    return X


def write_text(path, text: str) -> None:
    from .._atomic import atomic_path

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


def refuse_overwriting_inputs(parser, outputs, inputs) -> None:
    """A usage error when an output would replace one of the command's inputs.

    ``outputs`` and ``inputs`` are ``(what, path)`` pairs; a None path is skipped.
    """
    for out_what, out in outputs:
        for in_what, path in inputs:
            if out is not None and path is not None and _same_file(Path(out), Path(path)):
                parser.error(f"{out_what} {out} is the same file as {in_what}; writing it "
                             "would destroy that input: choose another name")


def refuse_overwriting_by_reports(args, names, inputs) -> None:
    """``refuse_overwriting_inputs`` for the files ``names`` written under ``--out-dir``."""
    if args.out_dir is not None:
        refuse_overwriting_inputs(
            args.parser, [("--out-dir's " + name, args.out_dir / name) for name in names],
            inputs)


def json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def labels_path(out: Path) -> Path:
    """``emb.npy`` -> ``emb.labels.npy``."""
    return out.with_name(out.name[:-len(".npy")] + ".labels.npy")


def load_dataset(name, split, **kwargs):
    """``load_dataset`` with the command line's words in its 'how to get it' hint."""
    from ..deep import load_dataset

    try:
        return load_dataset(name, split, **kwargs)
    except FileNotFoundError as exc:
        raise FileNotFoundError(str(exc).replace("pass download=True", "pass --download")
                                .replace("download=True", "--download")) from None


def need_torch(command: str):
    """``torch``, or an ImportError saying that ``command`` needs it."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"'{command}' needs torch: pip install 'gaussood[torch]' "
                          f"({one_line(exc)})") from None
    return torch
