"""Pickle-free saving and loading of fitted scorers (one .npz file each).

Layout: one JSON header stored as a 0-d unicode array under ``__gaussood__``
({"format", "version", "class", "params", "scalars"}, and "provenance" when the
scorer has a ``provenance_`` dict) and each fitted array under ``attr/<name>``.
A CV+ scorer (``calibration_ == "cv+"``) also stores its fold models' states: fold
k's arrays under ``fold/<k>/<name>`` and its other values in the header's
"fold_scalars" list; such files are version 2 (older gaussood versions refuse them
with an "upgrade" message), all others stay version 1.
A composite scorer (``PValueCombination``: its fitted state is a list of fitted
scorers, ``scorers_``) is version 3: its own header (with "components", their count,
and "templates", the classes and parameters of its ``scorers`` parameter) and arrays
as above, and component i stored as a scorer file of its own under the prefix
``component/<i>/`` (its header ``component/<i>/__gaussood__``, its arrays
``component/<i>/attr/<name>``, ...). Members that fit none of these names are
refused.
Files are written to a temporary name and renamed, so a failed save never leaves a
half-written file; loading never unpickles
(``allow_pickle=False``) and checks the header, the version and the class.

Any registered scorer class can be saved (see ``gaussood._registry``: defining a
subclass of ``BaseScorer`` registers it); a file names its class by the class
name, which must be registered (defined or imported) when the file is loaded.
This module depends on ``_registry`` only, never on the scorer modules.

``provenance_`` (optional) is a plain JSON dict about where the fitted data came from,
e.g. ``{"encoder_identity": {...}}`` written by ``gaussood fit`` for embeddings made by
``gaussood embed``. It is stored as is, read back as is, and never used to import or
build anything; files without it load as before, and ``fit`` clears it.
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import numpy as np

from ._atomic import atomic_path
from ._registry import composite_class, scorer_class

FORMAT = "gaussood.scorer"
FORMAT_VERSION = 3  # the newest version this module reads (2: CV+ folds; 3: composites)
_HEADER = "__gaussood__"
_FOLDS = "fold_states_"
_COMPONENTS = "scorers_"   # a composite's fitted scorers (its templates: param "scorers")
_COMPONENT = "component/"  # member prefix of a composite's components
_MAX_NESTING = 4           # combinations of combinations, at most this deep


_PROVENANCE = "provenance_"


def _fitted_attributes(scorer) -> dict:
    return {k: v for k, v in vars(scorer).items()
            if k.endswith("_") and not k.startswith("_") and k not in (_PROVENANCE, _FOLDS)}


def _split(name, attributes, arrays, prefix):
    """Scalars of ``attributes``, with its arrays put in ``arrays`` under ``prefix``."""
    scalars = {}
    for key, value in attributes.items():
        if isinstance(value, np.ndarray):
            if key == "feature_names_in_":  # scikit-learn keeps column names as objects
                value = value.astype(str)
            if value.dtype.hasobject:
                raise TypeError(f"Cannot save {name}{key}: an object array needs pickle.")
            arrays[f"{prefix}{key}"] = value
        else:
            scalars[key] = _jsonable(f"{name}{key}", value)
    return scalars


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
    if isinstance(value, (list, tuple)):  # e.g. a combination's column blocks
        return [_jsonable(f"{name}[{i}]", item) for i, item in enumerate(value)]
    raise TypeError(f"Cannot save {name}={value!r}: only None, bool, int, float, str and "
                    "lists of them can be stored without pickle (pass an int random_state).")


def _pack(scorer, name=""):
    """(header, arrays) of a fitted plain scorer; ``name`` prefixes error messages."""
    from sklearn.utils.validation import check_is_fitted

    if scorer_class(type(scorer).__name__) is not type(scorer):
        raise TypeError(f"save() takes a registered gaussood scorer; got {name}"
                        f"{type(scorer).__name__}.")
    check_is_fitted(scorer)
    params = {k: _jsonable(f"{name}{k}", v) for k, v in scorer.get_params(deep=False).items()}
    arrays = {}
    scalars = _split(name, _fitted_attributes(scorer), arrays, "attr/")
    folds = getattr(scorer, _FOLDS, None)
    header = {"format": FORMAT, "version": 1 if folds is None else 2,
              "class": type(scorer).__name__, "params": params, "scalars": scalars}
    if folds is not None:
        header["fold_scalars"] = [_split(f"{name}{_FOLDS}[{k}].", fold, arrays, f"fold/{k}/")
                                  for k, fold in enumerate(folds)]
    provenance = _provenance(scorer, "save")
    if provenance is not None:
        header["provenance"] = provenance
    return header, arrays


def _template(template, where, depth=0):
    """An unfitted scorer as {"class", "params"} (a composite's templates within)."""
    cls = type(template)
    if depth > _MAX_NESTING or (scorer_class(cls.__name__) or composite_class(cls.__name__)) \
            is not cls:
        raise TypeError(f"Cannot save {where}: a {cls.__name__} is not a registered "
                        f"gaussood scorer (or is nested more than {_MAX_NESTING} deep).")
    params = template.get_params(deep=False)
    inner = params.pop("scorers", None) if cls._composite else None
    out = {k: _jsonable(f"{where}.{k}", v) for k, v in params.items()}
    if cls._composite:
        out["scorers"] = None if inner is None else [
            _template(t, f"{where}.scorers[{i}]", depth + 1) for i, t in enumerate(inner)]
    return {"class": cls.__name__, "params": out}


def _pack_composite(scorer, name="", depth=0):
    """(header, arrays) of a fitted composite: its own state, then each component's
    header and arrays under ``component/<i>/`` (a composite component's within)."""
    from sklearn.utils.validation import check_is_fitted

    if depth > _MAX_NESTING:
        raise TypeError(f"Cannot save {name}: combinations nest at most {_MAX_NESTING} deep.")
    check_is_fitted(scorer)
    params = scorer.get_params(deep=False)
    templates = params.pop("scorers")
    if templates is not None:  # the unfitted templates: class and parameters
        templates = [_template(t, f"{name}scorers[{i}]") for i, t in enumerate(templates)]
    arrays = {}
    own = {k: v for k, v in _fitted_attributes(scorer).items() if k != _COMPONENTS}
    components = list(getattr(scorer, _COMPONENTS))
    header = {"format": FORMAT, "version": 3, "class": type(scorer).__name__,
              "params": {k: _jsonable(f"{name}{k}", v) for k, v in params.items()},
              "templates": templates, "scalars": _split(name, own, arrays, "attr/"),
              "components": len(components)}
    for i, component in enumerate(components):
        where = f"{name}{_COMPONENTS}[{i}]."
        part, part_arrays = (_pack_composite(component, where, depth + 1)
                             if composite_class(type(component).__name__) is type(component)
                             else _pack(component, where))
        arrays[f"{_COMPONENT}{i}/{_HEADER}"] = np.array(json.dumps(part))
        arrays.update({f"{_COMPONENT}{i}/{k}": v for k, v in part_arrays.items()})
    provenance = _provenance(scorer, "save")
    if provenance is not None:
        header["provenance"] = provenance
    return header, arrays


def save(scorer, path) -> None:
    """Write a fitted gaussood scorer (or combination) to ``path`` (the name is used as
    given)."""
    if composite_class(type(scorer).__name__) is type(scorer):
        header, arrays = _pack_composite(scorer)
    else:
        header, arrays = _pack(scorer)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **{_HEADER: np.array(json.dumps(header))}, **arrays)


