"""Root pytest configuration: the torch side is skipped where torch is missing."""

import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob += ["gaussood/deep/*", "tests/deep/*"]
