"""`orchestra-ray bench copy`: how often a policy copies a value of its context into the place a
domain episode needs it (orchestra_ray/families/copy_probe.py), on training and held-out domain tasks.

It measures the tiny base model the config pre-trains (built and cached as a run would) or any
policy by path (`policy.model=RUN/checkpoints/step_000030/policy`), in this process, without Ray: the
rates say whether a policy that misses domain tasks misses the function or the copying.
"""

from __future__ import annotations

import time
from typing import Dict, List

import torch

from orchestra_ray.rollout.chat import ChatFormat, user_message
from orchestra_ray.config import OrchestraConfig
from orchestra_ray.errors import ConfigError
from orchestra_ray.families.copy_probe import KINDS, copied, copy_probes, copy_rates
from orchestra_ray.families.domains.family import toolset_domain
from orchestra_ray.families.task import DOMAIN, by_id_hash, eval_tasks
from orchestra_ray.policy.tiny_model import load_policy
from pipelines.families import Families
from pipelines.zoo import Zoo, initial_policy_path


def _probes(chat: ChatFormat, families: Families, pool, profile: str, slots) -> List:
    out = []
    family = families.by_name[DOMAIN]
    for t in eval_tasks(pool, [profile], slots):
        env = family.new_state(t)
        for p in copy_probes(chat, family.toolset(t)[0], user_message(t.question, t.preference), family.reference[t.question_id],
                             env.call):
            out.append((toolset_domain(t.toolset), p))
    return out


@torch.no_grad()
def _continue(model, prompt_ids: List[int], n: int, end_id: int) -> List[int]:
    out = model.generate(torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
                         max_new_tokens=n, do_sample=False, eos_token_id=end_id, pad_token_id=end_id)
    return out[0, len(prompt_ids):].tolist()


def run(cfg: OrchestraConfig, zoo: Zoo, families: Families, max_tasks: int) -> Dict:
    if DOMAIN not in families.train:
        raise ConfigError("bench copy probes domain tasks: the config trains no domain family "
                          "(set families.weights.domain above 0, as the mixed config does)")
    path = initial_policy_path(zoo, cfg, families)
    model, tokenizer = load_policy(path, "float32", "cpu")
    model.eval()
    chat = ChatFormat(tokenizer)
    profile = cfg.preferences.eval_profiles[0]
    result: Dict = {"policy": path, "profile": profile, "splits": {}}
    t0 = time.time()
    for split in ("train", "heldout"):
        pool = by_id_hash(getattr(families, split)[DOMAIN])  # the first tasks span the domains
        pool = pool[:max_tasks] if max_tasks else pool
        probes = _probes(chat, families, pool, profile, zoo.slots)
        hits = []
        for _, p in probes:
            # A few tokens past the value show whether the copy stops where the value does.
            n = len(chat.encode(p.target)) + 2
            hits.append(copied(p.target, chat.decode(_continue(model, p.prompt_ids, n, chat.end_of_turn_id))))
        per_domain = {}
        for name in sorted({d for d, _ in probes}):
            picked = [(p, h) for (d, p), h in zip(probes, hits) if d == name]
            per_domain[name] = copy_rates([p for p, _ in picked], [h for _, h in picked])
        result["splits"][split] = {"tasks": len(pool), "rates": copy_rates([p for _, p in probes], hits),
                                   "per_domain": per_domain}
    result["wall_s"] = time.time() - t0
    return result


def _cell(rates: Dict, kind: str) -> str:
    r = rates.get(kind)
    return "-" if r is None else f"{r['hits']}/{r['probes']} ({r['rate']:.0%})"


def table(result: Dict) -> str:
    lines = [f"copy probes of {result['policy']} (greedy, profile {result['profile']}), {result['wall_s']:.0f} s",
             f"{'split':<8} {'domain':<10} " + " ".join(f"{k:>18}" for k in KINDS)]
    for split, s in result["splits"].items():
        rows = [("all", s["rates"])] + list(s["per_domain"].items())
        for name, rates in rows:
            lines.append(f"{split:<8} {name:<10} " + " ".join(f"{_cell(rates, k):>18}" for k in KINDS))
    return "\n".join(lines)