def _check_member_sizes(path, data):
    """Refuse, before any array is read, a member whose declared array is larger
    than the bytes it occupies in the file: ``gaussood.save`` stores members
    uncompressed, so an honest file never needs more memory than its own size,
    and a small file cannot make ``load`` allocate gigabytes (a deflated
    member of zeros declares 150 M elements in 1.2 MB)."""
    from numpy.lib import format as npy

    on_disk = os.path.getsize(path)
    for info in data.zip.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            raise ValueError(
                f"{path}: member {info.filename!r} is compressed; gaussood.save writes "
                "uncompressed members, and a compressed one can declare far more memory "
                "than the file holds. Refused (re-save the scorer with gaussood.save).")
        with data.zip.open(info) as fh:
            version = npy.read_magic(fh)
            read_header = {(1, 0): npy.read_array_header_1_0,
                           (2, 0): npy.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"{path}: member {info.filename!r} has .npy format "
                                 f"version {version}; gaussood writes 1.0 or 2.0.")
            shape, _, dtype = read_header(fh)
            header_bytes = fh.tell()
        declared = header_bytes + math.prod(shape) * dtype.itemsize
        if declared != info.file_size or info.file_size > on_disk:
            raise ValueError(
                f"{path}: member {info.filename!r} declares a {shape} {dtype} array "
                f"({declared} bytes) but holds {info.file_size} bytes (in a file of "
                f"{on_disk} bytes): a truncated, corrupted or crafted gaussood file.")


