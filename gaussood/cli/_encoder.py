"""``--encoder SPEC`` and ``--images``: the options, building the encoder, reading images
(embed, score --images)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ..provenance import IMPORT_SPEC
from ._common import existing_file, load_npy, one_line
from .options import add_device_flag, add_quiet_flag, positive_int

# gaussood.deep.encoders.EMBED_BATCH_SIZE (not imported: the parser needs no torch)
EMBED_BATCH_SIZE = 64


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


def add_encoder_flags(p, *, required: bool) -> None:
    """--encoder SPEC and what goes with it (embed, score --images)."""
    p.add_argument("--encoder", required=required, default=None, metavar="SPEC",
                   help="a gaussood encoder file or training checkpoint, a TorchScript file, "
                        "torchvision:NAME (with --weights), or package.module:factory")
    p.add_argument("--layer", default=None, action="append", metavar="NAME",
                   help="features: backbone (default) or head for gaussood encoders; a "
                        "submodule name, NAME:input or output for other models (default: "
                        "the input of the last Linear layer); repeat for several layers, "
                        "all embedded in one forward pass")
    p.add_argument("--weights", type=Path, default=None, metavar="FILE",
                   help="state-dict file for --encoder torchvision:NAME (without it the "
                        "weights are random; nothing is downloaded)")
    p.add_argument("--preprocessing", type=_preprocessing_arg, default=None, metavar="JSON",
                   help="what the model expects, as a JSON object (keys input_size, resize, "
                        "resize_size, channels, value_range, mean, std; default: stored in "
                        "gaussood files, torchvision's for its models, else ImageNet's)")
    p.add_argument("--batch-size", type=positive_int, default=EMBED_BATCH_SIZE,
                   help=f"images per batch (default {EMBED_BATCH_SIZE}, chosen by memory)")
    add_device_flag(p)
    p.add_argument("--strict", action="store_true",
                   help="stop at an unreadable file of an --images folder (default: skip it "
                        "with a warning)")
    add_quiet_flag(p)


def encoder_file(args) -> Path | None:
    """The local file ``--encoder`` names (checked), or None for torchvision:NAME and
    package.module:factory specs."""
    spec = args.encoder
    torchvision = spec.startswith("torchvision:")
    if args.weights is not None:
        if not torchvision:
            args.parser.error("--weights goes with --encoder torchvision:NAME only (gaussood "
                              "and TorchScript files hold their own weights)")
        existing_file(args.weights, "weights file")
    if torchvision:
        return None
    if not Path(spec).exists() and IMPORT_SPEC.match(spec):
        return None
    return existing_file(spec, "encoder file")


def image_encoder(args, file):
    """``make_encoder`` from the command line's encoder options (``file``: what
    ``encoder_file`` returned)."""
    from ..deep.encoders import make_encoder
    from ..deep.preprocess import check_preprocessing

    if isinstance(args.preprocessing, dict):
        try:
            check_preprocessing(args.preprocessing)
        except (TypeError, ValueError) as exc:
            args.parser.error(f"argument --preprocessing: {one_line(exc)}")
    try:
        return make_encoder(args.encoder if file is None else file,
                            layer=args.layer, preprocessing=args.preprocessing,
                            weights=args.weights, batch_size=args.batch_size,
                            device=args.device)
    except ValueError:
        hint = None if file is None else _plain_state_dict_hint(file)
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


def layer_names(encoder) -> str:
    """``backbone`` or ``backbone, head``: the encoder's feature layers, for messages."""
    return ", ".join(encoder.layers)


def image_input(path: Path, strict: bool, parser):
    """``--images``: a folder (returned as is, after checking it has image files) or a
    ``.npy`` of uint8 ``(N, H, W, 3)`` images (returned as an array)."""
    if path.is_dir():
        from ..deep.images import IMAGE_EXTENSIONS, ImageFiles

        if not len(ImageFiles(path)):
            raise ValueError(f"no image files ({' '.join(IMAGE_EXTENSIONS)}) under {path}")
        return path
    if strict:
        parser.error("--strict applies to --images FOLDER only")
    images = load_npy(path, "images file")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images in {path} must be uint8 of shape (N, H, W, 3) (or give a "
                         f"folder of image files); got {images.dtype} {images.shape}")
    return images


def write_paths_csv(path, files) -> None:
    """``index,path`` rows: the image file of each embedding row."""
    import csv

    # surrogateescape: a file name that is not valid UTF-8 is written as its own bytes
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["index", "path"])
        writer.writerows(enumerate(files))
