"""Pickle-free saving and loading of fitted scorers (one .npz file each).

Layout: one JSON header stored as a 0-d unicode array under ``__gaussood__``
({"format", "version", "class", "params", "scalars"}, and "provenance" when the
scorer has a ``provenance_`` dict) and each fitted array under ``attr/<name>``.
Files are written to a temporary name and renamed, so a failed save never leaves a
half-written file; loading never unpickles
(``allow_pickle=False``) and checks the header, the version and the class.

Any registered scorer class can be saved (see ``gaussood._base``: defining a
subclass of ``BaseScorer`` registers it); a file names its class by the class
name, which must be registered (defined or imported) when the file is loaded.
This module depends on ``_base`` only, never on the scorer modules.

``provenance_`` (optional) is a plain JSON dict about where the fitted data came from,
e.g. ``{"encoder_identity": {...}}`` written by ``gaussood fit`` for embeddings made by
``gaussood embed``. It is stored as is, read back as is, and never used to import or
build anything; files without it load as before, and ``fit`` clears it.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np

from ._atomic import atomic_path
from ._base import scorer_class

FORMAT = "gaussood.scorer"
FORMAT_VERSION = 1
_HEADER = "__gaussood__"


_PROVENANCE = "provenance_"


def _fitted_attributes(scorer) -> dict:
    return {k: v for k, v in vars(scorer).items()
            if k.endswith("_") and not k.startswith("_") and k != _PROVENANCE}


def _provenance(scorer, where) -> dict | None:
    """The scorer's optional ``provenance_``: None, or a dict that JSON round-trips."""
    value = getattr(scorer, _PROVENANCE, None)
    if value is None:
        return None
    try:
        if not isinstance(value, dict) or json.loads(json.dumps(value)) != value:
            raise TypeError
    except (TypeError, ValueError):
        raise TypeError(f"{where}: provenance_ must be a dict of JSON values (str keys, "
                        f"lists, numbers, strings); got {value!r:.200}.") from None
    return value


def _jsonable(name, value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"Cannot save {name}={value!r}: only None, bool, int, float and str "
                    "parameters can be stored without pickle (pass an int random_state).")


def save(scorer, path) -> None:
    """Write a fitted gaussood scorer to ``path`` (the name is used as given)."""
    from sklearn.utils.validation import check_is_fitted

    if scorer_class(type(scorer).__name__) is not type(scorer):
        raise TypeError(f"save() takes a registered gaussood scorer; got "
                        f"{type(scorer).__name__}.")
    check_is_fitted(scorer)
    params = {k: _jsonable(k, v) for k, v in scorer.get_params(deep=False).items()}
    scalars, arrays = {}, {}
    for name, value in _fitted_attributes(scorer).items():
        if isinstance(value, np.ndarray):
            if name == "feature_names_in_":  # scikit-learn keeps column names as objects
                value = value.astype(str)
            if value.dtype.hasobject:
                raise TypeError(f"Cannot save {name}: an object array needs pickle.")
            arrays[f"attr/{name}"] = value
        else:
            scalars[name] = _jsonable(name, value)
    header = {"format": FORMAT, "version": FORMAT_VERSION,
              "class": type(scorer).__name__, "params": params, "scalars": scalars}
    provenance = _provenance(scorer, "save")
    if provenance is not None:
        header["provenance"] = provenance
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{_HEADER: np.array(json.dumps(header))}, **arrays)


def _read(path):
    """(header, arrays) of a scorer file, or a ValueError saying why not."""
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise ValueError(f"{path} is a folder, not a gaussood scorer file.") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable gaussood file (truncated or corrupted): "
                         f"{exc}") from exc
    except ValueError:
        raise ValueError(f"{path} is not a readable gaussood file (not an .npz archive, "
                         "or one that needs pickle).") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a gaussood scorer file: it holds a single "
                         f"{'.npy array' if isinstance(data, np.ndarray) else 'object'}, not "
                         "an .npz archive written by gaussood.save.")
    try:
        with data:
            if _HEADER not in data.files:
                raise ValueError(f"{path} is not a gaussood scorer file (no {_HEADER} header).")
            header = json.loads(str(data[_HEADER]))
            arrays = {k[len("attr/"):]: data[k] for k in data.files if k.startswith("attr/")}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable gaussood file (truncated or corrupted): "
                         f"{exc}") from exc
    except ValueError as exc:
        if "gaussood" in str(exc):
            raise
        raise ValueError(f"{path} is not a readable gaussood file (an array that needs "
                         f"pickle, or a corrupted one): {exc}") from None
    return header, arrays


def load(path, expected=None):
    """Read a scorer written by :func:`save`.

    Raises ``ValueError`` for a truncated, corrupted, foreign or inconsistent
    file (every parameter goes through the class's own validation, and every
    fitted attribute through its schema check: shapes against
    ``n_features_in_``, finite values, sorted calibration scores, bounds) and
    for a file from a newer format version; ``TypeError`` when ``expected`` (a
    class) does not match the stored class.
    """
    path = os.fspath(path)
    header, arrays = _read(path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gaussood scorer file (format "
                         f"{header.get('format') if isinstance(header, dict) else header!r}).")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path} has an invalid format version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} has format version {version}; this gaussood reads up to "
                         f"version {FORMAT_VERSION}. Upgrade gaussood to read it.")
    cls = scorer_class(header.get("class"))
    if cls is None:
        raise ValueError(f"{path} holds an unknown scorer class {header.get('class')!r}: "
                         "define or import that class before loading the file.")
    if expected is not None and not issubclass(cls, expected):
        raise TypeError(f"{path} holds a {cls.__name__}, not a {expected.__name__}.")
    for key in ("params", "scalars"):
        if not isinstance(header.get(key), dict):
            raise ValueError(f"{path} has a header without {key!r} (a corrupted or "
                             "hand-edited gaussood file).")
    provenance = header.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"{path} has a 'provenance' entry that is not a JSON object (a "
                         "corrupted or hand-edited gaussood file).")
    try:
        scorer = cls(**header["params"])
    except TypeError as exc:
        raise ValueError(f"{path} has parameters this {cls.__name__} does not take: {exc}") from exc
    for name, value in {**header["scalars"], **arrays}.items():
        if not (name.endswith("_") and name.isidentifier() and not name.startswith("_")):
            raise ValueError(f"{path} holds an unexpected attribute {name!r}.")
        if name == "feature_names_in_":
            value = value.astype(object)
        setattr(scorer, name, value)
    try:  # parameters and every fitted array, before anything is built from them
        scorer._check_loaded()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} holds an incomplete or inconsistent {cls.__name__}: "
                         f"{exc}") from None
    try:  # a file with missing or reshaped arrays fails here, not at first use
        scorer._after_load()
        scorer.score_samples(np.zeros((1, int(scorer.n_features_in_))))
    except Exception as exc:
        raise ValueError(f"{path} holds an incomplete or inconsistent {cls.__name__}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if provenance is not None:
        scorer.provenance_ = provenance
    return scorer