def _read(path):
    """(header, other members by name) of a scorer file, or a ValueError saying why not."""
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
            _check_member_sizes(path, data)
            if _HEADER not in data.files:
                raise ValueError(f"{path} is not a gaussood scorer file (no {_HEADER} header).")
            try:
                header = json.loads(str(data[_HEADER]))
            except RecursionError:  # json recurses per nesting level
                raise ValueError(f"{path} is not a gaussood scorer file: its {_HEADER} "
                                 "header is nested too deeply to read.") from None
            members = {k: data[k] for k in data.files if k != _HEADER}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable gaussood file (truncated or corrupted): "
                         f"{exc}") from exc
    except ValueError as exc:
        if "gaussood" in str(exc):
            raise
        raise ValueError(f"{path} is not a readable gaussood file (an array that needs "
                         f"pickle, or a corrupted one): {exc}") from None
    return header, members


class _ReadRecorder:
    """Forwards attribute reads to a scorer and records the names read: run through
    the class's own fitted-state check, it tells which stored attributes the class
    knows."""

    def __init__(self, scorer):
        self._scorer, self.names = scorer, set()

    def __getattr__(self, name):
        self.names.add(name)
        return getattr(self._scorer, name)


def _check_known(path, scorer, stored, folds):
    """Refuse stored attributes that the class's fitted-state check never reads
    (``load`` would otherwise set whatever a file names on the scorer). Only for a
    class that declares its own check (``_check_fitted_state``, as the shipped
    scorers do): a user's scorer that leaves it to its base has not said which
    attributes it has, and its files load as before."""
    if "_check_fitted_state" not in vars(type(scorer)):
        return
    recorder = _ReadRecorder(scorer)
    type(scorer)._check_loaded(recorder)
    known = recorder.names
    for fold in folds or ():
        stored = stored | set(fold)
    unknown = sorted(stored - known)
    if unknown:
        raise ValueError(f"{path} holds attributes that a {type(scorer).__name__} does not "
                         f"have: {', '.join(map(repr, unknown[:5]))} (a corrupted, crafted "
                         "or foreign gaussood file).")


def _check_name(path, name):
    if not (name.endswith("_") and name.isidentifier() and not name.startswith("_")):
        raise ValueError(f"{path} holds an unexpected attribute {name!r}.")


