"""Encoder identity of fitted scorers: what a scorer stores about the encoder whose
embeddings it was fitted on, and the check that another encoder is the same one.

The command line (``gaussood fit`` / ``score``) and ``OODFilter.from_fitted`` use it;
the identity itself comes from ``gaussood.deep`` (``ImageEncoder.identity()``).
"""

from __future__ import annotations

import json


def stored_identity(scorer) -> dict | None:
    """The encoder identity a fitted scorer stores (``provenance_``), or None."""
    provenance = getattr(scorer, "provenance_", None)
    identity = provenance.get("encoder_identity") if isinstance(provenance, dict) else None
    return identity if isinstance(identity, dict) else None


def check_identity(stored: dict, given: dict, scorer_path, given_what: str) -> None:
    """Refuse (ValueError) an encoder other than the one the scorer was fitted with."""
    def text(value):
        return json.dumps(value, sort_keys=True, default=str)

    if text(stored) == text(given):
        return
    diffs = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key), given.get(key)
        if text(a) != text(b):
            short = [v[:12] + "..." if isinstance(v, str) and len(v) > 16 else text(v)
                     for v in (a, b)]
            diffs.append(f"{key}: {short[0]} vs {short[1]}")
    raise ValueError(f"the scorer in {scorer_path} was fitted on embeddings of another "
                     f"encoder than {given_what} ({'; '.join(diffs)}; scorer vs given): use "
                     "the encoder it was fitted with, or embed, fit and score again with "
                     "this one")
