"""A step's metrics (nested dicts) as the flat name -> number pairs trackers take."""

from __future__ import annotations

import math
import re
from typing import Any, Dict, Mapping

# MLflow takes letters, digits, and _ - . space / in metric and parameter names; the others get '_'.
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./ ]")


def metric_name(*parts: str) -> str:
    return "/".join(_UNSAFE.sub("_", str(p)) for p in parts if str(p))


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> Dict[str, float]:
    """Numbers (and booleans, as 0/1) under their path joined by '/'; lists, strings and
    non-finite numbers are left out (metrics.jsonl keeps them)."""
    out: Dict[str, float] = {}
    for key, value in metrics.items():
        name = metric_name(prefix, key) if prefix else metric_name(key)
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, name))
        elif isinstance(value, (bool, int, float)) and math.isfinite(float(value)):
            out[name] = float(value)
    return out


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """The resolved config as dotted keys -> text, as trackers show hyper-parameters."""
    out: Dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
        else:
            out[_UNSAFE.sub("_", name)] = "None" if value is None else str(value)
    return out
