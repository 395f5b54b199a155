"""Command-line options derived from the library: scorer options from the scorers'
``_parameter_constraints``, ``TrainConfig`` fields as flags, and the option groups that
several commands (and ``benchmarks/``) share.

A registered scorer's constructor parameters become options of ``gaussood fit``
(``n_neighbors`` -> ``--n-neighbors``), typed and checked by the scorers' own
declarations; a new ``TrainConfig`` field becomes a ``gaussood train`` option (and one
of ``benchmarks/train_encoder.py``) by itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing
from pathlib import Path

from ._common import one_line

__all__ = ["positive_int", "calibration_rows", "add_calibration_flag", "scorer_options",
           "add_scorer_flags", "scorer_params", "add_train_config_flags", "train_config"]

FIT_FLAGS = ("embeddings", "labels", "scorer", "out")  # the command's own options
_PARAM_DEFAULTS = {"random_state": 0}  # where 'fit' differs from the class default


# ----------------------------------------------------------------- value types
def checked(convert, check=None, want: str = "a value"):
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
                raise argparse.ArgumentTypeError(one_line(exc)) from None
        return value
    return parse


def positive_int_check(name, minimum: int = 1):
    from .._validation import check_positive_int

    return lambda value: check_positive_int(value, name, minimum=minimum)


_positive_int = checked(int, positive_int_check("the value"), "a positive integer")


def positive_int(text) -> int:
    """An argparse ``type``: an integer of at least 1."""
    return _positive_int(text)


def calibration_rows(text):
    """An argparse ``type`` for ``--calibrate-held-out``: ``rest`` -> ``"rest"``, ``fit``
    -> None (the scorers keep the calibration of their fit), N -> N >= 1."""
    word = text.strip().lower()
    if word in ("rest", "fit"):
        return None if word == "fit" else "rest"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"want 'rest', 'fit' or a positive integer; got {text!r}") from None


def add_calibration_flag(p) -> None:
    """``--calibrate-held-out {rest,fit,N}`` of the benchmarks (default rest)."""
    p.add_argument("--calibrate-held-out", type=calibration_rows, default="rest",
                   metavar="{rest,fit,N}",
                   help="calibrate every gaussood scorer after its fit on ID test images the "
                        "encoder never saw, disjoint from the evaluated ones: all the others "
                        "(rest, default), or N of them; fit: keep the calibration on the fit "
                        "rows (images the encoder was trained on: its false alarms run high)")


def _number_or_word(text):
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, anything else stays a string."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _candidates(text):
    """The values a command-line word may stand for: an int, a float, the word itself."""
    out = {"true": [True], "false": [False]}.get(text.lower(), [])  # KNN's --normalize
    for convert in (int, float):
        try:
            out.append(convert(text))
        except ValueError:
            pass
    return out + [text]


# -------------------------------------------------------------- scorer options
def _constraint_type(name, constraint_lists):
    """An argparse ``type`` built from scikit-learn parameter declarations.

    ``constraint_lists``: the ``_parameter_constraints[name]`` of each scorer that
    takes ``name`` (a value any of them accepts is parsed; ``scorer_params`` then
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


def param_types() -> dict:
    """``{parameter: argparse type}`` for every scorer parameter with a declaration."""
    from .._registry import registered_scorers

    lists: dict = {}
    for cls in registered_scorers().values():
        for name, constraints in cls._parameter_constraints.items():
            lists.setdefault(name, []).append(constraints)
    types = {name: _constraint_type(name, value) for name, value in lists.items()}
    types["random_state"] = checked(int, None, "an integer")  # files store an int seed
    return types


def _type_from_default(name, default):
    if isinstance(default, bool):
        return None  # a --flag / --no-flag pair
    if isinstance(default, int):
        return checked(int, positive_int_check(name) if default > 0 else None, "an integer")
    if isinstance(default, float):
        return checked(float, None, "a number")
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
    """``{parameter: {"scorers": [short names], "defaults": {short: default}, "help": ...}}``
    of every registered scorer's constructor parameters that a command line can set."""
    from .._registry import registered_scorers

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


def add_scorer_flags(p) -> None:
    """``--scorer`` (a choice of every registered scorer) and one option per parameter
    of ``scorer_options()`` (its value lands in ``args.param_<name>``)."""
    from .._registry import registered_scorers

    scorers = registered_scorers()
    types = param_types()
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


def scorer_params(args, parser, cls) -> dict:
    """The constructor arguments given on the command line, checked against ``cls``."""
    from sklearn.utils._param_validation import validate_parameter_constraints

    from .._registry import registered_scorers

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
    for name, value in params.items():  # the chosen class's own declarations
        try:
            validate_parameter_constraints(cls._parameter_constraints, {name: value},
                                           caller_name=cls.__name__)
        except (TypeError, ValueError) as exc:
            parser.error(f"--{name.replace('_', '-')}: {one_line(exc)}")
    return params


def add_scorer_file_flags(p, *, embeddings_required: bool, embeddings_metavar: str,
                          embeddings_help: str, repeat: bool = False) -> None:
    """``--scorer scorer.npz`` (a saved scorer) and ``--embeddings`` (score, shift;
    ``repeat``: a list of files, one per layer)."""
    p.add_argument("--scorer", type=Path, required=True, metavar="scorer.npz",
                   help="a scorer written by 'gaussood fit'")
    p.add_argument("--embeddings", type=Path, required=embeddings_required,
                   action="append" if repeat else "store",
                   default=None, metavar=embeddings_metavar, help=embeddings_help)


# ------------------------------------------------------------- shared groups
def classes_arg(text, parser):
    """``--classes`` parsed (``'0-5'``, ``'0,1,2'``), or a usage error."""
    from ..deep.data import parse_classes

    try:
        return parse_classes(text)
    except ValueError as exc:
        parser.error(f"argument --classes: {exc}")


def add_data_flags(p, *, default_dataset, n_help) -> None:
    """--dataset, --data-root, --download, --classes, --n (train, embed, bench)."""
    from ..deep.data import DATASETS

    p.add_argument("--dataset", default=default_dataset, help=", ".join(DATASETS))
    p.add_argument("--data-root", default=None,
                   help="data folder (default: $GAUSSOOD_DATA or ~/.cache/gaussood/data)")
    p.add_argument("--download", action="store_true", help="fetch missing data (network)")
    p.add_argument("--classes", default=None, help="class subset, e.g. '0-5' or '0,1,2'")
    if n_help is not None:
        p.add_argument("--n", type=positive_int, default=None, help=n_help)


def add_device_flag(p) -> None:
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")


def add_quiet_flag(p) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


# ---------------------------------------------------------- TrainConfig flags
# TrainConfig fields become options (``batch_size`` -> ``--batch-size``), so a new field
# needs no change here. This table only words the help of some of them; other fields
# get their name as help. String fields with a registry get its names as choices.
TRAIN_HELP = {
    "model": "encoder architecture",
    "objective": "contrastive InfoNCE; supcon: InfoNCE with same-class positives (needs labels); "
                 "supervised: the cross-entropy baseline (needs labels)",
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
    "supcon_weight": "with --objective supcon: loss = w SupCon + (1 - w) InfoNCE (w in [0, 1])",
    "proxy_monitor": "OOD-proxy AUROC (noise, pixel-permuted, jigsaw, rotated ID images) "
                     "next to the k-NN monitor",
}


def _train_choices() -> dict:
    from ..deep.models import MODELS
    from ..deep.rotation import ROTATIONS

    return {"model": list(MODELS), "objective": ["infonce", "supervised", "supcon"],
            "rotation": list(ROTATIONS)}


def add_train_config_flags(p) -> None:
    """One option per ``TrainConfig`` field that ``p`` does not have yet (its value
    lands in ``args.config_<field>``; ``train_config(args)`` builds the config)."""
    from ..deep import TrainConfig

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
            kwargs["type"] = positive_int if positive else int
        elif kind is float:
            kwargs["type"] = float
        elif kind is not str:
            continue  # not settable from a command line (lists, nested configs)
        kwargs["metavar"] = None if "choices" in kwargs else field.name.upper()
        p.add_argument(flag, **kwargs)


def train_config(args):
    """The ``TrainConfig`` of the options ``add_train_config_flags`` added."""
    from ..deep import TrainConfig

    return TrainConfig(**{k[len("config_"):]: v for k, v in vars(args).items()
                          if k.startswith("config_")})
