"""Images scored or tested against a saved scorer (``score --images``, ``shift --images``):
embedded with the encoder the scorer was fitted on, its identity and layers checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..provenance import check_identity, stored_identity
from ._common import need_torch
from ._encoder import encoder_file, image_encoder, image_input, layer_names
from ._identity import stored_layer_identities


def image_flags(args):
    """Usage errors for encoder options without ``--images`` (or ``--images`` without
    ``--encoder``); the encoder's local file (``encoder_file``) or None."""
    parser = args.parser
    if args.images is None:
        image_only = [flag for flag, value in (
            ("--encoder", args.encoder), ("--layer", args.layer), ("--weights", args.weights),
            ("--preprocessing", args.preprocessing), ("--strict", args.strict or None))
            if value is not None]
        if image_only:
            parser.error(f"{', '.join(image_only)} apply to --images only")
        return None
    if args.encoder is None:
        parser.error("--images needs --encoder SPEC (the encoder the scorer was fitted on)")
    return encoder_file(args)


def embed_for_scorer(scorer, blocks, args, enc_file):
    """(X, the file of each row or None, the skipped files) of ``--images`` embedded with
    ``--encoder``, refused unless it is the encoder (and the layers, in order) the scorer
    was fitted on."""
    parser = args.parser
    paths, skipped = None, []
    images = image_input(args.images, args.strict, parser)
    need_torch(f"{parser.prog.split()[-1]} --images")
    encoder = image_encoder(args, enc_file)
    stored = stored_identity(scorer)
    _check_layers(scorer, stored, blocks, encoder, args)
    if stored is None:
        warnings.warn(f"the scorer in {args.scorer} stores no encoder identity (fitted on "
                      "embeddings without their .encoder.json): cannot check that "
                      f"{args.encoder} is the encoder it was fitted on", UserWarning,
                      stacklevel=1)
    else:
        check_identity(stored, encoder.identity(), args.scorer,
                       f"--encoder {args.encoder} (layer {layer_names(encoder)})")
    emb = encoder.embed(images, progress=not args.quiet, strict=args.strict,
                        desc=f"embed ({layer_names(encoder)})", return_sources=True)
    X = emb.X
    if isinstance(X, dict):   # several layers, side by side in the scorer's order
        widths = [part.shape[1] for part in X.values()]
        X = np.hstack(list(X.values()))
        if blocks is not None and widths != [b - a for a, b in blocks]:
            raise ValueError(f"{args.encoder} gives {' + '.join(map(str, widths))} "
                             f"features ({layer_names(encoder)}) but the scorer in "
                             f"{args.scorer} was fitted on "
                             f"{' + '.join(str(b - a) for a, b in blocks)}")
    if isinstance(images, Path):
        paths, skipped = list(emb.files), list(emb.skipped)
        if not paths:
            raise ValueError(f"none of the {len(skipped)} image files under {args.images} "
                             "could be read")
    if X.shape[1] != scorer.n_features_in_:
        raise ValueError(f"{args.encoder} gives {X.shape[1]} features "
                         f"({layer_names(encoder)}) but the scorer in {args.scorer} was "
                         f"fitted on {scorer.n_features_in_}")
    return X, paths, skipped


def layer_blocks(scorer):
    """The column blocks [(start, stop), ...] of a scorer fitted on several layers or
    embeddings files (a ``PValueCombination`` with ``columns``), else None."""
    from ..combine import PValueCombination

    if isinstance(scorer, PValueCombination) and scorer.columns is not None:
        return [(int(a), int(b)) for a, b in scorer.columns]
    return None


def _check_layers(scorer, stored, blocks, encoder, args) -> None:
    """Refuse --layer options that are not the layers the scorer was fitted on, in its
    order (a one-line error saying which to give)."""
    fitted = None if stored is None else stored.get("layer")
    given = list(encoder.layers)
    if stored is None and blocks is not None and any(
            stored_layer_identities(scorer, len(blocks))):
        raise ValueError(f"the scorer in {args.scorer} was fitted on embeddings files that "
                         "are not all layers of one encoder: score it with one --embeddings "
                         "per file it was fitted on")
    if isinstance(fitted, list) and fitted != given:
        flags = " ".join(f"--layer {layer}" for layer in fitted)
        raise ValueError(f"the scorer in {args.scorer} was fitted on the layers "
                         f"{', '.join(fitted)}, in this order; got {', '.join(given)}: "
                         f"give {flags}")
    n_blocks = 1 if blocks is None else len(blocks)
    if len(given) > 1 and n_blocks != len(given):
        raise ValueError(f"the scorer in {args.scorer} was fitted on "
                         f"{'one layer' if n_blocks == 1 else f'{n_blocks} layers'}; got "
                         f"{len(given)} --layer ({', '.join(given)})")
