"""The tools' settings (`tools.sandbox`, `tools.code_pool`, `tools.search`) and their checks: plain
dataclasses the run's config is made of, kept apart from the sandbox and the search index so that
reading a config imports neither."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict

from orchestra_ray.paths import CACHE_DIR
from orchestra_ray.tools.corpus import corpus_format

MODES = ("bwrap", "none")  # tools.sandbox.mode
BACKENDS = ("bm25", "dense")  # tools.search.backend


@dataclass
class SandboxConfig:
    # "bwrap": isolated by bubblewrap. "none": UNSAFE, runs the policy's code as this process's user
    # with full access to the host, the network and Ray; only limits, timeout and workspace apply.
    mode: str = "bwrap"
    cpu_seconds: int = 10  # CPU time per process
    memory_mb: int = 1024  # address space per process
    # All of a call's processes together, with its /workspace and /tmp: a memory cgroup per call,
    # where this process's cgroup is writable (orchestra_ray/tools/cgroup.py); else per process only.
    # 0: no cgroup (each call starts ~10 ms sooner on kernels where joining one is slow).
    call_memory_mb: int = 2048
    max_processes: int = 64  # processes and threads of one call
    max_file_mb: int = 16  # size of any one file written
    workspace_mb: int = 64  # /workspace, memory that ends with the call (bwrap); /tmp is 4 x max_file_mb
    max_open_files: int = 64
    timeout_s: float = 10.0  # wall clock for the whole call
    max_output_chars: int = 4000  # of each stream kept in the result, and of the observation
    max_code_chars: int = 100_000  # a longer program is refused before a sandbox starts
    python: str = ""  # "" = the interpreter running us; its prefix is bound read-only in the sandbox
    bwrap: str = "bwrap"  # the bubblewrap binary, a name on PATH or a path
    # Make the next call's sandbox (namespaces, mounts, cgroup) in the background right after each
    # call, so that a call only hands over its program (orchestra_ray/tools/sandbox_start.py).
    prestart: bool = True


@dataclass
class CodePoolConfig:
    min_workers: int = 1  # kept warm even when idle
    max_workers: int = 4
    idle_s: float = 60.0  # a worker beyond min_workers idle this long is stopped
    num_cpus: float = 0.25  # Ray CPUs reserved per worker
    # Custom resources per worker, e.g. {tool: 1}: code workers then land on the nodes meant for them.
    resources: Dict[str, float] = field(default_factory=dict)


@dataclass
class SearchConfig:
    corpus: str = ""  # Parquet or JSONL file of id, title, text; "" = no search tool
    backend: str = "bm25"  # "bm25" (lexical) or "dense" (embedding similarity)
    top_k: int = 3  # hits per search when the policy names no k
    max_chars_per_hit: int = 300  # document text shown to the policy is cut here
    cache_dir: str = os.path.join(CACHE_DIR, "search")
    num_cpus: float = 0.25


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def validate_sandbox_config(sandbox: Any, pool: Any) -> None:
    """ValueError with one line naming the `tools.sandbox.*` or `tools.code_pool.*` key."""
    s, p = "tools.sandbox", "tools.code_pool"
    if sandbox.mode not in MODES:
        raise ValueError(f"{s}.mode must be 'bwrap' or 'none', got {str(sandbox.mode)[:64]!r}")
    minimums = (("cpu_seconds", 1), ("memory_mb", 64), ("max_processes", 1), ("max_file_mb", 1), ("workspace_mb", 1),
                ("max_open_files", 16), ("max_output_chars", 1), ("max_code_chars", 1))
    for key, low in minimums:
        v = getattr(sandbox, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ValueError(f"{s}.{key} must be an integer >= {low}, got {v!r}")
    v = sandbox.call_memory_mb
    if not isinstance(v, int) or isinstance(v, bool) or not (v == 0 or v >= 64):
        raise ValueError(f"{s}.call_memory_mb must be 0 (no per-call cgroup) or an integer >= 64, got {v!r}")
    if not _is_number(sandbox.timeout_s) or sandbox.timeout_s <= 0:
        raise ValueError(f"{s}.timeout_s must be a number > 0, got {sandbox.timeout_s!r}")
    if not isinstance(sandbox.python, str):
        raise ValueError(f"{s}.python must be a path or '', got {sandbox.python!r}")
    if not isinstance(sandbox.bwrap, str) or not sandbox.bwrap.strip():
        raise ValueError(f"{s}.bwrap must name the bubblewrap binary, got {sandbox.bwrap!r}")
    for key in ("min_workers", "max_workers"):
        v = getattr(pool, key)
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "min_workers" else 1):
            raise ValueError(f"{p}.{key} must be an integer >= {0 if key == 'min_workers' else 1}, got {v!r}")
    if pool.min_workers > pool.max_workers:
        raise ValueError(f"{p}.min_workers ({pool.min_workers}) must not exceed {p}.max_workers ({pool.max_workers})")
    if not _is_number(pool.idle_s) or pool.idle_s <= 0:
        raise ValueError(f"{p}.idle_s must be a number > 0, got {pool.idle_s!r}")
    if not _is_number(pool.num_cpus) or pool.num_cpus < 0:
        raise ValueError(f"{p}.num_cpus must be a number >= 0, got {pool.num_cpus!r}")


def plain_sandbox_config(cfg: Any) -> SandboxConfig:
    """A SandboxConfig from any object with its fields (an omegaconf node included)."""
    return SandboxConfig(**{k: getattr(cfg, k) for k in SandboxConfig.__dataclass_fields__})


def plain_pool_config(cfg: Any) -> CodePoolConfig:
    plain = {k: getattr(cfg, k) for k in CodePoolConfig.__dataclass_fields__}
    plain["resources"] = dict(plain["resources"])
    return CodePoolConfig(**plain)


def validate_search_config(cfg: Any) -> None:
    """Checks a type cannot express; ValueError naming the `search.*` key."""
    if cfg.backend not in BACKENDS:
        raise ValueError(f"search.backend must be one of {list(BACKENDS)}, got {str(cfg.backend)[:64]!r}")
    if cfg.top_k < 1:
        raise ValueError(f"search.top_k must be >= 1, got {cfg.top_k}")
    if cfg.max_chars_per_hit < 1:
        raise ValueError(f"search.max_chars_per_hit must be >= 1, got {cfg.max_chars_per_hit}")
    if not str(cfg.cache_dir).strip():
        raise ValueError("search.cache_dir must not be empty")
    if cfg.num_cpus < 0:
        raise ValueError(f"search.num_cpus must be >= 0, got {cfg.num_cpus}")
    if cfg.corpus:
        if not os.path.isfile(cfg.corpus):
            raise ValueError(f"search.corpus: file not found: {cfg.corpus}")
        if not corpus_format(cfg.corpus):
            raise ValueError(f"search.corpus: unsupported file type {cfg.corpus}, expected .parquet or .jsonl")
