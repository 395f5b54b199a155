"""Saving and loading encoders and training checkpoints.

Two kinds of file, both written atomically (temporary name, then rename) and
read with ``torch.load(weights_only=True)`` (tensors and plain containers only,
no arbitrary unpickling):

- an *encoder file* ``{"format": "gaussood.encoder", "version", "config",
  "state_dict", "preprocessing"}``: what ships and what ``extract_embeddings`` needs.
  Version 2 added ``preprocessing`` (input size, resize policy, channel order, value
  range, mean/std: what the encoder expects of an image); version-1 files (no such
  key) are read with the CIFAR-10 preprocessing they were trained with;
- a *training checkpoint* ``{"format": "gaussood.checkpoint", ..., "encoder":
  <encoder file dict>, "optimizer", "scheduler", "epoch", "history", "rng"}``:
  everything needed to resume.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .._atomic import atomic_path
from ..provenance import file_sha256  # noqa: F401 - re-exported (the one definition)
from .models import Encoder

ENCODER_FORMAT, CHECKPOINT_FORMAT, VERSION = "gaussood.encoder", "gaussood.checkpoint", 2


def cifar10_preprocessing(input_size: int = 32) -> dict:
    """The preprocessing of gaussood's own encoders (and of every version-1 file)."""
    from .augment import CIFAR10_MEAN, CIFAR10_STD

    return {"input_size": [input_size, input_size], "resize": "none", "channels": "RGB",
            "value_range": [0.0, 1.0], "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}


def encoder_preprocessing(payload: dict) -> dict:
    """The preprocessing stored in an encoder file or checkpoint payload (version 1:
    the CIFAR-10 default)."""
    enc = payload["encoder"] if payload.get("format") == CHECKPOINT_FORMAT else payload
    return dict(enc.get("preprocessing") or cifar10_preprocessing())


def atomic_torch_save(obj, path) -> None:
    with atomic_path(path, suffix=".partial.pt") as tmp:
        torch.save(obj, tmp)


def encoder_payload(model: Encoder, dtype: torch.dtype | None = None) -> dict:
    state = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu()
             for k, v in model.state_dict().items()}
    return {"format": ENCODER_FORMAT, "version": VERSION, "config": model.config(),
            "state_dict": state, "preprocessing": cifar10_preprocessing()}


def save_encoder(model: Encoder, path, *, half: bool = False) -> None:
    """Write an encoder file (fp16 weights with ``half=True``)."""
    atomic_torch_save(encoder_payload(model, torch.float16 if half else None), path)


def read_payload(path) -> dict:
    """Load a gaussood encoder file or checkpoint, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No encoder or checkpoint file at {path}.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...
        raise ValueError(f"{path} is not a readable gaussood encoder/checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") not in (ENCODER_FORMAT,
                                                                      CHECKPOINT_FORMAT):
        raise ValueError(f"{path} is not a gaussood encoder or checkpoint file.")
    version = payload.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{path} has no valid format version ({version!r}).")
    if version > VERSION:
        raise ValueError(f"{path} has version {version}; upgrade gaussood to read it.")
    enc = payload
    if payload["format"] == CHECKPOINT_FORMAT:
        enc = payload.get("encoder")
        if not isinstance(enc, dict):
            raise ValueError(f"{path} is a training checkpoint without its 'encoder' entry "
                             "(truncated or edited).")
    _check_encoder_entries(path, enc)
    return payload


def _check_encoder_entries(path, enc: dict) -> None:
    """The entries ``load_encoder`` reads, with their types: a clear error, not a KeyError."""
    version = enc.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ValueError(f"{path} holds an encoder of invalid version {version!r}.")
    for key, kind in (("config", dict), ("state_dict", dict)):
        if key not in enc:
            raise ValueError(f"{path} is an encoder file without its {key!r} entry "
                             "(truncated or edited).")
        if not isinstance(enc[key], kind):
            raise ValueError(f"{path}: the encoder's {key!r} entry is a "
                             f"{type(enc[key]).__name__}, not a {kind.__name__}.")
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor)
               for k, v in enc["state_dict"].items()):
        raise ValueError(f"{path}: the encoder's 'state_dict' must map names to tensors.")
    prep = enc.get("preprocessing")
    if prep is not None and not isinstance(prep, dict):
        raise ValueError(f"{path}: the encoder's 'preprocessing' entry is a "
                         f"{type(prep).__name__}, not a dict.")


def load_encoder(path, *, expected_model: str | None = None,
                 device: str | torch.device = "cpu") -> Encoder:
    """Rebuild the encoder stored in an encoder file or a training checkpoint.

    Raises ``ValueError`` if the weights do not fit the architecture named in
    the file, or if ``expected_model`` names another architecture.
    """
    payload = read_payload(path)
    enc = payload["encoder"] if payload["format"] == CHECKPOINT_FORMAT else payload
    config = enc["config"]
    if expected_model is not None and config.get("model") != expected_model:
        raise ValueError(f"{path} holds a '{config.get('model')}' encoder, not '{expected_model}'.")
    try:  # sizes first, on the meta device (nothing allocated): a config may declare
        with torch.device("meta"):  # any size (proj_dim=1500000 in a 1.4 KB file: 2 GB)
            want = {k: tuple(v.shape) for k, v in Encoder(**config).state_dict().items()}
    except (TypeError, ValueError, KeyError, OverflowError, RuntimeError) as exc:
        raise ValueError(f"{path} has an encoder configuration this gaussood cannot build "
                         f"({config!r}): {exc}") from None
    got = {k: tuple(v.shape) for k, v in enc["state_dict"].items()}
    if got != want:
        key = next(k for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k))
        raise ValueError(
            f"The weights in {path} do not match the '{config.get('model')}' encoder its "
            f"configuration {config!r} declares (refused before building it): {key!r} is "
            f"{got.get(key, 'missing')} in the file, {want.get(key, 'absent')} in the model.")
    model = Encoder(**config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in enc["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The weights in {path} do not match a '{config.get('model')}' "
                         f"encoder: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval()