def _read_folds(path, header, fold_arrays):
    """The CV+ fold states of a file (a list of dicts), or None where it has none."""
    scalars = header.get("fold_scalars")
    if scalars is None:
        if fold_arrays:
            raise ValueError(f"{path} holds fold arrays but no 'fold_scalars' header entry "
                             "(a corrupted or hand-edited gaussood file).")
        return None
    if not isinstance(scalars, list) or not all(isinstance(f, dict) for f in scalars):
        raise ValueError(f"{path} has a 'fold_scalars' entry that is not a list of JSON "
                         "objects (a corrupted or hand-edited gaussood file).")
    folds = [dict(fold) for fold in scalars]
    for key, value in fold_arrays.items():
        parts = key.split("/")
        if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(folds):
            raise ValueError(f"{path} holds an unexpected fold array {key!r}.")
        _check_name(path, parts[2])
        folds[int(parts[1])][parts[2]] = value
    for fold in folds:
        for name in fold:
            _check_name(path, name)
    return folds


def _header_class(where, header):
    """The class a header names, after its format and version checks."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{where} is not a gaussood scorer file (format "
                         f"{header.get('format') if isinstance(header, dict) else header!r}).")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{where} has an invalid format version {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {version}; this gaussood reads up to "
                         f"version {FORMAT_VERSION}. Upgrade gaussood to read it.")
    cls = scorer_class(header.get("class")) or composite_class(header.get("class"))
    if cls is None:
        raise ValueError(f"{where} holds an unknown scorer class {header.get('class')!r}: "
                         "define or import that class before loading the file.")
    if (version >= 3) != cls._composite:
        raise ValueError(f"{where} holds a {cls.__name__} in a version {version} header "
                         "(combinations are version 3, other scorers 1 or 2): a corrupted "
                         "or hand-edited gaussood file.")
    for key in ("params", "scalars"):
        if not isinstance(header.get(key), dict):
            raise ValueError(f"{where} has a header without {key!r} (a corrupted or "
                             "hand-edited gaussood file).")
    provenance = header.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise ValueError(f"{where} has a 'provenance' entry that is not a JSON object (a "
                         "corrupted or hand-edited gaussood file).")
    return cls


def _build(where, header, members, cls, *, params=None, components=None):
    """The scorer a checked header and its members describe, checked as ``load`` says.
    A composite's ``params`` (its templates) and ``components`` come from the caller."""
    arrays, fold_arrays = {}, {}
    for key, value in members.items():
        if key.startswith("attr/"):
            arrays[key[len("attr/"):]] = value
        elif key.startswith("fold/"):
            fold_arrays[key] = value
        else:
            raise ValueError(f"{where} holds an unexpected member {key!r} (a corrupted, "
                             "crafted or foreign gaussood file).")
    try:
        scorer = cls(**header["params"], **(params or {}))
    except TypeError as exc:
        raise ValueError(f"{where} has parameters this {cls.__name__} does not take: "
                         f"{exc}") from exc
    for name, value in {**header["scalars"], **arrays}.items():
        _check_name(where, name)
        if name == "feature_names_in_":
            value = value.astype(object)
        setattr(scorer, name, value)
    folds = _read_folds(where, header, fold_arrays)
    if folds is not None:
        setattr(scorer, _FOLDS, folds)
    stored = {*header["scalars"], *arrays}
    if components is not None:
        setattr(scorer, _COMPONENTS, components)
        stored.add(_COMPONENTS)
    try:  # parameters and every fitted array, before anything is built from them
        scorer._check_loaded()
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where} holds an incomplete or inconsistent {cls.__name__}: "
                         f"{exc}") from None
    _check_known(where, scorer, stored, folds)
    try:  # a file with missing or reshaped arrays fails here, not at first use
        scorer._after_load()
        probe = np.zeros((1, int(scorer.n_features_in_)))
        scorer.score_samples(probe)
        if folds is not None:
            scorer.pvalue(probe)  # every fold model scores
    except Exception as exc:
        raise ValueError(f"{where} holds an incomplete or inconsistent {cls.__name__}: "
                         f"{type(exc).__name__}: {exc}") from exc
    if header.get("provenance") is not None:
        scorer.provenance_ = header["provenance"]
    return scorer


