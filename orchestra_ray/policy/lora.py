"""LoRA on the policy through peft: low-rank adapters on the chosen projections train, the base
weights stay frozen, and what rollout engines receive is the merged policy (W + alpha/r * B A)
under the base model's own names, so they load it as any other version.

The learner holds the injected Hugging Face model (peft's adapters inside its modules), whose
state-dict names are the base names with `.base_layer` for a wrapped projection's frozen weight and
`.lora_A.<adapter>.weight` / `.lora_B.<adapter>.weight` for its factors.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

ADAPTER = "default"  # peft's adapter name
_FACTOR = re.compile(r"^(.*)\.lora_([AB])\." + ADAPTER + r"\.weight$")


def apply_lora(lm, rank: int, alpha: float, dropout: float, target_modules: Sequence[str]):
    """`lm` with adapters injected in place (the same object); only the adapters require grad."""
    import peft

    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                          task_type="CAUSAL_LM")
    return peft.get_peft_model(lm, cfg).get_base_model()


def is_lora(lm) -> bool:
    return bool(getattr(lm, "peft_config", None))


def published_name(name: str) -> str:
    """The base model's name of a state-dict entry of the injected model (its frozen weight)."""
    return name.replace(".base_layer.", ".")


def factor_of(name: str):
    """(module path, "A" or "B") for an adapter factor's entry, else None."""
    m = _FACTOR.match(name)
    return (m.group(1), m.group(2)) if m else None


def split_entries(names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """(entries published under their base names, adapter factors) of the injected model."""
    base = [n for n in names if factor_of(n) is None]
    return base, [n for n in names if factor_of(n) is not None]


def scalings(lm) -> Dict[str, float]:
    """Module path -> alpha / r of each wrapped projection."""
    return {name: float(m.scaling[ADAPTER]) for name, m in lm.named_modules() if hasattr(m, "lora_A") and ADAPTER in m.scaling}


def merge_into(weights: Mapping[str, np.ndarray], factors: Mapping[str, np.ndarray], scaling: Mapping[str, float]) -> None:
    """Adds each projection's scaled B @ A to its frozen weight in `weights` (base names), in place."""
    pairs: Dict[str, Dict[str, np.ndarray]] = {}
    for name, a in factors.items():
        module, which = factor_of(name)
        pairs.setdefault(module, {})[which] = a
    for module, f in pairs.items():
        w = weights[module + ".weight"]
        w += (scaling[module] * (f["B"].astype(np.float32) @ f["A"].astype(np.float32))).astype(w.dtype)


def save_adapter(lm, factors: Mapping[str, np.ndarray], out_dir: str) -> None:
    """The adapter as peft writes it (adapter_config.json, adapter_model.safetensors), from the
    factors' whole values: `PeftModel.from_pretrained(base, out_dir)` loads it."""
    cfg = lm.peft_config[ADAPTER].to_dict()
    cfg["target_modules"] = sorted(cfg["target_modules"]) if cfg.get("target_modules") else cfg.get("target_modules")
    _write(cfg, factors, out_dir)


def write_adapter(factors: Mapping[str, np.ndarray], rank: int, alpha: float, target_modules: Sequence[str],
                  out_dir: str) -> None:
    """Published factors as an adapter folder in peft's format, for an engine that loads adapters
    from a path (vLLM's LoRARequest)."""
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": alpha, "lora_dropout": 0.0,
           "target_modules": sorted(target_modules), "bias": "none", "fan_in_fan_out": False}
    _write(cfg, factors, out_dir)


def _write(cfg: Dict, factors: Mapping[str, np.ndarray], out_dir: str) -> None:
    import torch
    from safetensors.torch import save_file

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, default=str)
    tensors = {"base_model.model." + n.replace(f".{ADAPTER}.", "."): torch.from_numpy(np.ascontiguousarray(v))
               for n, v in factors.items()}
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})


def load_adapter(in_dir: str) -> Dict[str, "object"]:
    """The factors `save_adapter` wrote, under the injected model's names."""
    from safetensors.torch import load_file

    path = os.path.join(in_dir, "adapter_model.safetensors")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no LoRA adapter in this checkpoint (was its run trained with trainer.lora.rank > 0?)")
    out = {}
    for name, t in load_file(path).items():
        inner = name[len("base_model.model."):] if name.startswith("base_model.model.") else name
        out[re.sub(r"\.lora_([AB])\.weight$", r".lora_\1." + ADAPTER + ".weight", inner)] = t
    return out
