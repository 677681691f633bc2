"""Every task family by name, in the order a run loads them (and so samples and demonstrates them):
the one place a new family is added."""

from __future__ import annotations

from typing import Dict, Type

from orchestra_ray.families.arithmetic import ArithmeticFamily
from orchestra_ray.families.domains.family import DomainFamily
from orchestra_ray.families.family import TaskFamily
from orchestra_ray.families.frames import FramesFamily

FAMILIES: Dict[str, Type[TaskFamily]] = {f.name: f for f in (FramesFamily, ArithmeticFamily, DomainFamily)}


def family_type(name: str) -> Type[TaskFamily]:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown task family '{name}' (known: {', '.join(FAMILIES)})") from None
