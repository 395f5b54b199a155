"""The files beside an embeddings file, and the encoder identity they carry.

An encoder on the command line is a spec from the caller (a file, torchvision:NAME,
package.module:factory); what a file holds is never imported or built beyond
gaussood's own architectures (gaussood.deep.encoders). Its identity (weights SHA-256,
feature layer, preprocessing) goes with the embeddings (``X.encoder.json``) and with
the scorer fitted on them (``provenance_``), and ``score`` and ``shift`` compare it.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

from ..provenance import check_identity, file_sha256, stored_identity
from ._common import existing_file

IDENTITY_FORMAT = "gaussood.embeddings"


def _companion(out: Path, tail: str) -> Path:
    """``emb.npy`` -> ``emb<tail>``: ``.paths.csv`` (the image file of each row, for a
    folder), ``.encoder.json`` (the identity of the encoder that wrote it)."""
    return out.with_name(out.name[:-len(".npy")] + tail)


def paths_path(out: Path) -> Path:
    return _companion(out, ".paths.csv")


def identity_path(out: Path) -> Path:
    return _companion(out, ".encoder.json")


def identity_record(out: Path, written: Path, shape, identity: dict, source: str) -> dict:
    """The ``X.encoder.json`` of embeddings ``out`` (whose bytes are in ``written``)."""
    return {"format": IDENTITY_FORMAT, "version": 1, "embeddings": out.name,
            "sha256": file_sha256(written), "shape": list(shape),
            "encoder_identity": identity, "source": source}


def read_identity(embeddings: Path) -> dict | None:
    """The encoder identity in ``X.encoder.json`` beside ``X.npy``, when it describes
    this very file (its SHA-256); else None (with a warning for a stale or foreign file).
    """
    path = identity_path(embeddings)
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
    if info.get("sha256") != file_sha256(embeddings):
        warnings.warn(f"{path} describes another version of {embeddings} (the file was "
                      "changed after 'gaussood embed' wrote it); its encoder identity is "
                      "ignored", UserWarning, stacklevel=2)
        return None
    return info["encoder_identity"]


def check_scorer_file(path) -> None:
    """A ValueError unless ``path`` is a zip file (as every saved scorer is)."""
    if not zipfile.is_zipfile(existing_file(path, "scorer file")):
        raise ValueError(f"{path} is not a gaussood scorer file (.npz written by "
                         "'gaussood fit')")


def layer_identity(identity: dict, layer: str) -> dict:
    """The identity of one layer of a several-layer encoder: what an encoder of that
    layer alone (same weights, preprocessing and views) has."""
    return {**identity, "layer": layer}


def combined_identity(identities) -> dict | None:
    """The identity of one encoder giving all ``identities`` (one per layer) in one pass:
    their layers as a list, in order; None unless every one is known, they differ in
    their layer only, and the layers are distinct."""
    if not identities or not all(isinstance(i, dict) for i in identities):
        return None
    layers = [i.get("layer") for i in identities]
    rest = [json.dumps({k: v for k, v in i.items() if k != "layer"}, sort_keys=True,
                       default=str) for i in identities]
    if len(set(rest)) != 1 or not all(isinstance(x, str) for x in layers) \
            or len(set(layers)) != len(layers):
        return None
    return {**identities[0], "layer": layers}


def stored_layer_identities(scorer, n_layers: int) -> list:
    """The identity of each of the ``n_layers`` column blocks of a scorer fitted on
    several embeddings files (``provenance_["layer_identities"]``, or its combined
    ``encoder_identity`` split by layer); None where unknown."""
    provenance = getattr(scorer, "provenance_", None)
    provenance = provenance if isinstance(provenance, dict) else {}
    listed = provenance.get("layer_identities")
    if isinstance(listed, list) and len(listed) == n_layers:
        return [i if isinstance(i, dict) else None for i in listed]
    stored = stored_identity(scorer)
    layers = None if stored is None else stored.get("layer")
    if isinstance(layers, list) and len(layers) == n_layers:
        return [layer_identity(stored, layer) for layer in layers]
    return [None] * n_layers


def check_embeddings(scorer, scorer_path, X, embeddings: Path, *, warn_unchecked: bool) -> None:
    """Refuse embeddings ``X`` (read from ``embeddings``) of another encoder than the
    scorer's, or with another number of features. ``warn_unchecked``: warn when the
    scorer knows its encoder but the embeddings have no identity file to compare."""
    _check_file(stored_identity(scorer), scorer.n_features_in_, scorer_path, X, embeddings,
                warn_unchecked=warn_unchecked, what=f"the scorer in {scorer_path}")


def check_layer_embeddings(scorer, scorer_path, Xs, files, blocks) -> None:
    """``check_embeddings`` for several files, one per column block of a scorer fitted
    on several embeddings files (``blocks``: its ``columns``), in that order."""
    if len(files) != len(blocks):
        raise ValueError(f"the scorer in {scorer_path} was fitted on {len(blocks)} "
                         f"embeddings files (layers); got {len(files)} --embeddings")
    stored = stored_layer_identities(scorer, len(blocks))
    for k, (X, path, (start, stop), ident) in enumerate(zip(Xs, files, blocks, stored)):
        _check_file(ident, stop - start, scorer_path, X, path, warn_unchecked=True,
                    what=f"block {k + 1} (of {len(blocks)}) of the scorer in {scorer_path}")


def _check_file(stored, n_features, scorer_path, X, embeddings: Path, *, warn_unchecked,
                what) -> None:
    """Refuse the embeddings file of another encoder than ``stored`` (when both are
    known), or of another width than ``n_features``; ``what`` names the scorer."""
    if stored is not None:
        given = read_identity(embeddings)
        if given is not None:
            check_identity(stored, given, scorer_path, f"the one in {identity_path(embeddings)}")
        elif warn_unchecked:
            warnings.warn(f"{what} was fitted on embeddings of a known encoder, but "
                          f"{embeddings} has no encoder identity file "
                          f"({identity_path(embeddings).name}): cannot check that "
                          "they come from the same encoder", UserWarning, stacklevel=1)
    if X.shape[1] != n_features:
        raise ValueError(f"embeddings in {embeddings} have {X.shape[1]} features but "
                         f"{what} was fitted on {n_features}")
