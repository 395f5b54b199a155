"""The registry of scorer classes: the one list that persistence and the command line read.

Every concrete scorer class registers itself when it is defined
(``BaseScorer.__init_subclass__`` calls ``_register``), by class name (the name
stored in saved files) and by a short name (``"gaussian"``, ``"shell"``, ...).
This module imports nothing from gaussood, so ``persistence`` can depend on it
alone.
"""

from __future__ import annotations

import re

# Every concrete scorer class, by class name (the name stored in saved files).
_REGISTRY: dict[str, type] = {}
# Scorers built from other fitted scorers (``PValueCombination``), by class name: saved
# with their components by ``gaussood.save``, but not plain scorers, so neither in
# ``registered_scorers()`` nor among the command line's ``--scorer`` choices.
_COMPOSITES: dict[str, type] = {}


def _short_name(cls) -> str:
    """``GaussianScorer`` -> ``gaussian``, ``MyKNNScorer`` -> ``my-knn``."""
    stem = cls.__name__.removesuffix("Scorer") or cls.__name__
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", stem).lower()


def _register(cls, name) -> None:
    for other in _REGISTRY.values():
        same = (other.__module__, other.__qualname__) == (cls.__module__, cls.__qualname__)
        if not same and (other.__name__ == cls.__name__ or other.scorer_name == name):
            raise TypeError(
                f"Cannot register {cls.__module__}.{cls.__qualname__} as scorer "
                f"{cls.__name__!r} (name {name!r}): {other.__module__}.{other.__qualname__} "
                "already has that class name or name. Rename the class or pass "
                "name=... in its class statement.")
    cls.scorer_name = name
    _REGISTRY[cls.__name__] = cls  # a redefinition (same module and name) replaces the old


def registered_scorers() -> dict[str, type]:
    """The registered scorer classes, by short name (``"gaussian"``, ``"shell"``, ...).

    A class registers itself when it is defined (``class MyScorer(GaussianScorer)``);
    ``gaussood.save``/``load`` and the command line take every registered class.
    """
    return {cls.scorer_name: cls for cls in _REGISTRY.values()}


def _register_composite(cls) -> None:
    """Register a scorer built from other fitted scorers (``PValueCombination``)."""
    other = _REGISTRY.get(cls.__name__)
    if other is not None:
        raise TypeError(f"Cannot register {cls.__module__}.{cls.__qualname__} as composite "
                        f"scorer {cls.__name__!r}: {other.__module__}.{other.__qualname__} "
                        "already has that class name.")
    cls.scorer_name = None
    _COMPOSITES[cls.__name__] = cls


def composite_class(class_name: str):
    """The composite class called ``class_name`` (as stored in saved files), or None."""
    return _COMPOSITES.get(class_name) if isinstance(class_name, str) else None


def scorer_class(class_name: str):
    """The registered class called ``class_name`` (as stored in saved files), or None."""
    return _REGISTRY.get(class_name) if isinstance(class_name, str) else None
