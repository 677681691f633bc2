"""The task families a run trains on, as the driver sees them: each family's object
(`orchestra_ray.families.family.TaskFamily`: toolsets, episode states, judge, demonstrations) and its
train and held-out problems.

FRAMES questions come from the replay zoo; domain tasks from the offline SQLite domain generator
(their gold is the database hash after the gold actions); arithmetic problems from their generator.
Which families exist, and in which order, is `orchestra_ray.families.registry`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

from orchestra_ray.config import OrchestraConfig
from orchestra_ray.families.domains.environment import Domain
from orchestra_ray.families.family import Call, TaskFamily, Toolset
from orchestra_ray.families.registry import FAMILIES
from orchestra_ray.families.task import DOMAIN, Source
from pipelines.zoo import Zoo


@dataclass
class Families:
    train: Dict[str, List[Source]] = field(default_factory=dict)  # of the families the run trains on
    heldout: Dict[str, List[Source]] = field(default_factory=dict)
    by_name: Dict[str, TaskFamily] = field(default_factory=dict)  # every family loaded

    @property
    def names(self) -> List[str]:
        return list(self.train)

    @property
    def toolsets(self) -> Dict[str, Toolset]:
        """toolset -> (system prompt, tools), of every loaded family."""
        return {k: v for f in self.by_name.values() for k, v in f.toolsets.items()}

    @property
    def reference(self) -> Dict[str, List[Call]]:
        """question id -> the calls of its reference solution (families with reference solutions)."""
        return {k: v for f in self.by_name.values() for k, v in f.reference.items()}

    @property
    def domains(self) -> Dict[str, Domain]:
        """The domain family's databases by domain name (none when it is not loaded)."""
        return dict(self.by_name[DOMAIN].domains) if DOMAIN in self.by_name else {}


def load_families(cfg: OrchestraConfig, zoo: Zoo) -> Families:
    """Every family with a sampling weight above 0 (and those always loaded), in registry order."""
    fam = Families()
    for name, cls in FAMILIES.items():
        weight = cfg.families.weights.get(name, 0)
        if weight <= 0 and not cls.always_loaded:
            continue
        loaded = cls.load(cfg, zoo)
        fam.by_name[name] = loaded.family
        if weight > 0:
            fam.train[name], fam.heldout[name] = list(loaded.train), list(loaded.heldout)
    return fam
