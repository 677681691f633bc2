"""Where caches go (the tiny base model, converted pretrained policies, search indexes):
ORCHESTRA_RAY_CACHE when set; in a source checkout its own .cache/orchestra-ray, whichever the
working directory; an installed package the user's cache directory (XDG_CACHE_HOME, else ~/.cache).
The package's own files (configs, FRAMES replay data, model configs) are found next to its code."""

from __future__ import annotations

import os


def default_cache_dir() -> str:
    if os.environ.get("ORCHESTRA_RAY_CACHE"):
        return os.path.abspath(os.environ["ORCHESTRA_RAY_CACHE"])
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(checkout, "pyproject.toml")):
        return os.path.join(checkout, ".cache", "orchestra-ray")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "orchestra-ray")


CACHE_DIR = default_cache_dir()