def _templates(path, templates, depth=0):
    """A composite's ``scorers`` parameter from its header: None or unfitted scorers."""
    if templates is None:
        return None
    if depth > _MAX_NESTING or not isinstance(templates, list) or not all(
            isinstance(t, dict) and isinstance(t.get("params"), dict) for t in templates):
        raise ValueError(f"{path} has a 'templates' entry that is not a list of "
                         "{'class', 'params'} objects (a corrupted or hand-edited file).")
    built = []
    for i, template in enumerate(templates):
        name = template.get("class")
        cls = scorer_class(name) or composite_class(name)
        if cls is None:
            raise ValueError(f"{path}: templates[{i}] names an unknown scorer class "
                             f"{name!r}.")
        params = dict(template["params"])
        if cls._composite:
            params["scorers"] = _templates(f"{path}: templates[{i}]", params.get("scorers"),
                                           depth + 1)
        try:
            scorer = cls(**params)
            scorer._validate_params()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: templates[{i}] has invalid {cls.__name__} "
                             f"parameters: {exc}") from None
        built.append(scorer)
    return built


def _load_composite(path, header, members, cls, depth=0):
    """A composite scorer: each ``component/<i>/`` group loaded as a scorer file of its
    own (header, version, class and state checks), then the composite around them."""
    if depth > _MAX_NESTING:
        raise ValueError(f"{path} nests combinations more than {_MAX_NESTING} deep.")
    n = header.get("components")
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= len(members):
        raise ValueError(f"{path} has an invalid 'components' count {n!r} (a corrupted or "
                         "hand-edited gaussood file).")
    groups, own = [{} for _ in range(n)], {}
    for key, value in members.items():
        if not key.startswith(_COMPONENT):
            own[key] = value
            continue
        index, _, rest = key[len(_COMPONENT):].partition("/")
        if not (index.isdigit() and int(index) < n and rest):
            raise ValueError(f"{path} holds an unexpected member {key!r} (it has {n} "
                             "components).")
        groups[int(index)][rest] = value
    components = []
    for i, group in enumerate(groups):
        where = f"{path} (component {i})"
        if _HEADER not in group:
            raise ValueError(f"{where} is missing (no {_COMPONENT}{i}/{_HEADER} member).")
        try:
            part = json.loads(str(group.pop(_HEADER)))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where} has a header that is not JSON: {exc}") from None
        part_cls = _header_class(where, part)
        components.append(_load_composite(where, part, group, part_cls, depth + 1)
                          if part_cls._composite else _build(where, part, group, part_cls))
    templates = _templates(path, header.get("templates"))
    return _build(path, header, own, cls, params={"scorers": templates},
                  components=components)


def load(path, expected=None):
    """Read a scorer (or a combination of scorers) written by :func:`save`.

    Raises ``ValueError`` for a truncated, corrupted, foreign or inconsistent
    file (every parameter goes through the class's own validation, and every
    fitted attribute through its schema check: shapes against
    ``n_features_in_``, finite values, sorted calibration scores, bounds) and
    for a file from a newer format version; ``TypeError`` when ``expected`` (a
    class) does not match the stored class. Before any array is read, each
    member's declared shape must fit in the bytes it occupies (members are
    stored uncompressed), so loading never needs more memory than the file's
    size; members and attributes that the class's own fitted-state check does
    not know are refused. A combination's components are checked each as a
    scorer file of its own, and against the combination (same features).
    """
    path = os.fspath(path)
    header, members = _read(path)
    cls = _header_class(path, header)
    if expected is not None and not issubclass(cls, expected):
        raise TypeError(f"{path} holds a {cls.__name__}, not a {expected.__name__}.")
    if cls._composite:
        return _load_composite(path, header, members, cls)
    return _build(path, header, members, cls)
